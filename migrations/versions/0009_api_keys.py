"""API keys (stored as SHA-256 digests, with a role) and who submitted each run.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE keel.api_keys (
            key_id text PRIMARY KEY,
            name text NOT NULL,
            role text NOT NULL CHECK (role IN ('submit', 'approve', 'admin')),
            digest text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )
    """)
    op.execute("""
        CREATE TABLE keel.run_submitters (
            run_id text PRIMARY KEY,
            key_id text NOT NULL,
            submitted_at timestamptz NOT NULL DEFAULT now()
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE keel.run_submitters")
    op.execute("DROP TABLE keel.api_keys")
