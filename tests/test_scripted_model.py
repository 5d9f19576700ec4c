"""The scripted model over real HTTP (uvicorn in a thread), driven by the real openai client."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessage

from app.scripted_model import create_app

CUSTOMER = {
    "id": "C-42",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "plan": "basic",
    "plans": {"basic": {"price_cents": 0}, "pro": {"price_cents": 4900}, "enterprise": {"price_cents": 49900}},
}
BILLING_RESULTS: dict[str, Any] = {
    "lookup_customer": CUSTOMER,
    "create_ticket": {"ticket_id": "T-1", "status": "open"},
    "charge_customer": {"charge_id": "ch_001", "amount_cents": 4900, "status": "succeeded"},
    "update_plan": {"customer_id": "C-42", "plan": "pro"},
    "send_email": {"message_id": "m-1", "status": "sent"},
}
BILLING_TOOLS = [
    {"type": "function", "function": {"name": name, "description": name, "parameters": {"type": "object"}}}
    for name in BILLING_RESULTS
]
STRICT_TOOLS = [
    {"type": "function", "function": {"name": name, "strict": True,
                                      "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}
    for name in BILLING_RESULTS
]
UPGRADE = "Upgrade customer C-42 to the pro plan"


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with serve(create_app()) as url:
        yield url


@pytest.fixture(autouse=True)
def no_faults(root: str) -> Iterator[None]:
    httpx.delete(f"{root}/faults").raise_for_status()
    yield
    httpx.delete(f"{root}/faults").raise_for_status()


@pytest.fixture
async def model(root: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{root}/v1", api_key="offline", max_retries=0) as client:
        yield client


def add_fault(root: str, **body: Any) -> str:
    response = httpx.post(f"{root}/faults", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def pending_faults(root: str) -> list[dict[str, Any]]:
    return httpx.get(f"{root}/faults").json()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are Keel."}, {"role": "user", "content": text}]


async def ask(model: AsyncOpenAI, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> ChatCompletionMessage:
    extra = {"tools": tools} if tools else {}
    completion = await model.chat.completions.create(model="scripted", messages=messages, **extra)
    return completion.choices[0].message


def answer_with(messages: list[dict[str, Any]], message: ChatCompletionMessage, result: Any) -> list[dict[str, Any]]:
    """The conversation after `message` (one tool call) and Keel's JSON result for it."""
    assert message.tool_calls and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    return messages + [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]


def invalid_arguments_failure() -> dict[str, Any]:
    return {"error": {"kind": "invalid_arguments", "message": "customer_id: Field required"}}


async def test_lists_the_scripted_model(model: AsyncOpenAI) -> None:
    models = await model.models.list()
    assert [entry.id for entry in models.data] == ["scripted"]


async def test_billing_script_runs_every_step_then_reports(model: AsyncOpenAI) -> None:
    messages = user(UPGRADE)
    calls: list[tuple[str, dict[str, Any], str]] = []
    for _ in range(10):
        message = await ask(model, messages, BILLING_TOOLS)
        if not message.tool_calls:
            break
        call = message.tool_calls[0]
        calls.append((call.function.name, json.loads(call.function.arguments), call.id))
        messages = answer_with(messages, message, BILLING_RESULTS[call.function.name])
    assert calls == [
        ("lookup_customer", {"customer_id": "C-42"}, "call_0_0"),
        ("create_ticket", {"customer_id": "C-42", "subject": "Upgrade to pro plan"}, "call_1_0"),
        ("charge_customer", {"customer_id": "C-42", "amount_cents": 4900, "description": "Upgrade to pro plan"}, "call_2_0"),
        ("update_plan", {"customer_id": "C-42", "plan": "pro"}, "call_3_0"),
        ("send_email", {"to": "ada@example.com", "subject": "Your pro plan is active",
                        "body": "Your pro plan is now active; we charged 4900 cents (ticket T-1)."}, "call_4_0"),
    ]
    outcome = json.loads(message.content or "")
    assert {key: outcome[key] for key in ("customer_id", "plan", "ticket_id", "charge_id", "amount_cents")} == {
        "customer_id": "C-42", "plan": "pro", "ticket_id": "T-1", "charge_id": "ch_001", "amount_cents": 4900,
    }
    assert "pro" in outcome["summary"]


