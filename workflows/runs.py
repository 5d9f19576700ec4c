"""Starting runs and reading their state (`keel.runs`, a view over DBOS's tables and Keel's events)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from dbos import DBOS, SetWorkflowID
from psycopg.rows import dict_row

from steps import db, ids, stream, tracing
from steps.approvals import get_approval
from steps.compensations import list_compensations
from steps.errors import UserError
from steps.run_status import ENDED, FINISHED, UNCANCELLABLE
from workflows import run_queue
from workflows.agent import get_agent
from workflows.agent_loop import agent_run
from workflows.cancels import cancel_child_runs, finish_cancel
from workflows.forks import record_fork
from workflows.saga import retry_compensations

COLUMNS = """run_id, agent, input, status, reason, output, error, turns, tokens, cost_usd, waiting_for, forked_from,
             parent_run_id, root_run_id, created_at, updated_at, pending_approval_id"""


STATUS_CANDIDATES = {
    "queued": "dbos_status IN ('ENQUEUED', 'DELAYED')",
    "running": "dbos_status = 'PENDING'",
    "awaiting_approval": "dbos_status = 'PENDING'",
    "succeeded": "dbos_status = 'SUCCESS'",
    "cancelled": "dbos_status = 'CANCELLED'",
    "failed": "dbos_status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')",
    "compensated": "dbos_status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'SUCCESS')",  # a child run rolled back with its parent
    "compensating": """run_id IN (SELECT left(workflow_uuid, -length(':rollback')) FROM dbos.workflow_status
                                  WHERE status IN ('PENDING', 'ENQUEUED') AND name = 'keel.rollback')""",
    "compensation_failed": "run_id IN (SELECT run_id FROM keel.compensations WHERE status = 'failed')",
}
"""Per Keel status, a condition on indexed base columns that every run in that status meets (from
`keel.runs`' status CASE): a status filter narrows to it first, so a page of a rare status does not
compute the status of every run. `tests/test_run_listing.py` holds it to the view."""



class IdempotencyConflict(UserError):
    """The idempotency key was used (by the same API key) for a run with a different request."""


class RunConflict(UserError):
    """The run is not in a state that allows this (cancelling a finished run, say)."""


class RunNotFound(UserError):
    pass


class QueueFull(UserError):
    """More runs wait in the queue than `max_queued`: the client should come back later."""

    retry_after = 5


async def start_run(agent: str, input: str, *, owner: str, idempotency_key: str | None = None) -> dict[str, Any]:
    """Start `agent` on `input` for `owner` (an API key's ID). Keel names the run: with an
    `idempotency_key`, the same owner and key name the same run, so a repeated request returns it."""
    get_agent(agent)
    if "\x00" in input:  # PostgreSQL's jsonb cannot hold it: a stored input with one would break every read of keel.runs
        raise UserError("the input cannot contain NUL characters")
    run_id = ids.keyed_run_id(owner, idempotency_key) if idempotency_key is not None else ids.new_run_id()
    await refuse_when_full(run_id)
    with SetWorkflowID(run_id), tracing.submitting(run_id, agent):  # an existing run ID returns that run, which is then compared
        await DBOS.enqueue_workflow_async(run_queue.current().name, agent_run, {"agent": agent, "input": input})
    run = await run_row(run_id)
    if (run["agent"], run["input"]) != (agent, input):
        raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was used for run {run_id}, with a different agent or input")
    return run


async def refuse_when_full(run_id: str) -> None:
    """Backpressure: a new run is refused while the queue holds `max_queued` runs (a known run ID is not new)."""
    queue = run_queue.current()
    if queue.max_queued is None:
        return
    async with db.pool().connection() as conn:
        known, queued = await (await conn.execute(
            """SELECT EXISTS (SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = %s),
                      (SELECT count(*) FROM dbos.workflow_status WHERE queue_name = %s AND status = 'ENQUEUED')""",
            (run_id, queue.name))).fetchone()
    if not known and queued >= queue.max_queued:
        raise QueueFull(f"{queued} runs are waiting for a worker (KEEL_MAX_QUEUED_RUNS={queue.max_queued}); try again shortly")


async def run_row(run_id: str) -> dict[str, Any]:
    """The run's row of `keel.runs`, without its approval and compensations (one query)."""
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        row = await (await cursor.execute(f"SELECT {COLUMNS} FROM keel.runs WHERE run_id = %s", (run_id,))).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id!r}")
    return row


async def get_run(run_id: str) -> dict[str, Any]:
    row = await run_row(run_id)
    row["pending_approval"] = await get_approval(row["pending_approval_id"]) if row["pending_approval_id"] else None
    row["compensations"] = await list_compensations(run_id)
    return row


async def cancel_run(run_id: str) -> dict[str, Any]:
    """Stop a run and undo its effects; the run ends `cancelled`. Cancelling twice is a no-op."""
    run = await get_run(run_id)
    if run["status"] in UNCANCELLABLE:
        raise RunConflict(f"run {run_id} already ended: {run['status']}")
    await DBOS.cancel_workflow_async(run_id)
    await finish_cancel(run_id, run["agent"])
    await cancel_child_runs(run_id)
    return await get_run(run_id)


async def fork_run(run_id: str, from_step: int, *, model: str | None = None, instructions: str | None = None,
                   redo_effects: bool = False) -> dict[str, Any]:
    """A new run that reuses `run_id`'s recorded outputs before step `from_step` and runs live from
    there (with another model or instructions, if given). Effects before the fork are not repeated;
    after it, a call the origin made with the same arguments reuses the origin's outcome unless
    `redo_effects`, and an effect that needs approval asks for it again (`workflows.forks`)."""
    run = await get_run(run_id)
    if instructions is not None and get_agent(run["agent"]).framework:
        raise UserError(f"agent {run['agent']} takes its instructions from {get_agent(run['agent']).framework}: a fork can change its model only")
    async with db.pool().connection() as conn:
        last = (await (await conn.execute("SELECT max(function_id) FROM dbos.operation_outputs WHERE workflow_uuid = %s",
                                          (run_id,))).fetchone())[0] or 0
    if not 1 <= from_step <= last + 1:
        raise RunConflict(f"from_step must be between 1 and {last + 1} for run {run_id}")
    new_id = ids.fork_id(run_id)
    await record_fork(new_id, run_id, from_step, model, instructions, redo_effects)
    with SetWorkflowID(new_id):
        await DBOS.fork_workflow_async(run_id, from_step, application_version=DBOS.application_version, queue_name=run_queue.current().name)
    return await get_run(new_id)


async def resume_run(run_id: str) -> dict[str, Any]:
    """Hand a stopped run (dead-lettered, or pending on a worker that is gone) to any live worker."""
    run = await get_run(run_id)
    if run["status"] in FINISHED:
        raise RunConflict(f"run {run_id} already ended: {run['status']}")
    await DBOS.resume_workflow_async(run_id, queue_name=run_queue.current().name)
    return await get_run(run_id)


async def retry_failed_compensations(run_id: str) -> dict[str, Any]:
    """Wake the compensations of `run_id` that gave up, to try again (after an operator's fix)."""
    failed = [c for c in (await get_run(run_id))["compensations"] if c["status"] == "failed"]
    if not failed:
        raise RunConflict(f"run {run_id} has no failed compensation")
    await retry_compensations(failed)
    return await get_run(run_id)


async def list_runs(*, status: str | None = None, agent: str | None = None, limit: int = 50,
                    created_after: datetime | None = None, created_before: datetime | None = None,
                    before: tuple[datetime, str] | None = None) -> list[dict[str, Any]]:
    """Newest first, created in [`created_after`, `created_before`); `before` = (created_at, run_id)
    of the last row of the previous page."""
    query = f"SELECT {COLUMNS} FROM keel.runs WHERE true"
    if status is not None:
        query += f" AND {STATUS_CANDIDATES.get(status, 'true')}"
    params: list[Any] = []
    for condition, value in (("status = %s", status), ("agent = %s", agent),
                             ("created_at >= %s", created_after), ("created_at < %s", created_before)):
        if value is not None:
            query += f" AND {condition}"
            params.append(value)
    if before:
        query += " AND (created_at, run_id) < (%s, %s)"
        params.extend(before)
    query += " ORDER BY created_at DESC, run_id DESC LIMIT %s"
    params.append(limit)
    async with db.pool().connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL jit = off")  # a page is milliseconds of indexed reads; JIT would compile for seconds
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(query, params)).fetchall()


