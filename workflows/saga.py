"""Sagas: when a run fails or is cancelled, its effects are undone newest first.

`keel.rollback` (ID `<run>:rollback`) plans the compensations from the ledger and runs each as its
own workflow `keel.compensate` (ID `<run>:compensate:<n>`), one after another, so each runs exactly
once even if the process dies during the rollback.

An undo never gives up on a transient failure: one that meets an open circuit, a long `Retry-After`
or a failure that outlasts its tool's retry policy is marked `parked` and sleeps durably, then tries
again, until it has waited `retry_budget` seconds in all. Only a permanent failure, or a failure
after the budget is spent, marks it `failed`: it then waits, durably, for an operator's
`keel compensate RUN_ID` (or a week) to try again, with a fresh budget."""

import functools
import math
from typing import Any

from dbos import DBOS, SetWorkflowID

from steps import ids, tracing
from steps.compensations import mark_compensation_step, plan_compensations_step
from steps.ledger import tool_call_step
from steps.retry import RetryPolicy
from workflows.agent import Agent, get_agent
from workflows.parking import Parking, call_parking

RETRY_TOPIC = "retry"
RETRY_WAIT_SECONDS = 7 * 24 * 3600.0  # past this, a failed compensation tries again by itself
RETRY_BUDGET = 24 * 3600.0
"""Default seconds an undo may spend parked before its next failure is final (`KEEL_UNDO_RETRY_BUDGET`)."""
FIRST_WAIT, MAX_WAIT = 5.0, 300.0
"""Parks after transient failures wait 5 s, 10 s, 20 s, ... up to 5 minutes (or the `Retry-After`, if longer)."""

_retry_budget = RETRY_BUDGET


def configure(retry_budget: float) -> None:
    """Seconds of parking after which an undo's next failure is final (the application calls this at start-up)."""
    global _retry_budget
    _retry_budget = retry_budget


def undo_wait(outcome: dict[str, Any], policy: RetryPolicy) -> float | None:
    """How long a failed undo parks: as long as the step asks (an open circuit, a long `Retry-After`);
    after a transient failure that used up `policy`'s attempts, longer with each attempt past them
    (a refused call, such as one that met an open circuit, is no attempt); never after a permanent one."""
    if outcome.get("park") is not None:
        return outcome["park"]
    error = outcome["error"]
    if error["kind"] != "transient":
        return None
    beyond = max(0, outcome["attempts"] - policy.max_attempts)
    return max(error.get("retry_after") or 0.0, min(MAX_WAIT, FIRST_WAIT * 2**beyond))


def needs_rollback(agent: Agent, tools_used: list[str]) -> bool:
    return any(agent.reachable_tools[name].undoable or agent.reachable_tools[name].irreversible for name in tools_used)


async def start_rollback(run_id: str, agent: str, reason: str) -> Any:
    """Start the rollback of `run_id` (once: a second start returns the first)."""
    with SetWorkflowID(ids.rollback_id(run_id)), tracing.carried():
        return await DBOS.start_workflow_async(rollback, {"run_id": run_id, "agent": agent, "reason": reason})


@DBOS.workflow(name="keel.rollback")
async def rollback(request: dict[str, Any]) -> dict[str, Any]:
    run_id, agent = request["run_id"], get_agent(request["agent"])
    tracing.annotate({"keel.run_id": run_id, "keel.rollback.reason": request["reason"]})
    tools = agent.reachable_tools  # a run that handed off made the effects of several agents
    compensable = [name for name, t in tools.items() if t.undoable]
    irreversible = [name for name, t in tools.items() if t.irreversible]
    delegates = {name: [n for n, c in t.delegate.reachable_tools.items() if c.undoable or c.irreversible] for name, t in tools.items() if t.delegate}
    plan = await plan_compensations_step(run_id, compensable, irreversible, delegates)
    for effect in plan:
        if effect["status"] == "irreversible":
            continue
        # The budget travels in the input, so a worker configured otherwise replays the same decisions.
        with SetWorkflowID(effect["workflow_id"]), tracing.carried():
            handle = await DBOS.start_workflow_async(compensate, {**effect, "run_id": run_id, "agent": agent.name, "retry_budget": _retry_budget})
        await handle.get_result()
    return {
        "compensated": [e["tool"] for e in plan if e["status"] != "irreversible"],
        "irreversible": [e["tool"] for e in plan if e["status"] == "irreversible"],
    }


@DBOS.workflow(name="keel.compensate")
async def compensate(effect: dict[str, Any]) -> Any:
    """Undo one effect: the tool's compensation, through the ledger, until it succeeds; for an agent
    tool's call, the child run's own rollback."""
    used = get_agent(effect["agent"]).reachable_tools[effect["tool"]]
    run_id, n = effect["run_id"], effect["n"]
    tracing.compensation_started(run_id, effect["tool"], n, effect["idempotency_key"])
    if used.delegate is not None:
        return await undo_child(effect, used.delegate.name)
    undo = used.compensation
    assert undo is not None, f"{effect['tool']} has no compensation"
    parking = Parking(wait=functools.partial(undo_wait, policy=undo.retry), max_parks=math.inf, budget=effect.get("retry_budget", RETRY_BUDGET))
    rounds = 0

    async def call(first_attempt: int, previous: dict[str, Any] | None) -> dict[str, Any]:
        nonlocal rounds
        rounds += 1
        await mark_compensation_step(run_id, n, "running", None, rounds)
        # One key for every round, so a retried undo is deduplicated like any other call.
        return await tool_call_step(undo, {"arguments": effect["arguments"], "result": effect["result"]},
                                    f"compensate:{n}", key=effect["workflow_id"], first_attempt=first_attempt)

    async def parked(outcome: dict[str, Any], wait: float) -> None:
        await mark_compensation_step(run_id, n, "parked", outcome["error"], rounds, wait)

    while True:
        outcome = await call_parking(call, f"undo {undo.name} ({undo.dependency})", parking, parked)
        if outcome["ok"]:
            await mark_compensation_step(run_id, n, "succeeded", None, rounds)
            return outcome["result"]
        await mark_compensation_step(run_id, n, "failed", outcome["error"], rounds)
        await DBOS.recv_async(topic=RETRY_TOPIC, timeout_seconds=RETRY_WAIT_SECONDS)


async def undo_child(effect: dict[str, Any], agent: str) -> Any:
    """Roll the child run back (once: a child that failed or was cancelled started its rollback already)."""
    run_id, n = effect["run_id"], effect["n"]
    await mark_compensation_step(run_id, n, "running", None, 1)
    rolled_back = await (await start_rollback(effect["result"]["run_id"], agent, f"its parent run {run_id} was rolled back")).get_result()
    await mark_compensation_step(run_id, n, "succeeded", None, 1)
    return rolled_back


async def retry_compensations(failed: list[dict[str, Any]]) -> None:
    for effect in failed:
        await DBOS.send_async(effect["workflow_id"], "retry", topic=RETRY_TOPIC)
