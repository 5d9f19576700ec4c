"""Fixtures: a fresh test database on a real PostgreSQL, real worker processes, a real model server.

With `DATABASE_URL` set, the tests use that server; otherwise the embedded PostgreSQL under
`.keel/test`. Either way they create (and recreate) the database `keel_test` on it."""

import asyncio
import collections
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from app.auth import ROLES, create_key
from app.database import psycopg_conninfo, start_embedded_postgres, stop_embedded_postgres
from app.schema import migrate
from steps import db as steps_db
from steps.run_status import ENDED
from tests.processes import ROOT, Worker, start_scripted_model, stop

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEST_DATABASE = os.environ.get("KEEL_TEST_DATABASE", "keel_test") + (f"_{XDIST_WORKER}" if XDIST_WORKER else "")
"""Several checkouts sharing one server each set their own (`KEEL_TEST_DATABASE`), so they never drop each
other's; `pytest -n N` gives each of its workers its own too."""
DEMO_MODULES = {"billing": "app.demo.billing", "billing_langgraph": "app.demo.billing.with_langgraph",
                "billing_openai_agents": "app.demo.billing.with_openai_agents", "billing_pydantic_ai": "app.demo.billing.with_pydantic_ai"}
BILLING_AGENTS = list(DEMO_MODULES)
"""The billing demo, Keel-native and in each framework: the behavioural tests run over all four."""
WORKER_MODULES = "app.demo.billing,tests.agents"
AGENT_MODULES = ",".join([*DEMO_MODULES.values(), "tests.agents", "tests.framework_agents"])
"""What the shared worker loads. A worker a test starts loads `WORKER_MODULES` (importing the frameworks
doubles a worker's start-up), plus `with_demo(agent)` where it runs a framework's demo."""
_customers = itertools.count(1)


EMBEDDED_TEST_DIR = ROOT / ".keel" / (f"test-{XDIST_WORKER}" if XDIST_WORKER else "test")

TIERS = ("unit", "process", "browser", "fuzz")
PROCESS_FIXTURES = {"service", "start_worker", "model_url", "worker_env"}
"""A test that uses one of these starts real processes (a worker, the scripted model server)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets one tier: `browser` and `fuzz` as their modules say, `process` if it starts real
    processes (its fixtures say so, or its module), `unit` otherwise: `pytest -m unit` is the fast tier.

    Two tests with one node ID are refused: pytest-xdist runs only one of them, and says nothing
    (schemathesis's operations collapsed into one that way on pytest 9.2, so 18 of 19 went unfuzzed)."""
    counts = collections.Counter(item.nodeid for item in items)
    if shared := sorted(nodeid for nodeid, count in counts.items() if count > 1):
        raise pytest.UsageError(f"tests share a node ID, so xdist would run only one of each: {shared}")
    for item in items:
        marked = [tier for tier in TIERS if item.get_closest_marker(tier)]
        if not marked:
            tier = "process" if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) else "unit"
            item.add_marker(tier)


def fresh_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server of `server_url`, migrate it, and return its URL."""
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    maintenance = make_url(server_url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(url)
    return url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    yield fresh_database(external or start_embedded_postgres(EMBEDDED_TEST_DIR), TEST_DATABASE)
    if not external:
        stop_embedded_postgres(EMBEDDED_TEST_DIR)


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def model_url(logs: Path) -> Iterator[str]:
    process, url = start_scripted_model(logs / "scripted-model.log")
    yield url
    stop(process)


@pytest.fixture(scope="session")
def api_keys(database_url: str) -> dict[str, str]:
    """One key per role, made in the database as `keel keys create` makes them."""

    return {role: make_key(database_url, role) for role in ROLES}


def make_key(database_url: str, role: str) -> str:
    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(psycopg_conninfo(database_url), autocommit=True) as conn:
            return (await create_key(conn, f"test-{role}", role))[1]  # type: ignore[arg-type]

    with ThreadPoolExecutor(1) as thread:  # a loop of its own, so async tests may call it too
        return thread.submit(asyncio.run, create()).result()


@pytest.fixture(scope="session")
def worker_env(database_url: str, model_url: str, api_keys: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    return {
        **env,
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": f"{model_url}/v1",
        "OPENAI_API_KEY": "test-key",
        "KEEL_AGENT_MODULES": WORKER_MODULES,
        "KEEL_DEMO_SERVICES": "on",  # the billing demo's tools call this worker's /sandbox; a configured model turns it off by default
        "PYTHONPATH": str(ROOT),
        "KEEL_API_KEY": api_keys["admin"],  # what the CLI and `Worker.client()` send
    }


@pytest.fixture
def start_worker(worker_env: dict[str, str], logs: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers with a given executor ID (a restarted worker reuses its ID to recover its runs);
    they are stopped when the test ends. Each takes runs from a queue named after its ID (unless
    `KEEL_QUEUE` is given), so a run executes on the worker that started it."""
    started: list[Worker] = []
    counter = itertools.count()

    def start(executor_id: str, **env: str) -> Worker:
        log = logs / f"worker-{executor_id}-{next(counter)}.log"
        worker = Worker(env={**worker_env, "KEEL_EXECUTOR_ID": executor_id, "KEEL_QUEUE": f"runs-{executor_id}", **env}, log=log).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def own_database(database_url: str) -> Callable[[str], dict[str, str]]:
    """`own_database(name)`: a database of the test's own (`<test database>_<name>`, made afresh), as the
    environment a worker needs to use it (its URL and an admin key): for tests that judge the whole
    database, which the shared one is not (other tests leave runs waiting there)."""

    def make(name: str) -> dict[str, str]:
        url = fresh_database(database_url, f"{TEST_DATABASE}_{name}")
        return {"DATABASE_URL": url, "KEEL_API_KEY": make_key(url, "admin")}

    return make


