"""`keel.agent_run`: the durable agent loop.

Each turn: ask the model (a step), then run each tool call it asked for (a step each, through the
ledger; after a person's approval where one is needed). The conversation lives only in this
function's locals: on recovery DBOS replays the recorded step outputs, so the same conversation is
rebuilt and the run goes on from the first step that has no checkpoint. Everything here is
deterministic given those outputs. A run that fails rolls back its effects (`workflows.saga`)."""

import json
from typing import Any, NoReturn, Protocol

from dbos import DBOS

from steps import ids
from steps.errors import RunFailed
from steps.events import record_step
from steps.fork_reuse import NEEDS_APPROVAL
from steps.ledger import tool_call_step
from steps.llm import ModelRequest, llm_step
from steps.tools import Tool
from workflows.agent import Agent, get_agent
from workflows.approvals import await_approval
from workflows.forks import read_fork
from workflows.parking import call_parking
from workflows.saga import needs_rollback, start_rollback

INVALID_REPLY = "invalid_arguments"
GO_AHEAD = ("approved", "not_needed")
"""Decisions a call may go ahead on: `not_needed` when a fork reuses its origin's outcome (no effect)."""


@DBOS.workflow(name="keel.agent_run")
async def agent_run(request: dict[str, Any]) -> Any:
    """Run `request["agent"]` on `request["input"]`; returns the final answer (JSON)."""
    run_id = DBOS.workflow_id
    assert run_id is not None
    agent = get_agent(request["agent"])
    fork = await read_fork(run_id)  # a fork may change the model or the instructions, and reuses its origin's outcomes
    run = AgentRun(agent, DurableOperations(run_id, agent, reuses_from=fork and fork.reuses_from), **(fork.overrides() if fork else {}))
    return await run.execute(request["input"])


class Operations(Protocol):
    """How the loop's durable operations happen: for real (`DurableOperations`), or served from a
    recorded run (`workflows.replay`)."""

    async def event(self, kind: str, payload: dict[str, Any]) -> float: ...
    async def model(self, request: ModelRequest) -> dict[str, Any]: ...
    async def tool(self, tool: Tool, arguments: dict[str, Any], call_id: str, decision: dict[str, Any] | None) -> dict[str, Any]: ...
    async def approval(self, tool: Tool, arguments: dict[str, Any], call_id: str) -> dict[str, Any]: ...
    async def rollback(self, reason: str) -> None: ...


