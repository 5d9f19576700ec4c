"""Retries that understand errors: Retry-After is honoured, long waits are durable sleeps that survive
SIGKILL, hung calls time out and are retried."""

from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_row, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_retry_after_is_honoured(api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await model.post("/faults", json={"kind": "status", "status": 429, "retry_after": 2, "match": customer})

    run = await wait_for_run(api, await start(api, "billing", f"Upgrade customer {customer} to the pro plan"))

    assert run["status"] == "succeeded"
    wait = await fetch_value(db, "SELECT (payload ->> 'wait')::float FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"])
    assert wait >= 2.0
    first_response = await (await db.execute(
        """SELECT extract(epoch FROM (SELECT min(created_at) FROM keel.events WHERE run_id = %(r)s AND kind = 'llm_response')
                                   - (SELECT min(created_at) FROM keel.events WHERE run_id = %(r)s AND kind = 'retry'))""",
        {"r": run["run_id"]})).fetchone()
    assert float(first_response[0]) >= 2.0  # the next attempt went out no earlier than Retry-After said


async def test_a_long_retry_after_is_a_durable_sleep(api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    await model.post("/faults", json={"kind": "status", "status": 429, "retry_after": 1.5, "match": "say parked once"})

    run = await wait_for_run(api, await start(api, "patient", "say parked once"))

    assert run["status"] == "succeeded" and run["output"] == "parked once"
    parked = await fetch_value(db, "SELECT payload FROM keel.events WHERE run_id = %s AND kind = 'parked'", run["run_id"])
    assert parked["seconds"] == 1.5 and parked["waiting_for"] == "model"
    assert await fetch_value(db, "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = %s AND function_name = 'DBOS.sleep'", run["run_id"]) == 1


async def test_a_worker_killed_during_a_durable_wait_resumes_at_the_same_deadline(
    start_worker: Callable[..., Worker], model: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    await model.post("/faults", json={"kind": "status", "status": 503, "retry_after": 4, "match": "say wait for me"})
    worker = start_worker("park-crash")
    async with worker.client() as own:
        run_id = await start(own, "patient", "say wait for me")
    await wait_for_row(db, "SELECT 1 FROM dbos.operation_outputs WHERE workflow_uuid = %s AND function_name = 'DBOS.sleep'", run_id)
    deadline_query = "SELECT output::float FROM dbos.operation_outputs WHERE workflow_uuid = %s AND function_name = 'DBOS.sleep'"
    deadline = await fetch_value(db, deadline_query, run_id)

    worker.kill()
    worker = start_worker("park-crash")
    async with worker.client() as own:
        run = await wait_for_run(own, run_id)

    assert run["status"] == "succeeded"
    assert await fetch_value(db, deadline_query, run_id) == deadline
    completed = await fetch_value(db, "SELECT completed_at FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id)
    assert completed / 1000 >= deadline  # it slept until the original deadline, not a new one


async def test_a_hung_model_call_times_out_and_is_retried(api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    await model.post("/faults", json={"kind": "delay", "seconds": 3, "match": "say after the hang"})

    run = await wait_for_run(api, await start(api, "patient", "say after the hang"))

    assert run["status"] == "succeeded"
    error = await fetch_value(db, "SELECT payload -> 'error' FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"])
    assert error["kind"] == "transient" and "within 1 s" in error["message"]  # the agent's model_timeout, not KEEL_MODEL_TIMEOUT
