"""Listing runs costs in proportion to the page, and one unreadable run breaks nobody's listing.

- `keel.runs` orders and filters on base columns behind indexes: `created_at` is exactly the
  expression of a partial index on `dbos.workflow_status` (agent runs only), and `dbos_status` (new)
  lets a status filter narrow to DBOS's own status indexes first.
- Its per-run lookups (last event, tokens, approval, rollback, compensations) are scalar subqueries,
  evaluated only for the rows a query returns and the columns it reads: `ORDER BY created_at DESC
  LIMIT 20` computes twenty runs, and a count by status looks at a run's rollback only when its DBOS
  status is not final. (A LATERAL join is evaluated for every row, read or not.)
- Stored inputs and outputs are read with `keel.readable_json`, which never raises: JSON that
  PostgreSQL's jsonb refuses (a `\\u0000` escape) is read with U+FFFD in its place, and anything else
  unreadable is NULL, so one run's text can no longer fail every listing.
- Statistics on the agent expression, so an `agent` filter walks the created_at index too.
- Indexes: events by run (the last event of a run), recent retries and model responses, tool calls
  and compensations by time, open compensations: what `/metrics` reads over its window.

Revision ID: 0016
Revises: 0015
"""

import importlib

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

READABLE_JSON = r"""
CREATE FUNCTION keel.readable_json(value text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN value::jsonb;
EXCEPTION WHEN others THEN
    BEGIN
        RETURN replace(value, '\u0000', '\ufffd')::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$$
"""

# The created_at expression, spelt the same in the view and in the index, so the planner matches them.
CREATED_AT = "to_timestamp(created_at / 1000.0)"
CREATED_INDEX = f"""
CREATE INDEX IF NOT EXISTS keel_agent_runs_created_idx ON dbos.workflow_status ({CREATED_AT} DESC, workflow_uuid DESC)
WHERE name = 'keel.agent_run'
"""

# `:rollback` is spelt `':' || 'rollback'` because alembic's text() reads `:name` as a parameter.
RUNS_VIEW = """
CREATE VIEW keel.runs AS
SELECT s.workflow_uuid AS run_id,
       keel.readable_json(i.inputs) -> 'positionalArgs' -> 0 ->> 'agent' AS agent,
       keel.readable_json(i.inputs) -> 'positionalArgs' -> 0 ->> 'input' AS input,
       CASE
           WHEN s.status = 'SUCCESS' THEN 'succeeded'  -- a run that succeeded is never rolled back
           WHEN EXISTS (SELECT 1 FROM keel.compensations c WHERE c.run_id = s.workflow_uuid AND c.status = 'failed') THEN 'compensation_failed'
           WHEN (SELECT r.status FROM dbos.workflow_status r WHERE r.workflow_uuid = s.workflow_uuid || ':' || 'rollback')
                IN ('PENDING', 'ENQUEUED') THEN 'compensating'
           WHEN s.status IN ('ENQUEUED', 'DELAYED') THEN 'queued'
           WHEN s.status = 'PENDING' THEN
               CASE WHEN EXISTS (SELECT 1 FROM keel.approvals a WHERE a.run_id = s.workflow_uuid AND a.status = 'pending')
                    THEN 'awaiting_approval' ELSE 'running' END
           WHEN s.status = 'CANCELLED' THEN 'cancelled'
           WHEN EXISTS (SELECT 1 FROM keel.compensations c WHERE c.run_id = s.workflow_uuid AND c.status = 'succeeded') THEN 'compensated'
           ELSE 'failed'
       END AS status,
       CASE s.status
           WHEN 'SUCCESS' THEN NULL
           WHEN 'CANCELLED' THEN 'cancelled'
           WHEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' THEN 'max_recovery_attempts_exceeded'
           WHEN 'ERROR' THEN coalesce((SELECT e.payload ->> 'reason' FROM keel.events e
                                       WHERE e.run_id = s.workflow_uuid AND e.kind = 'run_finished' ORDER BY e.id DESC LIMIT 1), 'error')
       END AS reason,
       CASE WHEN s.status = 'SUCCESS' THEN keel.readable_json(o.output) END AS output,
       CASE WHEN s.status = 'ERROR'
            THEN coalesce((SELECT e.payload ->> 'message' FROM keel.events e
                           WHERE e.run_id = s.workflow_uuid AND e.kind = 'run_finished' ORDER BY e.id DESC LIMIT 1),
                          keel.readable_json(o.error) ->> 'message')
       END AS error,
       (SELECT count(*) FROM keel.events e WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_response') AS turns,
       (SELECT coalesce(sum((e.payload ->> 'total_tokens')::bigint), 0) FROM keel.events e
        WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_response') AS tokens,
       (SELECT coalesce(sum((e.payload ->> 'cost_usd')::numeric), 0) FROM keel.events e
        WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_response') AS cost_usd,
       to_timestamp(s.created_at / 1000.0) AS created_at,
       to_timestamp(s.updated_at / 1000.0) AS updated_at,
       s.executor_id,
       s.application_version AS app_version,
       s.recovery_attempts,
       s.forked_from,
       (SELECT a.approval_id FROM keel.approvals a WHERE a.run_id = s.workflow_uuid AND a.status = 'pending'
        ORDER BY a.requested_at DESC LIMIT 1) AS pending_approval_id,
       (SELECT r.status FROM dbos.workflow_status r WHERE r.workflow_uuid = s.workflow_uuid || ':' || 'rollback') AS rollback_status,
       CASE WHEN s.status = 'PENDING'
            THEN (SELECT CASE WHEN e.kind = 'parked' THEN e.payload END FROM keel.events e
                  WHERE e.run_id = s.workflow_uuid ORDER BY e.id DESC LIMIT 1)
       END AS waiting_for,
       s.status AS dbos_status
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
WHERE s.name = 'keel.agent_run'
"""

# The planner's estimate of how many runs an agent has (a filter on `agent` then walks the created_at
# index instead of reading every run): statistics on the expression, at no cost to DBOS's writes.
AGENT_STATISTICS = """
CREATE STATISTICS keel.run_agents ON ((keel.readable_json(inputs) -> 'positionalArgs' -> 0 ->> 'agent')) FROM dbos.workflow_input
"""

INDEXES = {
    "events_run_idx": "keel.events (run_id, id)",
    "events_recent_retries_idx": "keel.events (created_at) WHERE kind = 'retry'",
    "events_recent_responses_idx": "keel.events (created_at) WHERE kind = 'llm_response'",
    "tool_calls_completed_idx": "keel.tool_calls (completed_at) WHERE completed_at IS NOT NULL",
    "compensations_updated_idx": "keel.compensations (updated_at)",
    "compensations_open_idx": "keel.compensations (run_id) WHERE status IN ('pending', 'running', 'parked', 'failed')",
}


def upgrade() -> None:
    op.execute(READABLE_JSON)
    op.execute(CREATED_INDEX)
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")
    op.execute(AGENT_STATISTICS)
    op.execute("DROP VIEW keel.runs")
    op.execute(RUNS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW keel.runs")
    op.execute(importlib.import_module("migrations.versions.0005_reliability").RUNS_VIEW)
    for name in INDEXES:
        op.execute(f"DROP INDEX keel.{name}")
    op.execute("DROP STATISTICS keel.run_agents")
    op.execute("DROP INDEX dbos.keel_agent_runs_created_idx")
    op.execute("DROP FUNCTION keel.readable_json(text)")
