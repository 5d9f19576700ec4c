"""How much do runs waiting for approval cost? N runs wait in one worker process; we measure its
threads, CPU and memory while they wait, then approve them all at once and time the resumption.

    python -m bench.approvals_waiting --runs 1000        (DATABASE_URL, or the embedded server)
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg
from sqlalchemy.engine import make_url

from app.database import psycopg_conninfo, start_embedded_postgres
from app.schema import migrate
from bench.names import bench_database
from tests.processes import ROOT, Worker, start_scripted_model, stop

DATABASE = bench_database()


def fresh_database() -> str:
    server = os.environ.get("DATABASE_URL") or start_embedded_postgres(ROOT / ".keel" / "bench")
    url = make_url(server).set(database=DATABASE).render_as_string(hide_password=False)
    with psycopg.connect(psycopg_conninfo(make_url(server).set(database="postgres").render_as_string(hide_password=False)), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    migrate(url)
    return url


def sample(process: psutil.Process, seconds: float) -> dict[str, float]:
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    cpu = (after.user - before.user + after.system - before.system) / seconds * 100
    return {"threads": process.num_threads(), "cpu_percent": round(cpu, 1), "rss_mb": round(process.memory_info().rss / 2**20, 1)}


async def submit(client: httpx.AsyncClient, runs: int, concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            response = await client.post("/v1/runs", json={"agent": "waiter", "input": f'call confirm with {{"note": "n{i}"}}'})
            response.raise_for_status()
            return response.json()["run_id"]

    return await asyncio.gather(*(one(i) for i in range(runs)))


async def approve_all(client: httpx.AsyncClient, approval_ids: list[str], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(approval_id: str) -> None:
        async with gate:
            (await client.post(f"/v1/approvals/{approval_id}", json={"decision": "approve", "decided_by": "bench"})).raise_for_status()

    await asyncio.gather(*(one(a) for a in approval_ids))


def count(url: str, query: str) -> int:
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        return conn.execute(query).fetchone()[0]


def wait_for_count(url: str, query: str, target: int, timeout: float) -> float:
    started = time.monotonic()
    while (n := count(url, query)) < target:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{n}/{target} after {timeout}s: {query}")
        print(f"  {n}/{target}", flush=True)
        time.sleep(1)
    return time.monotonic() - started


async def main(runs: int, concurrency: int) -> None:
    url = fresh_database()
    logs = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    model, model_url = start_scripted_model(logs / "model.log")
    env = {**os.environ, "DATABASE_URL": url, "OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_API_KEY": "bench",
           "KEEL_AGENT_MODULES": "bench.agents", "KEEL_EXECUTOR_ID": "bench", "KEEL_AUTH": "off", "PYTHONPATH": str(ROOT)}
    worker = Worker(env=env, log=logs / "worker.log").start()
    try:
        process = psutil.Process(worker.process.pid)
        idle = sample(process, 5)
        async with worker.client(timeout=60) as client:
            started = time.monotonic()
            await submit(client, runs, concurrency)
            print(f"submitted {runs} runs in {time.monotonic() - started:.1f}s; waiting for all to ask for approval")
            wait_for_count(url, "SELECT count(*) FROM keel.approvals WHERE status = 'pending'", runs, 600)
            waiting = sample(process, 10)
            pending = (await client.get("/v1/approvals", params={"status": "pending", "limit": 1000})).json()
            ids = [a["approval_id"] for a in pending]
            while len(ids) < runs:  # the inbox pages at 1,000
                more = (await client.get("/v1/approvals", params={"status": "pending", "limit": 1000})).json()
                ids = list(dict.fromkeys(ids + [a["approval_id"] for a in more]))
            started = time.monotonic()
            await approve_all(client, ids, concurrency)
            approved_in = time.monotonic() - started
        finished_in = approved_in + wait_for_count(url, "SELECT count(*) FROM keel.runs WHERE status = 'succeeded'", runs, 600)
    finally:
        worker.stop()
        stop(model)
    print("\n| worker process | threads | CPU % | RSS MB |\n|---|---|---|---|")
    print(f"| idle, no runs | {idle['threads']} | {idle['cpu_percent']} | {idle['rss_mb']} |")
    print(f"| {runs} runs waiting for approval | {waiting['threads']} | {waiting['cpu_percent']} | {waiting['rss_mb']} |")
    print(f"\napproved {runs} in {approved_in:.1f}s (concurrency {concurrency}); all {runs} succeeded {finished_in:.1f}s after the first decision")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency))
