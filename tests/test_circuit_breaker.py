"""One circuit breaker per dependency, shared by every worker: it opens once, runs park durably
instead of burning retries, and a probe closes it when the dependency is back."""

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker

DEPENDENCY = "payments-guarded"


async def test_a_dependency_down_for_all_workers_opens_one_shared_circuit(
    start_worker: Callable[..., Worker], api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str
) -> None:
    await db.execute("DELETE FROM keel.breakers WHERE dependency = %s", (DEPENDENCY,))
    fault = (await api.post("/sandbox/faults", json={"service": "payments", "kind": "unavailable", "match": "guarded", "times": 1000})).json()
    settings = {"KEEL_BREAKER_THRESHOLD": "3", "KEEL_BREAKER_COOLDOWN": "5"}  # the test closes the fault well before a probe, even on a loaded machine
    workers = [start_worker("breaker-a", **settings), start_worker("breaker-b", **settings)]
    text = f'call pay_guarded with {{"customer_id": "{customer}", "amount_cents": 100}}'
    run_ids = []
    for worker in workers * 2:
        async with worker.client() as client:
            run_ids.append((await client.post("/v1/runs", json={"agent": "patient", "input": text})).json()["run_id"])

    deadline = time.monotonic() + 30
    while await fetch_value(db, "SELECT state FROM keel.breakers WHERE dependency = %s", DEPENDENCY) != "open":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    served_503 = 1000 - await fetch_value(db, "SELECT remaining FROM sandbox.faults WHERE id = %s", fault["id"])
    await db.execute("UPDATE sandbox.faults SET remaining = 0 WHERE id = %s", (fault["id"],))  # the service is back
    while not (parked := await fetch_value(db, "SELECT count(*) FROM keel.runs WHERE run_id = ANY(%s) AND waiting_for IS NOT NULL", run_ids)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    diagnosed = {f["problem"] for f in (await api.get("/v1/doctor")).json() if f["run_id"] in run_ids}
    runs = [await wait_for_run(api, run_id) for run_id in run_ids]

    assert all(run["status"] == "succeeded" for run in runs), runs
    assert parked >= 1
    assert diagnosed == {"circuit_open"}  # keel doctor says what the parked runs wait for
    assert await fetch_value(db, "SELECT opened_count FROM keel.breakers WHERE dependency = %s", DEPENDENCY) == 1
    assert await fetch_value(db, "SELECT state FROM keel.breakers WHERE dependency = %s", DEPENDENCY) == "closed"
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = ANY(%s) AND kind = 'breaker_open'", run_ids) == 1
    assert await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = ANY(%s) AND kind = 'breaker_closed'", run_ids) == 1
    assert served_503 < 3 + len(run_ids)  # once open, calls stopped going out (a few were in flight)
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s AND description = 'guarded'", customer) == 4
