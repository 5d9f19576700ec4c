"""Request and response models of the HTTP API (separate from durable state, which is plain JSON)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64, examples=["billing"])
    input: str = Field(min_length=1, max_length=100_000, examples=["Upgrade customer C-42 to the pro plan"])


class RunStarted(BaseModel):
    run_id: str
    status: str


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


class RunPage(BaseModel):
    runs: list[RunView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
