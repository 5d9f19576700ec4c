"""One live process per executor ID, checked before DBOS recovers anything.

DBOS recovers, at launch, every pending run recorded under the process's executor ID: a second
process started with the ID of a live one would run the live one's runs a second time. So a worker
claims its ID first, and DBOS launches only once the claim holds:
- a session-level advisory lock on the ID, held on a connection of its own for the life of the
  process: PostgreSQL releases it the moment that process dies (or its connection does), so it
  is exact and free of clocks;
- and, because a restarted PostgreSQL drops every lock while the workers live on, the heartbeat in
  `keel.workers`: a beat from another process, fresher than `stale_after`, means that process is alive
  unless it ran on this host and its PID is gone. The claimant waits up to `stale_after` for such a
  beat to stop; if it does not, the ID is taken.
The claim beats once before DBOS launches, so the row names the new process from the start."""

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

import psycopg

log = logging.getLogger("keel")

LOCK = "SELECT pg_try_advisory_lock(hashtextextended('keel.executor:' || %s, 0))"
LAST_BEAT = """SELECT pid, host, extract(epoch FROM now() - last_seen)::float8 AS age FROM keel.workers WHERE executor_id = %s"""
BEAT = """
INSERT INTO keel.workers (executor_id, app_version, pid, host) VALUES (%s, %s, %s, %s)
ON CONFLICT (executor_id) DO UPDATE
SET app_version = EXCLUDED.app_version, pid = EXCLUDED.pid, host = EXCLUDED.host, last_seen = now(), started_at = now()
"""
# The server notices a vanished client (a host that died, a cable pulled) within about a minute,
# and releases its lock; a Unix-socket connection ignores these.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 15, "keepalives_interval": 5, "keepalives_count": 3}
SERVER_KEEPALIVES = "SET tcp_keepalives_idle = 15; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"


class ExecutorInUse(RuntimeError):
    """Another live process runs under this executor ID."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class ExecutorClaim:
    conninfo: str
    executor_id: str
    app_version: str
    stale_after: float
    conn: psycopg.AsyncConnection | None = None

    async def acquire(self) -> None:
        """Take the ID, or raise `ExecutorInUse` saying who has it."""
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, **KEEPALIVES)
        try:
            await conn.execute(SERVER_KEEPALIVES)
            if not (await (await conn.execute(LOCK, (self.executor_id,))).fetchone())[0]:
                raise ExecutorInUse(await self.in_use_message(conn, "holds its lock"))
            await self.wait_for_silence(conn)
            await conn.execute(BEAT, (self.executor_id, self.app_version, os.getpid(), socket.gethostname()))
        except BaseException:
            await conn.close()
            raise
        self.conn = conn

    async def wait_for_silence(self, conn: psycopg.AsyncConnection) -> None:
        """Return once no other process that may be alive beats under the ID."""
        waited = 0.0
        while True:
            row = await (await conn.execute(LAST_BEAT, (self.executor_id,))).fetchone()
            if row is None or not self.may_be_alive(*row):
                return
            if waited >= self.stale_after:
                raise ExecutorInUse(await self.in_use_message(conn, "keeps beating"))
            await asyncio.sleep(0.5)
            waited += 0.5

    def may_be_alive(self, pid: int, host: str, age: float) -> bool:
        if age >= self.stale_after:
            return False
        if host == socket.gethostname():  # here, the process table knows (a restarted container may reuse our PID)
            return pid != os.getpid() and pid_alive(pid)
        return True

    async def in_use_message(self, conn: psycopg.AsyncConnection, how: str) -> str:
        row = await (await conn.execute(LAST_BEAT, (self.executor_id,))).fetchone()
        holder = f"pid {row[0]} on host {row[1]}, last heartbeat {row[2]:.1f} s ago" if row else "no heartbeat yet"
        return (f"executor ID {self.executor_id!r} is in use by a live process ({holder}; it {how}). Two processes with one "
                "executor ID would run each other's runs twice: give this one its own KEEL_EXECUTOR_ID (or --executor-id), "
                "or stop the other first. `keel serve --workers N` gives each of its workers its own.")

    async def keep(self) -> None:
        """Called with every heartbeat: after the database dropped the lock (a PostgreSQL restart), take it again.
        If another process took the ID meanwhile (this one looked dead for `stale_after`), this one stops:
        one of the two must, and the other has started recovering."""
        if self.conn is not None:
            try:
                await self.conn.execute("SELECT 1")
                return
            except psycopg.Error:
                await self.conn.close()
                self.conn = None
        try:
            await self.acquire()
        except ExecutorInUse as exc:
            log.error("stopping: %s", exc)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            log.warning("executor ID %r claimed again after its database connection was lost", self.executor_id)

    async def release(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
