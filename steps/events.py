"""Keel's event log, `keel.events`: one row per thing that happened in a run.

An event is identified by (run, step, kind, attempt), so a step that is retried or re-executed
after a crash writes each of its events once."""

import time
from typing import Any

from dbos import DBOS
from psycopg import AsyncConnection

from steps import db, stream
from steps.retry import OUTAGE_RETRIES


async def record(
    run_id: str,
    step_id: int,
    kind: str,
    payload: dict[str, Any],
    *,
    attempt: int = 0,
    conn: AsyncConnection | None = None,
) -> None:
    """Append an event (and its place in the run's live feed); with `conn`, inside that connection's current transaction."""
    if conn is not None:
        await stream.record_event(conn, run_id, step_id, kind, attempt, payload)
        return
    async with db.pool().connection() as own:
        await stream.record_event(own, run_id, step_id, kind, attempt, payload)


@DBOS.step(name="keel.event", **OUTAGE_RETRIES)
async def record_step(kind: str, payload: dict[str, Any]) -> float:
    """Record an event from workflow code, as a step of its own (a workflow body does no I/O).

    Returns when it happened (epoch seconds), the same on replay."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "record_step runs inside a workflow"
    await record(run_id, step_id, kind, payload)
    return time.time()
