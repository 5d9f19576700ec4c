"""The LLM step: one Chat Completions call through the `openai` client, retried by Keel's policy.

`app` configures the client at start-up (with `max_retries=0`: the client's own retries would hide
attempts from Keel's policy, its events and its budgets)."""

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dbos import DBOS
from openai import AsyncOpenAI, AsyncStream
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from steps import breaker, events, failpoints, ratelimit, stream, tracing
from steps.retry import OUTAGE_RETRIES, AttemptFailed, Failure, IncompleteReply, RetryPolicy, retrying

T = TypeVar("T")

# USD per million tokens (input, output); a model not listed costs 0. Override with configure(prices=).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "scripted": (1.0, 4.0),
}


@dataclass
class _Config:
    client: AsyncOpenAI | None = None
    default_model: str = "gpt-4.1-mini"
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    stream_tokens: bool = True
    timeout: float = 60.0


_config = _Config()


def configure(client: AsyncOpenAI | None, *, default_model: str | None = None,
              prices: dict[str, tuple[float, float]] | None = None, stream_tokens: bool = True,
              timeout: float | None = None) -> None:
    """Set the client, the model for agents that name none, extra model prices, whether model
    output goes to the runs' live feeds as it arrives, and the timeout of a model call for agents
    that set none."""
    _config.client = client
    _config.stream_tokens = stream_tokens
    _config.default_model = default_model or _config.default_model
    _config.prices = {**DEFAULT_PRICES, **(prices or {})}
    _config.timeout = timeout or _config.timeout


def client() -> AsyncOpenAI:
    if _config.client is None:
        raise RuntimeError("steps.llm is not configured: call steps.llm.configure(client) at start-up")
    return _config.client


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    price_in, price_out = _config.prices.get(model, (0.0, 0.0))
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 8)


@dataclass(frozen=True, kw_only=True)
class ModelRequest:
    model: str | None
    """None: the configured default model."""
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    turn: int
    already_sent: int
    """How many of `messages` earlier turns sent; only the rest goes into the event."""
    retry: RetryPolicy
    timeout: float | None = None
    """Seconds one attempt may take, the whole stream included; None: the configured default."""
    deadline: float | None = None
    """Epoch seconds after which the run's wall-clock budget refuses the call."""
    label: str | None = None
    """Who asks, when a run holds several agents (an Agents SDK handoff's target): in the `llm_request` event."""
    reasks: list[dict[str, Any]] = field(default_factory=list)
    """Why the model is asked again (`{"problem", "tool_call_id"}` each): its last reply was malformed,
    named an unknown tool, or a tool said so (`AskModel`). Recorded as this call's `reask` event."""
    reasks_left: int = 0