@pytest.fixture(scope="session")
def service(worker_env: dict[str, str], logs: Path) -> Iterator[Worker]:
    """The worker most tests share."""
    worker = Worker(env={**worker_env, "KEEL_EXECUTOR_ID": "shared", "KEEL_AGENT_MODULES": AGENT_MODULES}, log=logs / "worker-shared.log").start()
    yield worker
    worker.stop()


def with_demo(agent: str) -> dict[str, str]:
    """The environment of a started worker that runs `agent` (one of `BILLING_AGENTS`)."""
    return {"KEEL_AGENT_MODULES": f"{WORKER_MODULES},{DEMO_MODULES[agent]}"}


@pytest.fixture
async def api(service: Worker) -> AsyncIterator[httpx.AsyncClient]:
    async with service.client(timeout=30) as client:
        yield client


@pytest.fixture
async def model(model_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The scripted model's admin API (faults)."""
    async with httpx.AsyncClient(base_url=model_url, timeout=10) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(psycopg_conninfo(database_url), autocommit=True) as conn:
        yield conn


LEDGER_POOL_NAME = "keel_test_ledger"
"""The `application_name` of `ledger_pool`'s sessions: the shared worker's sessions on the same database are not the test's."""


@pytest.fixture
async def ledger_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """Keel's pool in the test process, for driving steps and workflows code directly."""
    pool = AsyncConnectionPool(psycopg_conninfo(database_url), min_size=1, max_size=4,
                               kwargs={"autocommit": True, "application_name": LEDGER_POOL_NAME}, open=False)
    await pool.open()
    steps_db.configure(pool)
    yield pool
    steps_db.configure(None)
    await pool.close()


@pytest.fixture
async def customer(db: psycopg.AsyncConnection) -> str:
    """A fresh customer on the basic plan, so each test counts only its own effects."""
    customer_id = f"C-{os.getpid()}{next(_customers):03d}"
    await db.execute("INSERT INTO sandbox.customers VALUES (%s, 'Test Customer', %s, 'basic')",
                     (customer_id, f"{customer_id.lower()}@example.com"))
    return customer_id


async def fetch_value(db: psycopg.AsyncConnection, query: str, *params: Any) -> Any:
    row = await (await db.execute(query, params)).fetchone()
    return row[0] if row else None


async def wait_for_run(client: httpx.AsyncClient, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/runs/{run_id}")
        if response.status_code == 200 and response.json()["status"] in ENDED:
            return response.json()
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {response.text}")


async def wait_for_approval(api: httpx.AsyncClient, run_id: str, timeout: float = 30) -> dict:
    """The run's pending approval, once it waits for one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (await api.get(f"/v1/runs/{run_id}")).json()
        if run["status"] == "awaiting_approval":
            return run["pending_approval"]
        assert run["status"] in ("queued", "running"), run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never waited for approval")


async def wait_for_row(db: psycopg.AsyncConnection, query: str, *params: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await fetch_value(db, query, *params):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {query} {params}")
