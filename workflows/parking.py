"""Long waits are durable: when a step gives up on a wait too long to spend inside it (a large
`Retry-After`, an open circuit, a shared rate limit), the workflow sleeps with `DBOS.sleep_async`,
whose deadline is recorded, and then calls the step again. A crash during the wait resumes at the
same deadline."""

from collections.abc import Awaitable, Callable
from typing import Any

from dbos import DBOS

from steps.events import record_step
from steps.retry import REFUSED

MAX_PARKS = 50
"""A dependency still refusing after this many durable waits fails the call. Waits for a shared rate
limit do not count: the limit is Keel's own pacing, and it always frees up."""

StepCall = Callable[[int, dict[str, Any] | None], Awaitable[dict[str, Any]]]


async def call_parking(call: StepCall, what: str) -> dict[str, Any]:
    """`call(first_attempt, previous_outcome)` until it succeeds, or fails without asking to park."""
    outcome = await call(1, None)
    parks = 0
    while parks < MAX_PARKS:
        wait = outcome.get("park")
        if outcome["ok"] or wait is None:
            return outcome
        await record_step("parked", {"waiting_for": what, "error": outcome["error"], "seconds": wait})
        await DBOS.sleep_async(wait)
        kind = outcome["error"]["kind"]
        parks += kind != "rate_limited"
        refused = kind in REFUSED  # no call went out: the attempt is not used up
        outcome = await call(outcome["attempts"] + (0 if refused else 1), outcome)
    return outcome
