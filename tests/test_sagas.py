"""A run that fails or is cancelled undoes its effects newest first, each exactly once, even when
the worker is killed in the middle of undoing."""

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from tests.conftest import BILLING_AGENTS, fetch_value, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, text: str, agent: str = "billing") -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def fail_at_update_plan(api: httpx.AsyncClient, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})


async def sandbox_state(db: psycopg.AsyncConnection, customer: str) -> tuple:
    return await (await db.execute(
        """SELECT (SELECT count(*) FROM sandbox.payments WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.refunds r JOIN sandbox.payments p USING (charge_id) WHERE p.customer_id = %(c)s),
                  (SELECT string_agg(status, ',') FROM sandbox.tickets WHERE customer_id = %(c)s),
                  (SELECT plan FROM sandbox.customers WHERE id = %(c)s)""", {"c": customer})).fetchone()


async def compensations(db: psycopg.AsyncConnection, run_id: str) -> list[tuple]:
    return await (await db.execute("SELECT n, tool, status FROM keel.compensations WHERE run_id = %s ORDER BY n", (run_id,))).fetchall()


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_a_failure_at_step_four_undoes_steps_three_two_one_in_reverse(agent: str, api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                            customer: str) -> None:
    await fail_at_update_plan(api, customer)

    run = await wait_for_run(api, await start(api, f"Upgrade customer {customer} to the pro plan", agent))

    assert (run["status"], run["reason"]) == ("compensated", "tool_failed"), run
    assert await sandbox_state(db, customer) == (1, 1, "closed", "basic")
    assert await compensations(db, run["run_id"]) == [(1, "charge_customer", "succeeded"), (2, "create_ticket", "succeeded")]
    undone = await (await db.execute(
        "SELECT tool FROM keel.tool_calls WHERE run_id LIKE %s ORDER BY completed_at", (f"{run['run_id']}:compensate:%",))).fetchall()
    assert undone == [("undo_charge_customer",), ("undo_create_ticket",)]  # newest effect first
    statuses = await (await db.execute(
        "SELECT workflow_uuid, name, status FROM dbos.workflow_status WHERE workflow_uuid LIKE %s ORDER BY workflow_uuid",
        (f"{run['run_id']}:%",))).fetchall()
    assert [(name, status) for _, name, status in statuses] == [
        ("keel.compensate", "SUCCESS"), ("keel.compensate", "SUCCESS"), ("keel.rollback", "SUCCESS")]


async def test_a_plans_fault_spoils_as_many_runs_as_its_times_and_no_more(api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                         customer: str) -> None:
    # The fault fails update_plan inside the ledger's transaction, which rolls back: it must stay used.
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer, "times": 1})

    first = await wait_for_run(api, await start(api, f"Upgrade customer {customer} to the pro plan"))
    second = await wait_for_run(api, await start(api, f"Upgrade customer {customer} to the pro plan"))

    assert (first["status"], first["reason"]) == ("compensated", "tool_failed")
    assert second["status"] == "succeeded", second
    assert await fetch_value(db, "SELECT remaining FROM sandbox.faults WHERE match = %s", customer) == 0


async def test_irreversible_effects_are_reported_not_undone(api: httpx.AsyncClient, model: httpx.AsyncClient, db, customer: str) -> None:
    await model.post("/faults", json={"kind": "bad_final", "match": customer, "times": 10})

    run = await wait_for_run(api, await start(api, f"Upgrade customer {customer} to the pro plan"))

    assert (run["status"], run["reason"]) == ("compensated", "invalid_model_output")
    assert [(c["tool"], c["status"]) for c in run["compensations"]] == [
        ("send_email", "irreversible"), ("update_plan", "succeeded"), ("charge_customer", "succeeded"), ("create_ticket", "succeeded")]
    assert await sandbox_state(db, customer) == (1, 1, "closed", "basic")
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.emails WHERE recipient = lower(%s) || '@example.com'", customer) == 1


