"""Request and response models of the HTTP API (separate from durable state, which is plain JSON)."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from steps.approvals import ApprovalStatus
from steps.ids import READABLE_RUN_ID

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL characters: refused at the door (422), not at the database (500)."""
RUN_ID_PATTERN = READABLE_RUN_ID.pattern
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
"""Printable ASCII without spaces, as payment APIs take it; Keel maps it to a run ID of its own."""
APPROVAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"


def iso_8601(value: object) -> object:
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an ISO 8601 date and time with a zone, e.g. 2026-11-26T12:00:00Z")
    return value


Text = Annotated[str, Field(pattern=NO_NUL)]
"""Text from a client that Keel stores: without NUL (pydantic already refuses lone surrogates)."""
Timestamp = Annotated[AwareDatetime, BeforeValidator(iso_8601)]
"""A time with a zone, in ISO 8601 only (not a number of seconds)."""


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    details: Any = Field(None, description="For `invalid_request`: the fields at fault")


class ErrorResponse(BaseModel):
    """Every refusal has this shape."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "A malformed body or parameter (a page cursor, say)",
    401: "No API key, or one that is not valid or was revoked",
    403: "The key's role does not allow this",
    404: "No such run, approval or key",
    409: "Conflicts with the current state (a reused idempotency key, a contradicting decision, a finished run)",
    413: "The body is larger than `KEEL_MAX_BODY_BYTES`",
    429: "Too many runs wait for a worker (`KEEL_MAX_QUEUED_RUNS`): retry after `Retry-After` seconds",
    422: "The request is not valid (the fields at fault are in `details`), or names an unknown agent",
    503: "The database is not reachable; try again shortly",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error shape."""
    return {status: {"model": ErrorResponse, "description": ERROR_MEANINGS[status]} for status in statuses}


V1_ERRORS = errors(400, 401, 403, 404, 409, 413, 422, 503)
"""Every `/v1` router declares these: any `/v1` request can meet them (a 404 or 409 where the operation names something)."""


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Text = Field(min_length=1, max_length=64, examples=["billing"])
    input: Text = Field(min_length=1, max_length=100_000, examples=["Upgrade customer C-42 to the pro plan"])


class RunFork(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: int = Field(ge=1, description="The first step to run live; earlier steps reuse the recorded outputs")
    model: Text | None = Field(None, max_length=200)
    instructions: Text | None = Field(None, max_length=100_000)
    redo_effects: bool = Field(False, strict=True, description="Make every effect after the fork point again, live; by default a call the "
                                                   "origin made with the same arguments reuses its recorded outcome")


class RunStarted(BaseModel):
    run_id: str
    status: str


class ApprovalView(BaseModel):
    approval_id: str
    run_id: str
    root_run_id: str = Field(description="The run at the top of the run's tree: itself, or the run whose agent tool started it")
    tool: str
    arguments: dict[str, Any]
    status: ApprovalStatus
    requested_at: datetime
    expires_at: datetime
    escalations: int
    decided_by: str | None = Field(description="The decider's name: the API key's, or `<person> via <key name>`")
    decided_by_key_id: str | None = Field(description="The API key that decided (names are not unique); null with keys off")
    decided_at: datetime | None
    comment: str | None


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: Text | None = Field(None, max_length=2000)
    decided_by: Text | None = Field(None, min_length=1, max_length=200, description="Who decides, when the key is shared (a console's)")


class CompensationView(BaseModel):
    n: int
    tool: str
    idempotency_key: str
    workflow_id: str | None
    status: Literal["pending", "running", "parked", "succeeded", "failed", "irreversible"]
    error: dict[str, Any] | None
    retry_at: datetime | None = Field(None, description="When a parked undo tries again")


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
    parent_run_id: str | None = Field(None, description="The run whose agent tool's call started this child run")
    root_run_id: str | None = Field(None, description="The run at the top of this run's tree (itself, if it has no parent)")
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
