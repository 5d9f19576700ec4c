"""The billing demo, end to end through the HTTP API: every effect lands once, as SQL shows."""

import httpx
import psycopg
import pytest

from tests.conftest import BILLING_AGENTS, fetch_value, wait_for_run

TURNS = {"billing_openai_agents": 7}  # its triage agent's turn hands the conversation to the billing specialist

pytestmark = pytest.mark.smoke  # CI runs it on the embedded PostgreSQL too


@pytest.mark.parametrize("agent", BILLING_AGENTS)
async def test_upgrade_to_pro_charges_once_and_changes_the_plan(agent: str, api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    response = await api.post("/v1/runs", json={"agent": agent, "input": f"Upgrade customer {customer} to the pro plan"})
    assert response.status_code == 202
    run_id = response.json()["run_id"]

    run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded", run
    assert run["output"]["plan"] == "pro"
    assert run["output"]["amount_cents"] == 4900
    assert run["turns"] == TURNS.get(agent, 6)
    assert await fetch_value(db, "SELECT plan FROM sandbox.customers WHERE id = %s", customer) == "pro"
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE customer_id = %s", customer) == 1
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.plan_changes WHERE customer_id = %s", customer) == 1
    assert await fetch_value(db, "SELECT sum(amount_cents) FROM sandbox.payments WHERE customer_id = %s", customer) == 4900
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.emails WHERE recipient = %s", f"{customer.lower()}@example.com") == 1
    assert await fetch_value(db, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id) == "SUCCESS"
    streamed = await fetch_value(db, """SELECT string_agg(value::jsonb ->> 'token', '' ORDER BY "offset") FROM dbos.streams
                                        WHERE workflow_uuid = %s AND value::jsonb ? 'token'""", run_id)
    assert '"amount_cents": 4900' in streamed  # the final answer reached the live feed as it was written
    ledger = await (await db.execute(
        "SELECT tool, status, attempts FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id", (run_id,))).fetchall()
    assert ledger == [
        ("lookup_customer", "succeeded", 1),
        ("create_ticket", "succeeded", 1),
        ("charge_customer", "succeeded", 1),
        ("update_plan", "succeeded", 1),
        ("send_email", "succeeded", 1),
    ]


async def test_the_run_is_readable_json_in_dbos_tables(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    response = await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
    run_id = response.json()["run_id"]
    await wait_for_run(api, run_id)

    agent = await fetch_value(db, "SELECT inputs::jsonb -> 'positionalArgs' -> 0 ->> 'agent' FROM dbos.workflow_input WHERE workflow_uuid = %s", run_id)
    charged = await fetch_value(db, """SELECT output::jsonb -> 'result' ->> 'amount_cents' FROM dbos.operation_outputs
                                       WHERE workflow_uuid = %s AND function_name = 'keel.tool_call'
                                       AND output::jsonb -> 'result' ? 'charge_id'""", run_id)
    assert (agent, charged) == ("billing", "4900")


async def test_runs_are_listed_with_filters_and_pages(api: httpx.AsyncClient, customer: str) -> None:
    ids = []
    for _ in range(3):
        response = await api.post("/v1/runs", json={"agent": "probe", "input": "say hello"})
        ids.append(response.json()["run_id"])
    for run_id in ids:
        await wait_for_run(api, run_id)

    first = (await api.get("/v1/runs", params={"agent": "probe", "limit": 2})).json()
    second = (await api.get("/v1/runs", params={"agent": "probe", "limit": 2, "cursor": first["next_cursor"]})).json()
    failed = (await api.get("/v1/runs", params={"agent": "probe", "status": "failed"})).json()
    ours = sorted((run["created_at"], run["run_id"]) for run in first["runs"] + second["runs"] if run["run_id"] in ids)
    window = (await api.get("/v1/runs", params={"agent": "probe", "created_after": ours[0][0], "created_before": ours[-1][0]})).json()

    listed = [run["run_id"] for run in first["runs"] + second["runs"]]
    assert {run["run_id"] for run in window["runs"]} == {run_id for _, run_id in ours[:-1]}  # the upper bound is exclusive
    assert set(ids) <= set(listed) and len(listed) == len(set(listed))
    assert all(run["status"] == "succeeded" and run["output"] == "hello" for run in first["runs"])
    assert not set(ids) & {run["run_id"] for run in failed["runs"]}
