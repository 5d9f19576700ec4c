"""Start-up survives a flaky network: each step of start-up that talks to the database is retried
on transient errors (a refused or dropped connection, a server starting or shutting down, too many
connections), with exponential backoff and full jitter, each retry logged, until
`KEEL_STARTUP_TIMEOUT` seconds have passed since start-up began. Then it gives up with one line that
says which step failed and the last error. Other errors (a wrong password, a missing database, a
bug) fail at once: waiting would not fix them."""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import sqlalchemy.exc
from psycopg_pool import PoolTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_random_exponential

T = TypeVar("T")
log = logging.getLogger("keel")
TRANSIENT_SQLSTATES = ("08", "53", "57P")
"""Connection exceptions, insufficient resources (too many connections), the server shutting down or starting up."""
SERVER_BUSY = ("is starting up", "is shutting down", "in recovery mode", "too many clients", "connection slots are reserved",
               "administrator command")
"""The same, refused while connecting: libpq then gives the server's FATAL message, without a SQLSTATE."""


class StartupFailed(RuntimeError):
    """Start-up gave up: the database stayed unreachable for the whole bound."""


def is_transient(exc: BaseException) -> bool:
    """A database error that a later attempt may not meet (also when wrapped, by SQLAlchemy or DBOS)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, PoolTimeout | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, psycopg.OperationalError) and seen.sqlstate is None:  # no server reply, or refused at connection
            return "FATAL:" not in str(seen) or any(phrase in str(seen) for phrase in SERVER_BUSY)
        if isinstance(seen, psycopg.OperationalError):
            return seen.sqlstate.startswith(TRANSIENT_SQLSTATES)
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Startup:
    """The start-up of one process: `await startup.step("migrate the database", action)`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    async def step(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """`await action()`, retried while it fails transiently and the deadline has not passed."""

        backoff = wait_random_exponential(multiplier=0.5, max=5.0)

        def wait(state: RetryCallState) -> float:  # the last attempt comes at the deadline, not a backoff short of it
            return min(backoff(state), max(0.0, self.deadline - time.monotonic()))

        def stop(state: RetryCallState) -> bool:
            return time.monotonic() >= self.deadline

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("start-up: could not %s (attempt %d: %s); retrying in %.1f s",
                        what, state.attempt_number, first_line(exc) if exc else "?", state.upcoming_sleep)

        retrying = AsyncRetrying(stop=stop, wait=wait,
                                 retry=retry_if_exception(is_transient), before_sleep=before_sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            message = (f"Keel could not start: could not {what} within {self.timeout:g} s (KEEL_STARTUP_TIMEOUT); "
                       f"last error: {first_line(exc)}")
            log.critical(message)
            raise StartupFailed(message) from None
        raise AssertionError("unreachable: tenacity either returns or reraises")
