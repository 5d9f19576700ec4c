"""A worker started while the network to PostgreSQL drops and resets connections comes up anyway:
start-up retries transient database errors, with backoff, each retry logged. A worker whose
database never answers gives up after `KEEL_STARTUP_TIMEOUT`, saying so in one line."""

import time
from pathlib import Path

import psycopg
import pytest

from bench.netproxy import Faults, NetProxy, ProxyThread, upstream_address
from tests.conftest import wait_for_run
from tests.processes import Worker


def proxied_worker(worker_env: dict[str, str], proxy: ProxyThread, database_url: str, name: str, log: Path, **env: str) -> Worker:
    return Worker(env={**worker_env, "DATABASE_URL": proxy.url(database_url), "KEEL_EXECUTOR_ID": name, "KEEL_QUEUE": f"runs-{name}", **env}, log=log)


async def test_a_worker_whose_first_connections_are_dropped_or_reset_comes_up_and_runs(
    worker_env: dict[str, str], database_url: str, logs: Path, db: psycopg.AsyncConnection, customer: str
) -> None:
    # Two connections refused outright, then one cut in the middle of each step of start-up: making
    # sure the database exists, the check of DBOS's schema version and Keel's, and DBOS's launch.
    faults = Faults(drop_first=2, cut_when=("pg_database", "dbos_migrations", "alembic_version", "application_versions"))
    log = logs / "worker-flaky-start.log"
    with ProxyThread(NetProxy(upstream_address(database_url), faults)) as proxy:
        worker = proxied_worker(worker_env, proxy, database_url, "flaky-start", log).start()
        try:
            async with worker.client(timeout=30) as api:
                ready = await api.get("/readyz")
                response = await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
                run = await wait_for_run(api, response.json()["run_id"])
        finally:
            worker.stop()
        counts = proxy.proxy.counts

    assert (counts.dropped, counts.resets) == (2, 4)
    assert ready.status_code == 200
    assert run["status"] == "succeeded", run
    retries = [line for line in log.read_text().splitlines() if "start-up: could not" in line]
    assert all("retrying in" in line for line in retries)  # each failed try was logged, with what failed and why
    assert [line.split(" (attempt")[0] for line in retries] == [
        "start-up: could not reach the database"] * 3 + ["start-up: could not find the schema at head"] * 2 + ["start-up: could not launch DBOS"]


def test_a_worker_whose_database_never_answers_exits_after_the_bound_with_one_clear_line(
    worker_env: dict[str, str], database_url: str, logs: Path
) -> None:
    log = logs / "worker-no-database.log"
    with ProxyThread(NetProxy(upstream_address(database_url), Faults(drop_first=10**9))) as proxy:
        worker = proxied_worker(worker_env, proxy, database_url, "no-database", log, KEEL_STARTUP_TIMEOUT="4")
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with"):
            worker.start()
        took = time.monotonic() - started
        tries = proxy.proxy.counts.dropped

    assert worker.process is not None and worker.process.returncode != 0
    assert 4 <= took < 60
    assert tries >= 3  # it did retry, with backoff, until the bound
    gave_up = [line for line in log.read_text().splitlines() if "Keel could not start" in line]
    assert len(gave_up) >= 1
    assert "could not reach the database within 4 s (KEEL_STARTUP_TIMEOUT); last error: OperationalError" in gave_up[0]


async def test_start_up_does_not_retry_what_waiting_cannot_fix(worker_env: dict[str, str], database_url: str, logs: Path) -> None:
    log = logs / "worker-bad-password.log"
    with ProxyThread(NetProxy(upstream_address(database_url))) as proxy:
        url = proxy.url(database_url).replace("postgresql://postgres", "postgresql://nobody", 1)
        worker = Worker(env={**worker_env, "DATABASE_URL": url, "KEEL_EXECUTOR_ID": "bad-role", "KEEL_STARTUP_TIMEOUT": "60"}, log=log)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with"):
            worker.start()

    assert time.monotonic() - started < 30  # at once, not after the 60 s bound
    assert "start-up: could not" not in log.read_text()
    assert 'role "nobody" does not exist' in log.read_text()

