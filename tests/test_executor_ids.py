"""One live process per executor ID: a second process with a live worker's ID, or on its port, refuses
before it recovers anything; `keel serve --workers 2` runs two workers behind one port, each under its
own ID, and a worker killed with SIGKILL comes back under that ID and finishes its runs."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import KEEL, ROOT, Worker


async def recovery_state(db: psycopg.AsyncConnection, run_id: str) -> tuple:
    """What a recovery would change: DBOS's attempt count and executor, and the run's model calls."""
    return await (await db.execute(
        """SELECT s.recovery_attempts, s.executor_id, s.status,
                  (SELECT count(*) FROM keel.events e WHERE e.run_id = s.workflow_uuid AND e.kind = 'llm_request')
           FROM dbos.workflow_status s WHERE s.workflow_uuid = %s""", (run_id,))).fetchone()


async def waiting_run(worker: Worker, customer: str) -> str:
    async with worker.client(timeout=30) as client:
        run_id = (await client.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
        await wait_for_approval(client, run_id)
    return run_id


async def approve_and_finish(worker: Worker, db: psycopg.AsyncConnection, run_id: str) -> dict:
    async with worker.client(timeout=30) as client:
        approval = await fetch_value(db, "SELECT approval_id FROM keel.approvals WHERE run_id = %s", run_id)
        await client.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
        return await wait_for_run(client, run_id)


async def test_a_second_process_with_a_live_executor_id_refuses_and_recovers_nothing(
        start_worker: Callable[..., Worker], worker_env: dict[str, str], logs: Path, db: psycopg.AsyncConnection, customer: str) -> None:
    live = start_worker("exec-live")
    run_id = await waiting_run(live, customer)
    before = await recovery_state(db, run_id)

    second = Worker(env={**worker_env, "KEEL_EXECUTOR_ID": "exec-live", "KEEL_QUEUE": "runs-exec-live"}, log=logs / "exec-live-second.log")
    with pytest.raises(RuntimeError, match="exited with 3"):
        second.start()
    after = await recovery_state(db, run_id)
    run = await approve_and_finish(live, db, run_id)

    assert "executor ID 'exec-live' is in use by a live process" in second.log.read_text()
    assert "Recovering" not in second.log.read_text() and "DBOS launched" not in second.log.read_text()
    assert after == before  # not requeued, not re-executed, still on the live worker
    assert run["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1


async def test_a_second_process_on_a_taken_port_exits_before_touching_the_database(
        start_worker: Callable[..., Worker], worker_env: dict[str, str], logs: Path, db: psycopg.AsyncConnection, customer: str) -> None:
    # The case: two `keel serve` on one host, both with the default executor ID and port.
    live = start_worker("exec-port")
    run_id = await waiting_run(live, customer)
    before = await recovery_state(db, run_id)

    env = {**worker_env, "KEEL_EXECUTOR_ID": "exec-port", "KEEL_QUEUE": "runs-exec-port", "KEEL_WORKERS": "1", "KEEL_PORT": str(live.port)}
    second = subprocess.run([str(KEEL), "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{live.port}" in second.stderr
    assert "DBOS" not in second.stdout + second.stderr  # it stopped before the lifespan: no launch, no recovery
    assert await recovery_state(db, run_id) == before
    assert (await approve_and_finish(live, db, run_id))["status"] == "succeeded"


def test_the_default_executor_id_is_unique_per_port_on_a_host() -> None:
    from app.config import Settings

    one, other, again = Settings(port=8001), Settings(port=8002), Settings(port=8001)

    assert one.executor_id != other.executor_id
    assert one.executor_id == again.executor_id  # stable across restarts
    assert Settings(port=8001, executor_id="w1").executor_id == "w1"


async def executor_ids_answering(worker: Worker, expected: set[str], timeout: float = 60) -> set[str]:
    """The executor IDs seen answering `/healthz` on the one port, once all of `expected` have."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not expected <= seen and time.monotonic() < deadline:
        async with httpx.AsyncClient(timeout=5) as client:  # a new connection each time: the kernel picks the worker
            seen.add((await client.get(f"{worker.url}/healthz")).json()["executor_id"])
    return seen


