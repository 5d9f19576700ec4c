"""Migrations are safe with many workers: `keel migrate` is the one migrator (under an advisory lock,
a no-op at head); workers and read-only commands never migrate, they wait for the head or refuse;
and every migration goes down and up again on a database that holds runs."""

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic import command
from psycopg import sql
from sqlalchemy.engine import make_url

from app.database import ensure_database, psycopg_conninfo
from app.schema import alembic_config, migrate, schema_version
from tests.conftest import TEST_DATABASE, wait_for_approval, wait_for_run
from tests.processes import KEEL, ROOT, Worker, free_port, stop


@pytest.fixture
def empty_database(database_url: str) -> Iterator[Callable[[str, bool], str]]:
    """URLs of databases of their own on the test server, dropped at the end: created empty, or not at all."""
    made: list[str] = []

    def make(suffix: str, create: bool = True) -> str:
        name = f"{TEST_DATABASE}_{suffix}"
        made.append(name)
        with psycopg.connect(maintenance(database_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if create:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_url(database_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with psycopg.connect(maintenance(database_url), autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def maintenance(url: str) -> str:
    return psycopg_conninfo(make_url(url).set(database="postgres").render_as_string(hide_password=False))


def keel_schema_exists(url: str) -> bool:
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        return conn.execute("SELECT to_regnamespace('keel') IS NOT NULL").fetchone()[0]


def env_for(worker_env: dict[str, str], url: str, **extra: str) -> dict[str, str]:
    return {**worker_env, "DATABASE_URL": url, "KEEL_AUTH": "off", "KEEL_WORKERS": "1", **extra}


async def ready(url: str, process: subprocess.Popen, timeout: float = 180) -> int:
    """`/readyz`'s status once the worker answers it."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the worker exited with {process.returncode}"
            try:
                return (await client.get(f"{url}/readyz")).status_code
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_processes_creating_one_missing_database_at_once_all_succeed(empty_database: Callable[..., str]) -> None:
    # Two CREATE DATABASE in flight meet pg_database's unique index (UniqueViolation, not DuplicateDatabase):
    # a `keel migrate` that lost that race exited 1 in CI.
    url = empty_database("created_at_once", create=False)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: ensure_database(url), range(8)))
    assert keel_schema_exists(url) is False  # the database is there, and empty


async def test_simultaneous_first_boots_migrate_once_and_every_worker_starts(
        empty_database: Callable[..., str], worker_env: dict[str, str], tmp_path: Path) -> None:
    url = empty_database("boots", create=False)  # not even the database exists yet
    env = env_for(worker_env, url, KEEL_MIGRATION_WAIT="180")
    migrators = [subprocess.Popen([str(KEEL), "migrate"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(3)]
    ports = [free_port(), free_port()]
    workers = []
    for i, port in enumerate(ports):
        with (tmp_path / f"worker-{i}.log").open("wb") as log:
            workers.append(subprocess.Popen([str(KEEL), "serve"], cwd=ROOT, env={**env, "KEEL_EXECUTOR_ID": f"boot-{i}", "KEEL_PORT": str(port)},
                                            stdout=log, stderr=subprocess.STDOUT))
    try:
        outputs = [process.communicate(timeout=180)[0] for process in migrators]
        statuses = [await ready(f"http://127.0.0.1:{port}", worker) for port, worker in zip(ports, workers, strict=True)]
    finally:
        for worker in workers:
            stop(worker)

    assert [process.returncode for process in migrators] == [0, 0, 0], outputs
    assert sum("migrated postgresql" in out for out in outputs) == 1, outputs  # the lock let one migrate...
    assert sum("already at head" in out for out in outputs) == 2, outputs  # ...and the others found the work done
    assert statuses == [200, 200]
    assert schema_version(url).at_head


async def test_workers_and_read_only_commands_never_migrate(empty_database: Callable[..., str], worker_env: dict[str, str], tmp_path: Path) -> None:
    url = empty_database("unmigrated")
    env = env_for(worker_env, url, KEEL_MIGRATION_WAIT="1", KEEL_EXECUTOR_ID="unmigrated", KEEL_PORT=str(free_port()))

    keys = subprocess.run([str(KEEL), "keys", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    worker = subprocess.run([str(KEEL), "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert keys.returncode == 1 and "Run `keel migrate`" in keys.stderr
    assert worker.returncode == 3 and "Run `keel migrate`" in worker.stdout + worker.stderr
    assert not keel_schema_exists(url)  # neither of them changed the database


async def test_every_migration_goes_down_and_up_again_on_a_database_with_runs(
        empty_database: Callable[..., str], worker_env: dict[str, str], tmp_path: Path) -> None:
    url = empty_database("roundtrip")
    migrate(url)
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        for customer in ("C-7701", "C-7702", "C-7703"):
            conn.execute("INSERT INTO sandbox.customers VALUES (%s, 'Round Trip', %s, 'basic')", (customer, f"{customer.lower()}@example.com"))
        conn.execute("INSERT INTO sandbox.faults (service, kind, match, remaining, seconds) VALUES ('plans', 'unavailable', 'C-7703', 1000, 0)")
    worker = Worker(env=env_for(worker_env, url, KEEL_EXECUTOR_ID="roundtrip"), log=tmp_path / "worker.log").start()
    try:  # a run of each kind: succeeded, cancelled while waiting for approval, compensated
        async with worker.client(timeout=30) as api:
            done = (await api.post("/v1/runs", json={"agent": "billing", "input": "Upgrade customer C-7701 to the pro plan"})).json()["run_id"]
            waiting = (await api.post("/v1/runs", json={"agent": "billing", "input": "Upgrade customer C-7702 to the enterprise plan"})).json()["run_id"]
            failing = (await api.post("/v1/runs", json={"agent": "billing", "input": "Upgrade customer C-7703 to the pro plan"})).json()["run_id"]
            await wait_for_approval(api, waiting)
            await api.post(f"/v1/runs/{waiting}/cancel")
            before = {run_id: (await wait_for_run(api, run_id))["status"] for run_id in (done, waiting, failing)}
    finally:
        worker.stop()

    command.downgrade(alembic_config(url), "base")
    emptied = keel_schema_exists(url) and schema_version(url).keel
    command.upgrade(alembic_config(url), "head")
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        workflows = conn.execute("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", ([done, waiting, failing],)).fetchone()[0]
        listed = conn.execute("SELECT count(*) FROM keel.runs WHERE run_id = ANY(%s)", ([done, waiting, failing],)).fetchone()[0]

    assert before == {done: "succeeded", waiting: "cancelled", failing: "compensated"}
    assert not emptied  # Keel's schema went all the way down
    assert schema_version(url).at_head
    assert workflows == 3 and listed == 3  # DBOS's rows were never Keel's to drop; the views read them again
