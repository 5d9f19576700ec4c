"""Workers on one PostgreSQL: each beats in `keel.workers`; when one stops beating, a live worker
takes its pending runs over.

DBOS recovers a worker's runs only when a worker with the same executor ID starts again. A worker
that died for good would strand them, so the first live worker to notice a stale heartbeat claims
the dead executor (one UPDATE, so only one claimant) and hands its pending workflows to the queue
with `DBOS.resume_workflow` on the claimant's run queue; a worker of that queue (and version) then runs
them from their last step.
A worker that comes back under the old ID finds nothing of its own to recover.

A live worker can strand runs too: when a run's task dies in-process without DBOS recording its end
(DBOS gives up on a database that stays away too long, say), the run stays PENDING on an executor
that is alive and never recovers it. `OrphanWatch` finds such runs, PENDING here but not running here,
and hands them to the queue the same way."""

import logging
import os
import socket
from dataclasses import dataclass, field

from dbos import DBOS

from steps import db, dbos_seam
from workflows import run_queue

log = logging.getLogger("keel")

BEAT = """
INSERT INTO keel.workers (executor_id, app_version, pid, host) VALUES (%s, %s, %s, %s)
ON CONFLICT (executor_id) DO UPDATE
SET app_version = EXCLUDED.app_version, pid = EXCLUDED.pid, host = EXCLUDED.host, last_seen = now()
"""
CLAIM = """
UPDATE keel.workers SET taken_over_by = %(me)s, taken_over_at = now()
WHERE executor_id <> %(me)s AND last_seen < now() - make_interval(secs => %(stale)s)
  AND (taken_over_at IS NULL OR taken_over_at < last_seen)
RETURNING executor_id
"""
PENDING = "SELECT workflow_uuid FROM dbos.workflow_status WHERE executor_id = %s AND status = 'PENDING' AND name LIKE 'keel.%%'"


async def beat(executor_id: str, app_version: str) -> None:
    async with db.pool().connection() as conn:
        await conn.execute(BEAT, (executor_id, app_version, os.getpid(), socket.gethostname()))


async def take_over_dead_workers(executor_id: str, stale_after: float) -> list[str]:
    """Claim executors silent for `stale_after` seconds and requeue their pending runs; returns them."""
    async with db.pool().connection() as conn:
        dead = [row[0] for row in await (await conn.execute(CLAIM, {"me": executor_id, "stale": stale_after})).fetchall()]
        orphans = [row[0] for executor in dead for row in await (await conn.execute(PENDING, (executor,))).fetchall()]
    for workflow_id in orphans:
        await DBOS.resume_workflow_async(workflow_id, queue_name=run_queue.current().name)
    if dead:
        log.warning("took over %d pending workflow(s) of stopped worker(s) %s", len(orphans), ", ".join(dead))
    return orphans


def running_here() -> set[str]:
    """Workflows this process is executing (or awaiting: a run waiting for an approval is one).
    DBOS has no public API for this; its registry of active workflows is the truth."""
    return dbos_seam.active_workflows()


@dataclass
class OrphanWatch:
    """Runs PENDING on this executor that this process does not run. One seen so in two checks in a
    row (a beat apart) is an orphan, not a run caught between its dequeue and its start."""

    suspects: set[str] = field(default_factory=set)

    async def adopt(self, executor_id: str) -> list[str]:
        async with db.pool().connection() as conn:
            pending = {row[0] for row in await (await conn.execute(PENDING, (executor_id,))).fetchall()}
        suspects = pending - running_here()
        orphans = sorted(suspects & self.suspects)
        self.suspects = suspects - set(orphans)
        for workflow_id in orphans:
            await DBOS.resume_workflow_async(workflow_id, queue_name=run_queue.current().name)
        if orphans:
            log.warning("requeued %d run(s) pending here that no task runs: %s", len(orphans), ", ".join(orphans))
        return orphans
