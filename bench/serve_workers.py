"""Throughput of `keel serve` with one worker process and with one per core, in one invocation: the
same N billing-demo runs submitted over HTTP to the one port, each configuration on a fresh database,
time from the first submission to the last run's end.

    python -m bench.serve_workers --runs 300     (BENCH_DATABASE_URL's server, databases keel_bench_serve_<n>)
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from app.database import psycopg_conninfo
from bench.names import bench_database
from bench.retention import add_customers, fresh_database, run_all, service_env
from tests.processes import Worker, start_scripted_model, stop


async def throughput(workers: int, runs: int, concurrency: int, model_url: str, logs: Path) -> float:
    url = fresh_database(bench_database(f"_serve_{workers}"))
    customers = add_customers(psycopg_conninfo(url), runs)
    env = service_env(url, model_url, KEEL_EXECUTOR_ID=f"serve-{workers}", KEEL_WORKERS=str(workers),
                      KEEL_WORKER_CONCURRENCY=str(concurrency))
    worker = Worker(env=env, log=logs / f"serve-{workers}.log")
    try:
        worker.start(timeout=600)
        started = time.monotonic()
        await run_all(worker, psycopg_conninfo(url), customers)
        return runs / (time.monotonic() - started)
    finally:
        worker.stop()


async def measure(runs: int, concurrency: int, logs: Path) -> dict[str, Any]:
    """runs/s with one worker process and with one per core (workload 10 of `bench.suite`)."""
    cores = len(os.sched_getaffinity(0))
    print(f"workload 10: {runs} billing runs over HTTP, `keel serve --workers` 1 and {cores}", flush=True)
    model, model_url = start_scripted_model(logs / "model.log")
    try:
        rates = {n: await throughput(n, runs, concurrency, model_url, logs) for n in sorted({1, cores})}
    finally:
        stop(model)
    print("  " + ", ".join(f"{n} worker(s): {rate:.2f} runs/s" for n, rate in rates.items()), flush=True)
    return {"runs": runs, "concurrency": concurrency, "cores": cores, "runs_per_s": {str(n): r for n, r in rates.items()},
            "per_core_over_one": rates[cores] / rates[1]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32, help="runs per worker process at once")
    args = parser.parse_args()
    result = await measure(args.runs, args.concurrency, Path(tempfile.mkdtemp(prefix="keel-serve-workers-")))
    print(f"{args.runs} billing runs over HTTP, {args.concurrency} per worker at once, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| `keel serve --workers` | runs/s | vs one process |\n|---|---|---|")
    for n, rate in result["runs_per_s"].items():
        print(f"| {n} | {rate:.2f} | {rate / result['runs_per_s']['1']:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
