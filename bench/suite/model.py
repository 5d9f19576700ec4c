"""The one "model" every variant talks to: an in-process, OpenAI-compatible Chat Completions
endpoint behind an `httpx.MockTransport`, reached through the real `openai.AsyncOpenAI` client.

So every variant pays the same client cost (request building, JSON, response parsing) and no
variant pays for a model server's CPU on this 2-core machine. The script: the first user message
says `tools=N`; the model asks for one `work` tool call per turn until N tool results are in the
conversation (`per_turn=K` asks for K calls per turn), then answers `done`. `latency` seconds are slept (asyncio) before each reply."""

import asyncio
import json
import re
import time
from typing import Any

import httpx
from openai import AsyncOpenAI, OpenAI

TOOLS_IN_INPUT = re.compile(r"tools=(\d+)")
PER_TURN_IN_INPUT = re.compile(r"per_turn=(\d+)")
TOOL_SCHEMA = {"type": "function", "function": {
    "name": "work", "description": "Do one unit of work.",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer", "description": "Which unit."}}, "required": ["n"]}}}


class ScriptedModel:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls = 0
        self.asked = 0  # requests received, answered or not (a recovery workload's runs waiting in the model)
        self.first_turns_answered = 0  # replies to a conversation with no tool result yet (a recovered run's interrupted call)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.reply(request)

    def handle_sync(self, request: httpx.Request) -> httpx.Response:
        if self.latency:
            time.sleep(self.latency)
        return self.reply(request)

    def reply(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = json.loads(request.content)
        messages = body["messages"]
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        wanted = int(TOOLS_IN_INPUT.search(first_user).group(1))  # type: ignore[union-attr]
        done = sum(1 for m in messages if m["role"] == "tool")
        self.first_turns_answered += not done
        per_turn = int(m.group(1)) if (m := PER_TURN_IN_INPUT.search(first_user)) else 1
        if done < wanted:
            calls = range(done, min(wanted, done + per_turn))
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": "work", "arguments": json.dumps({"n": n})}} for n in calls]}
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": "done"}, "stop"
        usage = {"prompt_tokens": 10 * len(messages), "completion_tokens": 10, "total_tokens": 10 * len(messages) + 10}
        if body.get("stream"):  # Keel always streams (its live feed); the others ask for the whole reply
            return streamed(body["model"], message, finish, usage)
        return httpx.Response(200, json={
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage})

    def client(self) -> AsyncOpenAI:
        transport = httpx.MockTransport(self.handle)
        return AsyncOpenAI(base_url="http://scripted.bench/v1", api_key="bench", max_retries=0,
                           http_client=httpx.AsyncClient(transport=transport, base_url="http://scripted.bench/v1"))

    def sync_client(self) -> OpenAI:
        """The same endpoint for synchronous code (the raw DBOS sync variant)."""
        transport = httpx.MockTransport(self.handle_sync)
        return OpenAI(base_url="http://scripted.bench/v1", api_key="bench", max_retries=0,
                      http_client=httpx.Client(transport=transport, base_url="http://scripted.bench/v1"))


def streamed(model: str, message: dict[str, Any], finish: str, usage: dict[str, int]) -> httpx.Response:
    """The same reply as Server-Sent Events: one delta with the whole message, the finish, the usage."""
    delta = {**message, "tool_calls": [{"index": i, **call} for i, call in enumerate(message.get("tool_calls") or [])] or None}

    def chunk(choices: list[dict[str, Any]], with_usage: dict[str, int] | None = None) -> str:
        return "data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                                      "choices": choices, "usage": with_usage}) + "\n\n"

    body = (chunk([{"index": 0, "delta": delta, "finish_reason": None}]) + chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
            + chunk([], usage) + "data: [DONE]\n\n")
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def tool_result(n: int) -> dict[str, int]:
    """What the `work` tool returns, in every variant."""
    return {"n": n, "ok": 1}
