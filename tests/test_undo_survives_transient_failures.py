"""An undo that meets an open circuit, a rate limit or any transient failure parks durably and tries
again; only a permanent failure, or an undo that used up its retry budget, ends `compensation_failed`."""

import asyncio
import time
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_row, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": "billing", "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def wait_for_run_status(api: httpx.AsyncClient, run_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (run := (await api.get(f"/v1/runs/{run_id}")).json())["status"] != status:
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.1)
    return run


async def refunds_per_charge(db: psycopg.AsyncConnection, customer: str) -> list[int]:
    rows = await (await db.execute(
        """SELECT count(r.id) FROM sandbox.payments p LEFT JOIN sandbox.refunds r USING (charge_id)
           WHERE p.customer_id = %s GROUP BY p.charge_id""", (customer,))).fetchall()
    return [count for count, in rows]


async def test_an_open_circuit_during_rollbacks_parks_the_undos_until_every_charge_is_refunded_once(
    start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str
) -> None:
    # The reproduction: every run fails at update_plan, and the payments service refuses the
    # first 12 refunds (only a refund's body names a charge_id), enough to open the undo's circuit.
    worker = start_worker("undo-parks", KEEL_BREAKER_THRESHOLD="3", KEEL_BREAKER_COOLDOWN="5")
    async with worker.client(timeout=30) as api:
        for _ in range(4):  # one fault row per concurrent run: update_plan's failure rolls back the fault's use, and a locked row is skipped
            await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
        await api.post("/sandbox/faults", json={"service": "payments", "kind": "unavailable", "match": "charge_id", "times": 12})
        try:
            run_ids = [await start(api, f"Upgrade customer {customer} to the pro plan") for _ in range(4)]
            runs = [await wait_for_run(api, run_id, timeout=240) for run_id in run_ids]
        finally:
            await api.delete("/sandbox/faults")
    parked = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id LIKE ANY(%s) AND kind = 'parked'",
                               [f"{run_id}:compensate:%" for run_id in run_ids])
    opened = await fetch_value(db, "SELECT opened_count FROM keel.breakers WHERE dependency = 'undo_charge_customer'")

    assert [(run["status"], run["reason"]) for run in runs] == [("compensated", "tool_failed")] * 4, runs
    assert await refunds_per_charge(db, customer) == [1, 1, 1, 1]
    assert parked > 0 and opened > 0  # the undos did meet the open circuit, and waited it out
    assert all(c["status"] == "succeeded" for run in runs for c in run["compensations"])


async def test_a_parked_undo_is_shown_by_doctor_and_metrics_until_it_succeeds(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
    # A Retry-After longer than the undo's policy waits inside a step: the undo parks for it.
    await api.post("/sandbox/faults", json={"service": "payments", "kind": "unavailable", "match": "run rolled back", "seconds": 12})
    run_id = await start(api, f"Upgrade customer {customer} to the pro plan")

    await wait_for_row(db, "SELECT 1 FROM keel.compensations WHERE run_id = %s AND status = 'parked'", run_id)
    waiting = (await api.get(f"/v1/runs/{run_id}")).json()
    findings = [f for f in (await api.get("/v1/doctor")).json() if f["run_id"] == run_id]
    metrics = (await api.get("/metrics")).text
    run = await wait_for_run(api, run_id)

    assert waiting["status"] == "compensating"
    parked = waiting["compensations"][0]
    assert (parked["tool"], parked["status"], parked["error"]["kind"], parked["error"]["status"]) == ("charge_customer", "parked", "transient", 503)
    assert parked["retry_at"] is not None
    assert [(f["problem"], f["details"]["tool"], f["details"]["kind"]) for f in findings] == [("compensation_parked", "charge_customer", "transient")]
    assert "tries again by itself" in findings[0]["fix"]
    assert 'keel_compensations{status="parked"} 1.0' in metrics
    assert 'keel_compensations_parked{kind="transient"} 1.0' in metrics
    assert run["status"] == "compensated", run
    assert [c["status"] for c in run["compensations"]] == ["succeeded", "succeeded"]
    assert await refunds_per_charge(db, customer) == [1]


async def test_an_undo_that_used_up_its_retry_budget_fails_and_waits_for_an_operator(
    start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str
) -> None:
    # Parks of 5 s, then 10 s: 15 s of waiting, past the budget, so the third failure is final. (No circuit here.)
    worker = start_worker("undo-budget", KEEL_UNDO_RETRY_BUDGET="6", KEEL_BREAKER_THRESHOLD="100")
    async with worker.client(timeout=30) as api:
        await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
        await api.post("/sandbox/faults", json={"service": "payments", "kind": "unavailable", "match": "run rolled back", "times": 1000})
        try:
            run_id = await start(api, f"Upgrade customer {customer} to the pro plan")
            stuck = await wait_for_run(api, run_id)
        finally:
            await api.delete("/sandbox/faults")
        retried = await api.post(f"/v1/runs/{run_id}/compensate")
        run = await wait_for_run_status(api, run_id, "compensated")
    parks = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'parked'", f"{run_id}:compensate:1")

    assert stuck["status"] == "compensation_failed"
    assert [(c["tool"], c["status"], (c["error"] or {}).get("kind")) for c in stuck["compensations"]] == [
        ("charge_customer", "failed", "transient"), ("create_ticket", "pending", None)]
    assert parks == 2
    assert retried.status_code == 200
    assert run["status"] == "compensated"
    assert await refunds_per_charge(db, customer) == [1]
