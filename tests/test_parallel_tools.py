"""The tool calls the model asks for in one turn run at once, as durable steps: numbered in the model's
order whichever ends first, so they replay and recover like any other; each approval among them waits
on its own while the others run; `parallel_tool_calls=False` runs them one after another."""

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from datetime import datetime

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_row, wait_for_run
from tests.processes import Worker

THREE_NAPS = " and ".join(['call nap with {"seconds": 1}'] * 3)


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def tool_calls(db: psycopg.AsyncConnection, run_id: str) -> list[tuple[int, str, datetime, datetime]]:
    """Each tool call of the run: its step, call ID, and when its intent and its outcome committed."""
    rows = await (await db.execute(
        """SELECT c.step_id, t.tool_call_id, c.created_at, r.created_at
           FROM keel.events c JOIN keel.events r ON r.run_id = c.run_id AND r.step_id = c.step_id AND r.kind = 'tool_result'
           JOIN keel.tool_calls t ON t.run_id = c.run_id AND t.step_id = c.step_id
           WHERE c.run_id = %s AND c.kind = 'tool_call' ORDER BY c.step_id""", (run_id,))).fetchall()
    return [(step, call_id, started, ended) for step, call_id, started, ended in rows]


async def test_three_tools_of_one_turn_run_at_once_and_one_after_another_when_switched_off(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    at_once = await start(api, "probe", THREE_NAPS)
    in_sequence = await start(api, "in-sequence", THREE_NAPS)
    assert json.loads((await wait_for_run(api, at_once))["output"]) == {"slept": 1}
    assert (await wait_for_run(api, in_sequence))["status"] == "succeeded"

    calls = await tool_calls(db, at_once)
    assert [call_id for _, call_id, _, _ in calls] == ["call_0_0", "call_0_1", "call_0_2"]  # numbered in the model's order
    assert max(started for _, _, started, _ in calls) < min(ended for _, _, _, ended in calls)  # all three were running at once
    sequential = await tool_calls(db, in_sequence)
    assert all(earlier[3] <= later[2] for earlier, later in itertools.pairwise(sequential))  # each began after the last ended
    for run_id in (at_once, in_sequence):
        report = (await api.post(f"/v1/runs/{run_id}/replay")).json()
        assert report["same"] is True and report["divergence"] is None, report


async def test_a_worker_killed_with_one_call_done_and_one_in_flight_makes_each_effect_once(
        start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    calls = [{"customer_id": customer, "amount_cents": 100, "seconds": 0}, {"customer_id": customer, "amount_cents": 200, "seconds": 120}]
    text = " and ".join(f"call charge_then_wait with {json.dumps(arguments)}" for arguments in calls)
    worker = start_worker("parallel-crash")
    async with worker.client() as api:
        run_id = await start(api, "probe", text)
    await wait_for_row(db, "SELECT count(*) = 2 FROM sandbox.payments WHERE customer_id = %s", customer)
    await wait_for_row(db, "SELECT 1 FROM keel.tool_calls WHERE run_id = %s AND status = 'succeeded'", run_id)  # the first is done, the second sleeps

    worker.kill()
    async with start_worker("parallel-crash").client() as api:
        run = await wait_for_run(api, run_id)
        report = (await api.post(f"/v1/runs/{run_id}/replay")).json()

    assert run["status"] == "succeeded", run
    charges = await (await db.execute("SELECT amount_cents FROM sandbox.payments WHERE customer_id = %s ORDER BY amount_cents", (customer,))).fetchall()
    assert charges == [(100,), (200,)]
    ledger = await (await db.execute("SELECT arguments->>'amount_cents', attempts, status FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id",
                                     (run_id,))).fetchall()
    assert ledger == [("100", 1, "succeeded"), ("200", 2, "succeeded")]  # the finished call was not run again
    assert report["same"] is True, report


async def test_each_approval_of_one_turn_waits_on_its_own_while_the_other_calls_run(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    text = (f'call transfer with {{"customer_id": "{customer}", "amount_cents": 100}} and '
            f'call transfer with {{"customer_id": "{customer}", "amount_cents": 200}} and call nap with {{"seconds": 0}}')
    run_id = await start(api, "probe", text)

    deadline = time.monotonic() + 30
    while len(pending := (await api.get("/v1/approvals", params={"run_id": run_id, "status": "pending"})).json()) < 2:
        assert time.monotonic() < deadline, pending
        await asyncio.sleep(0.1)
    await wait_for_row(db, "SELECT 1 FROM keel.tool_calls WHERE run_id = %s AND tool = 'nap' AND status = 'succeeded'", run_id)  # before any decision
    first, second = sorted(pending, key=lambda approval: approval["arguments"]["amount_cents"])
    assert (await api.post(f"/v1/approvals/{second['approval_id']}", json={"decision": "approve"})).status_code == 200  # the later one first
    assert (await api.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"  # the first still waits for its own decision
    assert (await api.post(f"/v1/approvals/{first['approval_id']}", json={"decision": "approve"})).status_code == 200
    run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded" and run["turns"] == 2, run
    assert await fetch_value(db, "SELECT array_agg(amount_cents ORDER BY amount_cents) FROM sandbox.payments WHERE customer_id = %s", customer) == [100, 200]
