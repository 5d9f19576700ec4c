"""The support demo: it looks the customer up and reads their charges in one turn, at once, and hands
the plan change to `billing` as a child run. The child's charge happens once whichever process dies
where, a cancel reaches the child, and a failure after the child succeeded refunds its charge once."""

from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import Worker
from tests.test_child_runs import child_of, wait_for_run_to_exist
from tests.test_parallel_tools import tool_calls


def request(customer: str, plan: str = "pro") -> str:
    return f"Support request from customer {customer}: please move me to the {plan} plan."


async def start(api: httpx.AsyncClient, customer: str, *, plan: str = "pro", agent: str = "support") -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": request(customer, plan)})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def charges(db: psycopg.AsyncConnection, customer: str) -> list[tuple[int, str]]:
    return await (await db.execute("SELECT amount_cents, status FROM sandbox.payments WHERE customer_id = %s ORDER BY id", (customer,))).fetchall()


async def test_support_looks_up_at_once_and_hands_the_upgrade_to_billing(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run_id = await start(api, customer)
    run = await wait_for_run(api, run_id)
    child = (await api.get(f"/v1/runs/{await child_of(db, run_id)}")).json()

    assert run["status"] == child["status"] == "succeeded", (run, child)
    assert child["agent"] == "billing" and child["parent_run_id"] == run_id
    assert run["output"]["category"] == "plan_change" and run["output"]["summary"] == child["output"]["summary"]
    assert await charges(db, customer) == [(4900, "succeeded")]
    assert await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "pro"
    # One turn's two calls (the model's reply is step 2), started together. The lookups answer in a few
    # milliseconds, so whether they overlap is up to the scheduler: tests/test_parallel_tools.py shows
    # calls of one turn overlapping with tools that take a second.
    assert [step for step, *_ in await tool_calls(db, run_id)][:2] == [3, 4]
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'llm_response' AND step_id < 4", run_id) == 1
    tools = await (await db.execute("SELECT tool FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id", (run_id,))).fetchall()
    assert [t for (t,) in tools] == ["lookup_customer", "recent_charges", "billing", "reply_to_customer"]
    for replayed in (run_id, child["run_id"]):
        report = (await api.post(f"/v1/runs/{replayed}/replay")).json()
        assert report["same"] is True, report


async def test_the_childs_charge_happens_once_when_the_worker_dies_in_the_child_or_in_the_parent(
        start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    for failpoint in ("tool.after_commit:charge_customer", "tool.after_commit:reply_to_customer"):  # in the child, then in the parent after it
        await db.execute("UPDATE sandbox.customers SET plan = 'basic' WHERE id = %s", (customer,))
        worker = start_worker("support-crash", KEEL_FAILPOINTS=failpoint)
        async with worker.client() as api:
            run_id = await start(api, customer)
        assert worker.wait_for_exit() == -9, failpoint
        recovering = start_worker("support-crash")
        async with recovering.client() as api:
            run = await wait_for_run(api, run_id)
            report = (await api.post(f"/v1/runs/{run_id}/replay")).json()
        recovering.stop()
        assert run["status"] == "succeeded", (failpoint, run)
        assert report["same"] is True, (failpoint, report)
        children = await fetch_value(db, "SELECT count(*) FROM dbos.workflow_status WHERE parent_workflow_id = %s AND name = 'keel.agent_run'", run_id)
        assert children == 1, failpoint
    assert await charges(db, customer) == [(4900, "succeeded"), (4900, "succeeded")]  # one per run, none twice


async def test_cancelling_support_cancels_billing_waiting_for_approval(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run_id = await start(api, customer, plan="enterprise")  # the $499 charge waits for a person
    child_id = await child_of(db, run_id)
    await wait_for_run_to_exist(api, child_id)
    approval = await wait_for_approval(api, child_id)
    assert approval["root_run_id"] == run_id
    assert (await api.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"  # the child's approval holds up the tree

    assert (await api.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
    run, child = await wait_for_run(api, run_id), await wait_for_run(api, child_id)
    assert run["status"] == child["status"] == "cancelled", (run, child)
    assert (await api.get(f"/v1/approvals/{approval['approval_id']}")).json()["status"] == "cancelled"
    assert await charges(db, customer) == []
    assert await fetch_value(db, "SELECT status FROM sandbox.tickets WHERE customer_id = %s", customer) == "closed"  # the child's ticket, undone


async def test_a_reply_that_fails_after_billing_succeeded_refunds_the_charge_once(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "mail", "kind": "reject", "match": "Your support request"})
    run_id = await start(api, customer)
    run = await wait_for_run(api, run_id)
    child = (await api.get(f"/v1/runs/{await child_of(db, run_id)}")).json()

    assert (run["status"], run["reason"]) == ("compensated", "tool_failed"), run
    assert (child["status"], child["reason"]) == ("compensated", "parent_rolled_back"), child
    assert await charges(db, customer) == [(4900, "refunded")]
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.refunds r JOIN sandbox.payments p USING (charge_id) WHERE p.customer_id = %s",
                             customer) == 1
    assert await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "basic"


async def test_billing_that_runs_out_of_supports_budget_fails_support_with_budget_exhausted(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run_id = await start(api, customer, agent="support-on-a-budget")
    run = await wait_for_run(api, run_id)
    child = (await api.get(f"/v1/runs/{await child_of(db, run_id)}")).json()

    assert (child["status"], child["reason"]) == ("compensated", "budget_exhausted"), child  # its ticket was closed
    assert (run["status"], run["reason"]) == ("compensated", "budget_exhausted"), run  # by the parent's rollback of the child
    assert run["tokens"] < 750 <= run["tokens"] + child["tokens"]
    assert await charges(db, customer) == []
    assert await fetch_value(db, "SELECT status FROM sandbox.tickets WHERE customer_id = %s", customer) == "closed"
