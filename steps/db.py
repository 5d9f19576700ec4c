"""The connection pool that the ledger and the event log use; `app` configures it at start-up."""

from psycopg_pool import AsyncConnectionPool


class PoolSlot:
    """A pool that a layer owns and the application sets at start-up (and clears at shutdown)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._pool: AsyncConnectionPool | None = None

    def configure(self, pool: AsyncConnectionPool | None) -> None:
        self._pool = pool

    def get(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError(f"{self.owner} has no connection pool: configure it at start-up")
        return self._pool


_keel = PoolSlot("steps.db")
configure = _keel.configure
pool = _keel.get