@DBOS.step(name="keel.llm", **OUTAGE_RETRIES)
async def llm_step(request: ModelRequest, first_attempt: int = 1) -> dict[str, Any]:
    """Ask the model for the next message; returns `{"ok": ...}`, never raises."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "llm_step runs inside a workflow"
    model = request.model or _config.default_model
    timeout = request.timeout or _config.timeout
    if request.deadline is not None and time.time() > request.deadline:
        return {"ok": False, "error": {"kind": "budget", "type": "BudgetExceeded", "message": "the run's wall-clock budget is spent"}}
    dependency = f"model:{client().base_url}"
    if request.reasks and first_attempt == 1:  # a call continued after a durable wait was re-asked already
        await events.record(run_id, step_id, "reask", {"turn": request.turn, "problems": request.reasks, "reasks_left": request.reasks_left})
    asked = {"model": model, "turn": request.turn, "messages": request.messages[request.already_sent:]}
    await events.record(run_id, step_id, "llm_request", {**asked, "agent": request.label} if request.label else asked, attempt=first_attempt)
    failpoints.hit(f"llm.before_request:{request.turn}")

    async def attempt(number: int) -> tuple[ChatCompletion, float, int]:
        async def breaker_changed(state: str) -> None:
            await events.record(run_id, step_id, f"breaker_{state}", {"dependency": dependency}, attempt=number)

        async def rate_limited(waited: float, limit: str) -> None:
            await events.record(run_id, step_id, "rate_limited", {"endpoint": endpoint, "limit": limit, "waited": waited}, attempt=number)

        endpoint = f"{client().base_url}#{model}"
        async with breaker.guard(dependency, breaker_changed), ratelimit.slot(
                endpoint, run_id=run_id, max_wait=request.retry.max_delay, on_wait=rate_limited, timeout=timeout):
            started = time.monotonic()
            completion = await bounded(timeout, streamed(TokenFeed(run_id, step_id, number) if _config.stream_tokens else None,
                                                         model=model, messages=request.messages, timeout=timeout,
                                                         **({"tools": request.tools} if request.tools else {})))
        return completion, time.monotonic() - started, number

    async def on_retry(number: int, failure: Failure, wait: float) -> None:
        await events.record(run_id, step_id, "retry", {"model": model, "error": failure.as_dict(), "wait": wait}, attempt=number)

    try:
        completion, latency, attempts = await retrying(request.retry, attempt, on_retry, first=first_attempt)
    except AttemptFailed as failed:
        outcome = failed.outcome(request.retry)
        await events.record(run_id, step_id, "llm_error", {"model": model, "turn": request.turn, **outcome}, attempt=failed.attempt)
        tracing.model_called(run_id, request.turn, model, {"attempts": failed.attempt, **outcome})
        return outcome
    choice = completion.choices[0]
    usage = completion.usage
    prompt_tokens, completion_tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    response = {
        "model": completion.model,
        "turn": request.turn,
        "finish_reason": choice.finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost_usd": cost_usd(model, prompt_tokens, completion_tokens),
        "latency_ms": round(latency * 1000),
        "attempts": attempts,
    }
    await events.record(run_id, step_id, "llm_response", response)
    tracing.model_called(run_id, request.turn, model, {**response, "id": completion.id})
    return {"ok": True, "message": assistant_message(choice.message.content, choice.message.tool_calls), "usage": response}


async def bounded(timeout: float, call: Awaitable[T]) -> T:
    """`call`, given up after `timeout` seconds in all. The client's own timeout bounds each read,
    so a server that trickles bytes (keep-alive comments, a token a minute) would never trip it."""
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError as exc:
        raise TimeoutError(f"no complete reply from the model within {timeout:g} s") from exc


async def streamed(feed: "TokenFeed | None", **create: Any) -> ChatCompletion:
    """One completion, streamed: its text goes to the run's live feed as it arrives.

    A stream that ends without a finish reason was cut off (a proxy or the provider closed it
    early): it raises `IncompleteReply`, a transient failure, never returns what arrived."""
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    # The request is posted as it is: `chat.completions.create` would first walk every message of the
    # conversation with its typed transform, on every call (docs/benchmarks.md, the profile), and
    # Keel's messages are plain JSON already.
    timeout = create.pop("timeout")
    chunks = await client().post("/chat/completions", cast_to=ChatCompletion, stream=True, stream_cls=AsyncStream[ChatCompletionChunk],
                                 body={"stream": True, "stream_options": {"include_usage": True}, **create},
                                 options={"timeout": timeout, "security": {"bearer_auth": True}})
    finished = False
    try:
        async with chunks:
            async for chunk in chunks:
                state.handle_chunk(chunk)
                finished = finished or any(choice.finish_reason for choice in chunk.choices)
                if feed and chunk.choices and chunk.choices[0].delta.content:
                    await feed.add(chunk.choices[0].delta.content)
    finally:  # a broken stream's output is published too: readers see it, then the attempt's `retry` event
        if feed:
            await feed.flush()
    if not finished:
        raise IncompleteReply("the model's stream ended without a finish reason")
    return state.get_final_completion()


@dataclass
class TokenFeed:
    """Model output for the live feed, in pieces of at most `interval` seconds (a row per token would
    cost a write per token). A failed attempt's pieces stay; its `retry` event tells readers to drop them."""

    run_id: str
    step_id: int
    attempt: int
    interval: float = 0.1
    pending: list[str] = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)

    async def add(self, text: str) -> None:
        self.pending.append(text)
        if time.monotonic() - self.flushed_at >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await stream.publish_tokens(self.run_id, self.step_id, self.attempt, "".join(self.pending))
            self.pending.clear()
        self.flushed_at = time.monotonic()


def assistant_message(content: str | None, tool_calls: list[Any] | None) -> dict[str, Any]:
    """The reply as plain JSON, ready to be sent back in the next request."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
            for call in tool_calls
        ]
    return message
