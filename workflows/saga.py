"""Sagas: when a run fails or is cancelled, its effects are undone newest first.

`keel.rollback` (ID `<run>:rollback`) plans the compensations from the ledger and runs each as its
own workflow `keel.compensate` (ID `<run>:compensate:<n>`), one after another, so each runs exactly
once even if the process dies during the rollback. A compensation that exhausts its retries marks
itself `failed` and waits, durably, for an operator's `keel compensate RUN_ID` to try again."""

from typing import Any

from dbos import DBOS, SetWorkflowID

from steps import ids
from steps.compensations import mark_compensation_step, plan_compensations_step
from steps.ledger import tool_call_step
from workflows.agent import Agent, get_agent

RETRY_TOPIC = "retry"
RETRY_WAIT_SECONDS = 7 * 24 * 3600.0  # past this, a failed compensation tries again by itself


def needs_rollback(agent: Agent, tools_used: list[str]) -> bool:
    return any(agent.tools[name].compensation or agent.tools[name].irreversible for name in tools_used)


async def start_rollback(run_id: str, agent: str, reason: str) -> Any:
    """Start the rollback of `run_id` (once: a second start returns the first)."""
    with SetWorkflowID(ids.rollback_id(run_id)):
        return await DBOS.start_workflow_async(rollback, {"run_id": run_id, "agent": agent, "reason": reason})


@DBOS.workflow(name="keel.rollback")
async def rollback(request: dict[str, Any]) -> dict[str, Any]:
    run_id, agent = request["run_id"], get_agent(request["agent"])
    compensable = [name for name, t in agent.tools.items() if t.compensation]
    irreversible = [name for name, t in agent.tools.items() if t.irreversible]
    plan = await plan_compensations_step(run_id, compensable, irreversible)
    for effect in plan:
        if effect["status"] == "irreversible":
            continue
        with SetWorkflowID(effect["workflow_id"]):
            handle = await DBOS.start_workflow_async(compensate, {**effect, "run_id": run_id, "agent": agent.name})
        await handle.get_result()
    return {
        "compensated": [e["tool"] for e in plan if e["status"] != "irreversible"],
        "irreversible": [e["tool"] for e in plan if e["status"] == "irreversible"],
    }


@DBOS.workflow(name="keel.compensate")
async def compensate(effect: dict[str, Any]) -> Any:
    """Undo one effect: the tool's compensation, through the ledger, until it succeeds."""
    undo = get_agent(effect["agent"]).tools[effect["tool"]].compensation
    assert undo is not None, f"{effect['tool']} has no compensation"
    run_id, n = effect["run_id"], effect["n"]
    attempt = 0
    while True:
        attempt += 1
        await mark_compensation_step(run_id, n, "running", None, attempt)
        # One key for every round, so a retried undo is deduplicated like any other call.
        outcome = await tool_call_step(undo, {"arguments": effect["arguments"], "result": effect["result"]},
                                       f"compensate:{n}", key=effect["workflow_id"])
        if outcome["ok"]:
            await mark_compensation_step(run_id, n, "succeeded", None, attempt)
            return outcome["result"]
        await mark_compensation_step(run_id, n, "failed", outcome["error"], attempt)
        await DBOS.recv_async(topic=RETRY_TOPIC, timeout_seconds=RETRY_WAIT_SECONDS)


async def retry_compensations(failed: list[dict[str, Any]]) -> None:
    for effect in failed:
        await DBOS.send_async(effect["workflow_id"], "retry", topic=RETRY_TOPIC)
