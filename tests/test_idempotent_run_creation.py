"""A client's `Idempotency-Key` names one run (of Keel's naming) per API key: a repeated request never starts a second run."""

import asyncio
import uuid

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run


async def test_same_key_twice_is_one_run_and_one_charge(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    key = f"upgrade-{uuid.uuid4()}"
    body = {"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"}

    first, second = await asyncio.gather(
        api.post("/v1/runs", json=body, headers={"Idempotency-Key": key}),
        api.post("/v1/runs", json=body, headers={"Idempotency-Key": key}),
    )
    run_id = first.json()["run_id"]
    await wait_for_run(api, run_id)
    third = await api.post("/v1/runs", json=body, headers={"Idempotency-Key": key})

    assert [r.status_code for r in (first, second, third)] == [202, 202, 202]
    assert {r.json()["run_id"] for r in (first, second, third)} == {run_id}
    assert third.json()["status"] == "succeeded"
    assert await fetch_value(db, "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id) == 1
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1


async def test_same_key_with_a_different_request_is_a_conflict(api: httpx.AsyncClient) -> None:
    key = f"probe-{uuid.uuid4()}"
    run_id = (await api.post("/v1/runs", json={"agent": "probe", "input": "say one"}, headers={"Idempotency-Key": key})).json()["run_id"]

    response = await api.post("/v1/runs", json={"agent": "probe", "input": "say two"}, headers={"Idempotency-Key": key})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert (await wait_for_run(api, run_id))["output"] == "one"
