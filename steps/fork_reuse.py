"""What a fork reuses: its origin's recorded outcome for a tool call the fork repeats.

A fork (`keel fork`) runs live from its fork point, with keys of its own (`<fork>:<step>`), so
without this a repeated call would repeat its effect: a second charge for the same plan change. So a
fork's call to a tool with the same arguments as a call its origin completed takes that call's
recorded outcome instead, once per origin call (the first not yet reused, in the origin's order),
unless the fork was asked to redo effects. An origin call whose effect a rollback undid is not
reused: the effect no longer stands. Tools with a business key need none of this: their key is the
same in every run, so the ledger already answers a repeat from the recorded outcome.

The reused call gets a ledger row of the fork's own (`reused_from` names the origin's key), so a
re-executed step finds it again, and the fork's rollback leaves it alone: the effect is the origin's."""

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from steps import db, events
from steps.tools import Tool

REUSABLE = """
SELECT o.idempotency_key, o.result FROM keel.tool_calls o
WHERE o.run_id = %(origin)s AND o.tool = %(tool)s AND o.arguments = %(arguments)s AND o.status = 'succeeded'
  AND NOT EXISTS (SELECT 1 FROM keel.tool_calls f WHERE f.run_id = %(run_id)s AND f.reused_from = o.idempotency_key)
  AND NOT EXISTS (SELECT 1 FROM keel.compensations c
                  WHERE c.run_id = %(origin)s AND c.idempotency_key = o.idempotency_key AND c.status <> 'irreversible')
ORDER BY o.step_id LIMIT 1
"""
REUSE = f"""
WITH own AS (SELECT result, reused_from FROM keel.tool_calls WHERE idempotency_key = %(key)s),
origin AS ({REUSABLE}),
reused AS (
    INSERT INTO keel.tool_calls (idempotency_key, run_id, step_id, tool, tool_call_id, arguments, status, result, attempts,
                                 reused_from, completed_at)
    SELECT %(key)s, %(run_id)s, %(step_id)s, %(tool)s, %(tool_call_id)s, %(arguments)s, 'succeeded', origin.result, 0,
           origin.idempotency_key, now()
    FROM origin WHERE NOT EXISTS (SELECT 1 FROM own)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING result, reused_from
)
SELECT result, reused_from FROM reused
UNION ALL SELECT result, reused_from FROM own WHERE reused_from IS NOT NULL
"""


async def reusable(origin: str, run_id: str, tool: str, arguments: dict[str, Any]) -> str | None:
    """The key of the origin's call that a call of `run_id` to `tool(arguments)` would reuse, if any."""
    async with db.pool().connection() as conn:
        row = await (await conn.execute(REUSABLE, _params(origin, run_id, tool, arguments))).fetchone()
    return row[0] if row else None


async def reuse_outcome(origin: str, *, run_id: str, step_id: int, key: str, tool: Tool, tool_call_id: str,
                        arguments: dict[str, Any]) -> dict[str, Any] | None:
    """Answer this call of a fork with its origin's recorded outcome (the tool step's reply), or None
    when the origin made no such call (then the call runs live)."""
    if tool.idempotency_key is not None:
        return None
    params = {**_params(origin, run_id, tool.name, arguments), "key": key, "step_id": step_id, "tool_call_id": tool_call_id}
    async with db.pool().connection() as conn, conn.transaction():
        row = await (await conn.execute(REUSE, params)).fetchone()
        if row is None:
            return None
        result, reused_from = row
        await _record(conn, run_id, step_id, tool.name, key, arguments, reused_from)
    return {"ok": True, "result": result, "idempotency_key": key, "attempts": 0, "deduplicated": False, "reconciled": False,
            "reused_from": reused_from}


NEEDS_APPROVAL = "needs_approval"


async def fork_reply(*, origin: str | None, origin_approved: bool, run_id: str, step_id: int, key: str, tool: Tool,
                     tool_call_id: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """The tool step's reply when a fork need not (or may not yet) run the call live: the origin's
    outcome, or, for a call approved only in the origin (a fork copies the approval's steps when it
    forks after them), a refusal that sends the fork to ask for its own approval. None: run it."""
    if origin is not None:
        reused = await reuse_outcome(origin, run_id=run_id, step_id=step_id, key=key, tool=tool, tool_call_id=tool_call_id, arguments=arguments)
        if reused is not None:
            return reused
    if origin_approved:
        message = f"{tool.name} was approved for the run this one forked from; a fork asks for its own approval"
        return {"ok": False, "error": {"kind": NEEDS_APPROVAL, "type": "ApprovalNeeded", "message": message}, "attempts": 0, "park": None,
                "idempotency_key": key}
    return None


async def _record(conn: AsyncConnection, run_id: str, step_id: int, tool: str, key: str, arguments: dict[str, Any], reused_from: str) -> None:
    await events.record(run_id, step_id, "tool_call", {"tool": tool, "idempotency_key": key, "arguments": arguments,
                                                       "reused_from": reused_from}, conn=conn)
    await events.record(run_id, step_id, "tool_result", {"tool": tool, "ok": True, "idempotency_key": key, "attempts": 0,
                                                         "reused_from": reused_from}, conn=conn)


def _params(origin: str, run_id: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"origin": origin, "run_id": run_id, "tool": tool, "arguments": Jsonb(arguments)}
