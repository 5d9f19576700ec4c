"""A running tool holds a lease on its key, not a database connection: the intent and the outcome
commit in short transactions, an attempt that finds another's live lease waits, and one that lost
its lease (paused past its expiry while another took over) writes neither its outcome nor its
`ctx.db` writes. Holders run as real processes (`tests/lease_holder.py`), paused and killed."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.database import psycopg_conninfo
from steps import ledger
from steps.ledger import Call
from steps.tools import ToolContext, tool
from tests.conftest import LEDGER_POOL_NAME, fetch_value, wait_for_row
from tests.processes import ROOT, START_TIMEOUT

IDLE_IN_TRANSACTION = f"""
SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = '{LEDGER_POOL_NAME}'
   AND state LIKE 'idle in transaction%%'
"""


async def test_fifty_sleeping_tools_hold_no_connection(ledger_pool, db: psycopg.AsyncConnection, monkeypatch) -> None:
    monkeypatch.setattr(ledger, "LEASE_SECONDS", 600.0)  # no heartbeat while the tools sleep: it is not what is counted
    inside: list[str] = []
    all_inside, wake = asyncio.Event(), asyncio.Event()

    @tool
    async def nap(ctx: ToolContext) -> str:
        inside.append(ctx.idempotency_key)
        if len(inside) == 50:
            all_inside.set()
        await wake.wait()
        return "rested"

    calls = [Call(tool=nap, key=f"nap-{uuid.uuid4().hex[:8]}:1", run_id="nap", step_id=1, tool_call_id=f"call_{n}", arguments={})
             for n in range(50)]
    running = [asyncio.create_task(call.attempt(1)) for call in calls]
    try:
        await asyncio.wait_for(all_inside.wait(), 60)
    except TimeoutError:
        pass
    # A tool that held its connection would leave the rest waiting for the pool's four.
    assert len(inside) == 50, f"{len(inside)} of 50 tools ran at once on a pool of 4"
    stats = ledger_pool.get_stats()
    checked_out = stats["pool_size"] - stats["pool_available"]
    idle_in_transaction = await fetch_value(db, IDLE_IN_TRANSACTION)
    wake.set()
    outcomes = await asyncio.gather(*running)

    assert (checked_out, idle_in_transaction) == (0, 0)
    assert [o.result for o in outcomes] == ["rested"] * 50


# Holders in processes of their own.

def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"holder exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout}s"
        time.sleep(0.05)


def outcome_of(process: subprocess.Popen, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out)


@pytest.fixture
def holder(database_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `tests.lease_holder` for a key; all are killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start(executor_id: str, key: str, tool_name: str, arguments: dict[str, Any], **env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.lease_holder", psycopg_conninfo(database_url), executor_id, key, tool_name, json.dumps(arguments)],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.communicate(timeout=10)


@pytest.fixture
def key() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}:1"


def external_args(tmp_path: Path, name: str) -> dict[str, str]:
    return {"effects": str(tmp_path / "effects"), "marker": str(tmp_path / f"{name}.in"), "release": str(tmp_path / f"{name}.go")}


def effects(tmp_path: Path) -> list[str]:
    path = tmp_path / "effects"
    return path.read_text().splitlines() if path.exists() else []


async def ledger_row(db: psycopg.AsyncConnection, key: str) -> tuple[Any, ...]:
    return await (await db.execute("SELECT status, result, attempts, lease_token, lease_owner FROM keel.tool_calls WHERE idempotency_key = %s",
                                   (key,))).fetchone()


async def test_two_workers_racing_on_one_key_run_it_once(holder, db, key: str, tmp_path: Path) -> None:
    first = holder("race-a", key, "external", external_args(tmp_path, "a"))
    wait_for_file(tmp_path / "a.in", first)  # a holds the lease, its tool running
    (tmp_path / "b.go").touch()  # b's tool would not wait: only the lease stops it
    second = holder("race-b", key, "external", external_args(tmp_path, "b"))
    # b has looked at the key (its last query reads the row) and is waiting for a's lease
    await wait_for_row(db, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND query LIKE '%%FOR UPDATE%%'", "race-b",
                       timeout=START_TIMEOUT)
    (tmp_path / "a.go").touch()

    a, b = outcome_of(first), outcome_of(second)

    assert (a["result"], a["deduplicated"]) == ("race-a", False)
    assert (b["result"], b["deduplicated"]) == ("race-a", True)
    assert not (tmp_path / "b.in").exists()
    assert effects(tmp_path) == [f"{key} race-a"]
    assert (await ledger_row(db, key))[:4] == ("succeeded", "race-a", 1, 1)


async def take_over_from_paused(holder, db, key: str, tool_name: str, arguments: Callable[[str], dict[str, Any]],
                                tmp_path: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    """a claims the key on a one-second lease and is paused in its tool; b claims it once the lease has
    expired and finishes. Returns a (still paused) and b's outcome."""
    paused = holder("pause-a", key, tool_name, arguments("a"), KEEL_TEST_LEASE_SECONDS="1")
    wait_for_file(tmp_path / "a.in", paused)
    paused.send_signal(signal.SIGSTOP)  # its heartbeat stops with it
    await wait_for_row(db, "SELECT 1 FROM keel.tool_calls WHERE idempotency_key = %s AND lease_expires_at < now()", key)
    (tmp_path / "b.go").touch()
    b = outcome_of(holder("pause-b", key, tool_name, arguments("b")))
    assert (b["result"], b["deduplicated"], b["attempts"]) == ("pause-b", False, 2)
    (tmp_path / "a.go").touch()
    paused.send_signal(signal.SIGCONT)
    return paused, b


