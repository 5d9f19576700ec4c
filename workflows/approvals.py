"""Human approval as a durable wait: the run sleeps in `DBOS.recv_async`, holding no thread,
until a decision arrives or its deadline (recorded, so it survives restarts) passes.

A decision is recorded in `keel.approvals` first, then a message wakes the run. If the deciding
process dies in between, the next heartbeat of any worker notices and sends the message
(`redeliver_decisions`); the chaos harness found this window."""

from typing import Any

from dbos import DBOS

from steps import ids, tracing
from steps.approvals import get_approval, list_approvals, record_decision, request_approval_step, settle_approval_step, undelivered_decisions
from steps.dbos_seam import off_the_queue
from steps.tools import ApprovalPolicy

__all__ = ["await_approval", "decide", "get_approval", "list_approvals", "redeliver_decisions"]


NOT_NEEDED = {"approval_id": None, "status": "not_needed", "decided_by": None, "comment": None}


async def await_approval(name: str, policy: ApprovalPolicy, arguments: dict[str, Any], tool_call_id: str, *,
                         origin: str | None = None) -> dict[str, Any]:
    """Ask for a decision on this call of tool `name` (or a graph's interrupt) and wait for it under
    `policy`; returns the settled outcome (`status`, ...). A fork passes its `origin` for a call it may
    answer with the origin's outcome: then it needs no decision."""
    request = await request_approval_step(name, arguments, tool_call_id, policy.timeout, origin)
    if request["approval_id"] is None:
        return NOT_NEEDED
    escalations_left = 1 if policy.on_expire == "escalate" else 0
    with tracing.span("keel.approval_wait", {"keel.run_id": DBOS.workflow_id, "keel.approval_id": request["approval_id"], "gen_ai.tool.name": name,
                                             "gen_ai.tool.call.id": tool_call_id}):
        while True:
            with off_the_queue(DBOS.workflow_id or ""):  # a run waiting on a person does not hold a worker's slot
                await DBOS.recv_async(topic=request["approval_id"], timeout_seconds=policy.timeout)
            outcome = await settle_approval_step(request["approval_id"], escalate=escalations_left > 0, timeout=policy.timeout)
            if outcome["status"] != "pending":
                tracing.annotate({"keel.approval.status": outcome["status"], "keel.approval.decided_by": outcome.get("decided_by")})
                return outcome
            escalations_left -= 1


async def decide(approval_id: str, decision: str, *, decided_by: str, decided_by_key_id: str | None = None,
                 comment: str | None = None) -> dict[str, Any]:
    """Record a decision and wake the run. Idempotent: the same decision again changes nothing."""
    approval = await record_decision(approval_id, decision, decided_by, decided_by_key_id, comment)
    await wake(approval["run_id"], approval_id, approval["status"])
    return approval


async def redeliver_decisions(grace: float) -> int:
    """Wake runs whose decision was recorded by a process that died before it could wake them.
    Workers call this with their heartbeat; a message already sent is not sent twice."""
    undelivered = await undelivered_decisions(grace)
    for decision in undelivered:
        await wake(decision["run_id"], decision["approval_id"], decision["status"])
    return len(undelivered)


async def wake(run_id: str, approval_id: str, status: str) -> None:
    # One key per approval: a repeated or redelivered decision is one message.
    await DBOS.send_async(run_id, status, topic=approval_id, idempotency_key=ids.decision_message_key(approval_id))