async def child_runs(run_id: str) -> list[dict[str, Any]]:
    """The child runs the run's agent tool calls started, oldest first."""
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(
            "SELECT run_id, agent, status, reason FROM keel.runs WHERE parent_run_id = %s ORDER BY created_at", (run_id,))).fetchall()


async def get_events(run_id: str) -> list[dict[str, Any]]:
    """The run's timeline, in order: its events and those of the calls that undid its effects."""
    await get_run(run_id)
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(
            "SELECT seq, at, source, step_id, kind, attempt, summary, payload FROM keel.timeline WHERE run_id = %s ORDER BY seq",
            (run_id,))).fetchall()


async def follow_run(run_id: str, after: int = -1, *, poll: float = 0.2) -> AsyncIterator[dict[str, Any]]:
    """The run's live feed after offset `after`: timeline events and model output as they are written,
    then `{"end": {"status", "reason"}}` once the run has ended and everything before it was read."""
    await run_row(run_id)
    while True:
        items = await stream.read(run_id, after)
        for item in items:
            after = item["offset"]
            yield item
        if items:
            continue
        run = await run_row(run_id)
        if run["status"] in ENDED:
            # The run's last writes committed before its status changed: this read gets all of them.
            for item in await stream.read(run_id, after, limit=1_000_000):
                yield item
            yield {"end": {"status": run["status"], "reason": run["reason"]}}
            return
        await asyncio.sleep(poll)
