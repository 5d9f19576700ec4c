"""What runs cost to keep, and what `keel gc` gives back: N billing-demo runs (each looks a customer up,
opens a ticket, charges, changes the plan and sends an email), then the database's size, before and
after `keel gc --older-than 0s`, and after VACUUM and VACUUM FULL.

    python -m bench.retention --runs 10000     (BENCH_DATABASE_URL's server, database keel_bench_retention)
"""

import argparse
import asyncio
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from app.database import psycopg_conninfo
from app.schema import migrate
from bench.names import bench_database
from tests.processes import ROOT, Worker, start_scripted_model, stop
from workflows.retention import collect

DATABASE = bench_database("_retention")
SIZES = """
SELECT n.nspname, sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('dbos', 'keel') AND c.relkind = 'r' GROUP BY n.nspname ORDER BY n.nspname
"""


def fresh_database(name: str = DATABASE) -> str:
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(psycopg_conninfo(make_url(server).set(database="postgres").render_as_string(hide_password=False)), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    migrate(url)
    return url


def add_customers(conninfo: str, count: int) -> list[str]:
    customers = [f"C-{9_000_000 + i}" for i in range(count)]
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor().copy("COPY sandbox.customers (id, name, email, plan) FROM STDIN") as copy:
        for customer in customers:
            copy.write_row((customer, "Bench", f"{customer.lower()}@example.com", "basic"))
    return customers


def service_env(url: str, model_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    return {**env, "DATABASE_URL": url, "OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_API_KEY": "bench", "KEEL_AUTH": "off",
            "PYTHONPATH": str(ROOT), **extra}


def sizes(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schemas = dict(conn.execute(SIZES).fetchall())
        return {"database": conn.execute("SELECT pg_database_size(current_database())").fetchone()[0], **schemas,
                "runs": conn.execute("SELECT count(*) FROM dbos.workflow_status WHERE name = 'keel.agent_run'").fetchone()[0],
                "events": conn.execute("SELECT count(*) FROM keel.events").fetchone()[0]}


async def run_all(worker: Worker, conninfo: str, customers: list[str]) -> None:
    """Submit every run (the worker takes them from its queue at its own pace), then wait for all to end."""
    gate = asyncio.Semaphore(16)
    async with worker.client(timeout=120) as client:
        async def one(customer: str) -> None:
            async with gate:
                response = await client.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
                response.raise_for_status()

        await asyncio.gather(*(one(customer) for customer in customers))
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while (await (await conn.execute(
                "SELECT count(*) FROM dbos.workflow_status WHERE name = 'keel.agent_run' AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')")).fetchone())[0]:
            await asyncio.sleep(5)


def mb(value: int) -> str:
    return f"{value / 2**20:,.1f} MB"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (keel serve --workers)")
    parser.add_argument("--concurrency", type=int, default=32, help="runs per worker at once")
    args = parser.parse_args()
    url = fresh_database()
    conninfo = psycopg_conninfo(url)
    customers = add_customers(conninfo, args.runs)
    logs = Path(tempfile.mkdtemp(prefix="keel-retention-"))
    model, model_url = start_scripted_model(logs / "model.log")
    env = service_env(url, model_url, KEEL_EXECUTOR_ID="retention", KEEL_WORKERS=str(args.workers), KEEL_WORKER_CONCURRENCY=str(args.concurrency))
    worker = Worker(env=env, log=logs / "worker.log")
    try:
        worker.start(timeout=600)
        started = time.monotonic()
        await run_all(worker, conninfo, customers)
        ran = time.monotonic() - started
    finally:
        worker.stop()
        stop(model)
    before = sizes(conninfo)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        started = time.monotonic()
        done = await collect(conn, timedelta(0))
        collected = time.monotonic() - started
    after_gc = sizes(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM")
    after_vacuum = sizes(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM FULL")
    after_full = sizes(conninfo)
    print(f"{args.runs} runs in {ran:.0f} s; gc removed {done.runs} runs ({done.workflows} workflows, {done.keel_rows} Keel rows, "
          f"{done.ledger_rows} ledger rows) in {collected:.1f} s\n")
    print("| | database | schema dbos | schema keel | runs | events |\n|---|---|---|---|---|---|")
    for label, size in (("after the runs", before), ("after `keel gc --older-than 0s`", after_gc),
                        ("after VACUUM (what autovacuum does)", after_vacuum), ("after VACUUM FULL", after_full)):
        print(f"| {label} | {mb(size['database'])} | {mb(size['dbos'])} | {mb(size['keel'])} | {size['runs']:,} | {size['events']:,} |")


if __name__ == "__main__":
    asyncio.run(main())
