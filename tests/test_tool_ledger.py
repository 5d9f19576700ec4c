"""The ledger's protocol, driven directly against Postgres: intent first, outcome with the effect,
a completed key never runs again, reconcile only for an intent left without outcome."""

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from steps.ledger import Call
from steps.retry import Failure
from steps.tools import ToolContext, tool
from tests.conftest import fetch_value
from workflows import TransientToolError


def call_of(fn: Any, arguments: dict[str, Any], key: str | None = None) -> Call:
    run_id = f"ledger-{uuid.uuid4().hex[:8]}"
    return Call(tool=fn, key=key or f"{run_id}:1", run_id=run_id, step_id=1, tool_call_id="call_1", arguments=arguments)


async def test_intent_is_committed_before_the_tool_runs(ledger_pool, db: psycopg.AsyncConnection) -> None:
    seen: list[str] = []

    @tool
    async def observe(ctx: ToolContext) -> str:
        seen.append(await fetch_value(db, "SELECT status FROM keel.tool_calls WHERE idempotency_key = %s", ctx.idempotency_key))
        return "done"

    call = call_of(observe, {})
    outcome = await call.attempt(1)

    assert seen == ["started"]  # visible from another connection while the tool runs
    assert outcome.result == "done"
    assert await fetch_value(db, "SELECT status FROM keel.tool_calls WHERE idempotency_key = %s", call.key) == "succeeded"


async def test_a_completed_key_returns_the_recorded_result_without_running(ledger_pool, db) -> None:
    runs: list[int] = []

    @tool
    async def count(n: int) -> int:
        runs.append(n)
        return n * 10

    call = call_of(count, {"n": 4})
    first = await call.attempt(1)
    again = await call.attempt(1)

    assert (first.result, again.result, again.deduplicated) == (40, 40, True)
    assert runs == [4]


async def test_a_database_effect_rolls_back_with_a_failed_call(ledger_pool, db, customer: str) -> None:
    @tool
    async def write_then_fail(ctx: ToolContext, customer_id: str) -> None:
        await ctx.db.execute("INSERT INTO sandbox.tickets (customer_id, subject, idempotency_key) VALUES (%s, 'x', %s)",
                             (customer_id, ctx.idempotency_key))
        raise TransientToolError("lost connection")

    call = call_of(write_then_fail, {"customer_id": customer})
    with pytest.raises(TransientToolError):
        await call.attempt(1)

    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE customer_id = %s", customer) == 0
    assert await fetch_value(db, "SELECT status FROM keel.tool_calls WHERE idempotency_key = %s", call.key) == "started"


async def test_reconcile_is_asked_only_after_an_intent_without_outcome(ledger_pool) -> None:
    asked: list[int] = []
    effects: list[int] = []

    async def find(ctx: ToolContext) -> str | None:
        asked.append(ctx.attempt)
        return "found" if effects else None

    @tool(reconcile=find)
    async def effect_then_lose_reply(ctx: ToolContext) -> str:
        effects.append(ctx.attempt)
        if ctx.attempt == 1:
            raise TransientToolError("response lost")
        return "made"

    call = call_of(effect_then_lose_reply, {})
    with pytest.raises(TransientToolError):
        await call.attempt(1)
    outcome = await call.attempt(2)

    assert asked == [2]  # not on the first attempt: there was no earlier intent
    assert effects == [1]  # the second attempt found the effect and did not repeat it
    assert (outcome.result, outcome.reconciled) == ("found", True)


async def test_a_business_key_deduplicates_across_runs(ledger_pool) -> None:
    runs: list[str] = []

    @tool(idempotency_key=lambda arguments: arguments["order"])
    async def ship(order: str) -> str:
        runs.append(order)
        return f"shipped {order}"

    key = ship.business_key({"order": f"o-{uuid.uuid4().hex[:6]}"})
    order = key.split(":", 1)[1]
    first = await call_of(ship, {"order": order}, key=key).attempt(1)
    second = await call_of(ship, {"order": order}, key=key).attempt(1)

    assert runs == [order]
    assert second.result == first.result and second.deduplicated


async def test_concurrent_attempts_of_one_key_run_the_tool_once(ledger_pool) -> None:
    runs: list[int] = []

    @tool
    async def slow() -> str:
        runs.append(1)
        await asyncio.sleep(0.2)
        return "once"

    call = call_of(slow, {})
    results = await asyncio.gather(call.attempt(1), call.attempt(1), call.attempt(1))

    assert [r.result for r in results] == ["once"] * 3
    assert len(runs) == 1
    assert sum(r.deduplicated for r in results) == 2


async def test_a_refused_attempt_keeps_an_earlier_intent_open_for_reconcile(ledger_pool) -> None:
    asked: list[int] = []

    async def find(ctx: ToolContext) -> str:
        asked.append(ctx.attempt)
        return "found"

    @tool(reconcile=find)
    async def lose_reply(ctx: ToolContext) -> str:
        raise TransientToolError("response lost")

    call = call_of(lose_reply, {})
    with pytest.raises(TransientToolError):
        await call.attempt(1)
    await call.record_failure(Failure(kind="circuit_open", type="CircuitOpen", message="open", retry_after=1.0))
    outcome = await call.attempt(2)

    assert outcome.reconciled and asked == [2]
