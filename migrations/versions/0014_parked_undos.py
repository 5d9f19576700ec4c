"""Undos that park: a compensation that met a transient failure (an open circuit, a rate limit, a
503) waits durably and tries again, with status `parked` and the time it tries again in `retry_at`.
The sandbox gains a fault kind `reject` (a 422: a permanent failure), to show the difference.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

STATUSES = "'pending', 'running', 'succeeded', 'failed', 'irreversible'"
FAULT_KINDS = "'drop_response', 'delay_response', 'unavailable'"


def upgrade() -> None:
    op.execute("ALTER TABLE keel.compensations DROP CONSTRAINT compensations_status_check")
    op.execute(f"ALTER TABLE keel.compensations ADD CONSTRAINT compensations_status_check CHECK (status IN ({STATUSES}, 'parked'))")
    op.execute("ALTER TABLE keel.compensations ADD COLUMN retry_at timestamptz")
    op.execute("ALTER TABLE sandbox.faults DROP CONSTRAINT faults_kind_check")
    op.execute(f"ALTER TABLE sandbox.faults ADD CONSTRAINT faults_kind_check CHECK (kind IN ({FAULT_KINDS}, 'reject'))")


def downgrade() -> None:
    op.execute("DELETE FROM sandbox.faults WHERE kind = 'reject'")
    op.execute("ALTER TABLE sandbox.faults DROP CONSTRAINT faults_kind_check")
    op.execute(f"ALTER TABLE sandbox.faults ADD CONSTRAINT faults_kind_check CHECK (kind IN ({FAULT_KINDS}))")
    op.execute("ALTER TABLE keel.compensations DROP COLUMN retry_at")
    op.execute("UPDATE keel.compensations SET status = 'running' WHERE status = 'parked'")
    op.execute("ALTER TABLE keel.compensations DROP CONSTRAINT compensations_status_check")
    op.execute(f"ALTER TABLE keel.compensations ADD CONSTRAINT compensations_status_check CHECK (status IN ({STATUSES}))")
