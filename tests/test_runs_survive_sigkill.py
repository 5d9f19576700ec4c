"""A worker killed with SIGKILL at any point: a fresh process with its executor ID resumes the run
from the last completed step; every sandbox effect exists exactly once; completed steps never re-run."""

from collections.abc import Callable

import httpx
import psycopg
import pytest

from tests.conftest import BILLING_AGENTS, fetch_value, wait_for_row, wait_for_run, with_demo
from tests.processes import Worker


async def start_upgrade(worker: Worker, customer: str, agent: str = "billing") -> str:
    async with worker.client() as client:
        response = await client.post("/v1/runs", json={"agent": agent, "input": f"Upgrade customer {customer} to the pro plan"})
    assert response.status_code == 202
    return response.json()["run_id"]


async def finish_on_fresh_worker(start_worker: Callable[..., Worker], executor_id: str, run_id: str, **env: str) -> dict:
    worker = start_worker(executor_id, **env)
    async with worker.client() as client:
        return await wait_for_run(client, run_id)


async def assert_effects_once(db: psycopg.AsyncConnection, customer: str) -> None:
    counts = await (await db.execute(
        """SELECT (SELECT count(*) FROM sandbox.tickets WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.payments WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.plan_changes WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.emails WHERE recipient = lower(%(c)s) || '@example.com'),
                  (SELECT plan FROM sandbox.customers WHERE id = %(c)s)""", {"c": customer})).fetchone()
    assert counts == (1, 1, 1, 1, "pro")


async def attempts(db: psycopg.AsyncConnection, run_id: str) -> dict[str, int]:
    rows = await (await db.execute("SELECT tool, attempts FROM keel.tool_calls WHERE run_id = %s", (run_id,))).fetchall()
    return dict(rows)


@pytest.mark.smoke
async def test_killed_during_an_llm_call(start_worker, model: httpx.AsyncClient, db, customer: str) -> None:
    # The third model call (after lookup and ticket) hangs until the worker is killed.
    await model.post("/faults", json={"kind": "delay", "match": customer, "seconds": 30, "after": 2})
    worker = start_worker("crash-llm")
    run_id = await start_upgrade(worker, customer)
    await wait_for_row(db, "SELECT 1 FROM keel.events WHERE run_id = %s AND kind = 'llm_request' AND payload->>'turn' = '3'", run_id)

    worker.kill()
    run = await finish_on_fresh_worker(start_worker, "crash-llm", run_id)

    assert run["status"] == "succeeded", run
    await assert_effects_once(db, customer)
    assert await attempts(db, run_id) == {"lookup_customer": 1, "create_ticket": 1, "charge_customer": 1, "update_plan": 1, "send_email": 1}
    assert await fetch_value(db, "SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id) >= 2


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_killed_after_a_charge_committed_but_before_its_step_was_recorded(agent: str, start_worker, db, api, customer: str) -> None:
    # The payments service commits the charge, then holds the response until the worker is killed.
    await api.post("/sandbox/faults", json={"service": "payments", "kind": "delay_response", "match": customer, "seconds": 30})
    worker = start_worker(f"crash-charge-{agent}", **with_demo(agent))
    run_id = await start_upgrade(worker, customer, agent)
    await wait_for_row(db, "SELECT 1 FROM sandbox.payments WHERE customer_id = %s", customer)

    worker.kill()
    run = await finish_on_fresh_worker(start_worker, f"crash-charge-{agent}", run_id, **with_demo(agent))

    assert run["status"] == "succeeded", run
    await assert_effects_once(db, customer)
    charge = await (await db.execute(
        "SELECT attempts, reconciled FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'", (run_id,))).fetchone()
    assert charge == (2, True)  # the second attempt asked the payments service instead of charging again
    assert (await attempts(db, run_id))["create_ticket"] == 1


async def test_killed_after_a_database_effect_committed_with_its_ledger_row(start_worker, db, customer: str) -> None:
    worker = start_worker("crash-plan", KEEL_FAILPOINTS="tool.after_commit:update_plan")
    run_id = await start_upgrade(worker, customer)
    assert worker.wait_for_exit() == -9  # the failpoint SIGKILLed it right after the commit

    run = await finish_on_fresh_worker(start_worker, "crash-plan", run_id)

    assert run["status"] == "succeeded", run
    await assert_effects_once(db, customer)
    results = await (await db.execute("""SELECT payload ->> 'attempts', payload ->> 'deduplicated' FROM keel.events
                                          WHERE run_id = %s AND kind = 'tool_result' AND payload ->> 'tool' = 'update_plan'""", (run_id,))).fetchall()
    assert results == [("1", "false")]  # recorded with the outcome; the re-executed step found it and ran nothing
    assert (await attempts(db, run_id))["update_plan"] == 1


async def test_killed_while_idle_between_steps(start_worker, db, customer: str) -> None:
    # Dies after the charge step's checkpoint, before the fourth model call starts.
    worker = start_worker("crash-idle", KEEL_FAILPOINTS="llm.before_request:4")
    run_id = await start_upgrade(worker, customer)
    assert worker.wait_for_exit() == -9
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1

    run = await finish_on_fresh_worker(start_worker, "crash-idle", run_id)

    assert run["status"] == "succeeded", run
    await assert_effects_once(db, customer)
    assert await attempts(db, run_id) == {"lookup_customer": 1, "create_ticket": 1, "charge_customer": 1, "update_plan": 1, "send_email": 1}
