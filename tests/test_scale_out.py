"""Several workers on one PostgreSQL: runs spread over them through their shared queue; a worker
killed mid-run has its runs finished by the others, each effect once; and a provider rate limit
(and concurrency limit) is never exceeded across workers, as the model server itself saw it."""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker

FAST_BEATS = {"KEEL_HEARTBEAT_INTERVAL": "0.5"}


@asynccontextmanager
async def worker_client(worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """A client for one particular worker's API."""
    async with worker.client(timeout=30) as client:
        yield client


async def new_customers(db: psycopg.AsyncConnection, count: int) -> tuple[str, list[str]]:
    """`count` fresh customers on the basic plan, whose IDs share a prefix no other test uses."""
    prefix = f"C-{random.randrange(10**8, 10**9)}"
    customers = [f"{prefix}{i:02d}" for i in range(count)]
    for customer in customers:
        await db.execute("INSERT INTO sandbox.customers VALUES (%s, 'Test Customer', %s, 'basic')", (customer, f"{customer.lower()}@example.com"))
    return prefix, customers


async def submit(workers: list[Worker], inputs: list[tuple[str, str]]) -> list[str]:
    """Start one run per (agent, input), through the workers in turn."""
    run_ids = []
    for i, (agent, text) in enumerate(inputs):
        async with worker_client(workers[i % len(workers)]) as client:
            response = await client.post("/v1/runs", json={"agent": agent, "input": text})
        assert response.status_code == 202, response.text
        run_ids.append(response.json()["run_id"])
    return run_ids


async def finish_all(worker: Worker, run_ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    async with worker_client(worker) as client:
        return [await wait_for_run(client, run_id, timeout=timeout) for run_id in run_ids]


async def wait_until(db: psycopg.AsyncConnection, query: str, *params: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await fetch_value(db, query, *params):
        assert time.monotonic() < deadline, f"timed out waiting for: {query}"
        await asyncio.sleep(0.1)


async def assert_each_effect_once(db: psycopg.AsyncConnection, customers: list[str]) -> None:
    rows = await (await db.execute(
        """SELECT c.id, (SELECT count(*) FROM sandbox.tickets t WHERE t.customer_id = c.id),
                  (SELECT count(*) FROM sandbox.payments p WHERE p.customer_id = c.id),
                  (SELECT count(*) FROM sandbox.plan_changes pc WHERE pc.customer_id = c.id),
                  (SELECT count(*) FROM sandbox.emails e WHERE e.recipient = lower(c.id) || '@example.com'), c.plan
           FROM sandbox.customers c WHERE c.id = ANY(%s) ORDER BY c.id""", (customers,))).fetchall()
    assert rows == [(customer, 1, 1, 1, 1, "pro") for customer in sorted(customers)]


@pytest.mark.parametrize("count", [2, 4])
async def test_a_killed_workers_runs_finish_on_the_others_with_each_effect_once(
        count: int, start_worker: Callable[..., Worker], model: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    # Two runs per worker and room for two each: every worker gets two; the third model call of each hangs for 10 s.
    queue = {"KEEL_QUEUE": f"scale-kill-{count}", "KEEL_WORKER_CONCURRENCY": "2", **FAST_BEATS}
    workers = [start_worker(f"scale-{count}-{i}", **queue) for i in range(count)]
    _, customers = await new_customers(db, 2 * count)
    for customer in customers:
        await model.post("/faults", json={"kind": "delay", "match": customer, "seconds": 10, "after": 2})
    run_ids = await submit(workers, [("billing", f"Upgrade customer {c} to the pro plan") for c in customers])
    await wait_until(db, "SELECT count(*) = %s FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) AND status = 'PENDING'", len(run_ids), run_ids)
    placed = dict(await (await db.execute("SELECT workflow_uuid, executor_id FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (run_ids,))).fetchall())
    assert sorted(placed.values()) == sorted(f"scale-{count}-{i}" for i in range(count) for _ in range(2))  # spread over all workers

    victim = workers[1]
    mine = [run_id for run_id, executor in placed.items() if executor == f"scale-{count}-1"]
    await wait_until(db, "SELECT 1 FROM keel.events WHERE run_id = ANY(%s) AND kind = 'llm_request' AND payload ->> 'turn' = '3'", mine)
    orphans = [row[0] for row in await (await db.execute(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) AND status = 'PENDING'", (mine,))).fetchall()]
    victim.kill()  # in the middle of a model call, at least
    assert orphans
    runs = await finish_all(workers[0], run_ids)

    assert [run["status"] for run in runs] == ["succeeded"] * len(run_ids), runs
    await assert_each_effect_once(db, customers)
    survivors = {f"scale-{count}-{i}" for i in range(count)} - {f"scale-{count}-1"}
    finished_on = await (await db.execute("SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (orphans,))).fetchall()
    assert {row[0] for row in finished_on} <= survivors
    assert await fetch_value(db, "SELECT taken_over_by FROM keel.workers WHERE executor_id = %s", f"scale-{count}-1") in survivors


def max_in_window(starts: list[float], period: float) -> int:
    """The most requests that arrived within any window of `period` seconds (the windows that
    matter start at an arrival)."""
    starts = sorted(starts)
    return max(sum(1 for t in starts[i:] if t < start + period) for i, start in enumerate(starts))


def max_in_flight(requests: list[dict[str, Any]]) -> int:
    # At equal times an end comes before a start: a reply that was out lets the next request in.
    changes = sorted([(r["started"], 1) for r in requests] + [(r["finished"], -1) for r in requests], key=lambda c: (c[0], c[1]))
    level = peak = 0
    for _, change in changes:
        level += change
        peak = max(peak, level)
    return peak


async def test_a_rate_limit_and_a_concurrency_limit_hold_across_four_workers(
        start_worker: Callable[..., Worker], model: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    requests, period, concurrency = 6, 2.0, 2
    limits = {"KEEL_QUEUE": "scale-ratelimit", "KEEL_WORKER_CONCURRENCY": "1",  # one run per worker: four workers send at once
              "KEEL_MODEL_RATE_LIMIT": f"{requests}/{period:g}", "KEEL_MODEL_CONCURRENCY": str(concurrency)}
    workers = [start_worker(f"scale-rl-{i}", **limits) for i in range(4)]
    prefix, customers = await new_customers(db, 4)
    # Every call takes 0.3 s at the server, so calls overlap and the concurrency limit has work to do.
    await model.post("/faults", json={"kind": "delay", "match": prefix, "seconds": 0.3, "times": 1000})

    run_ids = await submit(workers, [("billing", f"Upgrade customer {c} to the pro plan") for c in customers])
    runs = await finish_all(workers[0], run_ids)

    assert [run["status"] for run in runs] == ["succeeded"] * len(run_ids), runs
    await assert_each_effect_once(db, customers)
    seen = (await model.get("/requests", params={"match": prefix})).json()
    assert len(seen) >= 4 * 6 > requests  # unlimited, the four workers would have sent more than R in a window
    assert all(r["finished"] is not None for r in seen)
    assert max_in_window([r["started"] for r in seen], period) <= requests
    assert max_in_flight(seen) <= concurrency
    # One run per worker: normally four senders; at least two even if a loaded machine lets one worker take two runs in turn.
    assert await fetch_value(db, "SELECT count(DISTINCT executor_id) FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", run_ids) >= 2
    waits = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = ANY(%s) AND kind = 'rate_limited'", run_ids)
    assert waits > 0  # the limiter made requests wait, and the timeline says so


async def test_a_long_rate_limit_wait_parks_the_run_durably(start_worker: Callable[..., Worker], model: httpx.AsyncClient,
                                                           db: psycopg.AsyncConnection) -> None:
    # The `patient` agent waits at most 0.5 s inside its model step; one request per 3 s makes the next ones wait longer.
    worker = start_worker("scale-park", KEEL_MODEL_RATE_LIMIT="1/3")
    token = f"rl-park-{random.randrange(10**8)}"
    run_ids = await submit([worker], [("patient", f"say {token} {i}") for i in range(3)])
    runs = await finish_all(worker, run_ids)

    assert [run["status"] for run in runs] == ["succeeded"] * 3, runs
    seen = (await model.get("/requests", params={"match": token})).json()
    assert len(seen) == 3
    assert max_in_window([r["started"] for r in seen], 3.0) == 1
    parked = await fetch_value(db, """SELECT count(*) FROM keel.events WHERE run_id = ANY(%s) AND kind = 'parked'
                                      AND payload -> 'error' ->> 'kind' = 'rate_limited'""", run_ids)
    assert parked >= 2  # the second and third requests waited durably, not inside their steps
