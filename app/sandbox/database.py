"""The sandbox's own connection pool: it plays services outside Keel, so it never competes with
Keel's pool (a tool holding a ledger connection while it calls the sandbox must not starve it)."""

from psycopg_pool import AsyncConnectionPool

_pool: AsyncConnectionPool | None = None


def configure(pool: AsyncConnectionPool | None) -> None:
    global _pool
    _pool = pool


def pool() -> AsyncConnectionPool:
    if _pool is None:
        raise RuntimeError("the sandbox is not configured: call app.sandbox.configure(pool) at start-up")
    return _pool
