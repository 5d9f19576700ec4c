"""Databases and an in-process Keel: the minimal copy of `app.main.keel_lifespan` a benchmark needs
(no HTTP server, no heartbeats), so the per-step figures are Keel's durable loop and nothing else."""

import asyncio
import os
import time

import psycopg
from dbos import DBOS
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from app.config import Settings
from app.database import psycopg_conninfo
from app.main import dbos_config, run_queue
from app.schema import migrate
from bench.names import bench_database
from bench.suite.model import ScriptedModel
from steps import breaker, db, failpoints, llm
from steps.breaker import BreakerSettings

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KEEL_DB = bench_database()
LANGGRAPH_DB = bench_database("_lg")


def url_of(database: str) -> str:
    return make_url(SERVER).set(database=database).render_as_string(hide_password=False)


def conninfo(database: str) -> str:
    return psycopg_conninfo(url_of(database))


def fresh_database(name: str) -> str:
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return url_of(name)


def keel_settings(url: str, executor_id: str = "bench", **settings: object) -> Settings:
    return Settings(_env_file=None, database_url=url, executor_id=executor_id, app_version="keel-bench",
                    openai_base_url="http://scripted.bench/v1", openai_api_key="bench", model="scripted", **settings)


def prepare_keel_database() -> str:
    url = fresh_database(KEEL_DB)
    migrate(url)
    return url


class KeelProcess:
    """DBOS launched with Keel's configuration, Keel's steps configured, in this process."""

    def __init__(self, url: str, model: ScriptedModel, executor_id: str = "bench", **settings: object) -> None:
        self.url = url
        self.model = model
        self.settings = keel_settings(url, executor_id, **settings)
        self.queue = run_queue(self.settings)
        self.pool: AsyncConnectionPool | None = None

    async def start(self) -> None:
        s = self.settings
        self.pool = AsyncConnectionPool(psycopg_conninfo(self.url), min_size=1, max_size=s.db_pool_size,
                                        kwargs={"autocommit": True}, open=False)
        await self.pool.open()
        db.configure(self.pool)
        llm.configure(self.model.client(), default_model=s.model_name, prices=s.model_prices, timeout=s.model_timeout)
        breaker.configure(BreakerSettings(failure_threshold=s.breaker_threshold, cooldown=s.breaker_cooldown))
        failpoints.configure("")
        DBOS(config=dbos_config(s, self.url))
        self.queue.listen()
        DBOS.launch()
        await self.queue.register()

    async def stop(self) -> None:
        DBOS.destroy(workflow_completion_timeout_sec=0)
        if self.pool is not None:
            await self.pool.close()
        db.configure(None)


def xact_commits(database: str) -> int:
    """Committed transactions of `database` so far, read through a fresh connection (no cached snapshot)."""
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()[0]


async def settled_commits(database: str, settle: float) -> int:
    """`xact_commits` after `settle` seconds: PostgreSQL 15 backends flush their counters at most once a
    second and an idle one within 10 s, so a read after 11 s of quiet includes everything before it."""
    await asyncio.sleep(settle)
    return await asyncio.to_thread(xact_commits, database)


def now() -> float:
    return time.perf_counter()
