"""Human approval as a durable wait: the run sleeps in `DBOS.recv_async`, holding no thread,
until a decision arrives or its deadline (recorded, so it survives restarts) passes."""

from typing import Any

from dbos import DBOS

from steps.approvals import get_approval, list_approvals, record_decision, request_approval_step, settle_approval_step
from steps.tools import Tool

__all__ = ["await_approval", "decide", "get_approval", "list_approvals"]


async def await_approval(tool: Tool, arguments: dict[str, Any], tool_call_id: str) -> dict[str, Any]:
    """Ask for a decision on this call and wait for it; returns the settled outcome (`status`, ...)."""
    policy = tool.approval
    request = await request_approval_step(tool.name, arguments, tool_call_id, policy.timeout)
    escalations_left = 1 if policy.on_expire == "escalate" else 0
    while True:
        await DBOS.recv_async(topic=request["approval_id"], timeout_seconds=policy.timeout)
        outcome = await settle_approval_step(request["approval_id"], escalate=escalations_left > 0, timeout=policy.timeout)
        if outcome["status"] != "pending":
            return outcome
        escalations_left -= 1


async def decide(approval_id: str, decision: str, *, decided_by: str, comment: str | None = None) -> dict[str, Any]:
    """Record a decision and wake the run. Idempotent: the same decision again changes nothing."""
    approval = await record_decision(approval_id, decision, decided_by, comment)
    # Sent again on a repeated decision too (deduplicated by its key), in case the first sender died.
    await DBOS.send_async(approval["run_id"], approval["status"], topic=approval_id, idempotency_key=f"decision:{approval_id}")
    return approval