async def worker_pids(db: psycopg.AsyncConnection, prefix: str) -> dict[str, int]:
    return dict(await (await db.execute("SELECT executor_id, pid FROM keel.workers WHERE starts_with(executor_id, %s)", (prefix,))).fetchall())


async def test_two_workers_behind_one_port_and_a_killed_one_comes_back_under_its_id(
        worker_env: dict[str, str], logs: Path, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    # Slow heartbeats: the run must be finished by the restarted worker, not taken over by its sibling.
    env = {**worker_env, "KEEL_WORKERS": "2", "KEEL_EXECUTOR_ID": "pair", "KEEL_QUEUE": "runs-pair", "KEEL_HEARTBEAT_INTERVAL": "60"}
    server = Worker(env=env, log=logs / "pair.log").start()
    try:
        answering = await executor_ids_answering(server, {"pair/1", "pair/2"})
        first = await worker_pids(db, "pair/")
        await model.post("/faults", json={"kind": "delay", "match": customer, "seconds": 8, "after": 2})
        async with server.client(timeout=30) as client:
            run_id = (await client.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"]
            deadline = time.monotonic() + 60
            while not await fetch_value(db, "SELECT 1 FROM keel.events WHERE run_id = %s AND kind = 'llm_request' AND payload ->> 'turn' = '3'", run_id):
                assert time.monotonic() < deadline, "the run never reached its third model call"
                await asyncio.sleep(0.1)
            victim = await fetch_value(db, "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id)
            os.kill(first[victim], signal.SIGKILL)  # in the middle of the delayed model call
        async with server.client(timeout=30) as client:  # a new connection: the old one may have been to the victim
            run = await wait_for_run(client, run_id, timeout=120)
        second = await worker_pids(db, "pair/")
    finally:
        server.stop()

    assert answering == {"pair/1", "pair/2"}
    assert set(first) == {"pair/1", "pair/2"} and len(set(first.values())) == 2
    assert second[victim] != first[victim]  # a new process, under the same ID
    assert "exited with status -9" in server.log.read_text() and f"worker {victim} started" in server.log.read_text()
    assert run["status"] == "succeeded"
    # The restarted worker recovered it (back onto the pool's queue, where either worker may take it): no takeover was needed.
    assert "Recovering 1 workflows" in server.log.read_text()
    assert await fetch_value(db, "SELECT taken_over_by FROM keel.workers WHERE executor_id = %s", victim) is None
    assert await fetch_value(db, "SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id) >= 2
    effects = await (await db.execute(
        """SELECT (SELECT count(*) FROM sandbox.tickets WHERE customer_id = %(c)s), (SELECT count(*) FROM sandbox.payments WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM sandbox.plan_changes WHERE customer_id = %(c)s)""", {"c": customer})).fetchone()
    assert effects == (1, 1, 1)
    for pid in second.values():  # stopping the supervisor stopped its workers
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_workers_behind_one_port_share_the_offline_model(
        worker_env: dict[str, str], logs: Path, db: psycopg.AsyncConnection, customer: str) -> None:
    # The zero-config `make run`: no model configured, so each worker mounts the offline model, and a
    # worker's model call may be accepted by its sibling. Each worker once picked its own key, and a call
    # that reached the other one failed its run (401, a permanent error). Twelve runs at once open several
    # connections to the port, and the kernel hands each to either worker.
    env = {k: v for k, v in worker_env.items() if not k.startswith("OPENAI_")}
    server = Worker(env={**env, "KEEL_WORKERS": "2", "KEEL_EXECUTOR_ID": "offline-pair", "KEEL_QUEUE": "runs-offline-pair"},
                    log=logs / "offline-pair.log").start()
    try:
        assert await executor_ids_answering(server, {"offline-pair/1", "offline-pair/2"}) == {"offline-pair/1", "offline-pair/2"}
        async with server.client(timeout=30) as client:
            started = [(await client.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"]
                       for _ in range(12)]
            runs = await asyncio.gather(*(wait_for_run(client, run_id, timeout=120) for run_id in started))
    finally:
        server.stop()

    assert [(run["status"], run["error"]) for run in runs] == [("succeeded", None)] * 12
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 12  # one charge per run
