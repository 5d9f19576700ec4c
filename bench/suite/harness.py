"""One process, every variant: the model, Keel (in-process), raw DBOS, LangGraph and, where it can
run, Temporal. Workloads take a `Harness` and call `variants[name](prompt)`."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.suite import variants as v
from bench.suite.model import ScriptedModel
from bench.suite.setup import KEEL_DB, LANGGRAPH_DB, KeelProcess, conninfo, fresh_database, prepare_keel_database

Run = Callable[[str], Awaitable[Any]]
AGENT_14 = "tools=7"
CALLS_14 = 15
"""The 14-step agent: 7 model turns that each ask for one tool call (7 + 7 = 14 steps), then the final
answer, an 8th model call: 15 model and tool calls per run, which per-step figures divide by."""


class Harness:
    def __init__(self, *, temporal: bool = True) -> None:
        self.model = ScriptedModel()
        self.want_temporal = temporal
        self.temporal_skipped: str | None = None
        self.variants: dict[str, Run] = {}

    async def start(self) -> None:
        print(f"setting up databases {KEEL_DB} and {LANGGRAPH_DB}, launching Keel (in-process), LangGraph and Temporal", flush=True)
        url = await asyncio.to_thread(prepare_keel_database)
        await asyncio.to_thread(fresh_database, LANGGRAPH_DB)
        v.MODEL["client"] = self.model.client()
        v.MODEL["sync"] = self.model.sync_client()
        self.keel = KeelProcess(url, self.model)
        await self.keel.start()
        self.langgraph = v.LangGraphVariant(conninfo(LANGGRAPH_DB), pool_size=self.keel.settings.db_pool_size)
        await self.langgraph.start()
        self.variants = {"plain": v.plain_agent, "raw_dbos": v.raw_dbos_run, "raw_dbos_sync": v.raw_dbos_sync_run, "keel": v.keel_run,
                         "langgraph": self.langgraph.run}
        self.temporal = None
        if self.want_temporal:
            try:
                from bench.suite.temporal_variant import TemporalVariant

                self.temporal = TemporalVariant()
                await asyncio.wait_for(self.temporal.start(), 60)
                await self.temporal.run("tools=0")
                self.variants["temporal"] = self.temporal.run
            except Exception as exc:  # no binary, no network for a download, ...: say so and go on
                self.temporal, self.temporal_skipped = None, f"{type(exc).__name__}: {exc}"
                print(f"  Temporal skipped: {self.temporal_skipped}", flush=True)
        else:
            self.temporal_skipped = "disabled with --no-temporal"
        for run in self.variants.values():  # warm up: imports, prepared statements, pools
            for _ in range(2):
                await run(AGENT_14)

    async def stop(self) -> None:
        if self.temporal is not None:
            await self.temporal.stop()
        await self.langgraph.stop()
        await self.keel.stop()


def set_latency(harness: Harness, model: float, tool: float) -> None:
    harness.model.latency = model
    v.TOOL_LATENCY["seconds"] = tool


async def sequential(run: Run, prompt: str, runs: int) -> float:
    """Seconds per run, `runs` runs one after another."""
    started = time.perf_counter()
    for _ in range(runs):
        await run(prompt)
    return (time.perf_counter() - started) / runs


async def concurrent(run: Run, prompt: str, runs: int, concurrency: int) -> float:
    """Seconds for `runs` runs, at most `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await run(prompt)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.perf_counter() - started
