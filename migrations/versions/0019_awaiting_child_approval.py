"""A run whose child run waits for a person is `awaiting_approval` too, not `running`: the approval
holds up the whole tree. A descendant's ID is its ancestor's, then `:<step>:child` once per
generation (`steps.ids.child_run_id`), so the pattern finds the tree's approvals and not those of a
fork of a child (`...:child-fork-<hex>`, a run of its own). `:child` is spelt `':' || 'child'`
because alembic's text() reads `:name` as a parameter.

The view is 0018's, with that change applied to its text.

Revision ID: 0019
Revises: 0018
"""

import importlib

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

PREVIOUS = importlib.import_module("migrations.versions.0018_child_runs")

RUNS_VIEW = PREVIOUS.changed(PREVIOUS.RUNS_VIEW, {
    "WHEN EXISTS (SELECT 1 FROM keel.approvals a WHERE a.run_id = s.workflow_uuid AND a.status = 'pending')":
        "WHEN EXISTS (SELECT 1 FROM keel.approvals a WHERE a.status = 'pending'\n"
        "                                AND (a.run_id = s.workflow_uuid OR a.run_id LIKE s.workflow_uuid || ':%' || ':' || 'child'))",
})


def upgrade() -> None:
    op.execute(RUNS_VIEW)


def downgrade() -> None:
    op.execute(PREVIOUS.RUNS_VIEW)
