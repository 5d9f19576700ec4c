"""A tool call holds a lease on its key, not a connection: `keel.tool_calls` gets the lease's owner,
fencing token and expiry.

- `lease_owner`: `<executor ID>/<process incarnation>` of the attempt running the call (NULL: none);
- `lease_token`: raised by one at every claim, so an outcome write `WHERE lease_token = <mine>` by an
  attempt that lost its lease (paused past its expiry, then taken over) changes nothing;
- `lease_expires_at`: until when the key is the owner's (renewed while a long tool runs).
The views list their columns, so they are unchanged.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""ALTER TABLE keel.tool_calls ADD COLUMN lease_owner text,
                                              ADD COLUMN lease_token bigint NOT NULL DEFAULT 0,
                                              ADD COLUMN lease_expires_at timestamptz""")


def downgrade() -> None:
    op.execute("ALTER TABLE keel.tool_calls DROP COLUMN lease_owner, DROP COLUMN lease_token, DROP COLUMN lease_expires_at")
