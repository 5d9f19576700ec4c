"""Handoffs: the model hands the conversation to another agent as it would call a tool, and the same
run goes on under that agent. The timeline records the handoff; the effects of both agents happen
once under SIGKILL, and a failure after the handoff undoes both agents' effects."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from app.demo.billing import billing
from steps.errors import UserError
from tests.conftest import fetch_value, wait_for_run
from tests.processes import ROOT, Worker
from tests.test_support_demo import charges
from workflows import Agent, tool


async def start(api: httpx.AsyncClient, customer: str) -> str:
    response = await api.post("/v1/runs", json={"agent": "front_desk", "input": f"Upgrade customer {customer} to the pro plan"})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def calls_made(db: psycopg.AsyncConnection, run_id: str) -> list[str]:
    rows = await (await db.execute("SELECT tool FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id", (run_id,))).fetchall()
    return [t for (t,) in rows]


async def test_the_front_desk_hands_the_conversation_to_billing_which_goes_on_where_it_left_off(
        api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, service: Worker, worker_env: dict[str, str]) -> None:
    run_id = await start(api, customer)
    run = await wait_for_run(api, run_id)
    events = (await api.get(f"/v1/runs/{run_id}/events")).json()

    assert run["status"] == "succeeded", run
    assert run["agent"] == "front_desk" and run["output"]["plan"] == "pro"
    handoffs = [e for e in events if e["kind"] == "handoff"]
    assert [(h["payload"], h["summary"]) for h in handoffs] == [
        ({"from": "front_desk", "to": "billing"}, "front_desk hands the conversation to billing")]
    requests = [e for e in events if e["kind"] == "llm_request"]
    assert [e["payload"]["agent"] for e in requests] == ["front_desk"] * 3 + ["billing"] * 4
    first_for_billing = requests[3]["payload"]["messages"]
    assert first_for_billing[0] == {"role": "system", "content": billing.system_prompt()}  # billing's instructions, and all that was said
    assert [m["role"] for m in first_for_billing[1:]] == ["user"] + ["assistant", "tool"] * 3
    # Billing did not look the customer up or open a ticket again: one conversation, one ledger.
    assert await calls_made(db, run_id) == ["lookup_customer", "create_ticket", "charge_customer", "update_plan", "send_email"]
    assert await charges(db, customer) == [(4900, "succeeded")]
    report = (await api.post(f"/v1/runs/{run_id}/replay")).json()
    assert report["same"] is True, report
    printed = subprocess.run([str(Path(sys.executable).parent / "keel"), "events", run_id], cwd=ROOT, capture_output=True, text=True,
                             env={**worker_env, "KEEL_PORT": str(service.port)})
    print(printed.stdout)
    assert printed.returncode == 0, printed.stderr
    assert [line.split(None, 3)[2:] for line in printed.stdout.splitlines() if "handoff" in line] == [
        ["handoff", "front_desk hands the conversation to billing"]]


async def test_a_worker_killed_after_the_handoff_recovers_under_billing_and_charges_once(
        start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    worker = start_worker("handoff-crash", KEEL_FAILPOINTS="tool.after_commit:charge_customer")
    async with worker.client() as api:
        run_id = await start(api, customer)
    assert worker.wait_for_exit() == -9
    recovering = start_worker("handoff-crash")
    async with recovering.client() as api:
        run = await wait_for_run(api, run_id)
        report = (await api.post(f"/v1/runs/{run_id}/replay")).json()
    recovering.stop()

    assert run["status"] == "succeeded", run
    assert report["same"] is True, report
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'handoff'", run_id) == 1
    assert await charges(db, customer) == [(4900, "succeeded")]
    assert await fetch_value(db, "SELECT attempts FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'", run_id) == 1


async def test_a_failure_after_the_handoff_undoes_both_agents_effects(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "mail", "kind": "reject", "match": f"{customer.lower()}@example.com"})
    run = await wait_for_run(api, await start(api, customer))

    assert (run["status"], run["reason"]) == ("compensated", "tool_failed"), run
    assert await charges(db, customer) == [(4900, "refunded")]  # billing's charge
    assert await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "basic"  # billing's plan change
    assert await fetch_value(db, "SELECT status FROM sandbox.tickets WHERE customer_id = %s", customer) == "closed"  # the front desk's ticket


@tool
async def shout(text: str) -> str:
    """Say it loudly.

    Args:
        text: What to say.
    """
    return text.upper()


def test_a_handoff_must_answer_like_the_agent_that_hands_off_and_reach_one_tool_per_name() -> None:
    with pytest.raises(UserError, match="a run has one answer, and they answer with text and Resolution"):
        Agent("hands-off-to-typed", instructions="x", handoffs=[billing])
    loud = Agent("loud", instructions="x", tools=[shout])

    @tool(name="shout")
    async def whisper(text: str) -> str:
        """Say it softly.

        Args:
            text: What to say.
        """
        return text.lower()

    with pytest.raises(UserError, match="reaches two different tools named 'shout'"):
        Agent("quiet", instructions="x", tools=[whisper], handoffs=[loud])
    with pytest.raises(UserError, match="a tool has that name"):
        Agent("named-like-a-handoff", instructions="x", tools=[tool(shout.function, name="transfer_to_loud")], handoffs=[loud])
    offered = Agent("offers-loud", instructions="x", handoffs=[loud]).tool_schemas
    assert offered == [{"type": "function", "function": {"name": "transfer_to_loud", "description": "Hand the conversation to the loud agent: x",
                                                         "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}]
