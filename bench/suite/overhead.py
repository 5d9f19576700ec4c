"""Workload 1 (step overhead, instant model and tools) and 4 (realistic latency): runs one at a time,
variants interleaved round by round (rotating who goes first), each figure a median over rounds."""

from typing import Any

from bench.suite.harness import AGENT_14, CALLS_14, Harness, sequential, set_latency
from bench.suite.stats import summary


async def interleaved(harness: Harness, names: list[str], rounds: int, runs: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            seconds[name].append(await sequential(harness.variants[name], AGENT_14, runs))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {seconds[n][-1] * 1000 / CALLS_14:.2f} ms/step" for n in names), flush=True)
    return seconds


def ratios(seconds: dict[str, list[float]], over: str) -> dict[str, Any]:
    return {name: summary([a / b for a, b in zip(values, seconds[over], strict=True)]) for name, values in seconds.items() if name != over}


async def step_overhead(harness: Harness, rounds: int, runs: int) -> dict[str, Any]:
    print(f"workload 1: step overhead, {rounds} rounds x {runs} sequential runs per variant", flush=True)
    set_latency(harness, 0, 0)
    names = list(harness.variants)
    seconds = await interleaved(harness, names, rounds, runs)
    return {"rounds": rounds, "runs": runs, "variants": names, "temporal_skipped": harness.temporal_skipped,
            "ms_per_step": {n: summary([s * 1000 / CALLS_14 for s in seconds[n]]) for n in names},
            "ratio_over_plain": ratios(seconds, "plain"), "ratio_over_raw_dbos": ratios(seconds, "raw_dbos"),
            "overhead_ms_per_step": {n: summary([(s - p) * 1000 / CALLS_14 for s, p in zip(seconds[n], seconds["plain"], strict=True)])
                                     for n in names if n != "plain"}}


async def realistic(harness: Harness, rounds: int, runs: int, model_latency: float = 0.2, tool_latency: float = 0.05) -> dict[str, Any]:
    print(f"workload 4: realistic latency (model {model_latency * 1000:.0f} ms, tools {tool_latency * 1000:.0f} ms), "
          f"{rounds} rounds x {runs} runs", flush=True)
    set_latency(harness, model_latency, tool_latency)
    try:
        seconds = await interleaved(harness, ["plain", "keel"], rounds, runs)
    finally:
        set_latency(harness, 0, 0)
    ideal = 8 * model_latency + 7 * tool_latency
    return {"rounds": rounds, "runs": runs, "model_latency": model_latency, "tool_latency": tool_latency, "ideal_s": ideal,
            "wall_s": {n: summary(s) for n, s in seconds.items()}, "keel_over_plain": ratios(seconds, "plain")["keel"]}
