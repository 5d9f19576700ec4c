"""Every name Keel gives a run and the things it derives from one, built and parsed here only.

A run's ID is always Keel's: 32 hex digits, random (`new_run_id`) or, for a client's
`Idempotency-Key`, a digest of the key *and the API key that sent it* (`keyed_run_id`), so a repeated
request finds its run, the same key from another API key is another run, and no client ever names a
workflow. Everything derived from a run carries a separator a run ID never holds (`:` or `-fork-`):

    <run>                      the run (workflow `keel.agent_run`)
    <run>:<step>               the ledger key of a tool call, unless the tool names a business key
    <run>:approval:<step>      an approval request
    <run>:rollback             the rollback (workflow `keel.rollback`)
    <run>:compensate:<n>       undo number n (workflow `keel.compensate`, and its ledger key)
    <run>-fork-<8 hex>         a fork of the run (itself a run)
    <run>:<step>:child         the child run a call of an agent tool started (itself a run; its
                               root is the part before the first `:`)

So a client's name can never become one of these (issue 13 item 4). Runs created before Keel named
them all keep their client-chosen IDs and stay readable (`READABLE_RUN_ID`)."""

import hashlib
import re
import uuid

KEEL_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
READABLE_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""What a path may name: Keel's run IDs and their derivations, and the client-chosen IDs of older runs."""

COMPENSATE = ":compensate:"
FORK_MARK = "-fork-"


def new_run_id() -> str:
    return uuid.uuid4().hex


def keyed_run_id(owner: str, idempotency_key: str) -> str:
    """The run of `idempotency_key` sent by `owner` (an API key's ID): the same pair, the same run."""
    return hashlib.sha256(f"keel-run\x00{owner}\x00{idempotency_key}".encode()).hexdigest()[:32]


def is_keel_run_id(name: str) -> bool:
    return KEEL_RUN_ID.match(name) is not None


def ledger_key(run_id: str, step_id: int) -> str:
    return f"{run_id}:{step_id}"


APPROVAL = ":approval:"


def approval_id(run_id: str, step_id: int) -> str:
    return f"{run_id}{APPROVAL}{step_id}"


def approval_run(approval: str) -> str:
    """The run whose request `approval` is; a fork may hold its origin's (copied with the steps before its fork point)."""
    return approval.rpartition(APPROVAL)[0]


def decision_message_key(approval: str) -> str:
    """The DBOS message key of a decision: one wake-up per approval, however often it is sent."""
    return f"decision:{approval}"


def rollback_id(run_id: str) -> str:
    return f"{run_id}:rollback"


def compensation_id(run_id: str, n: int) -> str:
    return f"{run_id}{COMPENSATE}{n}"


def fork_id(origin: str) -> str:
    return f"{origin[:100]}{FORK_MARK}{uuid.uuid4().hex[:8]}"


def is_fork(run_id: str) -> bool:
    return FORK_MARK in run_id


def run_of(workflow_id: str) -> str:
    """The run a workflow works for: itself, or the run whose effect an undo (`<run>:compensate:<n>`) undoes."""
    return workflow_id.split(COMPENSATE)[0]


def undo_label(run_id: str, source: str) -> str | None:
    """`compensate:<n>` for an event written by one of the run's undo calls; None for the run's own."""
    return source.removeprefix(run_id + ":") if source != run_id and run_of(source) == run_id else None


CHILD = ":child"


def child_run_id(run_id: str, step_id: int) -> str:
    """The run an agent tool's call at `step_id` of `run_id` starts: derived from that call's ledger key."""
    return ledger_key(run_id, step_id) + CHILD


def root_of(run_id: str) -> str:
    """The run at the top of `run_id`'s tree of child runs (itself, if it has no parent)."""
    return run_id.split(":", 1)[0]
