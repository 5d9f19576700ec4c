"""An agent as a tool: a call starts a child run, a DBOS child workflow named after the call's ledger
key, which the parent awaits durably. The child has its own timeline and ledger, spends from the
parent's budgets, is cancelled with it, and is rolled back with it, at its call's place."""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_approval, wait_for_row, wait_for_run
from tests.processes import ROOT, Worker
from tests.test_console_sessions import log_in


def ask(tool: str, text: str) -> str:
    return f"call {tool} with {json.dumps({'input': text})}"


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_a_child_run_has_its_own_timeline_and_ledger_and_its_spending_counts_for_its_parent(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, service: Worker, worker_env: dict, api_keys: dict[str, str]) -> None:
    charge = json.dumps({"customer_id": customer, "amount_cents": 300})
    parent_id = await start(api, "delegator", ask("ask_probe", f"call pay with {charge}"))
    parent = await wait_for_run(api, parent_id)
    child_id = await child_of(db, parent_id)
    assert child_id.startswith(f"{parent_id}:") and child_id.endswith(":child")  # named after the call's ledger key

    child = (await api.get(f"/v1/runs/{child_id}")).json()
    assert parent["status"] == child["status"] == "succeeded", (parent, child)
    assert (child["agent"], child["parent_run_id"], child["root_run_id"]) == ("probe", parent_id, parent_id)
    assert (parent["parent_run_id"], parent["root_run_id"]) == (None, parent_id)
    assert json.loads(json.loads(parent["output"]))["amount_cents"] == 300  # the child's answer was the call's reply
    assert child["turns"] == 2 and parent["turns"] == 2  # each its own model calls...
    parent_tokens = await fetch_value(db, "SELECT sum((payload->>'total_tokens')::int) FROM keel.events WHERE run_id = %s AND kind = 'llm_response'",
                                      parent_id)
    finished = await fetch_value(db, "SELECT payload FROM keel.events WHERE run_id = %s AND kind = 'child_finished'", parent_id)
    assert finished["tokens"] == child["tokens"] > 0 and parent["tokens"] == parent_tokens  # ...and the child's spending is reported to the parent
    ledger = await (await db.execute("SELECT run_id, tool, status, result FROM keel.tool_calls WHERE run_id IN (%s, %s) ORDER BY created_at",
                                     (parent_id, child_id))).fetchall()
    assert [(run, tool, status) for run, tool, status, _ in ledger] == [(parent_id, "ask_probe", "succeeded"), (child_id, "pay", "succeeded")]
    assert ledger[0][3] == {"run_id": child_id, "agent": "probe"}
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1

    child_kinds = [e["kind"] for e in (await api.get(f"/v1/runs/{child_id}/events")).json()]
    assert child_kinds[0] == "run_started" and "tool_call" in child_kinds and child_kinds[-1] == "run_finished"
    printed = subprocess.run([str(Path(sys.executable).parent / "keel"), "events", parent_id, "--tree"], cwd=ROOT, capture_output=True,
                             text=True, env={**worker_env, "KEEL_PORT": str(service.port)})
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    started = next(i for i, line in enumerate(lines) if "child_started" in line)
    assert f"ask_probe starts child run {child_id} (agent probe)" in lines[started]
    child_line = lines[started + 1]
    assert "run_started" in child_line and "agent probe" in child_line
    assert child_line.index("#") == lines[started].index("#") + 2  # the child's timeline, indented under the call
    assert any(line.index("#") == child_line.index("#") and "pay(" in line for line in lines[started + 1:])
    assert any(line.split()[2] == "child_finished" and "succeeded" in line for line in lines if len(line.split()) > 2)
    for run_id in (parent_id, child_id):
        report = (await api.post(f"/v1/runs/{run_id}/replay")).json()
        assert report["same"] is True, report

    async with httpx.AsyncClient(base_url=service.url, timeout=30) as browser:
        await log_in(browser, api_keys["admin"])
        parent_page = (await browser.get(f"/console/runs/{parent_id}")).text
        child_page = (await browser.get(f"/console/runs/{child_id}")).text
    assert 'id="child-runs"' in parent_page and f'href="/console/runs/{quote(child_id)}"' in parent_page
    assert "Parent run" in child_page and f'href="/console/runs/{parent_id}"' in child_page


