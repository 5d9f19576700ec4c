"""`keel.compensations`: which effects of a run are undone, waiting to be, or cannot be."""

import asyncio
from typing import Any

from dbos import DBOS
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from steps import db, events, failpoints, ids
from steps.retry import OUTAGE_RETRIES

EFFECTS = """
SELECT idempotency_key, tool, arguments, result FROM keel.tool_calls
WHERE run_id = %s AND status = 'succeeded' AND reused_from IS NULL  -- a fork's reused outcome is its origin's effect
ORDER BY completed_at DESC, step_id DESC
FOR UPDATE  -- and a `ctx.db` transaction still open on one of them
"""
IN_FLIGHT = "SELECT 1 FROM keel.tool_calls WHERE run_id = %s AND status = 'started' AND lease_expires_at > now() LIMIT 1"


CHILD_EFFECTS = """
SELECT 1 FROM keel.tool_calls WHERE run_id = %s AND status = 'succeeded' AND reused_from IS NULL AND tool = ANY(%s) LIMIT 1
"""


@DBOS.step(name="keel.compensation_plan", **OUTAGE_RETRIES)
async def plan_compensations_step(run_id: str, compensable: list[str], irreversible: list[str],
                                  delegates: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The run's effects to undo, newest first, numbered from 1; irreversible ones are listed too.

    `delegates` names the agent tools among `compensable`, each with its agent's tools that make
    effects: a child run that made none is not an effect of this run.

    It first waits for a tool call still in flight (a cancelled run's last step) to release its
    lease (`steps.ledger`), so its effect is in the plan."""
    delegates = delegates or {}
    async with db.pool().connection() as conn:
        while await (await conn.execute(IN_FLIGHT, (run_id,))).fetchone():
            await asyncio.sleep(0.1)
    plan: list[dict[str, Any]] = []
    async with db.pool().connection() as conn, conn.transaction():
        cursor = conn.cursor(row_factory=dict_row)
        rows = await (await cursor.execute(EFFECTS, (run_id,))).fetchall()
        for row in (r for r in rows if r["tool"] in compensable or r["tool"] in irreversible):
            if row["tool"] in delegates and not await (await conn.execute(CHILD_EFFECTS, (row["result"]["run_id"], delegates[row["tool"]]))).fetchone():
                continue
            n = len(plan) + 1
            status = "pending" if row["tool"] in compensable else "irreversible"
            entry = {**row, "n": n, "status": status, "workflow_id": ids.compensation_id(run_id, n) if status == "pending" else None}
            await conn.execute(
                """INSERT INTO keel.compensations (run_id, n, tool, idempotency_key, workflow_id, status)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, n) DO NOTHING""",
                (run_id, n, row["tool"], row["idempotency_key"], entry["workflow_id"], status))
            plan.append(entry)
        await events.record(run_id, 0, "rollback_started",
                            {"effects": [{"n": e["n"], "tool": e["tool"], "status": e["status"]} for e in plan]}, conn=conn)
    return plan


EVENTS = {"running": "compensation_started", "succeeded": "compensation_finished", "failed": "compensation_failed", "parked": None}
"""The event each state records in the run's timeline; a park is told by the undo's own `parked` event."""


@DBOS.step(name="keel.compensation_mark", **OUTAGE_RETRIES)
async def mark_compensation_step(run_id: str, n: int, status: str, error: dict[str, Any] | None, attempt: int,
                                 retry_in: float | None = None) -> None:
    """Record the state of compensation `n` of `run_id` (its events use `step_id = n`); a `parked`
    one tries again in `retry_in` seconds."""
    failpoints.hit(f"compensation.{status}:{n}")
    async with db.pool().connection() as conn, conn.transaction():
        await conn.execute(
            """UPDATE keel.compensations SET status = %s, error = %s, updated_at = now(),
                      retry_at = now() + make_interval(secs => %s) WHERE run_id = %s AND n = %s""",
            (status, Jsonb(error) if error else None, retry_in, run_id, n))
        if kind := EVENTS[status]:
            await events.record(run_id, n, kind, {"n": n, "error": error}, attempt=attempt, conn=conn)


async def list_compensations(run_id: str) -> list[dict[str, Any]]:
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(
            "SELECT n, tool, idempotency_key, workflow_id, status, error, retry_at FROM keel.compensations WHERE run_id = %s ORDER BY n",
            (run_id,))).fetchall()

