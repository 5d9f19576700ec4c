"""Runs waiting on a person do not starve the others (issue 13 item 16): with `KEEL_WORKER_CONCURRENCY=3`,
three runs waiting for approval once held every slot, and new runs stayed queued for as long as nobody
decided. A waiting run leaves its slot (`steps.dbos_seam.off_the_queue`) and takes it back when it wakes."""

from collections.abc import Callable

import psycopg

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import Worker


async def test_runs_waiting_for_approval_leave_their_slots_to_runs_that_can_work(
        start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    worker = start_worker("slots", KEEL_WORKER_CONCURRENCY="3")
    async with worker.client(timeout=30) as api:
        waiting = [(await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"},
                                   headers={"Idempotency-Key": f"{customer}-waits-{n}"})).json()["run_id"] for n in range(3)]
        for run_id in waiting:
            await wait_for_approval(api, run_id)
        working = (await api.post("/v1/runs", json={"agent": "probe", "input": f"say worked {customer}"})).json()["run_id"]
        worked = await wait_for_run(api, working, timeout=60)
        for run_id in waiting:
            approval = await fetch_value(db, "SELECT approval_id FROM keel.approvals WHERE run_id = %s", run_id)
            await api.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
        decided = [await wait_for_run(api, run_id, timeout=60) for run_id in waiting]

    assert worked["status"] == "succeeded"
    assert [run["status"] for run in decided] == ["succeeded"] * 3
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 3  # one charge per approved run
