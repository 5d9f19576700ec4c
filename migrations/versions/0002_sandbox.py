"""The demo's sandbox services: customers and plans, tickets, payments, mail, fault knobs.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS sandbox")
    op.execute("CREATE TABLE sandbox.plans (name text PRIMARY KEY, price_cents integer NOT NULL)")
    op.execute(
        """
        CREATE TABLE sandbox.customers (
            id text PRIMARY KEY,
            name text NOT NULL,
            email text NOT NULL,
            plan text NOT NULL REFERENCES sandbox.plans (name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox.plan_changes (
            id bigserial PRIMARY KEY,
            customer_id text NOT NULL REFERENCES sandbox.customers (id),
            from_plan text NOT NULL,
            to_plan text NOT NULL,
            idempotency_key text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox.tickets (
            id bigserial PRIMARY KEY,
            customer_id text NOT NULL REFERENCES sandbox.customers (id),
            subject text NOT NULL,
            status text NOT NULL DEFAULT 'open',
            idempotency_key text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox.payments (
            id bigserial PRIMARY KEY,
            charge_id text NOT NULL UNIQUE,
            idempotency_key text NOT NULL UNIQUE,
            customer_id text NOT NULL REFERENCES sandbox.customers (id),
            amount_cents integer NOT NULL CHECK (amount_cents > 0),
            description text NOT NULL,
            status text NOT NULL DEFAULT 'succeeded',
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox.emails (
            id bigserial PRIMARY KEY,
            message_id text NOT NULL UNIQUE,
            idempotency_key text NOT NULL UNIQUE,
            recipient text NOT NULL,
            subject text NOT NULL,
            body text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox.faults (
            id bigserial PRIMARY KEY,
            service text NOT NULL CHECK (service IN ('payments', 'mail')),
            kind text NOT NULL CHECK (kind IN ('drop_response', 'delay_response', 'unavailable')),
            match text,
            remaining integer NOT NULL CHECK (remaining >= 0),
            seconds double precision NOT NULL DEFAULT 0
        )
        """
    )
    op.execute(
        """
        INSERT INTO sandbox.plans VALUES ('basic', 0), ('pro', 4900), ('enterprise', 49900)
        """
    )
    op.execute(
        """
        INSERT INTO sandbox.customers VALUES
            ('C-42', 'Ada Lovelace', 'ada@example.com', 'basic'),
            ('C-7', 'Grace Hopper', 'grace@example.com', 'basic'),
            ('C-99', 'Alan Turing', 'alan@example.com', 'pro')
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA sandbox CASCADE")
