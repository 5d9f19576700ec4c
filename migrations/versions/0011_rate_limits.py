"""Provider rate limits shared by all workers: a log of model requests per endpoint.

`keel.rate_limiters` has one row per endpoint (base URL + model); a worker locks it while it
decides whether a request may go out. `keel.model_requests` holds the requests of the last period
and those in flight, each with a lease so that a killed worker's slot comes back.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE keel.rate_limiters (
            endpoint text PRIMARY KEY,
            requests integer,
            period_seconds double precision,
            concurrency integer,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("""
        CREATE TABLE keel.model_requests (
            id bigserial PRIMARY KEY,
            endpoint text NOT NULL REFERENCES keel.rate_limiters (endpoint) ON DELETE CASCADE,
            run_id text,
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            lease_until timestamptz NOT NULL
        )
    """)
    op.execute("CREATE INDEX model_requests_endpoint ON keel.model_requests (endpoint, started_at)")


def downgrade() -> None:
    op.execute("DROP TABLE keel.model_requests")
    op.execute("DROP TABLE keel.rate_limiters")
