"""Provider rate limits shared by every worker: at most R requests in any window of P seconds, and
at most C in flight, per model endpoint (base URL + model), however many workers send them.

A sliding-window log in Postgres. Each request is a row of `keel.model_requests`, inserted by the
worker before it sends the request (under a lock on the endpoint's `keel.rate_limiters` row, so
deciders run one at a time) and marked finished when the response is in. A request counts against
the window from its start until P seconds after it finished: the provider received it at some
moment in between, so no window of P seconds, on the provider's clock, ever sees more than R.
A request in flight counts until its lease ends (the model timeout plus a margin): a worker killed
mid-request gives its slot back then. Without limits configured, nothing here touches the database.

A request that must wait sleeps inside its step and asks again; when the wait would be longer than
the step's bound, `RateLimited` ends the attempt and the run waits durably (workflows/parking.py)."""

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from steps import db
from steps.retry import RateLimited

log = logging.getLogger("keel")

POLL = 0.1
"""Seconds between tries while every concurrency slot is taken (a release sends no notice)."""


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    rate: tuple[int, float] | None = None
    """(requests, period in seconds) per endpoint; None: no rate limit."""
    concurrency: int | None = None
    """Requests in flight per endpoint; None: no limit."""
    lease: float = 90.0
    """Seconds a request counts as in flight at most, should its worker die before it reports back."""

    @property
    def enabled(self) -> bool:
        return self.rate is not None or self.concurrency is not None


_limits = RateLimits()

LOCK = """
INSERT INTO keel.rate_limiters (endpoint, requests, period_seconds, concurrency) VALUES (%(endpoint)s, %(requests)s, %(period)s, %(concurrency)s)
ON CONFLICT (endpoint) DO UPDATE
SET requests = EXCLUDED.requests, period_seconds = EXCLUDED.period_seconds, concurrency = EXCLUDED.concurrency, updated_at = now()
"""
# Run after LOCK, in its transaction: a new statement, so it sees every request admitted before the lock was ours.
ADMIT = """
WITH forgotten AS (
    DELETE FROM keel.model_requests
    WHERE endpoint = %(endpoint)s AND coalesce(finished_at, lease_until) <= clock_timestamp() - make_interval(secs => %(period)s)
), counted AS (
    SELECT coalesce(finished_at, lease_until) AS ends, finished_at IS NULL AND lease_until > clock_timestamp() AS in_flight
    FROM keel.model_requests
    WHERE endpoint = %(endpoint)s AND coalesce(finished_at, lease_until) > clock_timestamp() - make_interval(secs => %(period)s)
), verdict AS (
    SELECT %(requests)s::int IS NULL OR count(*) < %(requests)s::int AS rate_ok,
           %(concurrency)s::int IS NULL OR count(*) FILTER (WHERE in_flight) < %(concurrency)s::int AS concurrency_ok,
           -- the earliest a counted request can leave the window (one in flight: P after it finishes, at the soonest now)
           extract(epoch FROM min(CASE WHEN in_flight THEN clock_timestamp() ELSE ends END)
                              + make_interval(secs => %(period)s) - clock_timestamp())::float AS rate_wait
    FROM counted
), admitted AS (
    INSERT INTO keel.model_requests (endpoint, run_id, lease_until)
    SELECT %(endpoint)s, %(run_id)s, clock_timestamp() + make_interval(secs => %(lease)s) FROM verdict WHERE rate_ok AND concurrency_ok
    RETURNING id
)
SELECT (SELECT id FROM admitted), rate_ok, concurrency_ok, rate_wait FROM verdict
"""
RELEASE = "UPDATE keel.model_requests SET finished_at = clock_timestamp() WHERE id = %s"


def configure(limits: RateLimits) -> None:
    global _limits
    _limits = limits


async def try_acquire(endpoint: str, run_id: str | None, lease: float) -> tuple[int | None, str, float]:
    """One decision: (request ID, "", 0) if admitted, else (None, which limit, seconds to wait at least)."""
    requests, period = _limits.rate or (None, 0.0)
    params = {"endpoint": endpoint, "requests": requests, "period": period, "concurrency": _limits.concurrency,
              "run_id": run_id, "lease": lease}
    async with db.pool().connection() as conn, conn.transaction():
        await conn.execute(LOCK, params)
        request_id, rate_ok, concurrency_ok, rate_wait = await (await conn.execute(ADMIT, params)).fetchone()
    if request_id is not None:
        return request_id, "", 0.0
    if not rate_ok:
        return None, "rate", max(rate_wait or 0.0, 0.0) + random.uniform(0, 0.05)
    return None, "concurrency", POLL * random.uniform(0.5, 1.5)


async def release(request_id: int) -> None:
    try:
        async with db.pool().connection() as conn:
            await conn.execute(RELEASE, (request_id,))
    except Exception:  # the lease gives the slot back; the call's own outcome matters more
        log.exception("could not release model request %s; its lease will", request_id)


OnWait = Callable[[float, str], Awaitable[None]]


LEASE_MARGIN = 30.0


@asynccontextmanager
async def slot(endpoint: str, *, run_id: str | None, max_wait: float, on_wait: OnWait, timeout: float | None = None) -> AsyncIterator[None]:
    """Hold one request's place under `endpoint`'s limits while the body sends it (with `timeout`).

    Waits up to `max_wait` seconds in all (`on_wait(seconds, limit)` hears of a wait once it is
    over), then raises `RateLimited` with the wait still expected."""
    if not _limits.enabled:
        yield
        return
    lease = _limits.lease if timeout is None else max(_limits.lease, timeout + LEASE_MARGIN)
    started = time.monotonic()
    limit = ""
    while True:
        request_id, blocked_by, wait = await try_acquire(endpoint, run_id, lease)
        if request_id is not None:
            break
        limit = blocked_by
        if time.monotonic() - started + wait > max_wait:
            raise RateLimited(endpoint, wait, limit)
        await asyncio.sleep(wait)
    try:
        if limit:
            await on_wait(round(time.monotonic() - started, 3), limit)
        yield
    finally:
        await release(request_id)
