"""Exactly-once tool calls: the ledger `keel.tool_calls` and the durable tool step.

For each attempt of a call, under its idempotency key:
1. a key's first attempt inserts its intent (a row in `started`, under a lease of ours) and the
   `tool_call` event in one statement; a later attempt does so in a short transaction that locks
   the row: a key already `succeeded` returns its recorded result; a key under
   another attempt's live lease is waited for; otherwise the attempt takes the lease (an owner, a
   fencing token one higher than the last, an expiry);
2. the tool runs holding no connection (a heartbeat renews the lease while it runs); an intent left
   without outcome by an earlier attempt (crash, lost response) asks the tool's `reconcile` first;
3. one statement writes the outcome (with the `tool_result` event) only if the lease is still
   this attempt's (`WHERE lease_token = <mine>`). A tool that writes through `ctx.db` opens that
   transaction on first use, after checking the lease and locking the row, and its writes commit
   with the outcome. An attempt that lost its lease (paused past its expiry while another took
   over) writes nothing and returns the recorded outcome.
So an effect in Keel's database happens exactly once; an external effect is deduplicated by the
key the tool sends as `Idempotency-Key` (or found by `reconcile`); and a completed key is never run
again, across retries, crashes, recoveries and forks. A running tool holds a connection only while
it uses `ctx.db`, so a worker runs as many tools at once as it has tasks, not pool connections."""

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from dbos import DBOS
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from steps import breaker, db, events, failpoints, ids, stream, tracing
from steps.fork_reuse import fork_reply
from steps.retry import OUTAGE_RETRIES, AttemptFailed, Failure, retrying
from steps.tools import Tool, ToolContext, ToolDatabase, provided

LEASE_SECONDS = 30.0
"""How long a claim holds a key unrenewed; a tool with a shorter timeout holds it for that timeout
plus `LEASE_SLACK`. So a key whose worker died is free again at most this long after."""
LEASE_SLACK = 5.0
INCARNATION = uuid.uuid4().hex
"""This process among those that ever ran under its executor ID: the lease owner is
`<executor ID>/<incarnation>`. An executor ID is held by one live process at a time (`ExecutorClaim`),
so a lease of an earlier incarnation of this executor is a dead process's and is taken over at once."""

STATE = """
SELECT status, result, attempts, lease_owner, coalesce(lease_expires_at > now(), false) FROM keel.tool_calls
WHERE idempotency_key = %s FOR UPDATE
"""
FIRST_INTENT = """
INSERT INTO keel.tool_calls (idempotency_key, run_id, step_id, tool, tool_call_id, arguments, status,
                             lease_owner, lease_token, lease_expires_at)
VALUES (%(key)s, %(run_id)s, %(step_id)s, %(tool)s, %(tool_call_id)s, %(arguments)s, 'started',
        %(owner)s, 1, now() + make_interval(secs => %(lease)s))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING attempts, lease_token
"""
NEXT_INTENT = """
UPDATE keel.tool_calls
SET attempts = attempts + 1, status = 'started', lease_owner = %(owner)s, lease_token = lease_token + 1,
    lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
WHERE idempotency_key = %(key)s
RETURNING attempts, lease_token
"""
FENCE = "SELECT 1 FROM keel.tool_calls WHERE idempotency_key = %s AND lease_token = %s AND status = 'started' FOR UPDATE"
RENEW = """
UPDATE keel.tool_calls SET lease_expires_at = now() + make_interval(secs => %s)
WHERE idempotency_key = %s AND lease_token = %s AND status = 'started'
"""
RELEASE = "UPDATE keel.tool_calls SET lease_owner = NULL, lease_expires_at = NULL WHERE idempotency_key = %s AND lease_token = %s"
SUCCEED = """
UPDATE keel.tool_calls
SET status = 'succeeded', result = %(result)s, reconciled = %(reconciled)s, error = NULL, updated_at = now(), completed_at = now(),
    lease_owner = NULL, lease_expires_at = NULL
WHERE idempotency_key = %(key)s AND lease_token = %(token)s AND status = 'started'
RETURNING attempts
"""
FAIL = """
UPDATE keel.tool_calls
SET status = CASE WHEN %s THEN 'started' ELSE 'failed' END, error = %s, updated_at = now()
WHERE idempotency_key = %s AND status <> 'succeeded' AND coalesce(lease_expires_at <= now(), true)  -- not under another's lease
"""


