"""Runs that are not progressing, and what would move them: `keel doctor`, `GET /v1/doctor`.

DBOS recovers a worker's runs only when a worker with the same executor ID and application version
starts, so a run can stop moving without any error. This finds such runs (and the others that wait
on something) and says what to do."""

from typing import Any

from psycopg.rows import dict_row

from steps import db

CHECKS = {
    "executor_gone": """
        SELECT s.workflow_uuid AS run_id, s.executor_id, s.application_version AS app_version,
               w.last_seen
        FROM dbos.workflow_status s LEFT JOIN keel.workers w USING (executor_id)
        WHERE s.status = 'PENDING' AND s.name = 'keel.agent_run'
          AND (w.executor_id IS NULL OR w.last_seen < now() - make_interval(secs => %(stale)s))""",
    "other_version": """
        SELECT workflow_uuid AS run_id, status AS dbos_status, application_version AS app_version
        FROM dbos.workflow_status
        WHERE status IN ('PENDING', 'ENQUEUED') AND name = 'keel.agent_run' AND application_version <> %(version)s""",
    "dead_lettered": """
        SELECT workflow_uuid AS run_id, recovery_attempts FROM dbos.workflow_status
        WHERE status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' AND name LIKE 'keel.%%'""",
    "circuit_open": """
        SELECT run_id, waiting_for ->> 'waiting_for' AS dependency, waiting_for -> 'error' ->> 'message' AS detail
        FROM keel.runs WHERE waiting_for -> 'error' ->> 'kind' = 'circuit_open'""",
    "compensation_parked": """
        SELECT run_id, tool, error ->> 'kind' AS kind, error ->> 'message' AS detail, retry_at
        FROM keel.compensations WHERE status = 'parked'""",
    "cancelled_outside": """
        SELECT s.workflow_uuid AS run_id FROM dbos.workflow_status s
        WHERE s.status = 'CANCELLED' AND s.name = 'keel.agent_run'
          AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status r WHERE r.workflow_uuid = s.workflow_uuid || ':rollback')""",
    "compensation_failed": """
        SELECT r.run_id, c.tool, c.error ->> 'message' AS detail
        FROM keel.runs r JOIN keel.compensations c USING (run_id)
        WHERE r.status = 'compensation_failed' AND c.status = 'failed'""",
}

FIXES = {
    "executor_gone": ("its worker stopped beating; restart a worker with KEEL_EXECUTOR_ID={executor_id}, "
                      "or `keel resume {run_id}` to let any live worker take it"),
    "other_version": "only a worker with KEEL_APP_VERSION={app_version} recovers it: start one to drain it, or check with `keel replay` before moving it",
    "dead_lettered": "crashed its worker {recovery_attempts} times; after fixing the cause, `keel resume {run_id}`",
    "circuit_open": "waits for {dependency} to recover; it resumes by itself once a probe call succeeds",
    "compensation_parked": "undoing {tool} met a transient failure ({kind}: {detail}); it tries again by itself at {retry_at:%Y-%m-%d %H:%M:%S %Z}",
    "cancelled_outside": ("cancelled outside Keel (`dbos workflow cancel`): its effects are not undone and its approvals are open; "
                          "a worker finishes it at its next heartbeat, or `keel cancel {run_id}` does now"),
    "compensation_failed": "undoing {tool} failed; fix the cause, then `keel compensate {run_id}`",
}


async def diagnose(*, current_version: str, stale_after: float) -> list[dict[str, Any]]:
    """Every run that is stuck or waiting on something, with the problem and a suggested fix."""
    findings = []
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        for problem, query in CHECKS.items():
            for row in await (await cursor.execute(query, {"stale": stale_after, "version": current_version})).fetchall():
                details = {k: v for k, v in row.items() if k != "run_id"}
                findings.append({"run_id": row["run_id"], "problem": problem, "details": details,
                                 "fix": FIXES[problem].format(**row)})
    return findings
