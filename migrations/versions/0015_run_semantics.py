"""Run semantics: re-asks in the timeline, forks that reuse their origin's outcomes.

- `keel.event_summary` gains `reask` (why the model was asked again, and how many re-asks are
  left) and says when a fork's tool call reused its origin's recorded outcome.
- `keel.forks.redo_effects`: the caller asked the fork to make its effects again.
- `keel.tool_calls.reused_from`: a fork's call answered with the origin's outcome (that key's).

Revision ID: 0015
Revises: 0014
"""

import importlib

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SUMMARY = """
CREATE OR REPLACE FUNCTION keel.event_summary(e keel.events) RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT CASE e.kind
    WHEN 'run_started' THEN 'agent ' || (e.payload ->> 'agent') || ': ' || left(e.payload ->> 'input', 80)
    WHEN 'llm_request' THEN 'turn ' || (e.payload ->> 'turn') || ': ' || coalesce((e.payload ->> 'agent') || ' sends ', '') || jsonb_array_length(e.payload -> 'messages') || ' new message(s) to ' || (e.payload ->> 'model')
    WHEN 'llm_response' THEN 'turn ' || (e.payload ->> 'turn') || ': ' || (e.payload ->> 'finish_reason') || ', ' || (e.payload ->> 'total_tokens') || ' tokens, '
                             || (e.payload ->> 'latency_ms') || ' ms, attempt ' || (e.payload ->> 'attempts')
    WHEN 'llm_error' THEN (e.payload -> 'error' ->> 'kind') || ': ' || (e.payload -> 'error' ->> 'message')
    WHEN 'reask' THEN 'asked again: ' || (SELECT string_agg(p ->> 'problem', '; ') FROM jsonb_array_elements(e.payload -> 'problems') p)
                      || ' (' || (e.payload ->> 'reasks_left') || ' re-ask(s) left)'
    WHEN 'tool_call' THEN (e.payload ->> 'tool') || '(' || left(e.payload ->> 'arguments', 100) || ') key ' || (e.payload ->> 'idempotency_key')
    WHEN 'tool_result' THEN (e.payload ->> 'tool') || CASE WHEN (e.payload ->> 'ok')::boolean
         THEN ' ok' || CASE WHEN (e.payload ->> 'deduplicated')::boolean THEN ' (deduplicated)' ELSE '' END
                    || CASE WHEN (e.payload ->> 'reconciled')::boolean THEN ' (reconciled)' ELSE '' END
                    || coalesce(' (reused from ' || (e.payload ->> 'reused_from') || ')', '')
         ELSE ' failed: ' || (e.payload -> 'error' ->> 'message') END
    WHEN 'retry' THEN 'attempt ' || e.attempt || ' failed (' || (e.payload -> 'error' ->> 'message') || '), waiting '
                      || round((e.payload ->> 'wait')::numeric, 2) || ' s'
    WHEN 'rate_limited' THEN 'waited ' || round((e.payload ->> 'waited')::numeric, 2) || ' s for the ' || (e.payload ->> 'limit') || ' limit'
    WHEN 'parked' THEN 'waiting ' || (e.payload ->> 'seconds') || ' s for ' || (e.payload ->> 'waiting_for')
    WHEN 'approval_requested' THEN (e.payload ->> 'tool') || ' needs approval ' || (e.payload ->> 'approval_id')
    WHEN 'approval_decided' THEN (e.payload ->> 'status') || coalesce(' by ' || (e.payload ->> 'decided_by'), '')
                                 || coalesce(': ' || (e.payload ->> 'comment'), '')
    WHEN 'approval_escalated' THEN 'no decision yet: escalated'
    WHEN 'rollback_started' THEN jsonb_array_length(e.payload -> 'effects') || ' effect(s) to undo'
    WHEN 'compensation_started' THEN 'undoing effect ' || e.step_id
    WHEN 'compensation_finished' THEN 'effect ' || e.step_id || ' undone'
    WHEN 'compensation_failed' THEN 'undoing effect ' || e.step_id || ' failed: ' || (e.payload -> 'error' ->> 'message')
    WHEN 'handoff' THEN (e.payload ->> 'from') || ' hands the conversation to ' || (e.payload ->> 'to')
    WHEN 'run_finished' THEN (e.payload ->> 'status') || coalesce(' (' || (e.payload ->> 'reason') || '): ' || (e.payload ->> 'message'), '')
    ELSE coalesce(e.payload ->> 'dependency', '')
END
$$
"""


def upgrade() -> None:
    op.execute(SUMMARY)
    op.execute("ALTER TABLE keel.forks ADD COLUMN redo_effects boolean NOT NULL DEFAULT false")
    op.execute("ALTER TABLE keel.tool_calls ADD COLUMN reused_from text")


def downgrade() -> None:
    op.execute("ALTER TABLE keel.tool_calls DROP COLUMN reused_from")
    op.execute("ALTER TABLE keel.forks DROP COLUMN redo_effects")
    previous = importlib.import_module("migrations.versions.0013_framework_events")
    op.execute(previous.summary(previous.NEW_CASE))
