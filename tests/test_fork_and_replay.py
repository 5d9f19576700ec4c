"""Fork a run from a step (earlier effects are not repeated), and replay a run against its recorded
outputs to see whether the current code makes the same decisions."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from app.demo.billing import Resolution, billing
from steps.tools import ApprovalPolicy
from tests.conftest import BILLING_AGENTS, fetch_value, wait_for_approval, wait_for_run
from tests.processes import ROOT, Worker
from workflows import Agent, Tool, replay_run


async def upgrade(api: httpx.AsyncClient, customer: str, plan: str = "pro", agent: str = "billing") -> dict:
    response = await api.post("/v1/runs", json={"agent": agent, "input": f"Upgrade customer {customer} to the {plan} plan"})
    return await wait_for_run(api, response.json()["run_id"])


async def step_of(db: psycopg.AsyncConnection, run_id: str, tool: str) -> int:
    return await fetch_value(db, "SELECT step_id FROM keel.events WHERE run_id = %s AND kind = 'tool_call' AND payload ->> 'tool' = %s", run_id, tool)


async def effects(db: psycopg.AsyncConnection, customer: str) -> tuple:
    return await (await db.execute(
        """SELECT (SELECT count(*) FROM sandbox.tickets WHERE customer_id = %(c)s), (SELECT count(*) FROM sandbox.payments WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.plan_changes WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.emails WHERE recipient = lower(%(c)s) || '@example.com')""", {"c": customer})).fetchone()


async def test_a_fork_reuses_the_steps_before_its_fork_point(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    original = await upgrade(api, customer)
    from_step = await step_of(db, original["run_id"], "update_plan")

    response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": from_step, "model": "scripted-2"})
    fork = await wait_for_run(api, response.json()["run_id"])

    assert response.status_code == 202
    assert fork["status"] == "succeeded" and fork["forked_from"] == original["run_id"]
    assert await effects(db, customer) == (1, 1, 1, 1)  # ticket and charge copied; plan change and email reused, not repeated
    calls = await (await db.execute("SELECT tool, reused_from FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id", (fork["run_id"],))).fetchall()
    assert calls == [("update_plan", f"{original['run_id']}:{from_step}"), ("send_email", f"{original['run_id']}:{from_step + 2}")]
    summaries = await (await db.execute("SELECT summary FROM keel.timeline WHERE run_id = %s AND kind = 'tool_result' ORDER BY seq",
                                        (fork["run_id"],))).fetchall()
    assert summaries[0][0] == f"update_plan ok (reused from {original['run_id']}:{from_step})"
    models = await (await db.execute("SELECT DISTINCT payload ->> 'model' FROM keel.events WHERE run_id = %s AND kind = 'llm_request'", (fork["run_id"],))).fetchall()
    assert models == [("scripted-2",)]


async def test_a_fork_asked_to_redo_effects_makes_them_again(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    original = await upgrade(api, customer)
    from_step = await step_of(db, original["run_id"], "update_plan")

    response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": from_step, "redo_effects": True})
    fork = await wait_for_run(api, response.json()["run_id"])

    assert fork["status"] == "succeeded"
    assert await effects(db, customer) == (1, 1, 2, 2)  # plan change and email made again, as asked
    assert await fetch_value(db, "SELECT count(*) FROM keel.tool_calls WHERE run_id = %s AND reused_from IS NULL", fork["run_id"]) == 2


async def test_a_failed_fork_undoes_only_its_own_effects_never_the_reused_ones(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    original = await upgrade(api, customer)
    await model.post("/faults", json={"kind": "bad_final", "match": customer, "times": 10})  # the fork's final answers are refused

    response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": await step_of(db, original["run_id"], "charge_customer")})
    fork = await wait_for_run(api, response.json()["run_id"])

    assert (fork["status"], fork["reason"]) == ("failed", "invalid_model_output")
    assert fork["compensations"] == []  # the charge, plan change and email it reused are the origin's, and stand
    refunds = await fetch_value(db, "SELECT count(*) FROM sandbox.refunds r JOIN sandbox.payments p USING (charge_id) WHERE p.customer_id = %s", customer)
    assert refunds == 0 and await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "pro"


async def approved_enterprise_upgrade(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> tuple[dict, dict[str, int]]:
    """A run whose $499 charge a person approved, and the step IDs of its approval request, its wait and the charge."""
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    approval = await wait_for_approval(api, run_id)
    await api.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve", "comment": "ok once"})
    run = await wait_for_run(api, run_id)
    steps = dict(await (await db.execute(
        "SELECT function_name, min(function_id) FROM dbos.operation_outputs WHERE workflow_uuid = %s GROUP BY function_name", (run_id,))).fetchall())
    charge = await step_of(db, run_id, "charge_customer")
    return run, {"request": steps["keel.approval_request"], "wait": steps["DBOS.sleep"], "charge": charge}


async def test_a_fork_of_an_approved_run_neither_charges_again_nor_spends_the_approval(
    api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    original, steps = await approved_enterprise_upgrade(api, db, customer)

    forks = []
    for from_step in (steps["wait"], steps["request"] - 1):  # mid-approval (`keel fork RUN --from-step 9`), and before it
        response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": from_step})
        forks.append(await wait_for_run(api, response.json()["run_id"]))

    assert original["status"] == "succeeded" and [fork["status"] for fork in forks] == ["succeeded", "succeeded"]
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1  # $499 once
    assert await effects(db, customer) == (1, 1, 1, 1)
    for fork in forks:
        reused = await fetch_value(db, "SELECT reused_from FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'", fork["run_id"])
        assert reused == f"{original['run_id']}:{steps['charge']}"
        assert await fetch_value(db, "SELECT count(*) FROM keel.approvals WHERE run_id = %s", fork["run_id"]) == 0  # nobody asked
    not_needed = await fetch_value(db, "SELECT summary FROM keel.timeline WHERE run_id = %s AND kind = 'approval_decided'", forks[1]["run_id"])
    assert not_needed == "not_needed"


async def test_a_fork_that_redoes_an_approved_effect_asks_for_approval_again(
    api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    original, steps = await approved_enterprise_upgrade(api, db, customer)

    response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": steps["charge"], "redo_effects": True})
    fork_id = response.json()["run_id"]
    approval = await wait_for_approval(api, fork_id)  # the origin's approval is copied, and not enough
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    await api.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve", "comment": "charge again"})
    fork = await wait_for_run(api, fork_id)

    assert approval["approval_id"].startswith(f"{fork_id}:approval:") and approval["tool"] == "charge_customer"
    assert fork["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 2  # asked for, and approved


async def test_a_fork_can_change_the_instructions(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    original = await upgrade(api, customer)

    response = await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": 2, "instructions": "Be brief."})
    fork = await wait_for_run(api, response.json()["run_id"])

    first = await fetch_value(db, "SELECT payload -> 'messages' -> 0 ->> 'content' FROM keel.events WHERE run_id = %s AND kind = 'llm_request' ORDER BY id LIMIT 1", fork["run_id"])
    assert first.startswith("Be brief.")
    assert fork["status"] == "succeeded"


async def test_a_fork_point_outside_the_run_is_refused(api: httpx.AsyncClient, customer: str) -> None:
    original = await upgrade(api, customer)
    assert (await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": 999})).status_code == 409  # past this run's steps
    assert (await api.post(f"/v1/runs/{original['run_id']}/fork", json={"from_step": 0})).status_code == 422  # not a step at all
    assert (await api.post("/v1/runs/nope/fork", json={"from_step": 1})).status_code == 404


STEPS = {"billing_openai_agents": 15}  # and its handoff: a model call and an event more


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_replaying_an_unchanged_run_reports_no_divergence(agent: str, api: httpx.AsyncClient, customer: str, service: Worker, worker_env: dict) -> None:
    run = await upgrade(api, customer, agent=agent)

    report = (await api.post(f"/v1/runs/{run['run_id']}/replay")).json()
    printed = subprocess.run([str(Path(sys.executable).parent / "keel"), "replay", run["run_id"]], cwd=ROOT, capture_output=True, text=True,
                             env={**worker_env, "KEEL_PORT": str(service.port)})

    assert report["same"] is True and report["divergence"] is None
    assert report["replayed_outcome"] == report["recorded_outcome"]
    assert len(report["steps"]) == STEPS.get(agent, 13)
    assert printed.returncode == 0 and "same decisions" in printed.stdout


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_replaying_a_rolled_back_run_follows_its_rollback(agent: str, api: httpx.AsyncClient, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
    run = await upgrade(api, customer, agent=agent)

    report = (await api.post(f"/v1/runs/{run['run_id']}/replay")).json()

    assert run["status"] == "compensated"
    assert report["same"] is True, report
    assert report["steps"][-1]["operation"] == "rollback (tool_failed)"


async def test_replay_finds_the_first_step_a_code_change_would_break(api: httpx.AsyncClient, ledger_pool: AsyncConnectionPool, customer: str) -> None:
    run = await upgrade(api, customer)
    tools = [t for t in billing.tools.values()]
    stricter = Agent("billing-stricter", instructions=billing.instructions, output_type=Resolution,
                     tools=[*tools[:1], tool_needing_approval(tools[1]), *tools[2:]])
    report = await replay_run(run["run_id"], agent=stricter)

    assert report["same"] is False
    assert report["divergence"].startswith("step 5: the run recorded keel.tool_call, the code calls approval for create_ticket")


def tool_needing_approval(tool: Tool) -> Tool:
    return dataclasses.replace(tool, approval=ApprovalPolicy(required=True))
