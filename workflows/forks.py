"""What a fork changes: `keel.forks` holds, per forked run, the model or instructions it runs with
from its fork point on. The row is written before the fork starts and never changes, so reading it
in the workflow body is as deterministic as a recorded step."""

from typing import Any

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from steps import db, ids
from steps.retry import is_outage


async def record_fork(run_id: str, forked_from: str, from_step: int, model: str | None, instructions: str | None) -> None:
    async with db.pool().connection() as conn:
        await conn.execute(
            "INSERT INTO keel.forks (run_id, forked_from, from_step, model, instructions) VALUES (%s, %s, %s, %s, %s)",
            (run_id, forked_from, from_step, model, instructions))


@retry(retry=retry_if_exception(is_outage), wait=wait_exponential(max=30), stop=stop_after_delay(1800), reraise=True)
async def fork_overrides(run_id: str) -> dict[str, Any]:
    if not ids.is_fork(run_id):
        return {}  # the common case costs no query: a fork's ID says it is one
    async with db.pool().connection() as conn:
        row = await (await conn.execute("SELECT model, instructions FROM keel.forks WHERE run_id = %s", (run_id,))).fetchone()
    if row is None:
        return {}
    return {key: value for key, value in zip(("model", "instructions"), row, strict=True) if value is not None}
