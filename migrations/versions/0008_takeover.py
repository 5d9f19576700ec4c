"""Takeover: which live worker claimed a stopped worker's runs, and when.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE keel.workers ADD COLUMN taken_over_by text, ADD COLUMN taken_over_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE keel.workers DROP COLUMN taken_over_by, DROP COLUMN taken_over_at")
