"""The payments service commits a charge, then the response is lost: the retry carries the same
Idempotency-Key (or reconciles first), so the customer is charged once."""

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run


async def test_retry_with_the_same_key_does_not_charge_twice(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "payments", "kind": "drop_response", "match": customer})

    response = await api.post("/v1/runs", json={"agent": "probe", "input": f'call pay with {{"customer_id": "{customer}", "amount_cents": 1500}}'})
    run = await wait_for_run(api, response.json()["run_id"])

    assert run["status"] == "succeeded", run
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    assert run["output"] is not None and '"amount_cents": 1500' in run["output"]
    key, attempts = await (await db.execute(
        "SELECT idempotency_key, attempts FROM keel.tool_calls WHERE run_id = %s AND tool = 'pay'", (run["run_id"],))).fetchone()
    assert attempts == 2
    assert await fetch_value(db, "SELECT idempotency_key FROM sandbox.payments WHERE customer_id = %s", customer) == key
    retry = await fetch_value(db, "SELECT payload -> 'error' ->> 'kind' FROM keel.events WHERE run_id = %s AND kind = 'retry'", run["run_id"])
    assert retry == "transient"


async def test_billing_reconciles_a_lost_charge_instead_of_charging_again(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "payments", "kind": "drop_response", "match": customer})

    response = await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
    run = await wait_for_run(api, response.json()["run_id"])

    assert run["status"] == "succeeded", run
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    charge = await (await db.execute(
        "SELECT attempts, reconciled, result ->> 'charge_id' FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'",
        (run["run_id"],))).fetchone()
    assert charge[:2] == (2, True)
    assert charge[2] == run["output"]["charge_id"]
