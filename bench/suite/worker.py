"""A Keel worker process for the workloads that need a process of their own (5: many runs; 6: recovery).

    python -m bench.suite.worker many --database keel_bench --runs 1000 --latency 1
    python -m bench.suite.worker load --database keel_bench_recovery --runs 10000    (then SIGKILL it)
    python -m bench.suite.worker resume --database keel_bench_recovery --runs 10000  (DBOS recovers at launch)

`--variant raw` loads and resumes the raw DBOS workflow of the same shape instead (workload 6's baseline).

It prints one JSON line per milestone on stdout."""

import argparse
import asyncio
import json
import resource
import threading
import time
from collections.abc import Callable

import psutil

from bench.suite import variants as v
from bench.suite.model import ScriptedModel
from bench.suite.setup import KeelProcess, url_of

STARTED = time.monotonic()


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic() - STARTED, 3), **fields}), flush=True)


class Sampler(threading.Thread):
    """Peak OS threads of this process, every 100 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.peak = 0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.num_threads())
            time.sleep(0.1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def override_dbos_config(overrides: dict[str, object]) -> None:
    """A what-if: Keel's DBOS configuration with some keys changed (in this benchmark process only)."""
    from bench.suite import setup

    original = setup.dbos_config
    setup.dbos_config = lambda settings, url: {**original(settings, url), **overrides}  # type: ignore[assignment]


async def launch(database: str, latency: float, executor: str, concurrency: str, **settings: object) -> KeelProcess:
    model = ScriptedModel(latency)
    if concurrency != "default":
        settings["worker_concurrency"] = 10**9 if concurrency == "none" else int(concurrency)
    keel = KeelProcess(url_of(database), model, executor_id=executor, **settings)
    v.MODEL["client"] = model.client()
    await keel.start()
    return keel


async def many(args: argparse.Namespace) -> None:
    keel = await launch(args.database, args.latency, args.executor, args.worker_concurrency)
    await v.keel_run("tools=0")  # warm up
    prompt = f"tools={args.tools}"
    steps_per_run = 2 * args.tools + 1  # a model call per turn, a tool call per tool
    keel.model.latency = 0.0  # the worker's own capacity: the same runs with a model that answers at once
    calibration_runs = max(50, args.runs // 10)
    calibration_s = await run_all(prompt, calibration_runs)
    capacity = calibration_runs * steps_per_run / calibration_s
    say("calibrated", runs=calibration_runs, seconds=calibration_s, steps_per_s=capacity)
    keel.model.latency = args.latency
    sampler = Sampler()
    sampler.start()
    await asyncio.sleep(1)
    idle_threads = psutil.Process().num_threads()
    elapsed = await run_all(prompt, args.runs)
    # no faster than the model allows (one answer per turn) nor than the worker computes
    floor = max((args.tools + 1) * args.latency, args.runs * steps_per_run / capacity)
    say("done", runs=args.runs, elapsed_s=elapsed, floor_s=floor, over_floor=elapsed / floor, steps_per_s=capacity,
        idle_threads=idle_threads, peak_threads=sampler.peak, peak_rss_mb=peak_rss_mb())
    await keel.stop()


async def run_all(prompt: str, runs: int) -> float:
    """Enqueue `runs` runs as `POST /v1/runs` does and wait for all of them; the seconds it took."""
    from dbos import DBOS

    started = time.monotonic()
    ids = await asyncio.gather(*(v.keel_start(prompt, queued=True) for _ in range(runs)))
    await asyncio.gather(*[(await DBOS.retrieve_workflow_async(i)).get_result() for i in ids])
    return time.monotonic() - started


async def start_pending(variant: str, i: int, tools: int) -> None:
    """One recovery-workload run: Keel's enqueued as `POST /v1/runs` does, raw DBOS's started as DBOS's docs do."""
    from dbos import DBOS, SetWorkflowID

    if variant == "keel":
        await v.keel_start(f"tools={tools}", run_id=f"rec-{i:06d}", queued=True)
        return
    with SetWorkflowID(f"rec-{i:06d}"):
        await DBOS.start_workflow_async(v.raw_agent, f"tools={tools}")


async def when_model_has(model: ScriptedModel, count: Callable[[], int], wanted: int, event: str) -> None:
    while count() < wanted:
        await asyncio.sleep(0.2)
    say(event, model_calls=model.calls)


AHEAD = 256


async def load(args: argparse.Namespace) -> None:
    # the model never answers, and Keel's model timeout is longer than this phase: every run stays in its first model call
    keel = await launch(args.database, 3600.0, args.executor, args.worker_concurrency, model_timeout=7200.0)
    say("launched")
    gate = asyncio.Semaphore(64)

    async def start(i: int) -> None:
        async with gate:
            # at most AHEAD runs between their start and the model, so the phase starts runs at the rate they reach it
            while i - keel.model.asked > AHEAD:
                await asyncio.sleep(0.05)
            await start_pending(args.variant, i, args.tools)

    started = time.monotonic()
    await asyncio.gather(*(start(i) for i in range(args.runs)))
    say("submitted", runs=args.runs, seconds=time.monotonic() - started)
    await when_model_has(keel.model, lambda: keel.model.asked, args.runs, "in_model")
    await asyncio.Event().wait()


async def resume(args: argparse.Namespace) -> None:
    keel = await launch(args.database, 0.0, args.executor, args.worker_concurrency)  # DBOS.launch() finds this executor's pending runs
    say("launched", peak_rss_mb=peak_rss_mb())
    watcher = asyncio.create_task(when_model_has(keel.model, lambda: keel.model.first_turns_answered, args.runs, "resumed"))
    while True:
        await asyncio.sleep(5)
        say("alive", threads=psutil.Process().num_threads(), peak_rss_mb=peak_rss_mb(), resumed=keel.model.first_turns_answered,
            all_resumed=watcher.done())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["many", "load", "resume"])
    parser.add_argument("--database", required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tools", type=int, default=7)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--executor", default="bench-worker")
    parser.add_argument("--variant", choices=["keel", "raw"], default="keel", help="load/resume: Keel's agent or the raw DBOS workflow of the same shape")
    parser.add_argument("--worker-concurrency", default="default",
                        help="runs the worker admits at once: an integer, `none` (no bound), or `default` (KEEL_WORKER_CONCURRENCY's default)")
    parser.add_argument("--dbos-overrides", default="", help="JSON merged into Keel's DBOS configuration (a what-if)")
    args = parser.parse_args()
    if args.dbos_overrides:
        override_dbos_config(json.loads(args.dbos_overrides))
    asyncio.run({"many": many, "load": load, "resume": resume}[args.mode](args))


if __name__ == "__main__":
    main()
