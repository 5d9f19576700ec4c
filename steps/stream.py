"""A run's live feed: the DBOS stream `keel` of the run's workflow (`dbos.streams`).

Each row is either a reference to a timeline event, `{"event": <keel.events id>}`, written in the same
statement as the event (so the feed never shows an event that did not commit, and costs no extra
commit), or a piece of model output, `{"token": text, "step_id", "attempt"}`. Offsets are assigned the
way DBOS's `write_stream` assigns them, so `DBOS.read_stream(run_id, "keel")` reads the same feed;
forks inherit the rows of the steps they reuse, as DBOS copies them."""

import asyncio
import json
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from steps import db, dbos_seam, ids

OTHER_WORKFLOW = 2**31 - 1
"""`function_id` of rows written by a run's undo calls: above any step, so a fork never copies them."""

KEY = "keel"
NEXT_OFFSET = dbos_seam.next_stream_offset("%(feed)s", KEY)



def _with_event(rows: str, first: str = "", result: str = "SELECT id FROM event") -> str:
    """One statement: the CTE `first` (if any), an event for each row of `rows`, its feed row, and `result`."""
    return f"""
WITH {first}event AS (
    INSERT INTO keel.events (run_id, step_id, kind, attempt, payload)
    {rows}
    ON CONFLICT (run_id, step_id, kind, attempt) DO NOTHING
    RETURNING id
), feed AS (
    {dbos_seam.STREAM_APPEND}
    SELECT %(feed)s, '{KEY}', json_build_object('event', event.id)::text, {NEXT_OFFSET}, %(function_id)s, '{dbos_seam.STREAM_SERIALIZATION}' FROM event
    WHERE EXISTS (SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = %(feed)s)  -- a feed belongs to a workflow (the ledger's own tests have none)
)
{result}
"""


RECORD_EVENT = _with_event("VALUES (%(run_id)s, %(step_id)s, %(kind)s, %(attempt)s, %(payload)s)")


def with_event(change: str) -> str:
    """`change` (an INSERT or UPDATE ... RETURNING) with the event of each row it returns, in one
    statement: one round trip instead of a transaction's four. Its result is `change`'s."""
    return _with_event("SELECT %(run_id)s, %(step_id)s, %(kind)s, %(attempt)s, %(payload)s FROM change",
                       first=f"change AS ({change}), ", result="SELECT * FROM change")

PUBLISH_TOKENS = f"""
{dbos_seam.STREAM_APPEND}
VALUES (%(feed)s, '{KEY}', %(value)s, {NEXT_OFFSET}, %(function_id)s, '{dbos_seam.STREAM_SERIALIZATION}')
"""


async def record_event(conn: AsyncConnection, run_id: str, step_id: int, kind: str, attempt: int, payload: dict[str, Any]) -> None:
    await _insert(conn, RECORD_EVENT, event_params(run_id, step_id, kind, attempt, payload))


async def change_with_event(conn: AsyncConnection, change: str, params: dict[str, Any], run_id: str, step_id: int, kind: str,
                            payload: dict[str, Any], attempt: int = 0) -> list[tuple[Any, ...]]:
    """Run `change` (named placeholders, with RETURNING) and record event `kind` if it returned a row,
    in one statement; returns its rows."""
    return await _insert(conn, with_event(change), {**params, **event_params(run_id, step_id, kind, attempt, payload)})


def event_params(run_id: str, step_id: int, kind: str, attempt: int, payload: dict[str, Any]) -> dict[str, Any]:
    feed = ids.run_of(run_id)  # an undo call (`<run>:compensate:<n>`) reports into its run's feed
    return {"run_id": run_id, "step_id": step_id, "kind": kind, "attempt": attempt, "payload": Jsonb(payload),
            "feed": feed, "function_id": step_id if feed == run_id else OTHER_WORKFLOW}


async def publish_tokens(run_id: str, step_id: int, attempt: int, text: str) -> None:
    value = json.dumps({"token": text, "step_id": step_id, "attempt": attempt}, separators=(",", ":"), ensure_ascii=False)
    async with db.pool().connection() as conn:
        await _insert(conn, PUBLISH_TOKENS, {"feed": ids.run_of(run_id), "value": value, "function_id": step_id})


async def _insert(conn: AsyncConnection, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Two writers racing for one offset: the loser tries again (as DBOS's own writer does)."""
    for _ in range(50):
        try:
            if conn.info.transaction_status == TransactionStatus.IDLE:
                cursor = await conn.execute(statement, params)  # autocommit: one round trip
            else:
                async with conn.transaction():  # a savepoint, so a lost race does not abort the caller's transaction
                    cursor = await conn.execute(statement, params)
            return await cursor.fetchall() if cursor.description else []
        except UniqueViolation:
            await asyncio.sleep(0.01)
    raise RuntimeError(f"could not append to the feed of {params['feed']}")


async def read(run_id: str, after: int, limit: int = 500) -> list[dict[str, Any]]:
    """Feed items with offsets above `after`, oldest first: `{"offset", "token"...}` or `{"offset", "event": <timeline item>}`."""
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        rows = await (await cursor.execute(
            """SELECT s."offset", s.value::jsonb AS value, e.id AS event_id, e.created_at AS at, e.run_id AS source, e.step_id, e.kind,
                      e.attempt, keel.event_summary(e) AS summary, e.payload
               FROM dbos.streams s LEFT JOIN keel.events e ON e.id = (s.value::jsonb ->> 'event')::bigint
               WHERE s.workflow_uuid = %s AND s.key = 'keel' AND s."offset" > %s
               ORDER BY s."offset" LIMIT %s""",
            (run_id, after, limit))).fetchall()
    items = []
    for row in rows:
        value = row.pop("value")
        if not isinstance(value, dict):
            continue  # DBOS's close marker
        if "token" in value:
            items.append({"offset": row["offset"], **value})
        elif row["event_id"] is not None:
            items.append({"offset": row.pop("offset"), "event": row})
    return items
