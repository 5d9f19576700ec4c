"""Workload 3: throughput at several concurrencies, many runs in flight in one process; variants
interleaved at each concurrency, repeated, medians with min–max."""

from typing import Any

from bench.suite.harness import AGENT_14, CALLS_14, Harness, concurrent, set_latency
from bench.suite.stats import summary

VARIANTS = ["raw_dbos", "keel", "langgraph"]


async def measure(harness: Harness, concurrencies: list[int], repeats: int, min_runs: int, large_repeats: int) -> dict[str, Any]:
    print(f"workload 3: throughput at concurrency {concurrencies}, {repeats} repeats ({large_repeats} at 128 and above), "
          f"runs = max(concurrency, {min_runs})", flush=True)
    set_latency(harness, 0, 0)
    result: dict[str, Any] = {"repeats": repeats, "large_repeats": large_repeats, "levels": {}}
    for c in concurrencies:
        runs = max(c, min_runs)
        rps: dict[str, list[float]] = {n: [] for n in VARIANTS}
        for r in range(repeats if c < 128 else large_repeats):
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]
            for name in order:
                rps[name].append(runs / await concurrent(harness.variants[name], AGENT_14, runs, c))
            print(f"  concurrency {c}, repeat {r + 1}: " + ", ".join(f"{n} {rps[n][-1]:.1f} runs/s" for n in VARIANTS), flush=True)
        result["levels"][c] = {
            "runs": runs, "repeats": len(rps["keel"]),
            "runs_per_s": {n: summary(v) for n, v in rps.items()},
            "steps_per_s": {n: summary([x * CALLS_14 for x in v]) for n, v in rps.items()},
            "keel_over_langgraph": summary([k / g for k, g in zip(rps["keel"], rps["langgraph"], strict=True)]),
            "raw_dbos_over_langgraph": summary([k / g for k, g in zip(rps["raw_dbos"], rps["langgraph"], strict=True)]),
            "keel_over_raw_dbos": summary([k / g for k, g in zip(rps["keel"], rps["raw_dbos"], strict=True)]),
        }
    return result