async def test_a_killed_worker_makes_the_childs_effect_once_and_starts_no_second_child(
        start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    call = json.dumps({"customer_id": customer, "amount_cents": 700, "seconds": 120})
    worker = start_worker("child-crash")
    async with worker.client() as api:
        parent_id = await start(api, "delegator", ask("ask_probe", f"call charge_then_wait with {call}"))
    await wait_for_row(db, "SELECT count(*) = 1 FROM sandbox.payments WHERE customer_id = %s", customer)  # the child charged and sleeps
    worker.kill()  # the parent and the child, in one process

    async with start_worker("child-crash").client() as api:
        parent = await wait_for_run(api, parent_id)
        report = (await api.post(f"/v1/runs/{parent_id}/replay")).json()
    assert parent["status"] == "succeeded", parent
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    children = await (await db.execute("SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s AND name = 'keel.agent_run'",
                                       (parent_id,))).fetchall()
    assert children == [(await child_of(db, parent_id),)]
    assert await fetch_value(db, "SELECT attempts FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_then_wait'", children[0][0]) == 2
    assert report["same"] is True, report


async def test_cancelling_the_parent_cancels_the_child_and_the_approval_it_waits_for(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    transfer = json.dumps({"customer_id": customer, "amount_cents": 900})
    parent_id = await start(api, "delegator", ask("ask_probe", f"call transfer with {transfer}"))
    child_id = await child_of(db, parent_id)
    approval = await wait_for_approval_of(api, child_id)
    assert approval["root_run_id"] == parent_id  # the inbox tells whose request it is, at the top

    assert (await api.post(f"/v1/runs/{parent_id}/cancel")).status_code == 200
    parent, child = await wait_for_run(api, parent_id), await wait_for_run(api, child_id)
    assert parent["status"] == child["status"] == "cancelled", (parent, child)
    assert (await api.get(f"/v1/approvals/{approval['approval_id']}")).json()["status"] == "cancelled"
    finished = await fetch_value(db, "SELECT payload FROM keel.events WHERE run_id = %s AND kind = 'run_finished'", child_id)
    assert finished["message"] == f"cancelled with its parent run {parent_id}"
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 0


async def child_of(db: psycopg.AsyncConnection, parent_id: str) -> str:
    """The child run the parent's one agent tool call started, from DBOS's own record of the parent's steps."""
    started = """SELECT child_workflow_id FROM dbos.operation_outputs
                 WHERE workflow_uuid = %s AND function_name = 'keel.agent_run' ORDER BY function_id LIMIT 1"""  # not its rollback, also a child
    await wait_for_row(db, started, parent_id)
    return await fetch_value(db, started, parent_id)


async def wait_for_approval_of(api: httpx.AsyncClient, run_id: str) -> dict:
    await wait_for_run_to_exist(api, run_id)
    return await wait_for_approval(api, run_id)


async def wait_for_run_to_exist(api: httpx.AsyncClient, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await api.get(f"/v1/runs/{run_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"no run {run_id}"
        await asyncio.sleep(0.05)


async def test_a_parent_that_fails_after_its_child_succeeded_refunds_the_childs_charge_once(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    text = ask("billing", f"Upgrade customer {customer} to the pro plan") + ' then call refuse with {"reason": "the parent changed its mind"}'
    parent_id = await start(api, "delegator", text)
    parent = await wait_for_run(api, parent_id)
    child = (await api.get(f"/v1/runs/{await child_of(db, parent_id)}")).json()

    assert (parent["status"], parent["reason"]) == ("compensated", "tool_failed"), parent
    assert (child["status"], child["reason"]) == ("compensated", "parent_rolled_back"), child
    assert [c["tool"] for c in parent["compensations"]] == ["billing"]
    charges = await (await db.execute("SELECT amount_cents, status FROM sandbox.payments WHERE customer_id = %s", (customer,))).fetchall()
    assert charges == [(4900, "refunded")]
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.refunds r JOIN sandbox.payments p USING (charge_id) WHERE p.customer_id = %s",
                             customer) == 1


async def test_a_child_that_spends_its_parents_token_budget_fails_the_parent_with_budget_exhausted(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    naps = " then ".join(['call nap with {"seconds": 0}'] * 5)
    parent_id = await start(api, "thrifty-delegator", ask("probe", naps))
    parent = await wait_for_run(api, parent_id)
    child_id = await child_of(db, parent_id)
    child = (await api.get(f"/v1/runs/{child_id}")).json()

    assert (child["status"], child["reason"]) == ("failed", "budget_exhausted"), child
    assert (parent["status"], parent["reason"]) == ("failed", "budget_exhausted"), parent
    assert f"child run {child_id} (probe) ended failed" in parent["error"]
    assert parent["tokens"] < 300 <= parent["tokens"] + child["tokens"]  # the child spent what was left
