"""Child runs: `keel.runs` gains `parent_run_id` (DBOS's parent workflow: the run whose agent tool's
call started this one) and `root_run_id` (the run at the top of the tree, the part of a child's ID
before its first `:`, `steps.ids.root_of`); the timeline summarises `child_started` and
`child_finished`.

A child run that succeeded and was then rolled back with its parent is `compensated`, with the reason
`parent_rolled_back`, rather than `succeeded`: its effects are undone. (A run of its own that
succeeded is still never rolled back.)

The view is 0016's, with those changes applied to its text, so each version is stated once.

Revision ID: 0018
Revises: 0017
"""

import importlib

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

PREVIOUS_VIEW = importlib.import_module("migrations.versions.0016_run_listing").RUNS_VIEW
PREVIOUS_SUMMARY = importlib.import_module("migrations.versions.0015_run_semantics").SUMMARY

# `:rollback` is spelt `':' || 'rollback'` because alembic's text() reads `:name` as a parameter.
ROLLED_BACK = "EXISTS (SELECT 1 FROM dbos.workflow_status r WHERE r.workflow_uuid = s.workflow_uuid || ':' || 'rollback')"
CHANGES = {
    "WHEN s.status = 'SUCCESS' THEN 'succeeded'  -- a run that succeeded is never rolled back":
        f"WHEN s.status = 'SUCCESS' AND NOT {ROLLED_BACK} THEN 'succeeded'  -- only a child run is rolled back after it succeeded",
    "           WHEN s.status = 'CANCELLED' THEN 'cancelled'\n":
        "           WHEN s.status = 'CANCELLED' THEN 'cancelled'\n           WHEN s.status = 'SUCCESS' THEN 'compensated'\n",
    "           WHEN 'SUCCESS' THEN NULL\n":
        f"           WHEN 'SUCCESS' THEN CASE WHEN {ROLLED_BACK} THEN 'parent_rolled_back' END\n",
    "       s.status AS dbos_status\n":
        "       s.status AS dbos_status,\n       s.parent_workflow_id AS parent_run_id,\n"
        "       split_part(s.workflow_uuid, ':', 1) AS root_run_id\n",
}


CHILD_SUMMARIES = {
    "    WHEN 'run_finished' THEN":
        "    WHEN 'child_started' THEN (e.payload ->> 'tool') || ' starts child run ' || (e.payload ->> 'child_run_id')"
        " || ' (agent ' || (e.payload ->> 'agent') || ')'\n"
        "    WHEN 'child_finished' THEN 'child run ' || (e.payload ->> 'child_run_id') || ' ' || (e.payload ->> 'status')"
        " || coalesce(' (' || (e.payload ->> 'reason') || ')', '') || ', ' || (e.payload ->> 'turns') || ' turn(s), '"
        " || (e.payload ->> 'tokens') || ' tokens'\n"
        "    WHEN 'run_finished' THEN",
}


def changed(sql: str, changes: dict[str, str]) -> str:
    for old, new in changes.items():
        assert sql.count(old) == 1, f"the previous version no longer holds {old!r}"
        sql = sql.replace(old, new)
    return sql


RUNS_VIEW = changed(PREVIOUS_VIEW, CHANGES).replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)
SUMMARY = changed(PREVIOUS_SUMMARY, CHILD_SUMMARIES)


def upgrade() -> None:
    op.execute(RUNS_VIEW)
    op.execute(SUMMARY)


def downgrade() -> None:
    op.execute(PREVIOUS_SUMMARY)
    op.execute("DROP VIEW keel.runs")
    op.execute(PREVIOUS_VIEW)
