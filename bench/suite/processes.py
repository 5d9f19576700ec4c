"""Workloads 5 (many concurrent runs in one worker) and 6 (recovery of pending runs after SIGKILL),
each with worker processes of its own (`bench.suite.worker`)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from app.schema import migrate
from bench.names import bench_database
from bench.suite.setup import conninfo, fresh_database

ROOT = Path(__file__).resolve().parents[2]
RECOVERY_DB = bench_database("_recovery")


def pool_timeouts(log: Path) -> int:
    """How many times the worker's steps gave up waiting for one of Keel's pooled connections (each is retried)."""
    return log.read_text(errors="replace").count("PoolTimeout: couldn't get a connection") if log.exists() else 0


class WorkerProcess:
    def __init__(self, *args: str, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = log.open("ab")
        self.events: list[dict[str, Any]] = []
        self.process = subprocess.Popen([sys.executable, "-m", "bench.suite.worker", *args], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["event"] == event:
                    return e
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode} before {event!r}; see {self.log.name}")
            time.sleep(0.1)
        raise TimeoutError(f"no {event!r} from the worker in {timeout}s; see {self.log.name}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


WHAT_IF = {"max_executor_threads": 16}
"""Workload 5's what-if: DBOS's executor (which DBOS also installs as the loop's default executor, so it
runs every `asyncio.to_thread` of an async step) bounded, instead of DBOS's unbounded default."""


def many_runs(database: str, runs_list: list[int], latency: float, logs: Path, what_if: bool = True) -> dict[str, Any]:
    """1,000 (and fewer, to see what grows) concurrent 14-step runs in one worker, model latency 1 s; then the
    smallest size again with `WHAT_IF` applied to Keel's DBOS configuration."""
    result: dict[str, Any] = {"latency": latency, "ideal_s": 8 * latency, "levels": {}, "what_if": WHAT_IF}
    plan = [(runs, None) for runs in runs_list] + ([(min(runs_list), WHAT_IF)] if what_if else [])
    for runs, overrides in plan:
        label = f"{runs} (what-if: {json.dumps(overrides)})" if overrides else str(runs)
        print(f"workload 5: {label} concurrent runs in one worker process, model latency {latency:.1f} s", flush=True)
        extra = ["--dbos-overrides", json.dumps(overrides)] if overrides else []
        worker = WorkerProcess("many", "--database", database, "--runs", str(runs), "--latency", str(latency), *extra,
                               "--executor", f"bench-many-{runs}{'-whatif' if overrides else ''}", log=logs / f"many-{runs}.log")
        try:
            done = worker.wait_for("done", 1800)
        finally:
            worker.stop()
        done["pool_timeouts"] = pool_timeouts(logs / f"many-{runs}.log")
        done["over_ideal"] = done["elapsed_s"] / result["ideal_s"]  # done["over_floor"]: over the worker's own capacity
        done["what_if"] = bool(overrides)
        print(f"  {runs} runs done in {done['elapsed_s']:.1f} s ({done['over_ideal']:.2f}x ideal, {done['over_floor']:.2f}x the worker's "
              f"floor of {done['floor_s']:.1f} s at its {done['steps_per_s']:.0f} steps/s), {done['pool_timeouts']} PoolTimeouts, "
              f"threads {done['idle_threads']} idle -> {done['peak_threads']} peak, peak RSS {done['peak_rss_mb']:.0f} MB", flush=True)
        result["levels"][label] = done
    return result


def count(database: str, sql: str) -> int:
    with psycopg.connect(conninfo(database)) as conn:
        return int(conn.execute(sql).fetchone()[0])


DISPATCHED = "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid LIKE 'rec-%' AND recovery_attempts >= 2"
FINISHED = "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid LIKE 'rec-%' AND status = 'SUCCESS'"
VARIANTS = {"raw": "raw DBOS", "keel": "Keel"}


