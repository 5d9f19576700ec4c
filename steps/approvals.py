"""The approval inbox, `keel.approvals`: requests, decisions and expiry.

The table is the truth about a decision; the DBOS message a decision sends only wakes the waiting
run, which then settles the request from the table. So a decision is never lost, even if the
process that recorded it died before the message went out."""

from typing import Any, Literal, get_args

from dbos import DBOS
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from steps import db, events, ids
from steps.errors import UserError
from steps.fork_reuse import reusable
from steps.retry import OUTAGE_RETRIES

COLUMNS = """approval_id, run_id, split_part(run_id, ':', 1) AS root_run_id, tool, arguments, status, requested_at, expires_at,
             escalations, decided_by, decided_by_key_id, decided_at, comment"""
"""`root_run_id`: the run at the top of a child run's tree (`steps.ids.root_of`), where a person looks for the request."""
ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
"""Every status a request can have (the table's CHECK constraint says the same; a test holds them together)."""
APPROVAL_STATUSES: tuple[str, ...] = get_args(ApprovalStatus)
DECISIONS = {"approve": "approved", "reject": "rejected"}


class ApprovalNotFound(UserError):
    pass


class ApprovalConflict(UserError):
    """A decision that contradicts the recorded one, or comes after expiry."""


@DBOS.step(name="keel.approval_request", **OUTAGE_RETRIES)
async def request_approval_step(tool: str, arguments: dict[str, Any], tool_call_id: str, timeout: float,
                                origin: str | None = None) -> dict[str, Any]:
    """Open an approval request for a tool call; returns its ID (the same on re-execution).

    A fork (`origin`: the run it reuses outcomes from) asks nobody about a call it will answer with
    its origin's outcome: no effect, nothing to approve. Then the ID is None."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "request_approval_step runs inside a workflow"
    if origin is not None and (reused := await reusable(origin, run_id, tool, arguments)):
        await events.record(run_id, step_id, "approval_decided", {"approval_id": None, "status": "not_needed", "reused_from": reused})
        return {"approval_id": None}
    approval_id = ids.approval_id(run_id, step_id)
    async with db.pool().connection() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO keel.approvals (approval_id, run_id, step_id, tool, tool_call_id, arguments, status, expires_at)
               VALUES (%s, %s, %s, %s, %s, %s, 'pending', now() + make_interval(secs => %s))
               ON CONFLICT (approval_id) DO NOTHING""",
            (approval_id, run_id, step_id, tool, tool_call_id, Jsonb(arguments), timeout))
        await events.record(run_id, step_id, "approval_requested",
                            {"approval_id": approval_id, "tool": tool, "arguments": arguments, "timeout": timeout}, conn=conn)
    return {"approval_id": approval_id}


@DBOS.step(name="keel.approval_settle", **OUTAGE_RETRIES)
async def settle_approval_step(approval_id: str, *, escalate: bool, timeout: float) -> dict[str, Any]:
    """After the wait: the recorded decision, or (still pending) escalate or expire the request."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "settle_approval_step runs inside a workflow"
    async with db.pool().connection() as conn, conn.transaction():
        cursor = conn.cursor(row_factory=dict_row)
        if escalate:
            await cursor.execute(
                """UPDATE keel.approvals SET escalations = escalations + 1, expires_at = now() + make_interval(secs => %s)
                   WHERE approval_id = %s AND status = 'pending'""", (timeout, approval_id))
        else:
            await cursor.execute(
                "UPDATE keel.approvals SET status = 'expired', decided_at = now() WHERE approval_id = %s AND status = 'pending'",
                (approval_id,))
        row = await (await cursor.execute(f"SELECT {COLUMNS} FROM keel.approvals WHERE approval_id = %s", (approval_id,))).fetchone()
        assert row is not None
        outcome = {"approval_id": approval_id, "status": row["status"], "decided_by": row["decided_by"],
                   "decided_by_key_id": row["decided_by_key_id"], "comment": row["comment"]}
        kind = "approval_escalated" if row["status"] == "pending" else "approval_decided"
        await events.record(run_id, step_id, kind, outcome, conn=conn)
    return outcome


async def record_decision(approval_id: str, decision: str, decided_by: str, decided_by_key_id: str | None,
                          comment: str | None) -> dict[str, Any]:
    """Decide a pending request, recording who (a name, and the API key's ID: names are not unique).
    Repeating the recorded decision is a no-op; contradicting it is refused."""
    status = DECISIONS[decision]
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        row = await (await cursor.execute(
            f"""UPDATE keel.approvals SET status = %s, decided_by = %s, decided_by_key_id = %s, comment = %s, decided_at = now()
                WHERE approval_id = %s AND status = 'pending' RETURNING {COLUMNS}""",
            (status, decided_by, decided_by_key_id, comment, approval_id))).fetchone()
        if row is not None:
            return row
        row = await get_approval(approval_id)
    if row["status"] != status:
        raise ApprovalConflict(f"approval {approval_id} is already {row['status']}")
    return row


async def undelivered_decisions(grace: float) -> list[dict[str, Any]]:
    """Decisions older than `grace` seconds whose run still waits without having settled them: the
    process that recorded one may have died before its message went out."""
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(
            """SELECT a.approval_id, a.run_id, a.status FROM keel.approvals a
               JOIN dbos.workflow_status s ON s.workflow_uuid = a.run_id AND s.status IN ('PENDING', 'ENQUEUED')
               WHERE a.status IN ('approved', 'rejected')
                 AND a.decided_at BETWEEN now() - interval '1 day' AND now() - make_interval(secs => %s)
                 AND NOT EXISTS (SELECT 1 FROM keel.events e WHERE e.run_id = a.run_id AND e.kind = 'approval_decided'
                                 AND e.payload ->> 'approval_id' = a.approval_id)""", (grace,))).fetchall()


async def get_approval(approval_id: str) -> dict[str, Any]:
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        row = await (await cursor.execute(f"SELECT {COLUMNS} FROM keel.approvals WHERE approval_id = %s", (approval_id,))).fetchone()
    if row is None:
        raise ApprovalNotFound(f"no approval {approval_id!r}")
    return row


async def list_approvals(*, status: str | None = None, run_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The inbox, oldest request first."""
    query = f"SELECT {COLUMNS} FROM keel.approvals WHERE true"
    params: list[Any] = []
    for column, value in (("status", status), ("run_id", run_id)):
        if value is not None:
            query += f" AND {column} = %s"
            params.append(value)
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        return await (await cursor.execute(f"{query} ORDER BY requested_at, approval_id LIMIT %s", [*params, limit])).fetchall()


async def cancel_pending_approvals(run_id: str) -> None:
    """A cancelled run's open requests leave the inbox."""
    async with db.pool().connection() as conn:
        await conn.execute("UPDATE keel.approvals SET status = 'cancelled', decided_at = now() WHERE run_id = %s AND status = 'pending'",
                           (run_id,))
