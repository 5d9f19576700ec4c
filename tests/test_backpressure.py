"""Backpressure: while `KEEL_MAX_QUEUED_RUNS` runs wait for a worker, new runs get 429 with `Retry-After`."""

from collections.abc import Callable

import psycopg

from tests.conftest import fetch_value, wait_for_approval
from tests.processes import Worker


async def test_a_full_queue_refuses_new_runs_but_not_a_repeated_one(start_worker: Callable[..., Worker], db: psycopg.AsyncConnection,
                                                                     customer: str) -> None:
    worker = start_worker("backpressure", KEEL_WORKER_CONCURRENCY="1", KEEL_MAX_QUEUED_RUNS="1")
    async with worker.client(timeout=30) as api:
        busy = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()
        await wait_for_approval(api, busy["run_id"])  # it holds the worker's one slot while it waits
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