def recovery(runs_list: list[int], tools: int, logs: Path, timeout: float = 1800) -> dict[str, Any]:
    """For each N: N pending runs of raw DBOS's workflow, then of Keel's agent, the same shape (model, tool, model),
    each recovered by a restarted worker; Keel's times over raw DBOS's."""
    result: dict[str, Any] = {"tools": tools, "levels": {}}
    for runs in runs_list:
        level = {variant: recover(variant, runs, tools, logs, timeout) for variant in VARIANTS}
        if all("finished_s" in m for m in level.values()):
            level["keel_over_raw"] = level["keel"]["finished_s"] / level["raw"]["finished_s"]
            print(f"  {runs:,} runs: Keel finished {level['keel_over_raw']:.2f}x raw DBOS's time", flush=True)
        result["levels"][str(runs)] = level
    return result


def recover(variant: str, runs: int, tools: int, logs: Path, timeout: float) -> dict[str, Any]:
    """`runs` runs, each waiting in its first model call; SIGKILL the worker, start it again (same executor)."""
    print(f"workload 6: recovery of {runs:,} pending {VARIANTS[variant]} runs ({tools}-tool agent): creating them", flush=True)
    url = fresh_database(RECOVERY_DB)
    migrate(url)
    args = ("--database", RECOVERY_DB, "--runs", str(runs), "--tools", str(tools), "--executor", "bench-recovery", "--variant", variant)
    # Keel's load phase is unbounded, so that every run reaches the model before the kill; the restarted worker admits them at Keel's bound
    first = WorkerProcess("load", *args, "--worker-concurrency", "none", log=logs / f"recovery-{variant}-{runs}-load.log")
    try:
        submitted = first.wait_for("submitted", timeout)
        first.wait_for("in_model", timeout)
    finally:
        first.kill()
    print(f"  submitted in {submitted['seconds']:.1f} s, all waiting in the model; worker SIGKILLed; restarting", flush=True)
    restarted = time.monotonic()
    log = logs / f"recovery-{variant}-{runs}-resume.log"
    second = WorkerProcess("resume", *args, log=log)
    marks: dict[str, float] = {}
    try:
        launched = second.wait_for("launched", timeout)
        marks["launched_s"] = time.monotonic() - restarted
        next_print = 0.0
        while "finished_s" not in marks:
            elapsed = time.monotonic() - restarted
            if elapsed > timeout:  # report how far it got rather than nothing
                marks["gave_up_s"] = elapsed
                marks["reached"] = {"dispatched": count(RECOVERY_DB, DISPATCHED), "finished": count(RECOVERY_DB, FINISHED)}
                print(f"  gave up after {elapsed:.0f} s: {marks['reached']}", flush=True)
                break
            if "dispatched_s" not in marks and count(RECOVERY_DB, DISPATCHED) >= runs:
                marks["dispatched_s"] = time.monotonic() - restarted
            if "resumed_s" not in marks and (resumed := next((e for e in second.events if e["event"] == "resumed"), None)):
                marks["resumed_s"] = resumed["t"] - launched["t"] + marks["launched_s"]
            if count(RECOVERY_DB, FINISHED) >= runs:
                marks["finished_s"] = time.monotonic() - restarted
            if elapsed >= next_print:
                print(f"  {elapsed:5.0f} s after restart: dispatched {count(RECOVERY_DB, DISPATCHED)}, finished {count(RECOVERY_DB, FINISHED)} "
                      f"of {runs:,}", flush=True)
                next_print = elapsed + 10
            time.sleep(0.5)
        alive = [e for e in second.events if e["event"] == "alive"]
    finally:
        second.stop()
    result = {"runs": runs, "create_s": submitted["seconds"], "pool_timeouts": pool_timeouts(log), "worker_startup_s": launched["t"], **marks,
              "peak_rss_mb": max([e["peak_rss_mb"] for e in alive] or [launched["peak_rss_mb"]]),
              "threads": max([e["threads"] for e in alive] or [0])}
    print(f"  all dispatched {marks.get('dispatched_s', float('nan')):.1f} s, resumed {marks.get('resumed_s', float('nan')):.1f} s, "
          f"finished {marks.get('finished_s', float('nan')):.1f} s after the restart; {result['pool_timeouts']} PoolTimeouts", flush=True)
    return result


def log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="keel-bench-"))