class DurableOperations:
    def __init__(self, run_id: str, agent: Agent, *, reuses_from: str | None = None) -> None:
        self.run_id = run_id
        self.agent = agent
        self.reuses_from = reuses_from
        """A fork's origin, whose recorded outcomes its repeated calls reuse."""

    async def event(self, kind: str, payload: dict[str, Any]) -> float:
        return await record_step(kind, payload)

    async def model(self, request: ModelRequest) -> dict[str, Any]:
        return await call_parking(lambda first, _: llm_step(request, first), "model")

    async def tool(self, tool: Tool, arguments: dict[str, Any], call_id: str, decision: dict[str, Any] | None) -> dict[str, Any]:
        # A fork that forked after an approval holds its origin's decision: good for reusing the origin's outcome, not for an effect.
        origin_approved = bool(decision and decision["approval_id"] and ids.approval_run(decision["approval_id"]) != self.run_id)
        return await call_parking(
            lambda first, previous: tool_call_step(tool, arguments, call_id, previous and previous["idempotency_key"], first,
                                                   origin=self.reuses_from, origin_approved=origin_approved),
            f"tool {tool.name} ({tool.dependency})")

    async def approval(self, tool: Tool, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
        return await await_approval(tool, arguments, call_id, origin=self.reuses_from)

    async def rollback(self, reason: str) -> None:
        await (await start_rollback(self.run_id, self.agent.name, reason)).get_result()


class AgentRun:
    def __init__(self, agent: Agent, ops: Operations, *, model: str | None = None, instructions: str | None = None) -> None:
        self.agent = agent
        self.ops = ops
        self.model = model or agent.model
        self.instructions = instructions
        self.reasks_left = agent.max_reasks
        self.reasks: list[dict[str, Any]] = []
        """Problems the next model call tells the model about (recorded as its `reask` event)."""
        self.tools_used: list[str] = []
        self.tokens = 0
        self.cost_usd = 0.0

    async def execute(self, user_input: str) -> Any:
        try:
            return await self.loop(user_input)
        except RunFailed:
            raise
        except Exception as exc:  # a bug in a tool's code path or in Keel: still a terminal state with a reason
            await self.fail("internal_error", f"{type(exc).__name__}: {exc}")

    async def loop(self, user_input: str) -> Any:
        agent = self.agent
        started_at = await self.ops.event("run_started", {"agent": agent.name, "input": user_input})
        deadline = started_at + agent.max_seconds if agent.max_seconds else None
        conversation: list[dict[str, Any]] = [
            {"role": "system", "content": agent.system_prompt(self.instructions)},
            {"role": "user", "content": user_input},
        ]
        sent = 0
        for turn in range(1, agent.max_turns + 1):
            await self.check_budgets()
            request = ModelRequest(model=self.model, messages=list(conversation), tools=agent.tool_schemas, turn=turn,
                                   already_sent=sent, retry=agent.model_retry, timeout=agent.model_timeout, deadline=deadline,
                                   reasks=self.reasks, reasks_left=self.reasks_left)
            self.reasks = []
            reply = await self.ops.model(request)
            sent = len(conversation)
            if not reply["ok"]:
                await self.fail(failure_reason(reply["error"], "model"), f"model call failed: {reply['error']['message']}")
            self.tokens += reply["usage"]["total_tokens"]
            self.cost_usd += reply["usage"]["cost_usd"]
            message = reply["message"]
            conversation.append(message)
            calls = message.get("tool_calls") or []
            if not calls:
                output, problem = agent.parse_output(message["content"])
                if problem is None:
                    await self.ops.event("run_finished", {"status": "succeeded", "turns": turn})
                    return output
                await self.reask(problem, None)
                conversation.append({"role": "user", "content": f"Your final answer was not accepted: {problem}. Try again."})
                continue
            for call in calls:
                conversation.append(await self.tool_call(call))
        await self.fail("max_turns_exceeded", f"no final answer after {agent.max_turns} turns")

    async def tool_call(self, call: dict[str, Any]) -> dict[str, Any]:
        """Run one of the model's tool calls; returns the tool message that answers it."""
        found, arguments, problem = self.agent.parse_call(call)
        if found is None or problem is not None:
            await self.reask(problem or "unknown tool", call["id"])
            return tool_message(call["id"], {"error": {"kind": INVALID_REPLY, "message": problem}})
        needs_approval = self.agent.needs_approval(found, arguments)
        for _ in range(2):  # a fork holding only its origin's approval asks for its own, once
            decision = await self.ops.approval(found, arguments, call["id"]) if needs_approval else None
            if decision and decision["status"] not in GO_AHEAD:
                message = f"a person did not approve this call ({decision['status']}): {decision['comment'] or 'no comment'}"
                if found.approval.on_reject == "fail":
                    await self.fail("approval_rejected", f"{found.name}: {message}")
                return tool_message(call["id"], {"error": {"kind": "not_approved", "message": message}})
            outcome = await self.ops.tool(found, arguments, call["id"], decision)
            if outcome["ok"] or outcome["error"]["kind"] != NEEDS_APPROVAL:
                break
        if outcome["ok"]:
            self.tools_used.append(found.name)
            return tool_message(call["id"], outcome["result"])
        error = outcome["error"]
        if error["kind"] == "ask_model":
            await self.reask(error["message"], call["id"])
            return tool_message(call["id"], {"error": error})
        await self.fail(failure_reason(error, "tool"), f"tool {found.name} failed: {error['message']}")

    async def check_budgets(self) -> None:
        """Refuse the next model call once a budget is spent (totals come from recorded outputs)."""
        agent = self.agent
        if agent.max_tokens is not None and self.tokens >= agent.max_tokens:
            await self.fail("budget_exhausted", f"used {self.tokens} tokens of a budget of {agent.max_tokens}")
        if agent.max_cost_usd is not None and self.cost_usd >= agent.max_cost_usd:
            await self.fail("budget_exhausted", f"spent ${self.cost_usd:.4f} of a budget of ${agent.max_cost_usd}")

    async def reask(self, problem: str, tool_call_id: str | None) -> None:
        """Count a reply the model must redo; past the agent's bound, the run fails. The next model
        call records the re-ask (an event of its own step: the loop's steps stay as they were)."""
        self.reasks_left -= 1
        if self.reasks_left < 0:
            await self.fail("invalid_model_output", problem)
        self.reasks.append({"problem": problem, "tool_call_id": tool_call_id})

    async def fail(self, reason: str, message: str) -> NoReturn:
        await self.ops.event("run_finished", {"status": "failed", "reason": reason, "message": message})
        if needs_rollback(self.agent, self.tools_used):
            await self.ops.rollback(reason)
        raise RunFailed(reason, message)


def tool_message(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def failure_reason(error: dict[str, Any], source: str) -> str:
    kinds = {"transient": "retries_exhausted", "circuit_open": "circuit_open", "budget": "budget_exhausted"}
    return kinds.get(error["kind"], f"{source}_failed")