class LeaseLost(Exception):
    """This attempt's lease on the key was taken over: it may not write the outcome or `ctx.db`."""


def lease_seconds(tool: Tool) -> float:
    return LEASE_SECONDS if tool.timeout is None else min(tool.timeout + LEASE_SLACK, LEASE_SECONDS)


def owner() -> str:
    return f"{DBOS.executor_id}/{INCARNATION}"


def held_by_another(lease_owner: str | None, live: bool) -> bool:
    """Whether a lease keeps this attempt from running the call: a live one, unless an earlier
    incarnation of this executor (a dead process) holds it. This process's own other attempts wait."""
    if not live or lease_owner is None:
        return False
    return lease_owner == owner() or lease_owner.rpartition("/")[0] != DBOS.executor_id


class Effects:
    """The tool's `ctx.db` transaction: opened on first use, if the lease is still ours, and ended
    by the ledger (with the outcome, or rolled back)."""

    def __init__(self, key: str, token: int) -> None:
        self.key, self.token = key, token
        self.conn: AsyncConnection | None = None
        self._stack = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    async def open(self) -> AsyncConnection:
        async with self._opening:  # a tool's concurrent first uses open one transaction
            if self.conn is None:
                conn = await self._stack.enter_async_context(db.pool().connection())
                await self._stack.enter_async_context(conn.transaction())
                # Holding the row lock from here on, no one can take the key over until this commits.
                if await (await conn.execute(FENCE, (self.key, self.token))).fetchone() is None:
                    await self.close(LeaseLost(self.key))
                    raise LeaseLost(self.key)
                self.conn = conn
        return self.conn

    async def close(self, error: BaseException | None = None) -> None:
        """Commit (no `error`) or roll back, and give the connection back."""
        self.conn = None
        await self._stack.__aexit__(type(error) if error else None, error, error.__traceback__ if error else None)


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
    reply = await _tool_call(run_id, step_id, tool, arguments, tool_call_id, key, first_attempt, origin=origin, origin_approved=origin_approved)
    tracing.tool_called(ids.run_of(run_id), tool.name, tool_call_id, reply)  # an undo works for its run
    return reply


async def _tool_call(run_id: str, step_id: int, tool: Tool, arguments: dict[str, Any], tool_call_id: str, key: str | None,
                     first_attempt: int, *, origin: str | None, origin_approved: bool) -> dict[str, Any]:
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
class Claim:
    """An attempt's claim on its key: `token` is its lease's fencing token (None: the key had
    already succeeded, with `result`); `previous` the status the key had before."""

    attempts: int
    result: Any = None
    token: int | None = None
    previous: str | None = None


