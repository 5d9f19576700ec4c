"""OpenAI-compatible HTTP surface of the scripted model (Chat Completions + fault admin).

Routes are relative so the app works standalone and mounted (the main service mounts it at
`/scripted`). Each app instance owns its fault registry in `app.state.faults`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.scripted_model.faults import FaultKind, FaultRegistry, FaultSpec, OutgoingReply, shape_reply
from app.scripted_model.planner import first_user_text, message_text, next_reply

MODEL_ID = "scripted"
REQUEST_LOG_SIZE = 10_000
# Small pieces so clients really have to reassemble content and arguments from many deltas.
CONTENT_PIECE_CHARS = 8
ARGUMENTS_PIECE_CHARS = 10


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None


def create_app() -> FastAPI:
    app = FastAPI(title="Keel scripted model", description="Offline, deterministic OpenAI-compatible model.")
    app.state.faults = FaultRegistry()
    faults: FaultRegistry = app.state.faults
    # Every chat request as this server saw it: arrival and end (epoch seconds on its clock), for
    # checking rate and concurrency limits from the provider's side.
    requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        entry: dict[str, Any] = {"started": time.time(), "finished": None, "first_user": "", "status": None}
        requests.append(entry)
        response = await answer(request, entry)
        entry["status"] = response.status_code
        if isinstance(response, StreamingResponse):
            response.body_iterator = _finishing(response.body_iterator, entry)
        else:
            entry["finished"] = time.time()
        return response

    @app.get("/requests")
    async def request_log(match: str | None = None) -> list[dict[str, Any]]:
        """The chat requests received (the last 10,000), oldest first; `match` filters on the first user message."""
        return [entry for entry in requests if match is None or match in entry["first_user"]]

    async def answer(request: Request, entry: dict[str, Any]) -> Response:
        try:
            chat = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as error:
            return openai_error(400, _describe_validation_error(error), "invalid_request_error", "invalid_request")
        messages = [message.model_dump() for message in chat.messages]
        first_user = first_user_text(messages)
        entry["first_user"] = first_user
        delay = faults.claim(FaultKind.DELAY, first_user)
        if delay is not None:
            await asyncio.sleep(delay.spec.seconds)
        status = faults.claim(FaultKind.STATUS, first_user, faults.draw(messages))
        if status is not None:
            return _status_fault_response(status.spec)
        reply = shape_reply(next_reply(messages, chat.tools or []), faults, first_user)
        completion = _CompletionEnvelope(chat.model, _usage(messages, reply))
        hang = faults.claim(FaultKind.HANG, first_user)
        if chat.stream:
            include_usage = bool((chat.stream_options or {}).get("include_usage"))
            cut = faults.claim(FaultKind.CUT_STREAM, first_user)
            truncated = faults.claim(FaultKind.TRUNCATED_STREAM, first_user)
            events = _sse_events(list(completion.chunks(reply, include_usage)), cut=cut and cut.spec, truncated=truncated and truncated.spec)
            if hang is not None:
                events = _after_hang(hang.spec, ": keepalive\n\n", events)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if hang is not None:
            return StreamingResponse(_after_hang(hang.spec, " ", _one(json.dumps(completion.body(reply)))), media_type="application/json")
        return JSONResponse(completion.body(reply))

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "keel"}]}

    @app.post("/faults", status_code=201)
    async def add_fault(spec: FaultSpec) -> dict[str, str]:
        return {"id": faults.add(spec).id}

    @app.get("/faults")
    async def list_faults() -> list[dict[str, Any]]:
        return [fault.describe() for fault in faults.pending()]

    @app.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        return {"cleared": faults.clear()}

    return app


async def _finishing(chunks: AsyncIterator[Any], entry: dict[str, Any]) -> AsyncIterator[Any]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        entry["finished"] = time.time()


def openai_error(status: int, message: str, error_type: str, code: str | None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _status_fault_response(spec: FaultSpec) -> JSONResponse:
    headers = {"Retry-After": f"{spec.retry_after:g}"} if spec.retry_after is not None else None
    if spec.status == 429:
        error_type, code = "requests", "rate_limit_exceeded"
    elif spec.status >= 500:
        error_type, code = "server_error", "server_error"
    else:
        error_type, code = "invalid_request_error", "scripted_fault"
    return openai_error(spec.status, f"Scripted fault: HTTP {spec.status}", error_type, code, headers)


def _describe_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    return f"Invalid request body: {location}: {first['msg']}"


def _usage(messages: list[dict[str, Any]], reply: OutgoingReply) -> dict[str, int]:
    prompt_chars = sum(len(message_text(message)) for message in messages)
    completion_chars = len(reply.content or "") + sum(len(call.name) + len(call.arguments) for call in reply.tool_calls)
    prompt_tokens, completion_tokens = prompt_chars // 4 + 1, completion_chars // 4 + 1
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class _CompletionEnvelope:
    """Fields shared by the `chat.completion` body and every `chat.completion.chunk` of one reply."""

    def __init__(self, model: str, usage: dict[str, int]) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.usage = usage

    def body(self, reply: OutgoingReply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in reply.tool_calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply)}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": self.usage, "system_fingerprint": None}

    def chunks(self, reply: OutgoingReply, include_usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                    "model": self.model, "system_fingerprint": None, "choices": [choice]}
            if include_usage:
                body["usage"] = None
            return body

        yield chunk({"role": "assistant", "content": "" if reply.content is not None else None, "refusal": None})
        for piece in _pieces(reply.content or "", CONTENT_PIECE_CHARS):
            yield chunk({"content": piece})
        for index, call in enumerate(reply.tool_calls):
            opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            yield chunk({"tool_calls": [opening]})
            for piece in _pieces(call.arguments, ARGUMENTS_PIECE_CHARS):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, _finish_reason(reply))
        if include_usage:
            yield {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                   "system_fingerprint": None, "choices": [], "usage": self.usage}


async def _sse_events(chunks: list[dict[str, Any]], *, cut: FaultSpec | None = None,
                      truncated: FaultSpec | None = None) -> AsyncIterator[str]:
    broken = cut or truncated
    if broken is not None:
        chunks = chunks[: len(chunks) // 2 if broken.chunks is None else broken.chunks]
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n"
    if cut:
        await asyncio.sleep(0.05)  # let the client read what was sent before the connection drops
        raise ConnectionAbortedError("scripted fault: the stream was cut")
    if truncated:
        return  # the body ends properly: only the missing finish_reason and [DONE] tell
    yield "data: [DONE]\n\n"


async def _after_hang(spec: FaultSpec, filler: str, body: AsyncIterator[str]) -> AsyncIterator[str]:
    """`body`, once `spec.seconds` have passed with nothing but `filler` every `spec.keepalive` seconds.
    The headers are already out: StreamingResponse sends them before it asks for the first piece."""
    deadline = time.monotonic() + spec.seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, spec.keepalive) if spec.keepalive else left)
        if spec.keepalive and time.monotonic() < deadline:
            yield filler
    async for piece in body:
        yield piece


async def _one(text: str) -> AsyncIterator[str]:
    yield text


def _finish_reason(reply: OutgoingReply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start:start + size]
