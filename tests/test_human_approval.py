"""A tool call that needs a person waits, durably and at no cost, until approved, rejected or expired."""

from collections.abc import Callable

import httpx
import psycopg
import pytest

from tests.conftest import BILLING_AGENTS, fetch_value, wait_for_approval, wait_for_row, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_enterprise_upgrade_waits_for_approval_then_charges_once(agent: str, api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run_id = await start(api, agent, f"Upgrade customer {customer} to the enterprise plan")
    waiting = await wait_for_approval(api, run_id)
    inbox = (await api.get("/v1/approvals", params={"status": "pending"})).json()
    charged_before = await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer)

    decided = await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "approve", "decided_by": "ops@example.com", "comment": "ok"})
    run = await wait_for_run(api, run_id)

    assert (waiting["tool"], waiting["arguments"]["amount_cents"]) == ("charge_customer", 49900)
    assert waiting["approval_id"] in {item["approval_id"] for item in inbox}
    assert charged_before == 0
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert run["status"] == "succeeded" and run["output"]["plan"] == "enterprise"
    assert await fetch_value(db, "SELECT sum(amount_cents) FROM sandbox.payments WHERE customer_id = %s", customer) == 49900
    recorded = await (await db.execute("SELECT status, decided_by, comment FROM keel.approvals WHERE run_id = %s", (run_id,))).fetchone()
    assert recorded == ("approved", "ops@example.com via test-admin", "ok")  # the person, and the key they used
    kinds = await (await db.execute("SELECT kind FROM keel.events WHERE run_id = %s AND kind LIKE 'approval%%' ORDER BY id", (run_id,))).fetchall()
    assert kinds == [("approval_requested",), ("approval_decided",)]


async def test_pro_upgrade_needs_no_approval(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run = await wait_for_run(api, await start(api, "billing", f"Upgrade customer {customer} to the pro plan"))

    assert run["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM keel.approvals WHERE run_id = %s", run["run_id"]) == 0


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_a_rejected_charge_is_told_to_the_model_and_nothing_is_charged(agent: str, api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                             customer: str) -> None:
    run_id = await start(api, agent, f"Upgrade customer {customer} to the enterprise plan")
    waiting = await wait_for_approval(api, run_id)

    await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "reject", "comment": "too expensive"})
    run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded"
    assert "too expensive" in run["output"]["summary"]
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 0
    assert await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "basic"


async def test_a_rejection_can_fail_the_run(api: httpx.AsyncClient, customer: str) -> None:
    run_id = await start(api, "probe", f'call strict_transfer with {{"customer_id": "{customer}", "amount_cents": 100}}')
    waiting = await wait_for_approval(api, run_id)

    await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "reject"})
    run = await wait_for_run(api, run_id)

    assert (run["status"], run["reason"]) == ("failed", "approval_rejected")


async def test_an_unanswered_request_expires_as_a_rejection(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    run = await wait_for_run(api, await start(api, "probe", 'call quick_confirm with {"note": "hello"}'))

    assert run["status"] == "succeeded"
    assert "expired" in run["output"]
    assert await fetch_value(db, "SELECT status FROM keel.approvals WHERE run_id = %s", run["run_id"]) == "expired"


async def test_expiry_can_escalate_once_before_rejecting(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    run = await wait_for_run(api, await start(api, "probe", 'call escalating_confirm with {"note": "hello"}'))

    assert "expired" in run["output"]
    assert await fetch_value(db, "SELECT escalations FROM keel.approvals WHERE run_id = %s", run["run_id"]) == 1
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'approval_escalated'", run["run_id"]) == 1


async def test_decisions_are_idempotent_and_conflicts_refused(api: httpx.AsyncClient, customer: str) -> None:
    run_id = await start(api, "probe", f'call transfer with {{"customer_id": "{customer}", "amount_cents": 700}}')
    approval_id = (await wait_for_approval(api, run_id))["approval_id"]
    url = f"/v1/approvals/{approval_id}"

    first = await api.post(url, json={"decision": "approve", "decided_by": "ann"})
    again = await api.post(url, json={"decision": "approve", "decided_by": "bob"})
    conflicting = await api.post(url, json={"decision": "reject"})
    unknown = await api.post("/v1/approvals/nope", json={"decision": "approve"})
    malformed = await api.post(url, json={"decision": "maybe"})
    await wait_for_run(api, run_id)

    assert first.status_code == again.status_code == 200
    assert again.json()["decided_by"] == "ann via test-admin"  # the first decision stands
    assert conflicting.status_code == 409 and "already approved" in conflicting.json()["error"]["message"]
    assert unknown.status_code == 404
    assert malformed.status_code == 422


async def test_a_killed_worker_still_waits_with_the_original_deadline(start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    worker = start_worker("approval-crash")
    async with worker.client() as api:
        run_id = await start(api, "probe", f'call transfer with {{"customer_id": "{customer}", "amount_cents": 900}}')
        approval_id = (await wait_for_approval(api, run_id))["approval_id"]
    deadline_query = "SELECT output FROM dbos.operation_outputs WHERE workflow_uuid = %s AND function_name = 'DBOS.sleep'"
    await wait_for_row(db, deadline_query, run_id)  # `awaiting_approval` shows a moment before the wait's checkpoint is written
    deadline = await fetch_value(db, deadline_query, run_id)
    expires_at = await fetch_value(db, "SELECT expires_at FROM keel.approvals WHERE approval_id = %s", approval_id)

    worker.kill()
    worker = start_worker("approval-crash")
    async with worker.client() as api:
        assert (await wait_for_approval(api, run_id))["approval_id"] == approval_id
        await api.post(f"/v1/approvals/{approval_id}", json={"decision": "approve"})
        run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded"
    assert await fetch_value(db, deadline_query, run_id) == deadline
    assert await fetch_value(db, "SELECT expires_at FROM keel.approvals WHERE approval_id = %s", approval_id) == expires_at
    assert await fetch_value(db, "SELECT count(*) FROM keel.approvals WHERE run_id = %s", run_id) == 1
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1


async def test_a_decision_made_while_the_worker_is_down_is_applied_when_it_returns(
    start_worker: Callable[..., Worker], api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    worker = start_worker("approval-down")
    async with worker.client() as own:
        run_id = await start(own, "probe", f'call transfer with {{"customer_id": "{customer}", "amount_cents": 300}}')
        approval_id = (await wait_for_approval(own, run_id))["approval_id"]
    worker.kill()

    decided = await api.post(f"/v1/approvals/{approval_id}", json={"decision": "approve"})  # another worker takes it
    start_worker("approval-down")
    run = await wait_for_run(api, run_id)

    assert decided.status_code == 200
    assert run["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1


async def test_a_decision_recorded_by_a_process_that_died_before_waking_the_run_is_delivered(
    start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str
) -> None:
    # Found by the chaos harness: the approver's worker was killed between recording and sending.
    worker = start_worker("redeliver", KEEL_HEARTBEAT_INTERVAL="0.5")
    async with worker.client() as api:
        run_id = await start(api, "probe", f'call transfer with {{"customer_id": "{customer}", "amount_cents": 11}}')
        approval_id = (await wait_for_approval(api, run_id))["approval_id"]
        await db.execute("UPDATE keel.approvals SET status = 'approved', decided_by = 'lost', decided_at = now() WHERE approval_id = %s",
                         (approval_id,))  # recorded, and no message sent

        run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM dbos.notifications WHERE destination_uuid = %s", run_id) == 1