@dataclass(frozen=True, kw_only=True)
class Call:
    tool: Tool
    key: str
    run_id: str
    step_id: int
    tool_call_id: str
    arguments: dict[str, Any]

    async def attempt(self, number: int) -> Outcome:
        while True:
            claim = await self._claim()
            if claim.token is None:
                return Outcome(claim.result, claim.attempts, deduplicated=True)
            if (outcome := await self._run(number, claim)) is not None:
                failpoints.hit(f"tool.after_commit:{self.tool.name}")
                return outcome
            # Lost the lease to another attempt: wait for it, and return (or reconcile) what it recorded.

    async def _claim(self) -> "Claim":
        """Wait until no other attempt holds the key, then commit the intent under a lease of ours."""
        params = {"key": self.key, "run_id": self.run_id, "step_id": self.step_id, "tool": self.tool.name,
                  "tool_call_id": self.tool_call_id, "arguments": Jsonb(self.arguments), "owner": owner(),
                  "lease": lease_seconds(self.tool)}
        event = {"tool": self.tool.name, "idempotency_key": self.key, "arguments": self.arguments}
        pause = 0.02
        while True:
            async with db.pool().connection() as conn:  # a key's first attempt: the intent and its `tool_call` event in one statement
                first = await stream.change_with_event(conn, FIRST_INTENT, params, self.run_id, self.step_id, "tool_call", event)
            if first:
                return Claim(attempts=first[0][0], token=first[0][1])
            async with db.pool().connection() as conn, conn.transaction():  # the intent and the `tool_call` event commit together
                state = await (await conn.execute(STATE, (self.key,))).fetchone()
                claim = None
                if state is not None and state[0] == "succeeded":
                    claim = Claim(result=state[1], attempts=state[2])
                elif state is None:  # removed since (a test's cleanup, say): claim it as new
                    continue
                elif not held_by_another(state[3], state[4]):
                    row = await (await conn.execute(NEXT_INTENT, params)).fetchone()
                    assert row is not None, "the row is locked"
                    claim = Claim(attempts=row[0], token=row[1], previous=state[0])
                if claim is not None:
                    await events.record(self.run_id, self.step_id, "tool_call", event, conn=conn)
                    return claim
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _run(self, number: int, claim: "Claim") -> Outcome | None:
        """Run the tool under our lease and write its outcome; None if the lease was lost."""
        async def breaker_changed(state: str) -> None:
            await events.record(self.run_id, self.step_id, f"breaker_{state}", {"dependency": self.tool.dependency}, attempt=number)

        attempts, token = claim.attempts, claim.token
        assert token is not None
        effects = Effects(self.key, token)
        heartbeat = asyncio.create_task(self._renew(effects))
        try:
            # The breaker takes connections of its own before and after the tool, never while `ctx.db` holds one.
            async with breaker.guard(self.tool.dependency, breaker_changed):
                ctx = ToolContext(run_id=self.run_id, tool_call_id=self.tool_call_id, idempotency_key=self.key, attempt=attempts,
                                  db=ToolDatabase(effects.open), deps=provided(self.tool.deps_type))
                try:
                    async with asyncio.timeout(self.tool.timeout):
                        found = await self.tool.reconciled(ctx) if claim.previous == "started" else None
                        value = found if found is not None else await self.tool.invoke(ctx, self.arguments)
                    outcome = Outcome(value, attempts, reconciled=found is not None)
                    await self._write_outcome(effects, outcome, token)
                except BaseException as error:
                    await effects.close(error)
                    raise
        except LeaseLost:
            return None
        except Exception:  # the tool failed, or its open circuit refused it: the next attempt need not wait for the lease to expire
            async with db.pool().connection() as conn:
                await conn.execute(RELEASE, (self.key, token))
            raise
        finally:
            heartbeat.cancel()
        return outcome

    async def _write_outcome(self, effects: Effects, outcome: Outcome, token: int) -> None:
        """The outcome and its `tool_result` event, in the tool's `ctx.db` transaction if it opened one,
        else in a short one; raises `LeaseLost` (nothing written) if our lease was taken over."""
        async with contextlib.AsyncExitStack() as stack:
            conn = effects.conn
            if conn is None:  # the outcome and its event are one statement: a transaction of its own
                conn = await stack.enter_async_context(db.pool().connection())
            params = {"result": Jsonb(outcome.result), "reconciled": outcome.reconciled, "key": self.key, "token": token}
            if not await stream.change_with_event(conn, SUCCEED, params, self.run_id, self.step_id, "tool_result",
                                                  {"tool": self.tool.name, "ok": True, **outcome.summary(self.key)}):
                raise LeaseLost(self.key)  # rolls back: nothing of ours is written
        if effects.conn is not None:
            await effects.close()

    async def _renew(self, effects: Effects) -> None:
        """The heartbeat of a running tool: keep the lease while it runs (an open `ctx.db` transaction
        holds the row lock, which keeps it anyway)."""
        lease = lease_seconds(self.tool)
        while True:
            await asyncio.sleep(lease / 3)
            if effects.conn is None:
                async with db.pool().connection() as conn:
                    await conn.execute(RENEW, (lease, self.key, effects.token))

    async def record_failure(self, failure: Failure) -> None:
        """A permanent failure closes the intent. Any other leaves it open: an earlier attempt's effect
        may have happened (a lost response), so the next attempt asks `reconcile` first."""
        keep_open = failure.kind not in ("permanent", "ask_model")
        async with db.pool().connection() as conn:
            await conn.execute(FAIL, (keep_open, Jsonb(failure.as_dict()), self.key))
