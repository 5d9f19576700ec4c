"""`/v1/approvals`: the inbox of tool calls waiting for a person, and their decisions."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.auth import Principal, authenticate, require
from app.schemas import APPROVAL_ID_PATTERN, RUN_ID_PATTERN, V1_ERRORS, ApprovalDecision, ApprovalStatus, ApprovalView
from workflows import decide, get_approval, list_approvals

ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID_PATTERN)]
router = APIRouter(prefix="/v1/approvals", tags=["approvals"], responses=V1_ERRORS, dependencies=[Depends(authenticate)])


@router.get("", response_model=list[ApprovalView])
async def read_approvals(
    status: ApprovalStatus = None,  # type: ignore[assignment]  # optional, never null
    run_id: Annotated[str, Query(pattern=RUN_ID_PATTERN)] = None,  # type: ignore[assignment]
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Oldest first; `?status=pending` is the inbox."""
    return await list_approvals(status=status, run_id=run_id, limit=limit)


@router.get("/{approval_id}", response_model=ApprovalView)
async def read_approval(approval_id: ApprovalId) -> dict:
    return await get_approval(approval_id)


@router.post("/{approval_id}", response_model=ApprovalView)
async def decide_approval(approval_id: ApprovalId, body: ApprovalDecision, principal: Annotated[Principal, require("approve")]) -> dict:
    """Approve or reject (needs an `approve` key). The same decision again returns the recorded one; a different one is 409.
    The decider recorded is the key's ID and name, with `decided_by` when given (`alice via ops-console`)."""
    return await decide(approval_id, body.decision, decided_by=decider(principal, body.decided_by), decided_by_key_id=principal.key_id,
                        comment=body.comment)


def decider(principal: Principal, named: str | None) -> str:
    if principal.key_id is None or named in (None, principal.name):
        return named or principal.name
    return f"{named} via {principal.name}"