async def test_a_run_that_succeeded_is_never_compensated(api: httpx.AsyncClient, db, customer: str) -> None:
    run = await wait_for_run(api, await start(api, f"Upgrade customer {customer} to the pro plan"))
    cancel = await api.post(f"/v1/runs/{run['run_id']}/cancel")

    assert run["status"] == "succeeded"
    assert cancel.status_code == 409
    assert await sandbox_state(db, customer) == (1, 0, "open", "pro")


async def test_killed_between_two_compensations(start_worker: Callable[..., Worker], db, api, customer: str) -> None:
    await fail_at_update_plan(api, customer)
    worker = start_worker("saga-between", KEEL_FAILPOINTS="compensation.running:2")
    async with worker.client() as own:
        run_id = await start(own, f"Upgrade customer {customer} to the pro plan")
    assert worker.wait_for_exit() == -9
    assert await sandbox_state(db, customer) == (1, 1, "open", "basic")  # refunded, ticket not yet closed

    start_worker("saga-between")
    run = await wait_for_run(api, run_id)

    assert run["status"] == "compensated", run
    assert await sandbox_state(db, customer) == (1, 1, "closed", "basic")
    attempts = await (await db.execute(
        "SELECT tool, attempts FROM keel.tool_calls WHERE run_id LIKE %s ORDER BY tool", (f"{run_id}:compensate:%",))).fetchall()
    assert attempts == [("undo_charge_customer", 1), ("undo_create_ticket", 1)]


async def test_killed_inside_a_compensation_after_its_effect_committed(start_worker: Callable[..., Worker], db, api, customer: str) -> None:
    await fail_at_update_plan(api, customer)
    worker = start_worker("saga-inside", KEEL_FAILPOINTS="tool.after_commit:undo_charge_customer")
    async with worker.client() as own:
        run_id = await start(own, f"Upgrade customer {customer} to the pro plan")
    assert worker.wait_for_exit() == -9

    start_worker("saga-inside")
    run = await wait_for_run(api, run_id)

    assert run["status"] == "compensated", run
    assert await sandbox_state(db, customer) == (1, 1, "closed", "basic")  # one refund, not two
    results = await (await db.execute("SELECT payload ->> 'attempts' FROM keel.events WHERE run_id = %s AND kind = 'tool_result'",
                                      (f"{run_id}:compensate:1",))).fetchall()
    assert results == [("1",)]  # recorded with the refund; the re-executed undo found it and ran nothing


async def test_cancelling_a_run_that_waits_for_approval_undoes_its_effects(api: httpx.AsyncClient, db, customer: str) -> None:
    run_id = await start(api, f"Upgrade customer {customer} to the enterprise plan")
    deadline = time.monotonic() + 30
    while (await api.get(f"/v1/runs/{run_id}")).json()["status"] != "awaiting_approval":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    cancelled = await api.post(f"/v1/runs/{run_id}/cancel")
    run = await wait_for_run(api, run_id)
    again = await api.post(f"/v1/runs/{run_id}/cancel")

    assert cancelled.status_code == 200
    assert run["status"] == "cancelled", run
    assert await sandbox_state(db, customer) == (0, 0, "closed", "basic")
    assert await fetch_value(db, "SELECT status FROM keel.approvals WHERE run_id = %s", run_id) == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_a_compensation_that_fails_for_good_waits_for_an_operator(api: httpx.AsyncClient, db, customer: str) -> None:
    await fail_at_update_plan(api, customer)
    await api.post("/sandbox/faults", json={"service": "payments", "kind": "reject", "match": "run rolled back", "times": 100})
    run_id = await start(api, f"Upgrade customer {customer} to the pro plan")

    stuck = await wait_for_run(api, run_id)
    await api.delete("/sandbox/faults")
    retried = await api.post(f"/v1/runs/{run_id}/compensate")
    deadline = time.monotonic() + 30
    while (run := (await api.get(f"/v1/runs/{run_id}")).json())["status"] != "compensated":
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.1)

    assert stuck["status"] == "compensation_failed"
    assert [(c["tool"], c["status"]) for c in stuck["compensations"]] == [("charge_customer", "failed"), ("create_ticket", "pending")]
    assert stuck["compensations"][0]["error"]["kind"] == "permanent"
    assert retried.status_code == 200
    assert await sandbox_state(db, customer) == (1, 1, "closed", "basic")
