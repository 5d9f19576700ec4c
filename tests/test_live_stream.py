"""`GET /v1/runs/{id}/stream`: the timeline and model output as Server-Sent Events, from the run's DBOS stream."""

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run


@dataclass(frozen=True)
class Message:
    id: str | None
    event: str
    data: Any


async def follow(api: httpx.AsyncClient, run_id: str, *, last_event_id: str | None = None, stop_after: int | None = None) -> list[Message]:
    """Read the stream until its `end` (or until `stop_after` messages, then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    messages: list[Message] = []
    fields: dict[str, str] = {}
    async with api.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue  # a keep-alive comment
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                messages.append(Message(fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])))
            fields = {}
            if messages and (messages[-1].event == "end" or len(messages) == stop_after):
                break
    return messages


def model_output(messages: list[Message], step_id: int) -> str:
    """What a client shows as the model's reply at `step_id`: its tokens, without those of failed attempts."""
    failed = {m.data["attempt"] for m in messages if m.event in ("retry", "llm_error") and m.data["step_id"] == step_id}
    return "".join(m.data["text"] for m in messages if m.event == "token" and m.data["step_id"] == step_id and m.data["attempt"] not in failed)


async def test_the_stream_carries_the_whole_timeline_then_ends(api: httpx.AsyncClient, customer: str) -> None:
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"]

    messages = await follow(api, run_id)
    timeline = (await api.get(f"/v1/runs/{run_id}/events")).json()

    events = [m for m in messages if m.event not in ("token", "end")]
    assert [m.event for m in events] == [event["kind"] for event in timeline]
    assert [m.data["summary"] for m in events] == [event["summary"] for event in timeline]
    ids = [int(m.id) for m in messages if m.id is not None]
    assert ids == sorted(set(ids)) and len(ids) == len(messages) - 1
    assert messages[-1] == Message(None, "end", {"status": "succeeded", "reason": None})
    final_step = [m for m in events if m.event == "llm_response"][-1].data["step_id"]
    assert json.loads(model_output(messages, final_step))["plan"] == "pro"  # the final answer, as it was streamed


async def test_a_client_that_reconnects_with_last_event_id_misses_nothing_and_sees_nothing_twice(api: httpx.AsyncClient, customer: str) -> None:
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"]

    first = await follow(api, run_id, stop_after=4)
    rest = await follow(api, run_id, last_event_id=first[-1].id)
    whole = await follow(api, run_id)  # the run has ended: the whole stream, from the start

    assert len(first) == 4
    assert first + rest == whole


async def test_output_of_a_failed_attempt_is_marked_for_the_client_to_drop(api: httpx.AsyncClient, model: httpx.AsyncClient,
                                                                          db: psycopg.AsyncConnection) -> None:
    text = f"a reply that streams in pieces {uuid.uuid4().hex}"
    await model.post("/faults", json={"kind": "cut_stream", "match": text})
    run_id = (await api.post("/v1/runs", json={"agent": "probe", "input": f"say {text}"})).json()["run_id"]

    messages = await follow(api, run_id)
    run = await wait_for_run(api, run_id)

    retry = next(m for m in messages if m.event == "retry")
    failed_tokens = [m for m in messages if m.event == "token" and m.data["attempt"] == retry.data["attempt"]]
    assert failed_tokens, "the broken attempt's output was streamed before it broke"
    assert messages.index(failed_tokens[-1]) < messages.index(retry)
    assert model_output(messages, retry.data["step_id"]) == text == run["output"]
    assert await fetch_value(db, "SELECT count(*) FROM dbos.streams WHERE workflow_uuid = %s AND key = 'keel'", run_id) == len(messages) - 1


async def test_an_unknown_run_is_404_before_any_stream(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/runs/no-such-run/stream")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
