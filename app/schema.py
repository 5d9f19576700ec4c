"""The database's schema: one migrator at a time, and workers that wait for it instead of migrating.

`keel migrate` is the only thing that changes the schema. It holds a PostgreSQL advisory lock while it
runs DBOS's migrations and then Keel's (alembic), so processes that start it together take turns, and
a process that finds the database at head changes nothing. A worker only reads the versions: it waits
(bounded) for a migration in progress to finish, and otherwise refuses to start, saying what to run."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from dbos import DBOS
from sqlalchemy.engine import make_url

from app.database import ensure_database, psycopg_conninfo, redact
from steps import dbos_seam

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
LOCK = "keel.migrate"
"""Named in `pg_advisory_lock(hashtextextended(...))`: the lock every migrator takes."""
log = logging.getLogger("keel")


class SchemaNotReady(RuntimeError):
    """The database is behind the schema this code needs (and nobody brought it to head in time)."""


@dataclass(frozen=True)
class SchemaVersion:
    dbos: int
    dbos_required: int
    keel: str | None
    keel_required: str | None

    @property
    def at_head(self) -> bool:
        # A newer DBOS schema belongs to a newer peer, which DBOS itself tolerates; Keel's must match.
        return self.dbos >= self.dbos_required and self.keel == self.keel_required

    def describe(self) -> str:
        return f"DBOS schema {self.dbos} (needs {self.dbos_required}), Keel migration {self.keel or 'none'} (needs {self.keel_required})"


def migration_head() -> str | None:
    """The newest revision in `migrations/`: what a ready database has applied."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def schema_version(url: str) -> SchemaVersion:
    """What the database has applied, and what this code needs. Reads only."""
    engine = sqlalchemy.create_engine(make_url(url).set(drivername="postgresql+psycopg"), poolclass=sqlalchemy.NullPool)
    try:
        dbos_applied, dbos_required = dbos_seam.migration_versions(engine)
    finally:
        engine.dispose()
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('keel.alembic_version')").fetchone()[0]
        keel = conn.execute("SELECT version_num FROM keel.alembic_version").fetchone() if exists else None
    return SchemaVersion(dbos_applied, dbos_required, keel[0] if keel else None, migration_head())


def migrate(url: str) -> bool:
    """Bring DBOS's schema `dbos`, then Keel's `keel` and `sandbox`, to head, one migrator at a time.
    Returns whether anything was applied (False: the database was already at head).

    DBOS goes first: Keel's views join its tables."""
    ensure_database(url)
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as lock:
        # Asked for again and again, never waited for in one statement: a waiting statement is an open
        # transaction, and DBOS's CREATE INDEX CONCURRENTLY (in the holder's migration) waits for every
        # open transaction to end, so the two would wait for each other.
        while not lock.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK,)).fetchone()[0]:
            time.sleep(0.2)
        try:  # whoever held the lock before us may have done the work
            if schema_version(url).at_head:
                return False
            DBOS.migrate(url)
            command.upgrade(alembic_config(url), "head")
            return True
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK,))


def wait_for_schema(url: str, timeout: float, poll: float = 0.5) -> SchemaVersion:
    """Return once the database is at head; wait up to `timeout` seconds for a migrator to get it there."""
    deadline = time.monotonic() + timeout
    version = schema_version(url)
    if not version.at_head and timeout > 0:
        log.warning("waiting up to %.0f s for `keel migrate`: %s", timeout, version.describe())
    while not version.at_head:
        if time.monotonic() >= deadline:
            raise SchemaNotReady(f"the database {redact(url)} is not migrated: {version.describe()}. "
                                 "Run `keel migrate` (once, for every worker), then start the workers.")
        time.sleep(poll)
        version = schema_version(url)
    return version
