"""Keel's benchmark suite (issue 8). One command runs every workload and writes docs/benchmarks.md:

    make bench              # the issue's sizes (about an hour on the 2-core machine)
    make bench QUICK=1      # small sizes, a smoke test (~3 min)
    python -m bench.suite --only overhead,commits --rounds 3

PostgreSQL: BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres); the suite drops
and creates its own databases keel_bench, keel_bench_lg, keel_bench_recovery and keel_bench_serve_<n> there (BENCH_DATABASE_PREFIX
replaces keel_bench)."""

import argparse
import asyncio
import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg

from bench import serve_workers
from bench.suite import commits, frameworks, overhead, payload, ping, processes, profile, report, slow_tools, throughput
from bench.suite.harness import Harness
from bench.suite.setup import KEEL_DB, conninfo, prepare_keel_database

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ["overhead", "commits", "throughput", "realistic", "payload", "profile", "ping", "many", "recovery", "frameworks",
             "slow_tools", "serve"]
IN_PROCESS = {"overhead", "commits", "throughput", "realistic", "payload", "profile", "frameworks", "slow_tools"}
FULL = dict(rounds=5, runs=10, commit_runs=20, concurrency="8,32,64,256", repeats=3, large_repeats=2, min_runs=32, realistic_rounds=5,
            many="100,1000", many_latency=1.0, recovery_runs="2000,10000", recovery_tools=1, turns="10,100", profile_seconds=10,
            slow_tool_runs=200, slow_tool_seconds=2.0, serve_runs=300)
QUICK = dict(rounds=3, runs=3, commit_runs=5, concurrency="8,32", repeats=2, large_repeats=1, min_runs=16, realistic_rounds=2,
             many="50,200", many_latency=1.0, recovery_runs="300", recovery_tools=1, turns="10,30", profile_seconds=4,
             slow_tool_runs=50, slow_tool_seconds=1.0, serve_runs=60)


def machine() -> dict[str, Any]:
    with psycopg.connect(conninfo("postgres")) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "postgres": pg,
            "dbos": version("dbos"),
            "load_at_start": os.getloadavg()}


def save(results: dict[str, Any], output: Path, started: float) -> None:
    """Write the JSON and the Markdown now, so a stopped run keeps the workloads it finished."""
    results["machine"]["load_at_end"] = os.getloadavg()
    results["wall_s"] = results.get("earlier_wall_s", 0) + time.monotonic() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    output.write_text(report.render(results))


