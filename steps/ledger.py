"""Exactly-once tool calls: the ledger `keel.tool_calls` and the durable tool step.

For each attempt of a call, under its idempotency key:
1. the intent is committed (a row in `started`, attempts + 1) before anything else happens;
2. in one transaction that holds the row's lock: a key already `succeeded` returns its recorded
   result; an intent left without outcome by an earlier attempt (crash, lost response) asks the
   tool's `reconcile` first; otherwise the tool runs, and its outcome is written in the same
   transaction as any write the tool made through `ctx.db`.
So an effect in Keel's database happens exactly once; an external effect is deduplicated by the
key the tool sends as `Idempotency-Key` (or found by `reconcile`); and a completed key is never run
again, across retries, crashes, recoveries and forks."""

import asyncio
from dataclasses import dataclass
from typing import Any

from dbos import DBOS
from psycopg.types.json import Jsonb

from steps import breaker, db, events, failpoints, ids
from steps.fork_reuse import fork_reply
from steps.retry import OUTAGE_RETRIES, AttemptFailed, Failure, retrying
from steps.tools import Tool, ToolContext, provided

RECORD_INTENT = """
WITH previous AS (SELECT status FROM keel.tool_calls WHERE idempotency_key = %(key)s)
INSERT INTO keel.tool_calls AS c (idempotency_key, run_id, step_id, tool, tool_call_id, arguments, status)
VALUES (%(key)s, %(run_id)s, %(step_id)s, %(tool)s, %(tool_call_id)s, %(arguments)s, 'started')
ON CONFLICT (idempotency_key) DO UPDATE
SET attempts = c.attempts + (c.status <> 'succeeded')::int,
    status = CASE WHEN c.status = 'succeeded' THEN 'succeeded' ELSE 'started' END,
    updated_at = now()
RETURNING c.status, c.result, c.attempts, (SELECT status FROM previous) AS previous_status
"""
LOCK = "SELECT status, result FROM keel.tool_calls WHERE idempotency_key = %s FOR UPDATE"
SUCCEED = """
UPDATE keel.tool_calls
SET status = 'succeeded', result = %s, reconciled = %s, error = NULL, updated_at = now(), completed_at = now()
WHERE idempotency_key = %s
"""
FAIL = """
UPDATE keel.tool_calls
SET status = CASE WHEN %s THEN 'started' ELSE 'failed' END, error = %s, updated_at = now()
WHERE idempotency_key = %s AND status <> 'succeeded'
"""


@dataclass(frozen=True)
class Outcome:
    result: Any
    attempts: int
    deduplicated: bool = False
    reconciled: bool = False

    def summary(self, key: str) -> dict[str, Any]:
        return {"idempotency_key": key, "attempts": self.attempts, "deduplicated": self.deduplicated, "reconciled": self.reconciled}


