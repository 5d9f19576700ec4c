"""Human approval: the inbox `keel.approvals`, and runs that wait on it show `awaiting_approval`.

Revision ID: 0003
Revises: 0002
"""

import importlib

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RUNS_VIEW = """
CREATE OR REPLACE VIEW keel.runs AS
SELECT s.workflow_uuid AS run_id,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'agent' AS agent,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'input' AS input,
       CASE s.status
           WHEN 'ENQUEUED' THEN 'queued'
           WHEN 'DELAYED' THEN 'queued'
           WHEN 'PENDING' THEN CASE WHEN waiting.approval_id IS NULL THEN 'running' ELSE 'awaiting_approval' END
           WHEN 'SUCCESS' THEN 'succeeded'
           WHEN 'CANCELLED' THEN 'cancelled'
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
       to_timestamp(s.created_at / 1000.0) AS created_at,
       to_timestamp(s.updated_at / 1000.0) AS updated_at,
       s.executor_id,
       s.application_version AS app_version,
       s.recovery_attempts,
       s.forked_from,
       waiting.approval_id AS pending_approval_id
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
LEFT JOIN LATERAL (
    SELECT e.payload FROM keel.events e
    WHERE e.run_id = s.workflow_uuid AND e.kind = 'run_finished'
    ORDER BY e.id DESC LIMIT 1
) finished ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS turns, sum((e.payload ->> 'total_tokens')::bigint) AS tokens
    FROM keel.events e
    WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_response'
) usage ON true
LEFT JOIN LATERAL (
    SELECT a.approval_id FROM keel.approvals a
    WHERE a.run_id = s.workflow_uuid AND a.status = 'pending'
    ORDER BY a.requested_at DESC LIMIT 1
) waiting ON true
WHERE s.name = 'keel.agent_run'
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE keel.approvals (
            approval_id text PRIMARY KEY,
            run_id text NOT NULL,
            step_id integer NOT NULL,
            tool text NOT NULL,
            tool_call_id text NOT NULL,
            arguments jsonb NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
            requested_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            escalations integer NOT NULL DEFAULT 0,
            decided_by text,
            decided_at timestamptz,
            comment text
        )
        """
    )
    op.execute("CREATE INDEX approvals_pending_idx ON keel.approvals (requested_at) WHERE status = 'pending'")
    op.execute("CREATE INDEX approvals_run_idx ON keel.approvals (run_id)")
    op.execute(RUNS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW keel.runs")
    op.execute("DROP TABLE keel.approvals")
    op.execute(importlib.import_module("migrations.versions.0001_keel_core").RUNS_VIEW)
