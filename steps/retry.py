"""How failures are classified, and the retry policy that acts on the classification.

`classify` is the one place where errors from tools, `openai`, `httpx` and `psycopg` are mapped to
transient (worth retrying), permanent, or ask-the-model. Only Keel retries: the `openai` client is
built with `max_retries=0` and DBOS steps with no retries, so every attempt is seen and recorded."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
import openai
import psycopg
import pydantic
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from steps.errors import ToolError, TransientToolError, UserError

T = TypeVar("T")
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; `Retry-After` honoured up to the cap."""

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UserError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise UserError("need 0 <= initial_delay <= max_delay")


@dataclass(frozen=True, kw_only=True)
class Failure:
    kind: str  # "transient" | "permanent" | "ask_model"
    type: str
    message: str
    status: int | None = None
    retry_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(exc: BaseException) -> Failure:
    name = type(exc).__name__
    if isinstance(exc, ToolError):
        retry_after = exc.retry_after if isinstance(exc, TransientToolError) else None
        return Failure(kind=exc.kind, type=name, message=exc.message, retry_after=retry_after)
    if isinstance(exc, openai.APIStatusError):
        return _from_status(name, str(exc.message), exc.status_code, exc.response.headers)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return _from_status(name, f"{response.status_code} from {exc.request.url}", response.status_code, response.headers)
    transient = (openai.APIConnectionError, httpx.TransportError, TimeoutError, psycopg.OperationalError)
    if isinstance(exc, transient):
        return Failure(kind="transient", type=name, message=str(exc) or name)
    if isinstance(exc, pydantic.ValidationError):
        return Failure(kind="permanent", type=name, message=str(exc))
    return Failure(kind="permanent", type=name, message=str(exc) or name)


def _from_status(name: str, message: str, status: int, headers: httpx.Headers) -> Failure:
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
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


OnRetry = Callable[[int, Failure, float], Awaitable[None]]


async def retrying(policy: RetryPolicy, attempt: Callable[[int], Awaitable[T]], on_retry: OnRetry) -> T:
    """Run `attempt(n)` for n = 1, 2, ... until it succeeds, fails permanently, or attempts run out.

    The last exception propagates; `on_retry(n, failure, wait)` is awaited before each wait."""
    backoff = wait_random_exponential(multiplier=policy.initial_delay, max=policy.max_delay)

    def wait(state: RetryCallState) -> float:
        failure = classify(state.outcome.exception())
        return min(policy.max_delay, max(backoff(state), failure.retry_after or 0.0))

    async def before_sleep(state: RetryCallState) -> None:
        failure = classify(state.outcome.exception())
        await on_retry(state.attempt_number, failure, state.upcoming_sleep)

    retryer = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(lambda exc: classify(exc).kind == "transient"),
        before_sleep=before_sleep,
        sleep=asyncio.sleep,
        reraise=True,
    )
    async for state in retryer:
        with state:
            return await attempt(state.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity either returns or reraises")
