"""Backpressure: while `KEEL_MAX_QUEUED_RUNS` runs wait for a worker, new runs get 429 with `Retry-After`."""

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value
from tests.processes import Worker


async def test_a_full_queue_refuses_new_runs_but_not_a_repeated_one(start_worker: Callable[..., Worker], db: psycopg.AsyncConnection,
                                                                     model: httpx.AsyncClient, customer: str) -> None:
    worker = start_worker("backpressure", KEEL_WORKER_CONCURRENCY="1", KEEL_MAX_QUEUED_RUNS="1")
    await model.post("/faults", json={"kind": "delay", "match": f"say busy {customer}", "seconds": 45})
    async with worker.client(timeout=30) as api:
        busy = (await api.post("/v1/runs", json={"agent": "probe", "input": f"say busy {customer}"})).json()
        await wait_for_model_call(db, busy["run_id"])  # it holds the worker's one slot while its model call hangs
        queued = await api.post("/v1/runs", json={"agent": "probe", "input": "say queued"}, headers={"Idempotency-Key": f"{customer}-queued"})
        refused = await api.post("/v1/runs", json={"agent": "probe", "input": f"say refused {customer}"})
        repeated = await api.post("/v1/runs", json={"agent": "probe", "input": "say queued"}, headers={"Idempotency-Key": f"{customer}-queued"})
        for run_id in (queued.json()["run_id"], busy["run_id"]):
            await api.post(f"/v1/runs/{run_id}/cancel")

    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert repeated.status_code == 202 and repeated.json()["run_id"] == queued.json()["run_id"]
    assert await fetch_value(db, "SELECT count(*) FROM keel.runs WHERE input = %s", f"say refused {customer}") == 0


async def wait_for_model_call(db: psycopg.AsyncConnection, run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await fetch_value(db, "SELECT 1 FROM keel.events WHERE run_id = %s AND kind = 'llm_request'", run_id):
        assert time.monotonic() < deadline, f"run {run_id} made no model call in {timeout}s"
        await asyncio.sleep(0.1)