async def test_a_paused_holder_that_wakes_cannot_overwrite_the_outcome(holder, db, key: str, tmp_path: Path) -> None:
    paused, _ = await take_over_from_paused(holder, db, key, "external", lambda name: external_args(tmp_path, name), tmp_path)

    a = outcome_of(paused)

    assert (a["result"], a["deduplicated"]) == ("pause-b", True)  # the winner's outcome, not its own
    assert (await ledger_row(db, key))[:4] == ("succeeded", "pause-b", 2, 2)
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'tool_result'", key) == 1


async def test_a_paused_holder_that_wakes_cannot_commit_its_ctx_db_writes(holder, db, key: str, customer: str, tmp_path: Path) -> None:
    def note_args(name: str) -> dict[str, Any]:
        return {"customer_id": customer, "marker": str(tmp_path / f"{name}.in"), "release": str(tmp_path / f"{name}.go"), "write_first": False}

    paused, _ = await take_over_from_paused(holder, db, key, "note", note_args, tmp_path)

    a = outcome_of(paused)

    assert (a["result"], a["deduplicated"]) == ("pause-b", True)
    tickets = await (await db.execute("SELECT subject FROM sandbox.tickets WHERE customer_id = %s", (customer,))).fetchall()
    assert tickets == [("pause-b",)]
    assert (await ledger_row(db, key))[:4] == ("succeeded", "pause-b", 2, 2)


async def killed_then_rerun(holder, db, key: str, tool_name: str, arguments: Callable[[str], dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Kill the holder in its tool, then run the call again in a fresh process with the executor ID."""
    killed = holder("kill-me", key, tool_name, arguments("a"))
    wait_for_file(tmp_path / "a.in", killed)
    expired_at = await fetch_value(db, "SELECT lease_expires_at FROM keel.tool_calls WHERE idempotency_key = %s", key)
    killed.kill()
    killed.communicate(timeout=10)
    (tmp_path / "b.go").touch()
    rerun = outcome_of(holder("kill-me", key, tool_name, arguments("b")))
    # The dead process's lease was taken over at once, not waited out: one executor ID is one live process.
    assert await fetch_value(db, "SELECT completed_at < %s FROM keel.tool_calls WHERE idempotency_key = %s", expired_at, key)
    return rerun


async def test_killed_during_a_long_external_tool(holder, db, key: str, tmp_path: Path) -> None:
    rerun = await killed_then_rerun(holder, db, key, "external", lambda name: external_args(tmp_path, name), tmp_path)

    assert (rerun["result"], rerun["attempts"], rerun["deduplicated"]) == ("kill-me", 2, False)
    assert effects(tmp_path) == [f"{key} kill-me"]
    assert (await ledger_row(db, key))[:4] == ("succeeded", "kill-me", 2, 2)


async def test_killed_during_a_ctx_db_tool(holder, db, key: str, customer: str, tmp_path: Path) -> None:
    def note_args(name: str) -> dict[str, Any]:  # the ticket is written, its transaction open, when the process dies
        return {"customer_id": customer, "marker": str(tmp_path / f"{name}.in"), "release": str(tmp_path / f"{name}.go"), "write_first": True}

    rerun = await killed_then_rerun(holder, db, key, "note", note_args, tmp_path)

    assert (rerun["attempts"], rerun["deduplicated"]) == (2, False)
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE customer_id = %s", customer) == 1
    assert (await ledger_row(db, key))[:4] == ("succeeded", "kill-me", 2, 2)
