"""`/v1/runs`: start runs and read them."""

import base64
import binascii
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query
from fastapi.encoders import jsonable_encoder
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.auth import Principal, authenticate, check_owner, record_submitter, require
from app.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    NO_NUL,
    RUN_ID_PATTERN,
    V1_ERRORS,
    EventView,
    ReplayReport,
    RunCreate,
    RunFork,
    RunPage,
    RunStarted,
    RunView,
    Timestamp,
    errors,
)
from steps.run_status import STATUSES
from workflows import cancel_run, follow_run, fork_run, get_events, get_run, list_runs, replay_run, resume_run, retry_failed_compensations, start_run

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN)]
router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=V1_ERRORS, dependencies=[Depends(authenticate)])
StatusFilter = Literal[tuple(STATUSES)]  # a Literal, not the enum: the OpenAPI schema names the values inline


@router.post("", status_code=202, response_model=RunStarted, responses=errors(429))
async def create_run(body: RunCreate, principal: Annotated[Principal, require("submit")],
                     idempotency_key: Annotated[str, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN)] = None,  # type: ignore[assignment]
                     ) -> RunStarted:
    """Start a run; Keel names it. With `Idempotency-Key`, repeating the request with the same API key returns the
    same run (a different body is 409); the same key sent with another API key is another run."""
    run = await start_run(body.agent, body.input, owner=principal.owner, idempotency_key=idempotency_key)
    await record_submitter(run["run_id"], principal)
    return RunStarted(run_id=run["run_id"], status=run["status"])


@router.get("/{run_id}", response_model=RunView)
async def read_run(run_id: RunId) -> dict:
    return await get_run(run_id)


@router.get("/{run_id}/events", response_model=list[EventView])
async def read_events(run_id: RunId) -> list[dict]:
    """The run's timeline: every model call, tool call, retry, approval and compensation, in order."""
    return await get_events(run_id)


STREAM_DOC = """Server-Sent Events: the run's timeline and model output as they happen, from the run's DBOS stream.

- `event: <timeline kind>` (`run_started`, `llm_request`, `tool_call`, ...): `data` is the event (as in `/events`, without `seq`).
- `event: token`: `data` is `{"step_id", "attempt", "text"}`, model output as it arrives. When a `retry` or `llm_error`
  event with the same `step_id` and `attempt` follows, that attempt failed: drop its tokens.
- `event: end`: `data` is `{"status", "reason"}`; the run has ended and the server closes the stream.

Every message but `end` has an `id` (its stream offset). Reconnect with `Last-Event-ID` (or `?after=`) to resume
without loss or duplicates."""


SSE_MESSAGE = {
    "type": "object",
    "description": "One message of the stream",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "description": "A timeline kind, `token` or `end`"},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The message's offset in the run's stream (absent on `end`)"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


@router.get("/{run_id}/stream", summary="Follow a run live (SSE)", description=STREAM_DOC,
            responses={200: {"description": "An event stream", "content": {"text/event-stream": {"schema": SSE_MESSAGE}}}})
async def stream_run(run_id: RunId,
                     last_event_id: Annotated[str, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,9}$")] = None,  # type: ignore[assignment]
                     after: Annotated[int, Query(ge=-1, le=2**31 - 1, description="Resume after this offset (as Last-Event-ID does)")] = None,  # type: ignore[assignment]
                     ) -> EventSourceResponse:
    await get_run(run_id)  # a 404 before the stream starts

    async def messages() -> AsyncIterator[ServerSentEvent]:
        start = int(last_event_id) if last_event_id is not None else after if after is not None else -1
        async for item in follow_run(run_id, start):
            if "end" in item:
                yield ServerSentEvent(json.dumps(item["end"]), event="end")
            elif "token" in item:
                data = {"step_id": item["step_id"], "attempt": item["attempt"], "text": item["token"]}
                yield ServerSentEvent(json.dumps(data), event="token", id=str(item["offset"]))
            else:
                yield ServerSentEvent(json.dumps(jsonable_encoder(item["event"])), event=item["event"]["kind"], id=str(item["offset"]))

    return EventSourceResponse(messages(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/{run_id}/fork", status_code=202, response_model=RunView)
async def fork(run_id: RunId, body: RunFork, principal: Annotated[Principal, require("submit")]) -> dict:
    """A new run that reuses this one's recorded outputs before `from_step` and runs live from there."""
    await check_owner(run_id, principal)
    forked = await fork_run(run_id, body.from_step, model=body.model, instructions=body.instructions, redo_effects=body.redo_effects)
    await record_submitter(forked["run_id"], principal)
    return forked


@router.post("/{run_id}/replay", response_model=ReplayReport)
async def replay(run_id: RunId) -> dict:
    """Run the recorded run's logic again on its recorded outputs (nothing is called): does today's
    code make the same decisions? The upgrade check for pending runs."""
    return await replay_run(run_id)


@router.post("/{run_id}/cancel", response_model=RunView)
async def cancel(run_id: RunId, principal: Annotated[Principal, require("submit")]) -> dict:
    """Stop the run and undo its effects, newest first. A finished run is 409."""
    await check_owner(run_id, principal)
    return await cancel_run(run_id)


@router.post("/{run_id}/resume", response_model=RunView)
async def resume(run_id: RunId, principal: Annotated[Principal, require("submit")]) -> dict:
    """Hand a stopped run (dead-lettered, or on a worker that is gone) to any live worker."""
    await check_owner(run_id, principal)
    return await resume_run(run_id)


@router.post("/{run_id}/compensate", response_model=RunView)
async def compensate(run_id: RunId, principal: Annotated[Principal, require("submit")]) -> dict:
    """Retry the compensations that gave up (after fixing what made them fail)."""
    await check_owner(run_id, principal)
    return await retry_failed_compensations(run_id)


@router.get("", response_model=RunPage, responses=errors(400))
async def read_runs(
    # Optional parameters are typed without None, so the document does not offer `null` (a query string cannot carry it).
    status: StatusFilter = None,  # type: ignore[assignment]
    agent: Annotated[str, Query(max_length=200, pattern=NO_NUL)] = None,  # type: ignore[assignment]
    created_after: Annotated[Timestamp, Query(description="Runs created at or after this time (ISO 8601, with a zone)")] = None,  # type: ignore[assignment]
    created_before: Annotated[Timestamp, Query(description="Runs created before this time")] = None,  # type: ignore[assignment]
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str, Query(max_length=500, pattern=r"^[A-Za-z0-9_=-]*$")] = None,  # type: ignore[assignment]
) -> RunPage:
    """Newest first. Pass `next_cursor` back as `cursor` for the next page."""
    runs = await list_runs(status=status, agent=agent, limit=limit, created_after=created_after, created_before=created_before,
                           before=decode_cursor(cursor) if cursor else None)
    next_cursor = encode_cursor(runs[-1]["created_at"], runs[-1]["run_id"]) if len(runs) == limit else None
    return RunPage(runs=[RunView.model_validate(run) for run in runs], next_cursor=next_cursor)


def encode_cursor(created_at: datetime, run_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created_at), run_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(400, "invalid cursor") from None
