"""Keel core: the tool-call ledger, the event log and the runs view.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# DBOS's status mapped to Keel's run states; every terminal state carries a reason.
RUNS_VIEW = """
CREATE VIEW keel.runs AS
SELECT s.workflow_uuid AS run_id,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'agent' AS agent,
       i.inputs::jsonb -> 'positionalArgs' -> 0 ->> 'input' AS input,
       CASE s.status
           WHEN 'ENQUEUED' THEN 'queued'
           WHEN 'DELAYED' THEN 'queued'
           WHEN 'PENDING' THEN 'running'
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
       s.forked_from
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
WHERE s.name = 'keel.agent_run'
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS keel")
    op.execute(
        """
        CREATE TABLE keel.tool_calls (
            idempotency_key text PRIMARY KEY,
            run_id text NOT NULL,
            step_id integer NOT NULL,
            tool text NOT NULL,
            tool_call_id text,
            arguments jsonb NOT NULL,
            status text NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
            result jsonb,
            error jsonb,
            attempts integer NOT NULL DEFAULT 1,
            reconciled boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            completed_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX tool_calls_run_idx ON keel.tool_calls (run_id, step_id)")
    op.execute(
        """
        CREATE TABLE keel.events (
            id bigserial PRIMARY KEY,
            run_id text NOT NULL,
            step_id integer NOT NULL,
            kind text NOT NULL,
            attempt integer NOT NULL DEFAULT 0,
            payload jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (run_id, step_id, kind, attempt)
        )
        """
    )
    op.execute("CREATE INDEX events_kind_idx ON keel.events (kind, run_id)")
    op.execute(RUNS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW keel.runs")
    op.execute("DROP TABLE keel.events")
    op.execute("DROP TABLE keel.tool_calls")
