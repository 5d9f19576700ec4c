"""The timeline as SQL: `keel.timeline` (every event of a run, its undo calls' included, with a
one-line summary), `keel.llm_calls` and `keel.tool_calls_view`.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Undo calls run as `<run>:compensate:<n>`; the separator is spelt in two parts because alembic reads `:name` as a parameter.
TIMELINE = """
CREATE VIEW keel.timeline AS
SELECT split_part(e.run_id, ':' || 'compensate:', 1) AS run_id,
       row_number() OVER (PARTITION BY split_part(e.run_id, ':' || 'compensate:', 1) ORDER BY e.id) AS seq,
       e.id AS event_id,
       e.run_id AS source,
       e.created_at AS at,
       e.step_id,
       e.kind,
       e.attempt,
       CASE e.kind
           WHEN 'run_started' THEN 'agent ' || (e.payload ->> 'agent') || ': ' || left(e.payload ->> 'input', 80)
           WHEN 'llm_request' THEN 'turn ' || (e.payload ->> 'turn') || ': ' || jsonb_array_length(e.payload -> 'messages') || ' new message(s) to ' || (e.payload ->> 'model')
           WHEN 'llm_response' THEN 'turn ' || (e.payload ->> 'turn') || ': ' || (e.payload ->> 'finish_reason') || ', ' || (e.payload ->> 'total_tokens') || ' tokens, '
                                    || (e.payload ->> 'latency_ms') || ' ms, attempt ' || (e.payload ->> 'attempts')
           WHEN 'llm_error' THEN (e.payload -> 'error' ->> 'kind') || ': ' || (e.payload -> 'error' ->> 'message')
           WHEN 'tool_call' THEN (e.payload ->> 'tool') || '(' || left(e.payload ->> 'arguments', 100) || ') key ' || (e.payload ->> 'idempotency_key')
           WHEN 'tool_result' THEN (e.payload ->> 'tool') || CASE WHEN (e.payload ->> 'ok')::boolean
                THEN ' ok' || CASE WHEN (e.payload ->> 'deduplicated')::boolean THEN ' (deduplicated)' ELSE '' END
                           || CASE WHEN (e.payload ->> 'reconciled')::boolean THEN ' (reconciled)' ELSE '' END
                ELSE ' failed: ' || (e.payload -> 'error' ->> 'message') END
           WHEN 'retry' THEN 'attempt ' || e.attempt || ' failed (' || (e.payload -> 'error' ->> 'message') || '), waiting '
                             || round((e.payload ->> 'wait')::numeric, 2) || ' s'
           WHEN 'parked' THEN 'waiting ' || (e.payload ->> 'seconds') || ' s for ' || (e.payload ->> 'waiting_for')
           WHEN 'approval_requested' THEN (e.payload ->> 'tool') || ' needs approval ' || (e.payload ->> 'approval_id')
           WHEN 'approval_decided' THEN (e.payload ->> 'status') || coalesce(' by ' || (e.payload ->> 'decided_by'), '')
                                        || coalesce(': ' || (e.payload ->> 'comment'), '')
           WHEN 'approval_escalated' THEN 'no decision yet: escalated'
           WHEN 'rollback_started' THEN jsonb_array_length(e.payload -> 'effects') || ' effect(s) to undo'
           WHEN 'compensation_started' THEN 'undoing effect ' || e.step_id
           WHEN 'compensation_finished' THEN 'effect ' || e.step_id || ' undone'
           WHEN 'compensation_failed' THEN 'undoing effect ' || e.step_id || ' failed: ' || (e.payload -> 'error' ->> 'message')
           WHEN 'run_finished' THEN (e.payload ->> 'status') || coalesce(' (' || (e.payload ->> 'reason') || '): ' || (e.payload ->> 'message'), '')
           ELSE coalesce(e.payload ->> 'dependency', '')
       END AS summary,
       e.payload
FROM keel.events e
"""

LLM_CALLS = """
CREATE VIEW keel.llm_calls AS
SELECT run_id, step_id, (payload ->> 'turn')::int AS turn, payload ->> 'model' AS model,
       payload ->> 'finish_reason' AS finish_reason,
       (payload ->> 'prompt_tokens')::int AS prompt_tokens, (payload ->> 'completion_tokens')::int AS completion_tokens,
       (payload ->> 'total_tokens')::int AS total_tokens, (payload ->> 'cost_usd')::numeric AS cost_usd,
       (payload ->> 'latency_ms')::int AS latency_ms, (payload ->> 'attempts')::int AS attempts, created_at
FROM keel.events WHERE kind = 'llm_response'
"""

TOOL_CALLS = """
CREATE VIEW keel.tool_calls_view AS
SELECT split_part(run_id, ':' || 'compensate:', 1) AS run_id, run_id AS source, step_id, tool, idempotency_key, status,
       attempts, reconciled, arguments, result, error, created_at, completed_at,
       round(extract(epoch FROM completed_at - created_at) * 1000) AS duration_ms
FROM keel.tool_calls
"""


def upgrade() -> None:
    op.execute(TIMELINE)
    op.execute(LLM_CALLS)
    op.execute(TOOL_CALLS)


def downgrade() -> None:
    op.execute("DROP VIEW keel.tool_calls_view")
    op.execute("DROP VIEW keel.llm_calls")
    op.execute("DROP VIEW keel.timeline")
