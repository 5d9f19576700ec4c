"""A model call never hangs and never accepts a cut-off answer: every call is bounded by a timeout
(`KEEL_MODEL_TIMEOUT` unless the agent sets its own), the whole stream included, and a stream that
ends without a finish reason is a failed attempt. Both are transient: retried, with a `retry` event.
The model is the scripted server, over real HTTP, with its faults."""

import uuid
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker
from tests.test_live_stream import follow, model_output


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_a_reply_that_never_comes_times_out_by_default_and_is_retried(
    start_worker: Callable[..., Worker], model: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    # Headers, then nothing for a minute; or only SSE comments, so that no single read waits long.
    texts = {keepalive: f"after the hang {uuid.uuid4().hex[:8]}" for keepalive in (0, 0.3)}
    for keepalive, text in texts.items():
        await model.post("/faults", json={"kind": "hang", "seconds": 60, "keepalive": keepalive, "match": text})
    worker = start_worker("model-timeout", KEEL_MODEL_TIMEOUT="2")

    async with worker.client() as api:  # `probe` sets no model_timeout of its own
        run_ids = [await start(api, "probe", f"say {text}") for text in texts.values()]
        runs = [await wait_for_run(api, run_id, timeout=30) for run_id in run_ids]

    for run, text in zip(runs, texts.values(), strict=True):
        assert run["status"] == "succeeded" and run["output"] == text
        retry = await fetch_value(db, "SELECT payload FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"])
        assert retry["error"]["kind"] == "transient" and "within 2 s" in retry["error"]["message"]
        waited = await fetch_value(db, """SELECT extract(epoch FROM max(created_at) FILTER (WHERE kind = 'retry')
                                                                  - min(created_at) FILTER (WHERE kind = 'llm_request'))
                                          FROM keel.events WHERE run_id = %s""", run["run_id"])
        assert 2 <= float(waited) < 10  # given up after KEEL_MODEL_TIMEOUT, not after the server's minute


async def test_a_stream_cut_after_one_chunk_is_a_failed_attempt_not_an_answer(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    # The role chunk and "Customer", then the body ends cleanly: no finish_reason, no [DONE].
    text = f"Customer C-42 is on the pro plan {uuid.uuid4().hex[:8]}"
    await model.post("/faults", json={"kind": "truncated_stream", "chunks": 2, "match": text})

    run_id = await start(api, "probe", f"say {text}")
    messages = await follow(api, run_id)
    run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded" and run["output"] == text
    retry = await fetch_value(db, "SELECT payload FROM keel.events WHERE run_id = %s AND kind = 'retry'", run_id)
    assert retry["error"]["kind"] == "transient" and "finish reason" in retry["error"]["message"]
    step_id = await fetch_value(db, "SELECT step_id FROM keel.events WHERE run_id = %s AND kind = 'retry'", run_id)
    cut_tokens = [m.data["text"] for m in messages if m.event == "token" and m.data["attempt"] == 1 and m.data["step_id"] == step_id]
    assert cut_tokens == ["Customer"]  # streamed live, then dropped by the attempt's `retry` event:
    assert model_output(messages, step_id) == text
    responses = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'llm_response'", run_id)
    assert responses == 1  # the cut reply was never recorded as a response


async def test_a_stream_that_keeps_being_cut_fails_the_run_with_retries_exhausted(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection
) -> None:
    text = f"never whole {uuid.uuid4().hex[:8]}"
    await model.post("/faults", json={"kind": "truncated_stream", "chunks": 2, "match": text, "times": 10})

    run = await wait_for_run(api, await start(api, "probe", f"say {text}"))

    assert (run["status"], run["reason"]) == ("failed", "retries_exhausted")
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"]) == 3
