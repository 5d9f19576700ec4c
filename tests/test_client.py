"""The typed Python client: every answer is the Pydantic view the API serves, and a run's result is
typed by its agent."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.client import APIError, KeelClient
from app.demo.billing import Resolution, billing
from app.schemas import ApprovalView, EventView, RunView
from tests.processes import Worker
from workflows import RunFailed


@pytest.fixture
async def keel(service: Worker) -> AsyncIterator[KeelClient]:
    async with KeelClient(service.url, api_key=service.headers["Authorization"].removeprefix("Bearer ")) as client:
        yield client


async def test_start_wait_and_a_typed_result(keel: KeelClient, customer: str) -> None:
    started = await keel.start(billing, f"Upgrade customer {customer} to the pro plan")

    resolution = await keel.result(billing, started.run_id, timeout=60)
    run = await keel.get(started.run_id)
    events = await keel.events(started.run_id)

    assert isinstance(started, RunView) and started.agent == "billing"
    assert isinstance(resolution, Resolution) and (resolution.plan, resolution.amount_cents) == ("pro", 4900)
    assert run.status == "succeeded" and run.output == resolution.model_dump()
    assert all(isinstance(e, EventView) for e in events)
    assert [e.kind for e in events][0::len(events) - 1] == ["run_started", "run_finished"]


async def test_approvals_and_decisions_are_typed(keel: KeelClient, customer: str) -> None:
    run = await keel.start("billing_langgraph", f"Upgrade customer {customer} to the enterprise plan")
    while not (pending := await keel.approvals(status="pending", run_id=run.run_id)):
        assert (await keel.get(run.run_id)).status in ("queued", "running")
        await asyncio.sleep(0.05)

    decided = await keel.approve(pending[0].approval_id, comment="ok")
    finished = await keel.wait(run.run_id, timeout=60)

    assert isinstance(pending[0], ApprovalView) and pending[0].tool == "charge_customer"
    assert isinstance(decided, ApprovalView) and decided.status == "approved"
    assert finished.status == "succeeded"


async def test_refusals_are_api_errors_and_failures_raise_run_failed(keel: KeelClient, customer: str) -> None:
    with pytest.raises(APIError) as unknown:
        await keel.get("no-such-run")
    with pytest.raises(APIError) as bad_agent:
        await keel.start("no-such-agent", "hello")
    failed = await keel.start("probe", 'call refuse with {"reason": "no"}')
    with pytest.raises(RunFailed) as refused:
        await keel.result(billing, failed.run_id, timeout=60)
    with pytest.raises(APIError) as conflict:
        await keel.cancel(failed.run_id)

    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert (bad_agent.value.status, bad_agent.value.code) == (422, "unknown_agent")
    assert refused.value.reason == "tool_failed"
    assert conflict.value.status == 409
