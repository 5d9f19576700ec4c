"""Workload 9: 200 concurrent runs whose one tool call takes 2 s. How many tool calls are in flight at once,
and how many of Keel's pooled connections (and PostgreSQL sessions idle in a transaction) they hold meanwhile."""

import asyncio
from typing import Any

import psycopg
from dbos import DBOS

from bench.suite import variants as v
from bench.suite.harness import Harness, set_latency
from bench.suite.setup import KEEL_DB, conninfo
from bench.suite.stats import fmt, summary

IDLE_IN_TRANSACTION = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%'"


def spread(values: list[int]) -> dict[str, float]:
    return {k: v for k, v in summary(values).items() if k != "values"}


async def measure(harness: Harness, runs: int, tool_seconds: float) -> dict[str, Any]:
    print(f"workload 9: {runs} concurrent runs whose one tool call takes {tool_seconds:.0f} s", flush=True)
    pool = harness.keel.pool
    assert pool is not None
    samples: list[tuple[int, int, int]] = []  # (tool calls in flight, Keel connections checked out, sessions idle in a transaction)
    done = asyncio.Event()

    async def sample() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo("postgres"), autocommit=True) as watcher:
            while not done.is_set():
                stats = pool.get_stats()
                idle = (await (await watcher.execute(IDLE_IN_TRANSACTION, (KEEL_DB,))).fetchone())[0]  # type: ignore[index]
                samples.append((v.TOOLS_RUNNING["now"], stats["pool_size"] - stats["pool_available"], idle))
                await asyncio.sleep(0.02)

    set_latency(harness, 0, tool_seconds)
    v.TOOLS_RUNNING["peak"] = 0
    sampler = asyncio.create_task(sample())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        ids = await asyncio.gather(*(v.keel_start("tools=1", queued=True) for _ in range(runs)))
        await asyncio.gather(*[(await DBOS.retrieve_workflow_async(i)).get_result() for i in ids])
        elapsed = loop.time() - started
    finally:
        done.set()
        await sampler
        set_latency(harness, 0, 0)
    peak = v.TOOLS_RUNNING["peak"]
    # while (nearly) every call is in the tool; the connections then are every run's (intents, outcomes, model steps)
    plateau = [s for s in samples if s[0] >= 0.9 * peak] or samples
    result = {"runs": runs, "tool_s": tool_seconds, "elapsed_s": elapsed, "tools_in_flight_peak": peak,
              "pool_size": harness.keel.settings.db_pool_size, "checked_out_peak": max(s[1] for s in samples),
              "plateau_samples": len(plateau), "plateau_checked_out": spread([s[1] for s in plateau]),
              "plateau_idle_in_transaction": spread([s[2] for s in plateau])}
    print(f"  {peak} tool calls in flight at once; Keel's pool: at most {result['checked_out_peak']} of {result['pool_size']} connections "
          f"checked out; at the {len(plateau)} moments >= 90 % were in the tool: checked out (by every run) {fmt(result['plateau_checked_out'], 0)}, "
          f"sessions idle in a transaction {fmt(result['plateau_idle_in_transaction'], 0)}; all done in {elapsed:.1f} s", flush=True)
    return result
