"""Workload 8 (issue 15): one LangGraph graph, two ways to make it durable, per step, side by side in
one invocation (and Keel's own loop beside them): run by Keel (`LangGraphAgent`: `ChatKeel` model steps, `work` through the ledger, no
checkpointer) and compiled with `AsyncPostgresSaver` alone (durability="sync", a plain chat model and
a plain tool). The graph is the same function of (model, tools): an agent node, a `ToolNode`, the
prebuilt `tools_condition` between them. It runs the 14-step script of workload 1."""

from typing import Any

from bench.suite.harness import AGENT_14, CALLS_14, Harness, sequential, set_latency
from bench.suite.stats import fmt, summary

NAMES = {"keel_langgraph": "the graph run by Keel (`LangGraphAgent`, no checkpointer)",
         "langgraph_postgres": "the graph with `AsyncPostgresSaver` alone (durability=\"sync\")",
         "keel": "Keel's own loop (`Agent` + `@tool`), for the adapter's cost"}


async def measure(harness: Harness, rounds: int, runs: int) -> dict[str, Any]:
    print(f"workload 8: a LangGraph graph under Keel vs with AsyncPostgresSaver, {rounds} rounds x {runs} runs", flush=True)
    from bench.suite.langgraph_variant import keel_langgraph_run, postgres_runner  # the frameworks load only for this workload

    set_latency(harness, 0, 0)
    variants = {"keel_langgraph": keel_langgraph_run, "langgraph_postgres": postgres_runner(harness.langgraph.saver), "keel": harness.variants["keel"]}
    for run in variants.values():  # warm up
        await run(AGENT_14)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        names = list(variants)
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(await sequential(variants[name], AGENT_14, runs))
        print("  round " + f"{r + 1}/{rounds}: " + ", ".join(f"{n} {seconds[n][-1] * 1000 / CALLS_14:.2f} ms/step" for n in variants), flush=True)
    return {"rounds": rounds, "runs": runs, "ms_per_step": {n: summary([s * 1000 / CALLS_14 for s in seconds[n]]) for n in variants},
            "keel_over_postgres_saver": ratio(seconds, "keel_langgraph", "langgraph_postgres"), "langgraph_over_keel": ratio(seconds, "keel_langgraph", "keel")}


def ratio(seconds: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    return summary([x / y for x, y in zip(seconds[a], seconds[b], strict=True)])


def section(r: dict[str, Any]) -> list[str]:
    f = r.get("frameworks")
    if not f:
        return []
    out = ["## 8. A LangGraph graph: under Keel, or with PostgresSaver alone", "",
           f"The same graph (`bench/suite/frameworks.py`), the 14-step script, one run at a time: {f['rounds']} interleaved rounds of "
           f"{f['runs']} runs per variant. Under Keel every model call is a Keel model step and every tool call goes through the ledger; "
           "with PostgresSaver LangGraph writes a checkpoint per node.", "", "| variant | ms per step |", "|---|---|"]
    out += [f"| {NAMES[n]} | {fmt(s)} |" for n, s in f["ms_per_step"].items()]
    return out + ["", f"The graph under Keel / with PostgresSaver, per step: **{fmt(f['keel_over_postgres_saver'])}×**; "
                       f"under Keel / Keel's own loop: {fmt(f['langgraph_over_keel'])}×.", ""]
