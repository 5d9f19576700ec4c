"""Budgets survive restarts: totals come from recorded step outputs, and once a budget is spent the
next model call is refused, the run fails with `budget_exhausted`, and its effects are undone."""

from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def recorded_tokens(db: psycopg.AsyncConnection, run_id: str) -> int:
    return await fetch_value(db, "SELECT sum((payload ->> 'total_tokens')::int) FROM keel.events WHERE run_id = %s AND kind = 'llm_response'", run_id)


async def test_a_spent_token_budget_stops_the_run_and_rolls_it_back(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run = await wait_for_run(api, await start(api, "billing-on-a-budget", f"Upgrade customer {customer} to the pro plan"))

    assert (run["status"], run["reason"]) == ("compensated", "budget_exhausted"), run
    assert run["tokens"] >= 700 and run["turns"] == 3
    assert "700" in run["error"]
    assert [c["tool"] for c in run["compensations"]] == ["charge_customer", "create_ticket"]


async def test_totals_are_the_same_after_a_crash(start_worker: Callable[..., Worker], api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    twin = await wait_for_run(api, await start(api, "billing-on-a-budget", f"Upgrade customer {customer} to the pro plan"))
    worker = start_worker("budget-crash", KEEL_FAILPOINTS="llm.before_request:3")
    async with worker.client() as own:
        run_id = await start(own, "billing-on-a-budget", f"Upgrade customer {customer} to the pro plan")
    assert worker.wait_for_exit() == -9
    start_worker("budget-crash")

    run = await wait_for_run(api, run_id)

    assert (run["status"], run["reason"], run["turns"]) == (twin["status"], twin["reason"], twin["turns"])
    assert run["tokens"] == await recorded_tokens(db, run_id)
    assert abs(run["tokens"] - twin["tokens"]) <= 3  # same conversation, give or take a ticket number's digits


async def test_a_wall_clock_budget_refuses_the_next_call(api: httpx.AsyncClient, model: httpx.AsyncClient, customer: str) -> None:
    await model.post("/faults", json={"kind": "delay", "seconds": 3.5, "match": customer, "after": 1})

    run = await wait_for_run(api, await start(api, "billing-in-a-hurry", f"Upgrade customer {customer} to the pro plan"))

    assert (run["status"], run["reason"]) == ("compensated", "budget_exhausted"), run
    assert "wall-clock" in run["error"]
