"""Fault knobs of the sandbox services, consumed one request at a time.

A fault is taken on a connection of the sandbox's own, committed at once: never inside the
transaction of the effect it spoils, which rolls back when the fault fails the call (and would
give the fault back, so `times` would mean nothing)."""

from typing import Literal

from fastapi.responses import Response
from psycopg import AsyncConnection
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from app.sandbox.database import pool

FaultKind = Literal["drop_response", "delay_response", "unavailable", "reject"]

TAKE = """
UPDATE sandbox.faults SET remaining = remaining - 1
WHERE id = (
    SELECT id FROM sandbox.faults
    WHERE service = %s AND remaining > 0 AND (match IS NULL OR position(match IN %s) > 0)
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING kind, seconds
"""


class FaultCreate(BaseModel):
    service: Literal["payments", "mail", "plans"]
    kind: FaultKind = Field(description="unavailable: a 503 (transient) and reject: a 422 (permanent), before any effect; "
                                        "drop_response and delay_response: after the effect committed")
    match: str | None = Field(None, description="Only requests whose body contains this text")
    times: int = Field(1, ge=1)
    seconds: float = Field(0, ge=0, description="delay_response: how long to hold the response; unavailable: its Retry-After")


class Fault(BaseModel):
    kind: FaultKind
    seconds: float


async def take_fault(service: str, request_text: str) -> Fault | None:
    """Use up one application of the first fault of `service` that matches the request, if any."""
    async with pool().connection() as conn:  # autocommit: taken for good, whatever the caller's transaction does
        row = await (await conn.execute(TAKE, (service, request_text))).fetchone()
    return Fault(kind=row[0], seconds=row[1]) if row else None


async def add_fault(conn: AsyncConnection, fault: FaultCreate) -> int:
    row = await (await conn.execute(
        "INSERT INTO sandbox.faults (service, kind, match, remaining, seconds) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (fault.service, fault.kind, fault.match, fault.times, fault.seconds),
    )).fetchone()
    assert row is not None
    return row[0]


class DroppedResponse(Response):
    """Headers and half a body, then the connection closes: the effect committed, the reply is lost."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"lost":', "more_body": True})
        raise ConnectionAbortedError("sandbox fault: response dropped after the effect committed")
