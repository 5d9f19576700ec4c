"""Console sessions on the server (`keel.console_sessions`: a random ID's digest, its key, an expiry,
ended at logout), and the API key that decided an approval (`keel.approvals.decided_by_key_id`).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE keel.console_sessions (
            digest text PRIMARY KEY,
            key_id text NOT NULL REFERENCES keel.api_keys (key_id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            ended_at timestamptz
        )
    """)
    op.execute("CREATE INDEX console_sessions_expiry ON keel.console_sessions (expires_at)")
    op.execute("ALTER TABLE keel.approvals ADD COLUMN decided_by_key_id text")


def downgrade() -> None:
    op.execute("ALTER TABLE keel.approvals DROP COLUMN decided_by_key_id")
    op.execute("DROP TABLE keel.console_sessions")
