"""Request and response models of the HTTP API (separate from durable state, which is plain JSON)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64, examples=["billing"])
    input: str = Field(min_length=1, max_length=100_000, examples=["Upgrade customer C-42 to the pro plan"])


class RunFork(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(ge=1, description="The first step to run live; earlier steps reuse the recorded outputs")
    model: str | None = Field(None, max_length=200)
    instructions: str | None = Field(None, max_length=100_000)


class RunStarted(BaseModel):
    run_id: str
    status: str


class ApprovalView(BaseModel):
    approval_id: str
    run_id: str
    tool: str
    arguments: dict[str, Any]
    status: Literal["pending", "approved", "rejected", "expired"]
    requested_at: datetime
    expires_at: datetime
    escalations: int
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=2000)
    decided_by: str | None = Field(None, min_length=1, max_length=200, description="Who decides, when the key is shared (a console's)")


class CompensationView(BaseModel):
    n: int
    tool: str
    idempotency_key: str
    workflow_id: str | None
    status: Literal["pending", "running", "succeeded", "failed", "irreversible"]
    error: dict[str, Any] | None


class RunView(BaseModel):
    run_id: str
    agent: str | None
    input: str | None
    status: str
    reason: str | None
    output: Any
    error: str | None
    turns: int
    tokens: int
    cost_usd: float
    waiting_for: dict[str, Any] | None = Field(None, description="What a parked run waits for (a dependency, a Retry-After)")
    forked_from: str | None
    created_at: datetime
    updated_at: datetime
    pending_approval: ApprovalView | None = None
    compensations: list[CompensationView] = Field(default_factory=list, description="Effects undone, pending or left in place")


class EventView(BaseModel):
    seq: int
    at: datetime
    source: str = Field(description="The run, or `<run>:compensate:<n>` for a call that undid an effect")
    step_id: int
    kind: str
    attempt: int
    summary: str | None
    payload: dict[str, Any]


class ReplayReport(BaseModel):
    run_id: str
    same: bool = Field(description="The current code makes the decisions the run recorded")
    divergence: str | None = Field(None, description="The first step where it does not")
    steps: list[dict[str, Any]] = Field(description="The recorded steps the code asked for, in order")
    recorded_outcome: dict[str, Any]
    replayed_outcome: dict[str, Any] | None


class RunPage(BaseModel):
    runs: list[RunView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
