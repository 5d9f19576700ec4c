"""Request and response models of the HTTP API (separate from durable state, which is plain JSON)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64, examples=["billing"])
    input: str = Field(min_length=1, max_length=100_000, examples=["Upgrade customer C-42 to the pro plan"])


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
    decided_by: str = Field("anonymous", min_length=1, max_length=200, description="Who decides (until API keys exist)")


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


class RunPage(BaseModel):
    runs: list[RunView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
