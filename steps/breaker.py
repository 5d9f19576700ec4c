"""Circuit breakers shared by every worker: one row per dependency in `keel.breakers`.

closed ──(N consecutive transient failures)──▶ open ──(cool-down over)──▶ half_open (one probe)
  ▲                                                                          │
  └────────────────(probe succeeds)────────────────── (probe fails: open again)

While open no call goes out: the caller gets `CircuitOpen(retry_after)` and the run parks durably.
The clock is the database's, so every worker sees the same deadlines.

A process that read a clean circuit trusts it for `clean_for` seconds without asking again, until
its own next failure: the common path costs no query, and another worker's opening of the circuit
reaches this one within that time."""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from steps import db
from steps.retry import CircuitOpen, classify


@dataclass(frozen=True, kw_only=True)
class BreakerSettings:
    failure_threshold: int = 5
    cooldown: float = 30.0
    probe_timeout: float = 10.0
    """A probe that has not reported back in this long (its worker died) lets another one through."""
    clean_for: float = 1.0


_settings = BreakerSettings()
_clean_until: dict[str, float] = {}
"""Dependency -> monotonic time until which this process takes its circuit to be clean."""

ADMIT = """
SELECT state, failures,
       extract(epoch FROM open_until - now()) AS open_for,
       state = 'half_open' AND probe_started_at < now() - make_interval(secs => %(probe)s) AS probe_stale
FROM keel.breakers WHERE dependency = %(dep)s
"""
CREATE = "INSERT INTO keel.breakers (dependency) VALUES (%(dep)s) ON CONFLICT (dependency) DO NOTHING"
START_PROBE = """
UPDATE keel.breakers SET state = 'half_open', probe_started_at = now(), updated_at = now()
WHERE dependency = %(dep)s AND (
    (state = 'open' AND open_until <= now())
    OR (state = 'half_open' AND probe_started_at < now() - make_interval(secs => %(probe)s)))
RETURNING state
"""
SUCCEED = """
WITH old AS (SELECT state FROM keel.breakers WHERE dependency = %(dep)s FOR UPDATE)
UPDATE keel.breakers b SET state = 'closed', failures = 0, updated_at = now()
FROM old WHERE b.dependency = %(dep)s AND (old.state <> 'closed' OR b.failures > 0)
RETURNING old.state
"""
FAIL = """
WITH old AS (SELECT state, failures FROM keel.breakers WHERE dependency = %(dep)s FOR UPDATE),
new AS (SELECT CASE WHEN old.state = 'half_open' OR (old.state = 'closed' AND old.failures + 1 >= %(threshold)s)
                    THEN 'open' ELSE old.state END AS state FROM old)
UPDATE keel.breakers b
SET failures = b.failures + 1, state = new.state, updated_at = now(),
    open_until = CASE WHEN new.state = 'open' AND old.state <> 'open' THEN now() + make_interval(secs => %(cooldown)s) ELSE b.open_until END,
    opened_count = b.opened_count + (new.state = 'open' AND old.state <> 'open')::int
FROM old, new WHERE b.dependency = %(dep)s
RETURNING new.state, old.state
"""


def configure(settings: BreakerSettings) -> None:
    global _settings
    _settings = settings
    _clean_until.clear()


async def admit(dependency: str) -> str:
    """Let a call to `dependency` go out, or raise `CircuitOpen`. Returns the state it goes out in:
    "clean" (closed, no recent failure), "closed" (closed, with failures), or "half_open" (a probe)."""
    if _clean_until.get(dependency, 0.0) > time.monotonic():
        return "clean"
    params = {"dep": dependency, "probe": _settings.probe_timeout}
    async with db.pool().connection() as conn:
        row = await (await conn.execute(ADMIT, params)).fetchone()
        if row is None:
            await conn.execute(CREATE, params)
            return "clean"
        state, failures, open_for, probe_stale = row
        if state == "closed" and failures == 0:
            _clean_until[dependency] = time.monotonic() + _settings.clean_for
            return "clean"
        if state == "closed":
            return "closed"
        if state == "open" and open_for is not None and open_for > 0:
            raise CircuitOpen(dependency, float(open_for))
        if state == "open" or probe_stale:
            if await (await conn.execute(START_PROBE, params)).fetchone():
                return "half_open"
        raise CircuitOpen(dependency, _settings.probe_timeout)


async def record(dependency: str, ok: bool) -> str | None:
    """Report a call's outcome (`ok=False` only for transient failures); returns a new state, if any."""
    params = {"dep": dependency, "threshold": _settings.failure_threshold, "cooldown": _settings.cooldown}
    async with db.pool().connection() as conn:
        row = await (await conn.execute(SUCCEED if ok else FAIL, params)).fetchone()
    if row is None:
        return None
    if ok:  # resetting the failure count of a closed circuit is no transition
        return "closed" if row[0] != "closed" else None
    new_state, old_state = row
    return new_state if new_state != old_state else None


@asynccontextmanager
async def guard(dependency: str, on_change: Callable[[str], Awaitable[None]]) -> AsyncIterator[None]:
    """Run one call to `dependency` under its breaker; `on_change(state)` hears of each transition."""
    admitted = await admit(dependency)
    if admitted == "half_open":
        await on_change(admitted)
    try:
        yield
    except Exception as exc:
        if classify(exc).kind == "transient":
            _clean_until.pop(dependency, None)
            if state := await record(dependency, False):
                await on_change(state)
        raise
    # A success on a clean circuit changes nothing: no write on the common path.
    if admitted != "clean" and (state := await record(dependency, True)):
        await on_change(state)
