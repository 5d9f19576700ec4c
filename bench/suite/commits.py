"""Workload 2: PostgreSQL commits per model step and per tool step, from `pg_stat_database.xact_commit`
of the benchmark database (nothing else uses it).

Trustworthy how: PostgreSQL 15 backends flush their counters at most once a second, an idle one within
10 s, so every read comes after 11 s of quiet (`settled_commits`). DBOS's own background work (its
notification listener and queue polling) commits at a steady rate even when idle: that rate is measured
over an idle window first and subtracted for the length of each measured window. Three agent shapes,
N runs each, separate the model step (L), the tool step (T) and the per-run fixed part (F):
    tools=0             -> F + 1 L
    tools=7             -> F + 8 L + 7 T     (the 14-step agent)
    tools=7 per_turn=7  -> F + 2 L + 7 T     (one turn asks for all seven calls)
"""

import time
from typing import Any

from bench.suite import census
from bench.suite.harness import Harness, set_latency
from bench.suite.setup import KEEL_DB, settled_commits

SHAPES = {"final_only": "tools=0", "agent_14": "tools=7", "all_calls_in_one_turn": "tools=7 per_turn=7"}
SETTLE = 11.0


def decompose(per_run: dict[str, float]) -> dict[str, float]:
    llm = (per_run["agent_14"] - per_run["all_calls_in_one_turn"]) / 6
    tool = (per_run["all_calls_in_one_turn"] - per_run["final_only"] - llm) / 7
    return {"llm": llm, "tool": tool, "fixed_per_run": per_run["final_only"] - llm, "agent_14_per_step": per_run["agent_14"] / 15}


async def measure(harness: Harness, runs: int, idle: float = 20.0) -> dict[str, Any]:
    print(f"workload 2: commits per step ({runs} runs per shape; {SETTLE:.0f} s settles; {idle:.0f} s idle window)", flush=True)
    set_latency(harness, 0, 0)
    before = await settled_commits(KEEL_DB, SETTLE)
    t0 = time.monotonic()
    after = await settled_commits(KEEL_DB, idle)
    background = (after - before) / (time.monotonic() - t0)
    print(f"  background (DBOS polling, idle): {background:.1f} commits/s", flush=True)
    result: dict[str, Any] = {"runs": runs, "background_per_s": background, "per_run": {}, "per_step": {}}
    for variant in ("keel", "raw_dbos"):
        per_run = {}
        for shape, prompt in SHAPES.items():
            start_count, started = after, time.monotonic()
            for _ in range(runs):
                await harness.variants[variant](prompt)
            after = await settled_commits(KEEL_DB, SETTLE)
            elapsed = time.monotonic() - started
            per_run[shape] = (after - start_count - background * elapsed) / runs
            print(f"  {variant} {shape}: {per_run[shape]:.2f} commits per run "
                  f"(raw delta {after - start_count}, background {background * elapsed:.0f})", flush=True)
        result["per_run"][variant] = per_run
        result["per_step"][variant] = decompose(per_run)
    result["census"] = await client_census(harness, runs)
    return result


async def client_census(harness: Harness, runs: int) -> dict[str, Any]:
    """The same shapes, counted in the client: all transactions, writing ones, statements, DBOS pool checkouts."""
    print("  census: statements and transactions counted in the client", flush=True)
    out: dict[str, Any] = {}
    for variant in ("keel", "raw_dbos"):
        shapes = {shape: await census.count(harness, variant, prompt, runs) for shape, prompt in SHAPES.items()}
        out[variant] = {"statements_agent_14": shapes["agent_14"]["statements"]}
        for measure in ("transactions_per_run", "write_transactions_per_run", "statements_per_run", "dbos_checkouts_per_run"):
            per_run = {shape: c[measure] for shape, c in shapes.items()}
            out[variant][measure] = {"per_run": per_run, "per_step": decompose(per_run)}
        w = out[variant]["write_transactions_per_run"]["per_step"]
        print(f"  {variant}: writing transactions per LLM step {w['llm']:.2f}, per tool step {w['tool']:.2f}, per run fixed {w['fixed_per_run']:.2f}",
              flush=True)
    return out
