"""Where per-step CPU goes: py-spy samples this process while Keel (then raw DBOS) runs the 14-step
agent at concurrency 32; the collapsed stacks are summarised by package and by function (self time).
Only samples of the thread holding the GIL are kept (`--gil`): in one Python process that is the CPU the
steps cost, not threads blocked on a socket."""

import asyncio
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.suite.harness import AGENT_14, Harness, concurrent, set_latency

GROUPS = [  # first match wins, checked from the innermost frame outwards
    ("psycopg / libpq", ("psycopg",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("openai client + httpx", ("openai", "httpx", "httpcore")),
    ("pydantic", ("pydantic",)),
    ("DBOS", ("dbos/",)),
    ("LangGraph", ("langgraph", "langchain")),
    ("Keel steps/ + workflows/", ("/steps/", "/workflows/")),
    ("json", ("json/",)),
    ("asyncio / threading", ("asyncio", "threading.py", "selectors.py", "concurrent/")),
]


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def classify(frame: str) -> str:
    for group, needles in GROUPS:
        if any(n in frame for n in needles):
            return group
    return "other"


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    leaf_group: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        # the sample's owner: the innermost frame that belongs to a named group
        owner = next((g for g in (classify(f) for f in reversed(frames)) if g != "other"), "other")
        leaf_group[owner] += count

    def pct(c: int) -> float:
        return round(100 * c / max(total, 1), 1)

    interesting = [(f, c) for f, c in inclusive.most_common() if any(k in f for k in ("dbos/", "steps/", "workflows/", "langgraph", "openai"))]
    return {"samples": total,
            "by_package": {g: pct(c) for g, c in leaf_group.most_common()},
            "top_self": [(f, pct(c)) for f, c in self_time.most_common(top)],
            "top_inclusive": [(f, pct(c)) for f, c in interesting[:top]]}


async def measure(harness: Harness, seconds: float, out_dir: Path, concurrency: int = 32) -> dict[str, Any]:
    exe = py_spy()
    if exe is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    set_latency(harness, 0, 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
    for variant in ("keel", "raw_dbos", "langgraph"):
        print(f"profile: py-spy on {variant}, concurrency {concurrency}, {seconds:.0f} s", flush=True)
        path = out_dir / f"{variant}.collapsed.txt"
        spy = await asyncio.create_subprocess_exec(exe, "record", "--pid", str(os.getpid()), "--duration", str(int(seconds)), "--rate", "200",
                                                   "--format", "raw", "--output", str(path), "--nonblocking", "--gil",
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs = 0
        while spy.returncode is None:
            await concurrent(harness.variants[variant], AGENT_14, 2 * concurrency, concurrency)
            runs += 2 * concurrency
            try:
                await asyncio.wait_for(spy.wait(), 0.01)
            except TimeoutError:
                pass
        if not path.exists():
            return {"skipped": f"py-spy produced no profile (exit {spy.returncode}); it needs ptrace permission"}
        from bench.suite.analysis import frame_shares

        result[variant] = summarise(path)
        result[variant]["runs"] = runs
        result[variant]["frames"] = frame_shares(str(path))
    return result