async def in_process(args: argparse.Namespace, only: set[str], results: dict[str, Any], checkpoint: Any) -> None:
    harness = Harness(temporal=not args.no_temporal)
    await harness.start()
    results["temporal_skipped"] = harness.temporal_skipped
    try:
        if "overhead" in only:
            results["overhead"] = await overhead.step_overhead(harness, args.rounds, args.runs)
            checkpoint()
        if "commits" in only:
            results["commits"] = await commits.measure(harness, args.commit_runs)
            checkpoint()
        if "throughput" in only:
            levels = [int(c) for c in args.concurrency.split(",")]
            results["throughput"] = await throughput.measure(harness, levels, args.repeats, args.min_runs, args.large_repeats)
            checkpoint()
        if "realistic" in only:
            results["realistic"] = await overhead.realistic(harness, args.realistic_rounds, 1)
            checkpoint()
        if "payload" in only:
            results["payload"] = await payload.measure(harness, [int(t) for t in args.turns.split(",")])
            checkpoint()
        if "profile" in only:
            results["profile"] = await profile.measure(harness, args.profile_seconds, Path(args.profile_dir))
            checkpoint()
        if "slow_tools" in only:
            results["slow_tools"] = await slow_tools.measure(harness, args.slow_tool_runs, args.slow_tool_seconds)
            checkpoint()
        if "frameworks" in only:
            results["frameworks"] = await frameworks.measure(harness, args.rounds, args.runs)
            checkpoint()
    finally:
        await harness.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--rounds", type=int, help="workload 1: interleaved rounds")
    parser.add_argument("--runs", type=int, help="workload 1: sequential runs per variant per round")
    parser.add_argument("--commit-runs", type=int, help="workload 2: runs per agent shape")
    parser.add_argument("--concurrency", help="workload 3: comma-separated concurrency levels")
    parser.add_argument("--repeats", type=int, help="workload 3: repeats per level")
    parser.add_argument("--large-repeats", type=int, help="workload 3: repeats per level at concurrency 128 and above")
    parser.add_argument("--min-runs", type=int, help="workload 3: runs per measurement are max(concurrency, this)")
    parser.add_argument("--realistic-rounds", type=int, help="workload 4: interleaved rounds")
    parser.add_argument("--many", help="workload 5: comma-separated numbers of concurrent runs")
    parser.add_argument("--many-latency", type=float, help="workload 5: model latency, seconds")
    parser.add_argument("--recovery-runs", help="workload 6: comma-separated numbers of pending runs")
    parser.add_argument("--recovery-tools", type=int, help="workload 6: tool calls per run")
    parser.add_argument("--recovery-timeout", type=float, default=1800, help="workload 6: give up (and report how far it got) after this")
    parser.add_argument("--turns", help="workload 7: comma-separated conversation lengths")
    parser.add_argument("--slow-tool-runs", type=int, help="workload 9: concurrent runs, one slow tool call each")
    parser.add_argument("--slow-tool-seconds", type=float, help="workload 9: the tool's latency")
    parser.add_argument("--serve-runs", type=int, help="workload 10: billing runs over HTTP per `keel serve --workers` configuration")
    parser.add_argument("--profile-seconds", type=float, help="py-spy sampling time per variant")
    parser.add_argument("--profile-dir", default=str(ROOT / ".keel" / "bench-profiles"))
    parser.add_argument("--no-temporal", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--merge", action="store_true", help="add these workloads' results to the existing JSON file (a run in parts)")
    parser.add_argument("--render", metavar="JSON", help="only write the Markdown again from a results file (docs/benchmarks.json)")
    args = parser.parse_args()
    if args.render:
        Path(args.output).write_text(report.render(json.loads(Path(args.render).read_text())))
        return
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    only = set(args.only.split(","))
    started = time.monotonic()
    output = Path(args.output)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "args": vars(args), "machine": machine(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if args.merge and output.with_suffix(".json").exists():  # add to an earlier invocation's results
        earlier = json.loads(output.with_suffix(".json").read_text())
        results = {**earlier, **{k: v for k, v in results.items() if k in ("machine",)}, "earlier_wall_s": earlier.get("wall_s", 0)}
        results["machine"]["load_at_start"] = earlier["machine"]["load_at_start"]
        results.setdefault("invocations", []).append({"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "only": sorted(only),
                                                      "args": vars(args)})

    def checkpoint() -> None:
        save(results, output, started)

    print(f"Keel benchmark suite ({results['mode']}): {', '.join(w for w in WORKLOADS if w in only)}", flush=True)
    if only & IN_PROCESS:
        asyncio.run(in_process(args, only, results, checkpoint))
    if "ping" in only:
        results["ping"] = ping.measure()
        checkpoint()
    logs = processes.log_dir()
    if "many" in only and not only & IN_PROCESS:
        prepare_keel_database()
    if "many" in only:
        results["many"] = processes.many_runs(KEEL_DB, [int(n) for n in args.many.split(",")], args.many_latency, logs)
        checkpoint()
    if "recovery" in only:
        results["recovery"] = processes.recovery([int(n) for n in args.recovery_runs.split(",")], args.recovery_tools, logs, timeout=args.recovery_timeout)
        checkpoint()
    if "serve" in only:
        results["serve"] = asyncio.run(serve_workers.measure(args.serve_runs, 32, logs))
        checkpoint()
    checkpoint()
    print(f"\nwrote {output} and {output.with_suffix('.json')} in {results['wall_s'] / 60:.1f} min (worker logs in {logs})", flush=True)


if __name__ == "__main__":
    main()
