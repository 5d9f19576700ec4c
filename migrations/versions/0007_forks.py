"""Forks: `keel.forks` records what a forked run changes (model, instructions) and where it forked.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE keel.forks (
            run_id text PRIMARY KEY,
            forked_from text NOT NULL,
            from_step integer NOT NULL CHECK (from_step >= 1),
            model text,
            instructions text,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE keel.forks")
