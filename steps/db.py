"""The connection pool that the ledger and the event log use; `app` configures it at start-up."""

from psycopg_pool import AsyncConnectionPool

_pool: AsyncConnectionPool | None = None


def configure(pool: AsyncConnectionPool | None) -> None:
    global _pool
    _pool = pool


def pool() -> AsyncConnectionPool:
    if _pool is None:
        raise RuntimeError("steps.db is not configured: call steps.db.configure(pool) at start-up")
    return _pool
