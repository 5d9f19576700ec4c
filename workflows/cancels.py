"""Finishing a cancelled run: its open approvals are cancelled and its effects undone (`keel.rollback`).

Keel's own cancel (`keel cancel`, `POST /v1/runs/{id}/cancel`) finishes the run at once. A run
cancelled from outside Keel (`dbos workflow cancel`, `DBOSClient.cancel_workflow`) stops the same
way, but nothing of Keel's hears of it: every worker looks for such runs at its heartbeat and
finishes them, and `keel doctor` lists the ones not finished yet. The rollback's workflow
(`<run>:rollback`) marks a finished cancel, and starting it twice starts it once, so several workers
may race for a run.

Cancelling a run cancels its child runs (agent tools' calls) with it, and finishes them the same way."""

import json
import logging
import time

from dbos import DBOS

from steps import db, events
from steps.approvals import cancel_pending_approvals
from steps.run_status import Reason, RunStatus
from workflows.agent import agent_names
from workflows.saga import start_rollback

log = logging.getLogger("keel")

RECENT_SECONDS = 7 * 24 * 3600.0
"""How far back a heartbeat looks (older runs cancelled from outside are left to `keel doctor`):
the search costs in proportion to the runs cancelled in this window, not to all runs ever."""

UNFINISHED = """
SELECT s.workflow_uuid, i.inputs, s.parent_workflow_id,
       (SELECT p.status FROM dbos.workflow_status p WHERE p.workflow_uuid = s.parent_workflow_id) AS parent_status
FROM dbos.workflow_status s JOIN dbos.workflow_input i USING (workflow_uuid)
WHERE s.status = 'CANCELLED' AND s.name = 'keel.agent_run' AND s.created_at > %s AND left(s.workflow_uuid, length(%s)) = %s
  AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status r WHERE r.workflow_uuid = s.workflow_uuid || ':rollback')
"""
LIVE_CHILDREN = """
WITH RECURSIVE tree AS (
    SELECT workflow_uuid, status FROM dbos.workflow_status WHERE parent_workflow_id = %s AND name = 'keel.agent_run'
    UNION ALL
    SELECT s.workflow_uuid, s.status FROM dbos.workflow_status s JOIN tree t ON s.parent_workflow_id = t.workflow_uuid
    WHERE s.name = 'keel.agent_run'
)
SELECT workflow_uuid FROM tree WHERE status IN ('PENDING', 'ENQUEUED')
"""
"""A run's child runs, and theirs, still going. Only agent runs: DBOS's own `cancel_children` would also
cancel a rollback or an undo started from a run's workflow, and strand its compensations."""
OUTSIDE = "cancelled outside Keel (by DBOS's cancel_workflow, e.g. `dbos workflow cancel`); its approvals are cancelled and its effects undone"


async def cancel_child_runs(run_id: str) -> None:
    """Cancel the run's child runs still going (after the run itself), and finish each like the run."""
    async with db.pool().connection() as conn:
        children = [child for (child,) in await (await conn.execute(LIVE_CHILDREN, (run_id,))).fetchall()]
    if children:
        await DBOS.cancel_workflows_async(children)
    await finish_outside_cancels(under=run_id + ":")


async def finish_cancel(run_id: str, agent: str) -> None:
    """After DBOS cancelled `run_id`: close its approval requests and undo its effects, newest first."""
    await cancel_pending_approvals(run_id)
    await start_rollback(run_id, agent, "cancelled")


async def finish_outside_cancels(*, within: float = RECENT_SECONDS, under: str = "") -> list[str]:
    """Finish the runs cancelled from outside Keel in the last `within` seconds, and the child runs
    cancelled with their parent (DBOS cancels a run's children with it); returns their IDs. `under`:
    only runs whose IDs start with it (a cancelled run's descendants, `<run>:`)."""
    since_ms = int((time.time() - within) * 1000)
    async with db.pool().connection() as conn:
        rows = await (await conn.execute(UNFINISHED, (since_ms, under, under))).fetchall()
    known = set(agent_names())
    finished = []
    for run_id, inputs, parent, parent_status in rows:
        agent = json.loads(inputs)["positionalArgs"][0]["agent"]
        if agent not in known:  # a worker that runs this agent finishes it
            continue
        message = f"cancelled with its parent run {parent}" if parent_status == "CANCELLED" else OUTSIDE
        await events.record(run_id, 0, "run_finished", {"status": RunStatus.CANCELLED, "reason": Reason.CANCELLED, "message": message})
        await finish_cancel(run_id, agent)
        finished.append(run_id)
    if finished and not under:
        log.warning("finished %d run(s) cancelled outside Keel: %s", len(finished), ", ".join(finished))
    return finished