async def test_billing_gives_up_on_unknown_plan_failure_or_missing_tool(model: AsyncOpenAI) -> None:
    messages = user("upgrade customer C-42 to the platinum plan")
    first = await ask(model, messages, BILLING_TOOLS)
    unknown_plan = json.loads((await ask(model, answer_with(messages, first, CUSTOMER), BILLING_TOOLS)).content or "")
    assert unknown_plan["ticket_id"] is None and unknown_plan["amount_cents"] == 0
    assert unknown_plan["summary"].startswith("Could not complete: ") and "platinum" in unknown_plan["summary"]

    messages = user(UPGRADE)
    first = await ask(model, messages, BILLING_TOOLS)
    not_found = {"error": {"kind": "not_found", "message": "no customer C-42"}}
    failed = json.loads((await ask(model, answer_with(messages, first, not_found), BILLING_TOOLS)).content or "")
    assert failed["charge_id"] is None and "no customer C-42" in failed["summary"]

    without_tools = json.loads((await ask(model, user(UPGRADE), BILLING_TOOLS[1:])).content or "")
    assert without_tools["summary"] == "Could not complete: tool lookup_customer is not offered"


async def test_billing_reissues_a_call_rejected_as_invalid_arguments(model: AsyncOpenAI) -> None:
    messages = user(UPGRADE)
    first = await ask(model, messages, BILLING_TOOLS)
    messages = answer_with(messages, first, invalid_arguments_failure())
    again = await ask(model, messages, BILLING_TOOLS)
    assert again.tool_calls and again.tool_calls[0].function.name == "lookup_customer"
    assert json.loads(again.tool_calls[0].function.arguments) == {"customer_id": "C-42"}
    assert again.tool_calls[0].id == "call_1_0"


async def test_generic_script_calls_in_order_and_answers_the_last_result(model: AsyncOpenAI) -> None:
    messages = user('call fetch with {"url": "a then b"} then call store with {}')
    first = await ask(model, messages)
    assert first.tool_calls and (first.tool_calls[0].function.name, json.loads(first.tool_calls[0].function.arguments)) == (
        "fetch", {"url": "a then b"})
    messages = answer_with(messages, first, "page text")
    second = await ask(model, messages)
    messages = answer_with(messages, second, invalid_arguments_failure())
    retried = await ask(model, messages)
    assert retried.tool_calls and retried.tool_calls[0].function.name == "store"
    assert json.loads(retried.tool_calls[0].function.arguments) == {}
    final = await ask(model, answer_with(messages, retried, {"stored": [1, 2]}))
    assert not final.tool_calls and json.loads(final.content or "") == {"stored": [1, 2]}

    failure = {"error": {"kind": "timeout", "message": "took too long"}}
    messages = user('call fetch with {"url": "x"}')
    gave_up = await ask(model, answer_with(messages, await ask(model, messages), failure))
    assert json.loads(gave_up.content or "") == failure


async def test_say_and_fallback(model: AsyncOpenAI) -> None:
    assert (await ask(model, user("say Hello, world"))).content == "Hello, world"
    assert (await ask(model, user("what is the weather?"))).content == "I can only upgrade plans or call tools."


