"""Long waits are durable: when a step gives up on a wait too long to spend inside it (a large
`Retry-After`, an open circuit, a shared rate limit), the workflow sleeps with `DBOS.sleep_async`,
whose deadline is recorded, and then calls the step again. A crash during the wait resumes at the
same deadline.

A `Parking` policy says which failures park and for how long: the forward path parks only when the
step asks to (`FORWARD`); an undo also parks on a transient failure that used up its attempts
(`workflows.saga`), because giving up there strands an effect."""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dbos import DBOS

from steps.dbos_seam import off_the_queue
from steps.events import record_step
from steps.retry import REFUSED

MAX_PARKS = 50
"""A dependency still refusing after this many durable waits fails the call. Waits for a shared rate
limit do not count: the limit is Keel's own pacing, and it always frees up."""

StepCall = Callable[[int, dict[str, Any] | None], Awaitable[dict[str, Any]]]
OnPark = Callable[[dict[str, Any], float], Awaitable[None]]


def requested_wait(outcome: dict[str, Any]) -> float | None:
    """The wait the step asked for (`park`), if it asked."""
    return outcome.get("park")


@dataclass(frozen=True, kw_only=True)
class Parking:
    """When a failed call waits durably and tries again, and how much waiting it may do in all."""

    wait: Callable[[dict[str, Any]], float | None] = requested_wait
    """`wait(outcome)`: seconds to park before the next try, or None to stop."""
    max_parks: float = MAX_PARKS
    """Parks that count (waits for Keel's own rate limit do not)."""
    budget: float = math.inf
    """Seconds of parking in all: once this much waiting is done, the next failure is the outcome."""


FORWARD = Parking()


async def call_parking(call: StepCall, what: str, parking: Parking = FORWARD, on_park: OnPark | None = None, *,
                       first: dict[str, Any] | None = None) -> dict[str, Any]:
    """`call(first_attempt, previous_outcome)` until it succeeds, or fails without `parking` letting
    it wait. `on_park(outcome, seconds)` runs (as workflow code) before each durable wait. `first`:
    the outcome of a first call already made (one of a turn's parallel tool calls)."""
    outcome = first if first is not None else await call(1, None)
    parks, waited = 0, 0.0
    while not outcome["ok"] and parks < parking.max_parks:
        wait = parking.wait(outcome)
        if wait is None or waited >= parking.budget:
            break
        if on_park is not None:
            await on_park(outcome, wait)
        await record_step("parked", {"waiting_for": what, "error": outcome["error"], "seconds": wait})
        with off_the_queue(DBOS.workflow_id or ""):  # nor does one waiting on a timer
            await DBOS.sleep_async(wait)
        kind = outcome["error"]["kind"]
        parks += kind != "rate_limited"
        waited += wait
        refused = kind in REFUSED  # no call went out: the attempt is not used up
        outcome = await call(outcome["attempts"] + (0 if refused else 1), outcome)
    return outcome