@DBOS.step(name="keel.tool_call", **OUTAGE_RETRIES)
async def tool_call_step(tool: Tool, arguments: dict[str, Any], tool_call_id: str, key: str | None = None,
                         first_attempt: int = 1, *, origin: str | None = None, origin_approved: bool = False) -> dict[str, Any]:
    """One tool call, retried by the tool's policy; returns `{"ok": ...}`, never raises.

    The idempotency key is `key` if given, else the tool's business key, else `<run_id>:<step_id>`
    (a call continued after a durable wait passes its first key, so the key never changes). A fork's
    call passes its `origin` (whose outcome it reuses for the same call) and whether its approval
    was the origin's (`steps.fork_reuse`)."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "tool_call_step runs inside a workflow"
    continued = key is not None
    key = key or tool.business_key(arguments) or ids.ledger_key(run_id, step_id)
    if not continued and (origin or origin_approved) and (reply := await fork_reply(
            origin=origin, origin_approved=origin_approved, run_id=run_id, step_id=step_id, key=key, tool=tool,
            tool_call_id=tool_call_id, arguments=arguments)):
        return reply
    call = Call(tool=tool, key=key, run_id=run_id, step_id=step_id, tool_call_id=tool_call_id, arguments=arguments)

    async def on_retry(attempt: int, failure: Failure, wait: float) -> None:
        await events.record(run_id, step_id, "retry", {"tool": tool.name, "error": failure.as_dict(), "wait": wait}, attempt=attempt)

    try:
        outcome = await retrying(tool.retry, call.attempt, on_retry, first=first_attempt)
    except AttemptFailed as failed:  # a failed call is a value in durable state, not an exception
        await call.record_failure(failed.failure)
        reply = {**failed.outcome(tool.retry), "idempotency_key": key}
        await events.record(run_id, step_id, "tool_result", {"tool": tool.name, **reply}, attempt=failed.attempt)
        return reply
    summary = outcome.summary(key)
    if outcome.deduplicated:  # an executed call recorded its result with its outcome
        await events.record(run_id, step_id, "tool_result", {"tool": tool.name, "ok": True, **summary})
    return {"ok": True, "result": outcome.result, **summary}


@dataclass(frozen=True, kw_only=True)
class Call:
    tool: Tool
    key: str
    run_id: str
    step_id: int
    tool_call_id: str
    arguments: dict[str, Any]

    async def attempt(self, number: int) -> Outcome:
        status, result, attempts, previous = await self._record_intent()
        if status == "succeeded":
            return Outcome(result, attempts, deduplicated=True)

        async def breaker_changed(state: str) -> None:
            await events.record(self.run_id, self.step_id, f"breaker_{state}", {"dependency": self.tool.dependency}, attempt=number)

        # The breaker uses connections of its own, taken before and after this one, never while holding it.
        async with breaker.guard(self.tool.dependency, breaker_changed):
            async with db.pool().connection() as conn, conn.transaction():
                status, result = await (await conn.execute(LOCK, (self.key,))).fetchone()
                if status == "succeeded":  # another attempt finished while we waited for the lock
                    return Outcome(result, attempts, deduplicated=True)
                ctx = ToolContext(run_id=self.run_id, tool_call_id=self.tool_call_id, idempotency_key=self.key, attempt=attempts, db=conn,
                                  deps=provided(self.tool.deps_type))
                async with asyncio.timeout(self.tool.timeout):
                    found = await self.tool.reconciled(ctx) if previous == "started" else None
                    value = found if found is not None else await self.tool.invoke(ctx, self.arguments)
                outcome = Outcome(value, attempts, reconciled=found is not None)
                await conn.execute(SUCCEED, (Jsonb(value), outcome.reconciled, self.key))
                await events.record(self.run_id, self.step_id, "tool_result", {"tool": self.tool.name, "ok": True, **outcome.summary(self.key)},
                                    conn=conn)
        failpoints.hit(f"tool.after_commit:{self.tool.name}")
        return outcome

    async def _record_intent(self) -> tuple[str, Any, int, str | None]:
        params = {"key": self.key, "run_id": self.run_id, "step_id": self.step_id, "tool": self.tool.name,
                  "tool_call_id": self.tool_call_id, "arguments": Jsonb(self.arguments)}
        async with db.pool().connection() as conn, conn.transaction():  # the intent and the `tool_call` event commit together
            row = await (await conn.execute(RECORD_INTENT, params)).fetchone()
            await events.record(self.run_id, self.step_id, "tool_call", {"tool": self.tool.name, "idempotency_key": self.key,
                                                                         "arguments": self.arguments}, conn=conn)
        assert row is not None
        return row[0], row[1], row[2], row[3]

    async def record_failure(self, failure: Failure) -> None:
        """A permanent failure closes the intent. Any other leaves it open: an earlier attempt's effect
        may have happened (a lost response), so the next attempt asks `reconcile` first."""
        keep_open = failure.kind not in ("permanent", "ask_model")
        async with db.pool().connection() as conn:
            await conn.execute(FAIL, (keep_open, Jsonb(failure.as_dict()), self.key))
