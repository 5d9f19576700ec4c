"""The seed problem as a test: 50 runs of a 14-step agent, with one model call and one tool response in
twenty failing transiently. With Keel's retries every run succeeds and no charge is made twice;
without them, most runs are lost (0.95 ** 29 ≈ 23% of them would finish)."""

import asyncio

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_run

RUNS = 50
STEPS = 14


async def run_batch(api: httpx.AsyncClient, db: psycopg.AsyncConnection, agent: str, label: str) -> list[dict]:
    customers = [f"S-{label}{i:02d}" for i in range(RUNS)]
    for customer in customers:
        await db.execute("INSERT INTO sandbox.customers VALUES (%s, 'Seed', 'seed@example.com', 'basic') ON CONFLICT DO NOTHING", (customer,))
    texts = [" then ".join(f'call charge_step with {{"customer_id": "{c}", "n": {n}}}' for n in range(1, STEPS + 1)) for c in customers]
    responses = await asyncio.gather(*(api.post("/v1/runs", json={"agent": agent, "input": text}) for text in texts))
    return await asyncio.gather(*(wait_for_run(api, r.json()["run_id"], timeout=240) for r in responses))


@pytest.fixture
async def flaky_model(model: httpx.AsyncClient):
    await model.post("/faults", json={"kind": "status", "status": 503, "retry_after": 0, "probability": 0.05,
                                      "times": 100_000, "match": "call charge_step"})
    yield
    await model.delete("/faults")


async def test_fifty_fourteen_step_runs_at_95_percent_per_step(api: httpx.AsyncClient, db: psycopg.AsyncConnection, flaky_model: None) -> None:
    with_retries = await run_batch(api, db, "fourteen", "r")
    without_retries = await run_batch(api, db, "fourteen-without-retries", "n")

    succeeded = sum(run["status"] == "succeeded" for run in with_retries)
    survived = sum(run["status"] == "succeeded" for run in without_retries)
    print(f"\n{RUNS} runs x {STEPS} steps, 5% transient failures per call: "
          f"{succeeded}/{RUNS} succeeded with retries, {survived}/{RUNS} without")
    duplicates = await fetch_value(db, "SELECT count(*) FROM (SELECT idempotency_key FROM sandbox.payments GROUP BY 1 HAVING count(*) > 1) d")
    charged = await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id LIKE 'S-r%%'")
    retried = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE kind = 'retry' AND run_id = ANY(%s)", [r["run_id"] for r in with_retries])

    assert succeeded == RUNS
    assert duplicates == 0
    assert charged == RUNS * STEPS  # every step charged exactly once
    assert retried > 0  # failures were injected and retried
    assert survived < RUNS * 0.6  # without retries the 95% arithmetic bites
    assert all(run["reason"] == "retries_exhausted" for run in without_retries if run["status"] != "succeeded")
