"""Transient failures are retried (each attempt an event); every run that stops says why."""

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, agent: str, text: str) -> dict:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return await wait_for_run(api, response.json()["run_id"])


async def test_rate_limited_model_calls_are_retried_after_retry_after(api, model, db: psycopg.AsyncConnection, customer: str) -> None:
    await model.post("/faults", json={"kind": "status", "status": 429, "retry_after": 0.2, "match": customer, "times": 2})

    run = await start(api, "billing", f"Upgrade customer {customer} to the pro plan")

    assert run["status"] == "succeeded", run
    retries = await (await db.execute(
        "SELECT attempt, payload -> 'error' ->> 'status', (payload ->> 'wait')::float FROM keel.events WHERE run_id = %s AND kind = 'retry' ORDER BY attempt",
        (run["run_id"],))).fetchall()
    assert [(attempt, status) for attempt, status, _ in retries] == [(1, "429"), (2, "429")]
    assert all(wait >= 0.2 for _, _, wait in retries)  # Retry-After honoured
    assert await fetch_value(db, "SELECT payload ->> 'attempts' FROM keel.events WHERE run_id = %s AND kind = 'llm_response' ORDER BY id LIMIT 1", run["run_id"]) == "3"


async def test_a_model_that_stays_down_fails_the_run_with_retries_exhausted(api, model, customer: str) -> None:
    await model.post("/faults", json={"kind": "status", "status": 503, "retry_after": 0, "match": customer, "times": 10})

    run = await start(api, "billing", f"Upgrade customer {customer} to the pro plan")

    assert (run["status"], run["reason"]) == ("failed", "retries_exhausted")
    assert "model call failed" in run["error"]


async def test_a_model_that_refuses_the_request_fails_the_run_without_retrying(api, model, db, customer: str) -> None:
    await model.post("/faults", json={"kind": "status", "status": 400, "match": customer})

    run = await start(api, "billing", f"Upgrade customer {customer} to the pro plan")

    assert (run["status"], run["reason"]) == ("failed", "model_failed")
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"]) == 0


async def test_transient_tool_failures_are_retried_in_the_step(api, db) -> None:
    run = await start(api, "probe", 'call flaky with {"succeed_on": 3}')

    assert run["status"] == "succeeded", run
    assert run["output"] == '{"attempt": 3}'
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"]) == 2


async def test_a_tool_out_of_retries_fails_the_run(api) -> None:
    run = await start(api, "probe", 'call flaky with {"succeed_on": 9}')

    assert (run["status"], run["reason"]) == ("failed", "retries_exhausted")
    assert "flaky" in run["error"]


async def test_a_permanent_tool_error_fails_the_run(api, db) -> None:
    run = await start(api, "probe", 'call refuse with {"reason": "card declined"}')

    assert (run["status"], run["reason"]) == ("failed", "tool_failed")
    assert "card declined" in run["error"]
    assert await fetch_value(db, "SELECT status FROM keel.tool_calls WHERE run_id = %s", run["run_id"]) == "failed"


async def test_ask_model_goes_back_to_the_model(api) -> None:
    run = await start(api, "probe", 'call square with {"n": -2}')

    assert run["status"] == "succeeded"
    assert "must not be negative" in run["output"]


async def test_a_run_without_a_final_answer_stops_at_max_turns(api) -> None:
    calls = " then ".join(['call square with {"n": 2}'] * 7)

    run = await start(api, "probe", calls)

    assert (run["status"], run["reason"]) == ("failed", "max_turns_exceeded")
    assert run["turns"] == 6


async def test_a_run_that_fails_as_expected_is_one_line_in_the_log_not_a_traceback(api, service: Worker) -> None:
    run = await start(api, "probe", 'call refuse with {"reason": "card declined for the log test"}')

    assert (run["status"], run["reason"]) == ("failed", "tool_failed")
    log = service.log.read_text()
    [line] = [line for line in log.splitlines() if run["run_id"] in line and "failed" in line]
    assert "WARNING" in line and f"run {run['run_id']} failed (tool_failed): tool refuse failed: card declined for the log test" in line
    assert "steps.errors.RunFailed: tool_failed: tool refuse failed: card declined for the log test" not in log  # no traceback
