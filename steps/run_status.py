"""A run's status and the reason it ended, named once: the CLI, console, routers, workflows, tests and
bench import them from here (`keel.runs` computes them in SQL, and tests/test_run_status.py holds the
view to this list)."""

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    CANCELLED = "cancelled"


STATUSES = tuple(RunStatus)
"""Every status, in the order a run may pass through them (the console's filter lists them so)."""

ENDED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED,
                   RunStatus.CANCELLED})
"""States a run rests in: finished, or (`compensation_failed`) waiting for an operator's `keel compensate`."""

FINISHED = ENDED - {RunStatus.COMPENSATION_FAILED}
"""Ended for good: nothing more will happen to the run (a run that is `compensation_failed` may still be undone)."""

UNCANCELLABLE = FINISHED - {RunStatus.CANCELLED}
"""Cancelling these is refused; cancelling a cancelled run again is a no-op, and a `compensation_failed` one retries its undo."""

REPLAYED_TO_THE_END = ENDED - {RunStatus.CANCELLED}
"""A replay of these runs reads every step as recorded; a cancelled run stopped wherever the cancel found it."""


class Reason(StrEnum):
    """Why a run ended (`reason` of a run and of its `run_finished` event)."""

    INTERNAL_ERROR = "internal_error"
    MAX_TURNS_EXCEEDED = "max_turns_exceeded"
    APPROVAL_REJECTED = "approval_rejected"
    BUDGET_EXHAUSTED = "budget_exhausted"
    INVALID_MODEL_OUTPUT = "invalid_model_output"
    RETRIES_EXHAUSTED = "retries_exhausted"
    CIRCUIT_OPEN = "circuit_open"
    TOOL_FAILED = "tool_failed"
    MODEL_FAILED = "model_failed"
    CANCELLED = "cancelled"
    CHILD_FAILED = "child_failed"
    """A child run (an agent tool's call) failed, for a reason other than spending what this run had left."""
    PARENT_ROLLED_BACK = "parent_rolled_back"
    """A child run that succeeded, then was rolled back with the run that started it."""
