"""`keel doctor` finds runs that stopped moving without an error, and its fix moves them."""

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import wait_for_run
from tests.processes import Worker


async def wait_for_status(client: httpx.AsyncClient, run_id: str, status: str) -> dict:
    deadline = time.monotonic() + 30
    while (run := (await client.get(f"/v1/runs/{run_id}")).json())["status"] != status:
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.05)
    return run


async def test_a_run_of_a_dead_worker_is_found_and_taken_over(
    start_worker: Callable[..., Worker], api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    worker = start_worker("doctor-gone")
    async with worker.client() as own:
        run_id = (await own.post("/v1/runs", json={"agent": "probe", "input": f'call transfer with {{"customer_id": "{customer}", "amount_cents": 5}}'})).json()["run_id"]
        await wait_for_status(own, run_id, "awaiting_approval")
    worker.kill()
    # 20 s of silence: past doctor's 3 heartbeats, short of the 6 after which a live worker takes over by itself
    await db.execute("UPDATE keel.workers SET last_seen = now() - interval '20 seconds' WHERE executor_id = 'doctor-gone'")

    findings = [f for f in (await api.get("/v1/doctor")).json() if f["run_id"] == run_id]
    resumed = await api.post(f"/v1/runs/{run_id}/resume")
    waiting = await wait_for_status(api, run_id, "awaiting_approval")
    await api.post(f"/v1/approvals/{waiting['pending_approval']['approval_id']}", json={"decision": "approve"})
    run = await wait_for_run(api, run_id)

    assert [(f["problem"], f["details"]["executor_id"]) for f in findings] == [("executor_gone", "doctor-gone")]
    assert f"keel resume {run_id}" in findings[0]["fix"]
    assert resumed.status_code == 200
    assert run["status"] == "succeeded"
    assert (await api.post(f"/v1/runs/{run_id}/resume")).status_code == 409


async def test_a_run_of_another_version_is_reported(start_worker: Callable[..., Worker], api: httpx.AsyncClient, customer: str) -> None:
    worker = start_worker("doctor-version", KEEL_APP_VERSION="keel-old")
    async with worker.client() as own:
        run_id = (await own.post("/v1/runs", json={"agent": "probe", "input": f'call transfer with {{"customer_id": "{customer}", "amount_cents": 6}}'})).json()["run_id"]
        await wait_for_status(own, run_id, "awaiting_approval")
    worker.stop()

    findings = {f["problem"]: f for f in (await api.get("/v1/doctor")).json() if f["run_id"] == run_id}

    assert findings["other_version"]["details"]["app_version"] == "keel-old"
    assert "KEEL_APP_VERSION=keel-old" in findings["other_version"]["fix"]
    await api.post(f"/v1/runs/{run_id}/cancel")  # leave nothing pending for later tests
