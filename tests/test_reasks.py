"""Every re-ask leaves a trace: when the model is asked again (malformed arguments, an unknown tool,
an invalid final answer, a tool's `AskModel`), the timeline shows a `reask` event with the problem
and how many re-asks are left, recorded with the model call that carries the problem back."""

import httpx
import psycopg
import pytest

from tests.conftest import wait_for_run

PROBLEMS = {
    "invalid_arguments": "invalid arguments for charge_customer",
    "malformed_arguments": "the arguments are not valid JSON",
    "unknown_tool": "there is no tool named 'no_such_tool'",
    "bad_final": "the final answer does not match the schema",
}


async def reask_events(db: psycopg.AsyncConnection, run_id: str) -> list[dict]:
    cursor = await db.execute(
        """SELECT t.step_id, t.summary, t.payload FROM keel.timeline t WHERE t.run_id = %s AND t.kind = 'reask' ORDER BY t.seq""", (run_id,))
    return [{"step_id": step_id, "summary": summary, **payload} for step_id, summary, payload in await cursor.fetchall()]


@pytest.mark.parametrize("fault", PROBLEMS)
async def test_each_reask_is_an_event_with_its_problem_and_the_count_left(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, fault: str
) -> None:
    await model.post("/faults", json={"kind": fault, "match": customer, "after": 0 if fault == "bad_final" else 2})

    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"])

    assert run["status"] == "succeeded", run
    [reask] = await reask_events(db, run["run_id"])
    [problem] = reask["problems"]
    assert problem["problem"].startswith(PROBLEMS[fault])
    assert (problem["tool_call_id"] is None) == (fault == "bad_final")
    assert reask["reasks_left"] == 2  # billing allows 3
    assert reask["summary"] == f"asked again: {problem['problem']} (2 re-ask(s) left)"
    request_step = await (await db.execute(
        "SELECT step_id FROM keel.events WHERE run_id = %s AND kind = 'llm_request' AND payload ->> 'turn' = %s",
        (run["run_id"], str(reask["turn"])))).fetchone()
    assert request_step[0] == reask["step_id"]  # the re-ask is the model call that took the problem back


async def test_a_tools_ask_model_is_a_reask(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "probe", "input": 'call square with {"n": -1}'})).json()["run_id"])

    [reask] = await reask_events(db, run["run_id"])
    assert reask["problems"][0]["problem"] == "n must not be negative" and reask["reasks_left"] == 1  # probe allows 2
    assert run["status"] == "succeeded"  # the scripted model gives up politely


async def test_every_reask_is_recorded_until_the_last_one_ends_the_run(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    text = 'call square with {"n": 7}'
    await model.post("/faults", json={"kind": "invalid_arguments", "match": text, "times": 3})

    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "probe", "input": text})).json()["run_id"])

    assert (run["status"], run["reason"]) == ("failed", "invalid_model_output")  # the third was one too many
    assert [r["reasks_left"] for r in await reask_events(db, run["run_id"])] == [1, 0]
