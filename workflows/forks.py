"""What a fork changes: `keel.forks` holds, per forked run, its origin, the model or instructions it
runs with from its fork point on, and whether it was asked to redo effects. The row is written
before the fork starts and never changes, so reading it in the workflow body is as deterministic as
a recorded step.

A fork reuses its origin's recorded outcome for a call it repeats with the same arguments, and asks
for approval again before any effect of its own (`steps.fork_reuse`); with `redo_effects` it makes
every effect again, live, under keys of its own."""

from dataclasses import dataclass
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from steps import db, ids
from steps.retry import is_outage


@dataclass(frozen=True)
class Fork:
    forked_from: str
    model: str | None
    instructions: str | None
    redo_effects: bool

    def overrides(self) -> dict[str, Any]:
        return {key: value for key, value in (("model", self.model), ("instructions", self.instructions)) if value is not None}

    @property
    def reuses_from(self) -> str | None:
        """The run whose recorded outcomes this fork's calls reuse (none when it redoes effects)."""
        return None if self.redo_effects else self.forked_from


async def record_fork(run_id: str, forked_from: str, from_step: int, model: str | None, instructions: str | None,
                      redo_effects: bool = False) -> None:
    async with db.pool().connection() as conn:
        await conn.execute(
            "INSERT INTO keel.forks (run_id, forked_from, from_step, model, instructions, redo_effects) VALUES (%s, %s, %s, %s, %s, %s)",
            (run_id, forked_from, from_step, model, instructions, redo_effects))


@retry(retry=retry_if_exception(is_outage), wait=wait_exponential(max=30), stop=stop_after_delay(1800), reraise=True)
async def read_fork(run_id: str) -> Fork | None:
    """What the fork `run_id` changes; None for a run that is no fork."""
    if not ids.is_fork(run_id):
        return None  # the common case costs no query: a fork's ID says it is one
    async with db.pool().connection() as conn:
        row = await (await conn.execute(
            "SELECT forked_from, model, instructions, redo_effects FROM keel.forks WHERE run_id = %s", (run_id,))).fetchone()
    return Fork(*row) if row else None


async def fork_overrides(run_id: str) -> dict[str, Any]:
    fork = await read_fork(run_id)
    return fork.overrides() if fork else {}
