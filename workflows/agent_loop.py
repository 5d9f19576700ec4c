"""`keel.agent_run`: the durable agent loop.

Each turn: ask the model (a step), then run each tool call it asked for (a step each, through the
ledger). The conversation lives only in this function's locals: on recovery DBOS replays the
recorded step outputs, so the same conversation is rebuilt and the run goes on from the first step
that has no checkpoint. Everything here is deterministic given those outputs."""

import json
from typing import Any, NoReturn

from dbos import DBOS

from steps.errors import RunFailed
from steps.events import record_step
from steps.ledger import tool_call_step
from steps.llm import ModelRequest, llm_step
from workflows.agent import Agent, get_agent
from workflows.approvals import await_approval

INVALID_REPLY = "invalid_arguments"


@DBOS.workflow(name="keel.agent_run")
async def agent_run(request: dict[str, Any]) -> Any:
    """Run `request["agent"]` on `request["input"]`; returns the final answer (JSON)."""
    agent = get_agent(request["agent"])
    await record_step("run_started", {"agent": agent.name, "input": request["input"]})
    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": agent.system_prompt()},
        {"role": "user", "content": request["input"]},
    ]
    problems = Reasks(agent)
    sent = 0
    for turn in range(1, agent.max_turns + 1):
        reply = await llm_step(ModelRequest(model=agent.model, messages=list(conversation), tools=agent.tool_schemas,
                                            turn=turn, already_sent=sent, retry=agent.model_retry))
        sent = len(conversation)
        if not reply["ok"]:
            await fail(failure_reason(reply["error"], "model"), f"model call failed: {reply['error']['message']}")
        message = reply["message"]
        conversation.append(message)
        calls = message.get("tool_calls") or []
        if not calls:
            output, problem = agent.parse_output(message["content"])
            if problem is None:
                await record_step("run_finished", {"status": "succeeded", "turns": turn})
                return output
            await problems.count(problem)
            conversation.append({"role": "user", "content": f"Your final answer was not accepted: {problem}. Try again."})
            continue
        for call in calls:
            conversation.append(await run_tool_call(agent, call, problems))
    await fail("max_turns_exceeded", f"no final answer after {agent.max_turns} turns")


async def run_tool_call(agent: Agent, call: dict[str, Any], problems: "Reasks") -> dict[str, Any]:
    """Run one of the model's tool calls; returns the tool message that answers it."""
    found, arguments, problem = agent.parse_call(call)
    if found is None or problem is not None:
        await problems.count(problem or "unknown tool")
        return tool_message(call["id"], {"error": {"kind": INVALID_REPLY, "message": problem}})
    if agent.needs_approval(found, arguments):
        decision = await await_approval(found, arguments, call["id"])
        if decision["status"] != "approved":
            message = f"a person did not approve this call ({decision['status']}): {decision['comment'] or 'no comment'}"
            if found.approval.on_reject == "fail":
                await fail("approval_rejected", f"{found.name}: {message}")
            return tool_message(call["id"], {"error": {"kind": "not_approved", "message": message}})
    outcome = await tool_call_step(found, arguments, call["id"])
    if outcome["ok"]:
        return tool_message(call["id"], outcome["result"])
    error = outcome["error"]
    if error["kind"] == "ask_model":
        await problems.count(error["message"])
        return tool_message(call["id"], {"error": error})
    await fail(failure_reason(error, "tool"), f"tool {found.name} failed: {error['message']}")


class Reasks:
    """Counts the model's malformed replies; past the agent's bound, the run fails."""

    def __init__(self, agent: Agent) -> None:
        self.left = agent.max_reasks

    async def count(self, problem: str) -> None:
        self.left -= 1
        if self.left < 0:
            await fail("invalid_model_output", problem)


def tool_message(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def failure_reason(error: dict[str, Any], source: str) -> str:
    return "retries_exhausted" if error["kind"] == "transient" else f"{source}_failed"


async def fail(reason: str, message: str) -> NoReturn:
    await record_step("run_finished", {"status": "failed", "reason": reason, "message": message})
    raise RunFailed(reason, message)
