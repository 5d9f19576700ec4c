"""The LLM step: one Chat Completions call through the `openai` client, retried by Keel's policy.

`app` configures the client at start-up (with `max_retries=0`: the client's own retries would hide
attempts from Keel's policy, its events and its budgets)."""

import time
from dataclasses import dataclass
from typing import Any

from dbos import DBOS
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from steps import events, failpoints
from steps.retry import Failure, RetryPolicy, classify, retrying

_client: AsyncOpenAI | None = None
_default_model = "gpt-4.1-mini"


def configure(client: AsyncOpenAI | None, *, default_model: str | None = None) -> None:
    """Set the client (and the model used by agents that name none)."""
    global _client, _default_model
    _client = client
    _default_model = default_model or _default_model


def client() -> AsyncOpenAI:
    if _client is None:
        raise RuntimeError("steps.llm is not configured: call steps.llm.configure(client) at start-up")
    return _client


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


@DBOS.step(name="keel.llm")
async def llm_step(request: ModelRequest) -> dict[str, Any]:
    """Ask the model for the next message; returns `{"ok": ...}`, never raises."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "llm_step runs inside a workflow"
    model = request.model or _default_model
    new_messages = request.messages[request.already_sent:]
    await events.record(run_id, step_id, "llm_request", {"model": model, "turn": request.turn, "messages": new_messages})
    failpoints.hit(f"llm.before_request:{request.turn}")

    async def attempt(number: int) -> tuple[ChatCompletion, float, int]:
        started = time.monotonic()
        completion = await client().chat.completions.create(
            model=model, messages=request.messages, **({"tools": request.tools} if request.tools else {})
        )
        return completion, time.monotonic() - started, number

    async def on_retry(number: int, failure: Failure, wait: float) -> None:
        await events.record(run_id, step_id, "retry", {"model": model, "error": failure.as_dict(), "wait": wait}, attempt=number)

    try:
        completion, latency, attempts = await retrying(request.retry, attempt, on_retry)
    except Exception as exc:  # a failed call is a value in durable state, not an exception
        failure = classify(exc)
        await events.record(run_id, step_id, "llm_error", {"model": model, "turn": request.turn, "error": failure.as_dict()})
        return {"ok": False, "error": failure.as_dict()}
    choice = completion.choices[0]
    message = assistant_message(choice.message.content, choice.message.tool_calls)
    usage = completion.usage
    response = {
        "model": completion.model,
        "turn": request.turn,
        "finish_reason": choice.finish_reason,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
        "latency_ms": round(latency * 1000),
        "attempts": attempts,
    }
    await events.record(run_id, step_id, "llm_response", response)
    return {"ok": True, "message": message, "usage": response}


def assistant_message(content: str | None, tool_calls: list[Any] | None) -> dict[str, Any]:
    """The reply as plain JSON, ready to be sent back in the next request."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
            for call in tool_calls
        ]
    return message
