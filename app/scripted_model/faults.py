"""In-memory fault registry of one scripted-model app, and how reply-shaping faults alter a reply.

A fault applies to a request when its `match` is null or a substring of the conversation's
FIRST user message. Each use decrements `times`; at zero the fault is gone. Per request at most
one fault of each kind is used: the earliest registered one that applies.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.scripted_model.planner import Reply

UNKNOWN_TOOL_NAME = "no_such_tool"
BAD_FINAL_CONTENT = "not json at all"


class FaultKind(StrEnum):
    STATUS = "status"
    DELAY = "delay"
    MALFORMED_ARGUMENTS = "malformed_arguments"
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    BAD_FINAL = "bad_final"
    CUT_STREAM = "cut_stream"
    """A streamed reply breaks off: the connection drops after some of its chunks (`chunks`, default half)."""
    TRUNCATED_STREAM = "truncated_stream"
    """A streamed reply ends early but cleanly, as far as HTTP goes: after `chunks` chunks (default
    half) the body is closed properly, with no `finish_reason` and no `[DONE]`."""
    HANG = "hang"
    """The reply's headers go out, then nothing for `seconds` (an SSE comment every `keepalive`
    seconds, if set), then the reply: a server that accepted the request and stopped answering."""


class FaultSpec(BaseModel):
    """Body of `POST /faults`."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    match: str | None = None
    times: int = Field(default=1, ge=1)
    status: int = Field(default=429, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    seconds: float = Field(default=0, ge=0)
    after: int = Field(default=0, ge=0, description="Let this many applicable requests pass first")
    probability: float = Field(default=1.0, gt=0, le=1, description="Apply to this share of requests, drawn per request")
    chunks: int | None = Field(default=None, ge=0, description="cut_stream, truncated_stream: chunks sent before the cut (default half)")
    keepalive: float = Field(default=0, ge=0, description="hang: seconds between SSE comments while it hangs (0: none)")


@dataclass(frozen=True)
class Fault:
    id: str
    spec: FaultSpec
    remaining: int
    passed: int = 0

    def applies_to(self, first_user_text: str, draw: float) -> bool:
        return (self.spec.match is None or self.spec.match in first_user_text) and draw < self.spec.probability

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec.model_dump(mode="json"), "times": self.remaining, "passed": self.passed}


class FaultRegistry:
    def __init__(self) -> None:
        # Handlers never await while holding it; the lock only guards against threaded callers.
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._registered = 0
        self._seen: Counter[bytes] = Counter()

    def draw(self, messages: list[dict[str, Any]]) -> float:
        """A number in [0, 1) for this request, reproducible: it depends only on the conversation
        and on how many times the same conversation was sent before (so a retry draws anew)."""
        state = json.dumps(messages, sort_keys=True)
        seen_key = hashlib.sha256(state.encode()).digest()  # a digest, not the conversation: the server runs for long
        with self._lock:
            self._seen[seen_key] += 1
            occurrence = self._seen[seen_key]
        digest = hashlib.sha256(f"{state}|{occurrence}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def add(self, spec: FaultSpec) -> Fault:
        with self._lock:
            self._registered += 1
            fault = Fault(id=f"fault_{self._registered}", spec=spec, remaining=spec.times)
            self._faults.append(fault)
            return fault

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def claim(self, kind: FaultKind, first_user_text: str, draw: float = 0.0) -> Fault | None:
        """Use one application of the earliest applicable fault of `kind`, if any."""
        with self._lock:
            for position, fault in enumerate(self._faults):
                if fault.spec.kind is kind and fault.applies_to(first_user_text, draw):
                    if fault.passed < fault.spec.after:
                        self._faults[position] = replace(fault, passed=fault.passed + 1)
                        return None
                    used = replace(fault, remaining=fault.remaining - 1)
                    if used.remaining > 0:
                        self._faults[position] = used
                    else:
                        del self._faults[position]
                    return used
            return None


@dataclass(frozen=True)
class OutgoingToolCall:
    """A tool call as sent on the wire: arguments are JSON text, which a fault may break."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class OutgoingReply:
    content: str | None
    tool_calls: tuple[OutgoingToolCall, ...]


def shape_reply(reply: Reply, faults: FaultRegistry, first_user_text: str) -> OutgoingReply:
    """Apply reply-shaping faults; each is consumed only by a reply it can affect."""
    calls = [OutgoingToolCall(call.id, call.name, json.dumps(call.arguments)) for call in reply.tool_calls]
    content = reply.content
    if calls:
        if faults.claim(FaultKind.UNKNOWN_TOOL, first_user_text):
            calls = [replace(call, name=UNKNOWN_TOOL_NAME) for call in calls]
        if faults.claim(FaultKind.INVALID_ARGUMENTS, first_user_text):
            calls = [replace(call, arguments="{}") for call in calls]
        if faults.claim(FaultKind.MALFORMED_ARGUMENTS, first_user_text):
            calls = [replace(call, arguments=call.arguments[:-1]) for call in calls]
    elif faults.claim(FaultKind.BAD_FINAL, first_user_text):
        content = BAD_FINAL_CONTENT
    return OutgoingReply(content=content, tool_calls=tuple(calls))
