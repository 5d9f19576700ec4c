"""Human approval as a durable wait: the run sleeps in `DBOS.recv_async`, holding no thread,
until a decision arrives or its deadline (recorded, so it survives restarts) passes.

A decision is recorded in `keel.approvals` first, then a message wakes the run. If the deciding
process dies in between, the next heartbeat of any worker notices and sends the message
(`redeliver_decisions`); the chaos harness found this window."""

from dataclasses import dataclass
from typing import Any

from dbos import DBOS

from steps import ids, tracing
from steps.approvals import get_approval, list_approvals, record_decision, request_approval_step, settle_approval_step, undelivered_decisions
from steps.dbos_seam import off_the_queue
from steps.tools import ApprovalPolicy

__all__ = ["Ask", "request_approvals", "wait_for_decision", "decide", "get_approval", "list_approvals", "redeliver_decisions"]


NOT_NEEDED = {"approval_id": None, "status": "not_needed", "decided_by": None, "comment": None}


@dataclass(frozen=True)
class Ask:
    """A decision to ask for: on this call of tool `name` (or a graph's interrupt), under `policy`."""

    name: str
    policy: ApprovalPolicy
    arguments: dict[str, Any]
    tool_call_id: str
    reusable: bool = False
    """A call a fork may answer with its origin's outcome (then nobody is asked)."""


async def request_approvals(asks: list[Ask], *, origin: str | None = None) -> list[str | None]:
    """Open a request per ask, in order; returns their approval IDs. One turn's parallel tool calls open
    all theirs before waiting for any, so all are in the inbox at once and each is decided on its own,
    in any order. A fork passes its `origin`, whose outcome answers a reusable call it repeats: that
    call needs no decision (its ID is None)."""
    return [(await request_approval_step(ask.name, ask.arguments, ask.tool_call_id, ask.policy.timeout,
                                         origin if ask.reusable else None))["approval_id"] for ask in asks]


async def wait_for_decision(ask: Ask, approval_id: str | None) -> dict[str, Any]:
    """Wait for the decision on a request (one that arrived before the wait began is a message
    waiting); returns the settled outcome (`status`, ...). The timeout counts from the start of the wait."""
    if approval_id is None:
        return NOT_NEEDED
    policy = ask.policy
    escalations_left = 1 if policy.on_expire == "escalate" else 0
    with tracing.span("keel.approval_wait", {"keel.run_id": DBOS.workflow_id, "keel.approval_id": approval_id, "gen_ai.tool.name": ask.name,
                                             "gen_ai.tool.call.id": ask.tool_call_id}):
        while True:
            with off_the_queue(DBOS.workflow_id or ""):  # a run waiting on a person does not hold a worker's slot
                await DBOS.recv_async(topic=approval_id, timeout_seconds=policy.timeout)
            outcome = await settle_approval_step(approval_id, escalate=escalations_left > 0, timeout=policy.timeout)
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