async def collect_stream(model: AsyncOpenAI, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Reassemble a streamed reply by hand, as Keel would from the raw chunks."""
    stream = await model.chat.completions.create(
        model="scripted", messages=messages, tools=tools, stream=True, stream_options={"include_usage": True})
    content, calls, finish, usage, deltas = "", {}, None, None, 0
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            deltas += 1
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["arguments"] += (call.function.arguments or "") if call.function else ""
    assert deltas >= 3, "role, content and finish arrive as separate deltas"
    return {"content": content or None, "tool_calls": [calls[index] for index in sorted(calls)],
            "finish_reason": finish, "usage": usage.model_dump() if usage else None}


async def test_streaming_and_non_streaming_give_the_same_reply(model: AsyncOpenAI) -> None:
    messages = user(UPGRADE)
    first = await ask(model, messages, BILLING_TOOLS)
    for conversation in (messages, answer_with(messages, first, CUSTOMER), user("say a fairly long sentence to split")):
        completion = await model.chat.completions.create(model="scripted", messages=conversation, tools=BILLING_TOOLS)
        message = completion.choices[0].message
        streamed = await collect_stream(model, conversation, BILLING_TOOLS)
        assert streamed == {
            "content": message.content,
            "tool_calls": [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                           for c in message.tool_calls or []],
            "finish_reason": completion.choices[0].finish_reason,
            "usage": completion.usage.model_dump() if completion.usage else None,
        }
        # The client's .stream() helper refuses non-strict function tools (it auto-parses arguments).
        async with model.chat.completions.stream(model="scripted", messages=conversation, tools=STRICT_TOOLS) as helper:
            final = await helper.get_final_completion()
        assert final.choices[0].message.content == message.content
        assert [c.function.arguments for c in final.choices[0].message.tool_calls or []] == [
            c.function.arguments for c in message.tool_calls or []]


async def test_same_conversation_gives_the_same_reply(model: AsyncOpenAI) -> None:
    messages = user(UPGRADE)
    first = await ask(model, messages, BILLING_TOOLS)
    conversation = answer_with(messages, first, CUSTOMER)
    replies = [await ask(model, conversation, BILLING_TOOLS) for _ in range(2)]
    assert replies[0].model_dump() == replies[1].model_dump()
    assert replies[0].tool_calls and replies[0].tool_calls[0].id == "call_1_0"


async def test_rate_limit_fault_exposes_retry_after(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=429, retry_after=2.5)
    with pytest.raises(openai.RateLimitError) as raised:
        await ask(model, user("say hi"))
    assert raised.value.response.headers["retry-after"] == "2.5"
    assert raised.value.status_code == 429
    assert (await ask(model, user("say hi"))).content == "hi"


async def test_server_error_fault_also_fails_streaming(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=503, times=2)
    with pytest.raises(openai.InternalServerError) as raised:
        await ask(model, user("say hi"))
    assert raised.value.status_code == 503 and "retry-after" not in raised.value.response.headers
    with pytest.raises(openai.InternalServerError):
        await collect_stream(model, user("say hi"), [])
    assert pending_faults(root) == []


async def test_delay_fault_holds_back_the_first_byte(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="delay", seconds=0.3, times=2)
    for stream in (False, True):
        started = time.monotonic()
        if stream:
            await collect_stream(model, user("say slow"), [])
        else:
            assert (await ask(model, user("say slow"))).content == "slow"
        assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await ask(model, user("say fast"))
    assert time.monotonic() - started < 0.3


async def test_hang_fault_sends_the_headers_then_nothing(root: str) -> None:
    add_fault(root, kind="hang", seconds=0.6, times=2)
    body = {"model": "scripted", "messages": user("say late")}
    async with httpx.AsyncClient(base_url=root, timeout=5) as client:
        for streamed in (True, False):  # a plain JSON reply is held back the same way
            started = time.monotonic()
            async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": streamed}) as response:
                headers_after = time.monotonic() - started
                text = (await response.aread()).decode()
            assert response.status_code == 200 and headers_after < 0.5
            assert time.monotonic() - started >= 0.6
            assert text.endswith("data: [DONE]\n\n") if streamed else json.loads(text)["choices"][0]["message"]["content"] == "late"
    assert pending_faults(root) == []


async def test_hang_fault_can_keep_the_connection_busy_with_comments(root: str, model: AsyncOpenAI) -> None:
    add_fault(root, kind="hang", seconds=0.8, keepalive=0.1)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=root, timeout=0.5) as client:  # no read ever waits 0.5 s
        response = await client.post("/v1/chat/completions", json={"model": "scripted", "messages": user("say late"), "stream": True})
    assert time.monotonic() - started >= 0.8
    assert response.text.startswith(": keepalive") and "data: [DONE]" in response.text


async def test_truncated_stream_ends_cleanly_without_finish_reason(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="truncated_stream", chunks=1)
    stream = await model.chat.completions.create(model="scripted", messages=user("say Customer C-42 is on the pro plan"), stream=True)
    chunks = [chunk async for chunk in stream]  # no error: as HTTP goes, the body is complete
    assert len(chunks) == 1 and chunks[0].choices[0].finish_reason is None
    assert (await ask(model, user("say Customer C-42 is on the pro plan"))).content == "Customer C-42 is on the pro plan"


async def test_cut_stream_can_drop_the_connection_after_one_chunk(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="cut_stream", chunks=1)
    stream = await model.chat.completions.create(model="scripted", messages=user("say hi there"), stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError) as cut:  # openai 3 wraps the transport's error mid-stream too
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 1
    assert "incomplete chunked read" in str(cut.value.__cause__)  # the server closed the connection mid-body


async def test_tool_call_faults_wait_for_a_tool_call(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="malformed_arguments")
    assert (await ask(model, user("say hi"))).content == "hi"
    assert [fault["kind"] for fault in pending_faults(root)] == ["malformed_arguments"]
    malformed = await ask(model, user(UPGRADE), BILLING_TOOLS)
    assert malformed.tool_calls and malformed.tool_calls[0].function.arguments == '{"customer_id": "C-42"'
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.tool_calls[0].function.arguments)

    add_fault(root, kind="invalid_arguments")
    invalid = await ask(model, user(UPGRADE), BILLING_TOOLS)
    assert invalid.tool_calls and json.loads(invalid.tool_calls[0].function.arguments) == {}
    recovered = await ask(model, answer_with(user(UPGRADE), invalid, invalid_arguments_failure()), BILLING_TOOLS)
    assert recovered.tool_calls and json.loads(recovered.tool_calls[0].function.arguments) == {"customer_id": "C-42"}

    add_fault(root, kind="unknown_tool")
    unknown = await ask(model, user(UPGRADE), BILLING_TOOLS)
    assert unknown.tool_calls and unknown.tool_calls[0].function.name == "no_such_tool"
    rejected = {"error": {"kind": "unknown_tool", "message": "no tool named no_such_tool"}}
    recovered = await ask(model, answer_with(user(UPGRADE), unknown, rejected), BILLING_TOOLS)
    assert recovered.tool_calls and recovered.tool_calls[0].function.name == "lookup_customer"


async def test_bad_final_fault_waits_for_a_final_answer(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="bad_final")
    assert (await ask(model, user(UPGRADE), BILLING_TOOLS)).tool_calls
    assert len(pending_faults(root)) == 1
    assert (await ask(model, user("say {}"))).content == "not json at all"
    assert (await ask(model, user("say {}"))).content == "{}"


async def test_match_scopes_a_fault_to_the_first_user_message(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=500, match="C-7")
    assert (await ask(model, user("say hi"))).content == "hi"
    later_mention = user("say hi") + [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "C-7?"}]
    assert (await ask(model, later_mention)).content == "hi"
    with pytest.raises(openai.InternalServerError):
        await ask(model, user("Upgrade customer C-7 to the pro plan"), BILLING_TOOLS)


async def statuses_of(model: AsyncOpenAI, requests: int) -> list[int]:
    """The HTTP status of each of `requests` identical chat requests."""
    statuses = []
    for _ in range(requests):
        try:
            await ask(model, user("say ok"))
            statuses.append(200)
        except openai.APIStatusError as error:
            statuses.append(error.status_code)
    return statuses


async def test_times_counts_down_and_earliest_fault_of_a_kind_goes_first(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=500, times=2)
    add_fault(root, kind="status", status=429)
    assert [fault["times"] for fault in pending_faults(root)] == [2, 1]
    assert await statuses_of(model, 4) == [500, 500, 429, 200]


async def test_after_lets_requests_pass_before_the_fault_applies(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=503, after=2)
    assert await statuses_of(model, 4) == [200, 200, 503, 200]


async def test_probability_draws_per_request_and_a_retry_draws_anew(model: AsyncOpenAI, root: str) -> None:
    add_fault(root, kind="status", status=503, probability=0.5, times=1000, match="coin")
    outcomes = []
    for i in range(40):
        for attempt in range(10):  # the same conversation again is a retry: it must get a new draw
            try:
                await ask(model, user(f"say coin {i}"))
                outcomes.append(attempt)
                break
            except openai.InternalServerError:
                continue
    httpx.delete(f"{root}/faults")
    assert len(outcomes) == 40
    assert 5 < sum(1 for attempts in outcomes if attempts > 0) < 35


async def test_fault_admin_validates_lists_and_clears(root: str) -> None:
    assert httpx.post(f"{root}/faults", json={"kind": "explode"}).status_code == 422
    assert httpx.post(f"{root}/faults", json={"kind": "status", "times": 0}).status_code == 422
    fault_id = add_fault(root, kind="delay", seconds=1.5, match="slow")
    assert pending_faults(root) == [{"id": fault_id, "kind": "delay", "match": "slow", "times": 1,
                                     "status": 429, "retry_after": None, "seconds": 1.5, "after": 0, "probability": 1.0,
                                     "chunks": None, "keepalive": 0.0, "passed": 0}]
    assert httpx.delete(f"{root}/faults").json() == {"cleared": 1}
    assert pending_faults(root) == []


async def test_bad_chat_body_gets_an_openai_error(model: AsyncOpenAI, root: str) -> None:
    for body in (b"{not json", json.dumps({"model": "scripted"}).encode()):
        response = httpx.post(f"{root}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert set(response.json()["error"]) >= {"message", "type", "code"}
    with pytest.raises(openai.BadRequestError):
        await model.chat.completions.create(model="scripted", messages=[])


async def test_mounted_apps_keep_their_own_faults() -> None:
    host = FastAPI()
    host.mount("/scripted", create_app())
    host.mount("/other", create_app())
    with serve(host) as url:
        add_fault(f"{url}/scripted", kind="status", status=500)
        async with AsyncOpenAI(base_url=f"{url}/other/v1", api_key="offline", max_retries=0) as other:
            assert (await ask(other, user("say unaffected"))).content == "unaffected"
        async with AsyncOpenAI(base_url=f"{url}/scripted/v1", api_key="offline", max_retries=0) as mounted:
            with pytest.raises(openai.InternalServerError):
                await ask(mounted, user("say hi"))
            assert (await ask(mounted, user("say hi"))).content == "hi"
