"""Reliability: shared circuit breakers (`keel.breakers`), worker heartbeats (`keel.workers`), and
runs that show what they wait for (`waiting_for`) and what they cost (`cost_usd`).

Revision ID: 0005
Revises: 0004
"""

import importlib

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The rollback's ID is `<run>:rollback`, spelt `':' || 'rollback'` because alembic's text() reads `:name` as a parameter.
RUNS_VIEW = """
CREATE OR REPLACE VIEW keel.runs AS
SELECT s.workflow_uuid AS run_id,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'agent' AS agent,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'input' AS input,
       CASE
           WHEN compensation.failed > 0 THEN 'compensation_failed'
           WHEN rollback.status IN ('PENDING', 'ENQUEUED') THEN 'compensating'
           WHEN s.status IN ('ENQUEUED', 'DELAYED') THEN 'queued'
           WHEN s.status = 'PENDING' THEN CASE WHEN waiting.approval_id IS NULL THEN 'running' ELSE 'awaiting_approval' END
           WHEN s.status = 'SUCCESS' THEN 'succeeded'
           WHEN s.status = 'CANCELLED' THEN 'cancelled'
           WHEN compensation.succeeded > 0 THEN 'compensated'
           ELSE 'failed'
       END AS status,
       CASE s.status
           WHEN 'SUCCESS' THEN NULL
           WHEN 'CANCELLED' THEN 'cancelled'
           WHEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' THEN 'max_recovery_attempts_exceeded'
           WHEN 'ERROR' THEN coalesce(finished.payload ->> 'reason', 'error')
       END AS reason,
       CASE WHEN s.status = 'SUCCESS' THEN o.output::jsonb END AS output,
       CASE WHEN s.status = 'ERROR'
            THEN coalesce(finished.payload ->> 'message', o.error::jsonb ->> 'message')
       END AS error,
       coalesce(usage.turns, 0) AS turns,
       coalesce(usage.tokens, 0) AS tokens,
       coalesce(usage.cost_usd, 0) AS cost_usd,
       to_timestamp(s.created_at / 1000.0) AS created_at,
       to_timestamp(s.updated_at / 1000.0) AS updated_at,
       s.executor_id,
       s.application_version AS app_version,
       s.recovery_attempts,
       s.forked_from,
       waiting.approval_id AS pending_approval_id,
       rollback.status AS rollback_status,
       CASE WHEN s.status = 'PENDING' AND latest.kind = 'parked' THEN latest.payload END AS waiting_for
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
LEFT JOIN LATERAL (
    SELECT e.payload FROM keel.events e
    WHERE e.run_id = s.workflow_uuid AND e.kind = 'run_finished'
    ORDER BY e.id DESC LIMIT 1
) finished ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS turns, sum((e.payload ->> 'total_tokens')::bigint) AS tokens,
           sum((e.payload ->> 'cost_usd')::numeric) AS cost_usd
    FROM keel.events e
    WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_response'
) usage ON true
LEFT JOIN LATERAL (
    SELECT a.approval_id FROM keel.approvals a
    WHERE a.run_id = s.workflow_uuid AND a.status = 'pending'
    ORDER BY a.requested_at DESC LIMIT 1
) waiting ON true
LEFT JOIN dbos.workflow_status rollback ON rollback.workflow_uuid = s.workflow_uuid || ':' || 'rollback'
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE c.status = 'failed') AS failed,
           count(*) FILTER (WHERE c.status = 'succeeded') AS succeeded
    FROM keel.compensations c WHERE c.run_id = s.workflow_uuid
) compensation ON true
LEFT JOIN LATERAL (
    SELECT e.kind, e.payload FROM keel.events e WHERE e.run_id = s.workflow_uuid ORDER BY e.id DESC LIMIT 1
) latest ON true
WHERE s.name = 'keel.agent_run'
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE keel.breakers (
            dependency text PRIMARY KEY,
            state text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
            failures integer NOT NULL DEFAULT 0,
            open_until timestamptz,
            probe_started_at timestamptz,
            opened_count integer NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE keel.workers (
            executor_id text PRIMARY KEY,
            app_version text NOT NULL,
            pid integer NOT NULL,
            host text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("DROP VIEW keel.runs")
    op.execute(RUNS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW keel.runs")
    op.execute(importlib.import_module("migrations.versions.0004_sagas").RUNS_VIEW)
    op.execute("DROP TABLE keel.workers")
    op.execute("DROP TABLE keel.breakers")
