"""How failures are classified, and the retry policy that acts on the classification.

`classify` is the one place where errors from tools, `openai`, `httpx`, `httpx2` and `psycopg` are
mapped to transient (worth retrying), permanent, or ask-the-model. `httpx2` is the fork `openai` 3
speaks HTTP with; a tool may bring either, and their errors share no class. Only Keel retries: the `openai` client is
built with `max_retries=0` and DBOS steps with no retries, so every attempt is seen and recorded."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import httpx2
import openai
import psycopg
import pydantic
from psycopg_pool import PoolTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_random_exponential

from steps.errors import ToolError, TransientToolError, UserError

T = TypeVar("T")
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
HTTP_STATUS_ERRORS = (httpx.HTTPStatusError, httpx2.HTTPStatusError)
TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped at `max_delay`; `Retry-After` honoured.

    Waits up to `max_delay` happen inside the step. A longer one (a large `Retry-After`) ends the
    step, and the workflow sleeps durably (`DBOS.sleep_async`) before the next attempt, so a crash
    during the wait loses nothing. `max_attempts` counts every attempt, in the step or after a sleep;
    `max_attempts=1` disables retries."""

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UserError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise UserError("need 0 <= initial_delay <= max_delay")


OUTAGES = (psycopg.OperationalError, PoolTimeout)


def is_outage(exc: BaseException) -> bool:
    """Keel's own database is unreachable: no fault of a tool or the model."""
    return isinstance(exc, OUTAGES)


OUTAGE_RETRIES: dict[str, Any] = {"retries_allowed": True, "max_attempts": 12, "interval_seconds": 0.5, "backoff_rate": 2.0,
                                  "should_retry": is_outage}
"""Options for Keel's DBOS steps: while the database is away (a restart, a failover), the step is
run again with backoff (about half an hour in all), like DBOS blocks its own writes. Steps are
idempotent, so running one again is safe; model and tool failures are never retried this way."""


class CircuitOpen(Exception):
    """The dependency's circuit breaker is open: no call went out; try after `retry_after` seconds."""

    def __init__(self, dependency: str, retry_after: float) -> None:
        super().__init__(f"circuit for {dependency} is open; retry in {retry_after:.1f}s")
        self.dependency = dependency
        self.retry_after = retry_after


class RateLimited(Exception):
    """A shared provider limit (steps/ratelimit.py) leaves no room for longer than the step waits:
    no call went out; try after `retry_after` seconds."""

    def __init__(self, endpoint: str, retry_after: float, limit: str) -> None:
        super().__init__(f"{limit} limit of {endpoint} reached; retry in {retry_after:.1f}s")
        self.endpoint = endpoint
        self.retry_after = retry_after


class IncompleteReply(Exception):
    """A reply that ended before it was complete (a stream with no finish reason): worth another attempt."""


REFUSED = frozenset({"circuit_open", "rate_limited"})
"""Failure kinds of calls that never went out: the run waits durably, and the attempt is not used up."""


@dataclass(frozen=True, kw_only=True)
class Failure:
    kind: str  # "transient" | "permanent" | "ask_model" | "circuit_open" | "rate_limited" | "outage"
    type: str
    message: str
    status: int | None = None
    retry_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(exc: BaseException) -> Failure:
    name = type(exc).__name__
    if isinstance(exc, CircuitOpen):
        return Failure(kind="circuit_open", type=name, message=str(exc), retry_after=exc.retry_after)
    if isinstance(exc, RateLimited):
        return Failure(kind="rate_limited", type=name, message=str(exc), retry_after=exc.retry_after)
    if isinstance(exc, ToolError):
        retry_after = exc.retry_after if isinstance(exc, TransientToolError) else None
        return Failure(kind=exc.kind, type=name, message=exc.message, retry_after=retry_after)
    if isinstance(exc, openai.APIStatusError):
        return _from_status(name, str(exc.message), exc.status_code, exc.response.headers)
    if isinstance(exc, HTTP_STATUS_ERRORS):
        response = exc.response
        return _from_status(name, f"{response.status_code} from {exc.request.url}", response.status_code, response.headers)
    if is_outage(exc):
        return Failure(kind="outage", type=name, message=str(exc) or name)
    transient = (openai.APIConnectionError, *TRANSPORT_ERRORS, TimeoutError, IncompleteReply)
    if isinstance(exc, transient):
        return Failure(kind="transient", type=name, message=str(exc) or name)
    if isinstance(exc, pydantic.ValidationError):
        return Failure(kind="permanent", type=name, message=str(exc))
    return Failure(kind="permanent", type=name, message=str(exc) or name)


def _from_status(name: str, message: str, status: int, headers: httpx.Headers | httpx2.Headers) -> Failure:
    kind = "transient" if status in TRANSIENT_STATUSES else "permanent"
    return Failure(kind=kind, type=name, message=message, status=status, retry_after=parse_retry_after(headers.get("retry-after")))


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


OnRetry = Callable[[int, Failure, float], Awaitable[None]]


class AttemptFailed(Exception):
    """The last attempt's failure, with the attempt number it had."""

    def __init__(self, failure: Failure, attempt: int) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.attempt = attempt

    def outcome(self, policy: RetryPolicy) -> dict[str, Any]:
        """The failure as a step output; `park` says the workflow should sleep durably and try again."""
        failure = self.failure
        wait = failure.retry_after or 0.0
        park = (failure.kind == "transient" and wait > policy.max_delay and self.attempt < policy.max_attempts) or (
            failure.kind in REFUSED)
        return {"ok": False, "error": failure.as_dict(), "attempts": self.attempt, "park": wait if park else None}


async def retrying(policy: RetryPolicy, attempt: Callable[[int], Awaitable[T]], on_retry: OnRetry, *, first: int = 1) -> T:
    """Run `attempt(n)` for n = first, first + 1, ... until it succeeds, fails for good, attempts run
    out, or the next wait is longer than `policy.max_delay` (then the workflow waits, durably).

    Raises `AttemptFailed`; `on_retry(n, failure, wait)` is awaited before each wait in the step."""
    backoff = wait_random_exponential(multiplier=policy.initial_delay, max=policy.max_delay)

    def number(state: RetryCallState) -> int:
        return first + state.attempt_number - 1

    def wait(state: RetryCallState) -> float:
        failure = classify(state.outcome.exception())
        return max(backoff(state), failure.retry_after or 0.0)

    def stop(state: RetryCallState) -> bool:
        return number(state) >= policy.max_attempts or wait(state) > policy.max_delay

    async def before_sleep(state: RetryCallState) -> None:
        failure = classify(state.outcome.exception())
        await on_retry(number(state), failure, state.upcoming_sleep)

    retryer = AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(lambda exc: classify(exc).kind == "transient"),
        before_sleep=before_sleep,
        sleep=asyncio.sleep,
        reraise=True,
    )
    current = first
    try:
        async for state in retryer:
            with state:
                current = number(state.retry_state)
                return await attempt(current)
    except Exception as exc:
        if is_outage(exc):  # not the call's failure: the step as a whole is retried (OUTAGE_RETRIES)
            raise
        raise AttemptFailed(classify(exc), current) from exc
    raise AssertionError("unreachable: tenacity either returns or reraises")
