"""Alembic environment for Keel's schemas (`keel`, `sandbox`). DBOS migrates its own `dbos`."""

import os

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

VERSION_TABLE_SCHEMA = "keel"


def database_url() -> str:
    url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("Set DATABASE_URL (or run `keel migrate`, which finds the embedded server).")
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def run_migrations() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {VERSION_TABLE_SCHEMA}")
        connection.commit()
        context.configure(connection=connection, version_table_schema=VERSION_TABLE_SCHEMA)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("Keel's migrations run online only.")
run_migrations()
