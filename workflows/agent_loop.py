"""`keel.agent_run`: the durable agent loop.

Each turn: ask the model (a step), then run each tool call it asked for (a step each, through the
ledger; after a person's approval where one is needed). The conversation lives only in this
function's locals: on recovery DBOS replays the recorded step outputs, so the same conversation is
rebuilt and the run goes on from the first step that has no checkpoint. Everything here is
deterministic given those outputs. A run that fails rolls back its effects (`workflows.saga`).

The loop itself is the agent's (`Agent.drive`): Keel's own (`AgentRun.keel_loop`), or a framework's
(`workflows.frameworks`), whose model and tool seams call this run's `ask_model` and `call_tool`."""

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, NoReturn, Protocol

from dbos import DBOS, SetWorkflowID

from steps import ids, tracing
from steps.delegation import child_outcome_step, delegate_step
from steps.errors import RunFailed, UserError
from steps.events import record_step
from steps.fork_reuse import NEEDS_APPROVAL
from steps.ledger import tool_call_step
from steps.llm import ModelRequest, llm_step
from steps.run_status import Reason
from steps.tools import ApprovalPolicy, Tool
from workflows.agent import Agent, get_agent
from workflows.approvals import Ask, request_approvals, wait_for_decision
from workflows.forks import read_fork
from workflows.parking import call_parking
from workflows.saga import needs_rollback, start_rollback

INVALID_REPLY = "invalid_arguments"
GO_AHEAD = ("approved", "not_needed")
"""Decisions a call may go ahead on: `not_needed` when a fork reuses its origin's outcome (no effect)."""
_current: ContextVar["AgentRun | None"] = ContextVar("keel_current_run", default=None)


@DBOS.workflow(name="keel.agent_run")
async def agent_run(request: dict[str, Any]) -> Any:
    """Run `request["agent"]` on `request["input"]`; returns the final answer (JSON)."""
    run_id = DBOS.workflow_id
    assert run_id is not None
    agent = get_agent(request["agent"])
    fork = await read_fork(run_id)  # a fork may change the model or the instructions, and reuses its origin's outcomes
    run = AgentRun(agent, DurableOperations(run_id, agent, reuses_from=fork and fork.reuses_from), **(fork.overrides() if fork else {}),
                   inherited=Limits(**request["limits"]) if request.get("limits") else None)
    tracing.run_started(run_id, agent.name)
    try:
        output = await run.execute(request["input"])
    except RunFailed as failed:
        tracing.run_ended("failed", reason=failed.reason, turns=run.turn, tokens=run.tokens)
        raise
    tracing.run_ended("succeeded", turns=run.turn, tokens=run.tokens)
    return output


def current_run() -> "AgentRun":
    """The run whose loop is executing here: how a framework's model and tool seams find it."""
    run = _current.get()
    if run is None:
        raise UserError("this runs only inside a Keel run: start the agent with `keel run`, POST /v1/runs or start_run()")
    return run


class Halted(BaseException):
    """Carries a run's failure out through a framework's own loop. A BaseException, like DBOS's
    cancellation, so a framework's `except Exception` (which would hand the error to its model)
    lets it through; `AgentRun.execute` turns it back into the `RunFailed` it holds."""

    def __init__(self, failure: RunFailed) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass(frozen=True)
class Limits:
    """What a child run may spend: what its parent has left when it starts it (None: no limit)."""

    max_turns: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    deadline: float | None = None
    """Epoch seconds."""

    def tighter(self, other: "Limits | None") -> "Limits":
        if other is None:
            return self
        return Limits(**{name: least(getattr(self, name), getattr(other, name)) for name in ("max_turns", "max_tokens", "max_cost_usd", "deadline")})


def least(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def left(limit: Any, spent: Any) -> Any:
    return None if limit is None else max(limit - spent, 0)


@dataclass(frozen=True)
class ToolCall:
    """A call to make through the ledger: `decision` is the settled approval it goes ahead on, if it needed one."""

    tool: Tool
    arguments: dict[str, Any]
    call_id: str
    decision: dict[str, Any] | None = None


class Operations(Protocol):
    """How the loop's durable operations happen: for real (`DurableOperations`), or served from a
    recorded run (`workflows.replay`). Tool calls and approvals come in batches: one turn's calls."""

    async def event(self, kind: str, payload: dict[str, Any]) -> float: ...
    async def model(self, request: ModelRequest) -> dict[str, Any]: ...
    def start_tools(self, calls: list[ToolCall]) -> Awaitable[list[dict[str, Any]]]:
        """Start each call's first step now, in order, and all at once; the awaitable gives their outcomes."""
    async def finish_tools(self, calls: list[ToolCall], firsts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """From the first steps' outcomes: each call that asked to park goes on alone, in order."""
    async def delegate(self, call: ToolCall, limits: Limits) -> dict[str, Any]:
        """Run the agent tool's agent as a child run on the call's input, within `limits`; how it ended (`child_outcome_step`)."""
    async def request_approvals(self, asks: list[Ask]) -> list[str | None]:
        """Open each request, in order: the approval IDs (None: a fork's call that needs nobody)."""
    async def decision(self, ask: Ask, approval_id: str | None) -> dict[str, Any]:
        """Wait for the decision on one request."""
    async def rollback(self, reason: str) -> None: ...


class DurableOperations:
    def __init__(self, run_id: str, agent: Agent[Any], *, reuses_from: str | None = None) -> None:
        self.run_id = run_id
        self.agent = agent
        self.reuses_from = reuses_from
        """A fork's origin, whose recorded outcomes its repeated calls reuse."""

    async def event(self, kind: str, payload: dict[str, Any]) -> float:
        return await record_step(kind, payload)

    async def model(self, request: ModelRequest) -> dict[str, Any]:
        return await call_parking(lambda first, _: llm_step(request, first), "model")

    def start_tools(self, calls: list[ToolCall]) -> Awaitable[list[dict[str, Any]]]:
        # DBOS numbers a step when it is called, not when it ends: calling each here, in order, gives each
        # call the same step number on every execution, whichever finishes first and whatever runs meanwhile.
        return asyncio.gather(*[self.tool_step(call, 1, None) for call in calls])

    async def finish_tools(self, calls: list[ToolCall], firsts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [await call_parking(functools.partial(self.tool_step, call), f"tool {call.tool.name} ({call.tool.dependency})", first=first)
                for call, first in zip(calls, firsts, strict=True)]

    def tool_step(self, call: ToolCall, first_attempt: int, previous: dict[str, Any] | None) -> Any:
        """The step's coroutine, numbered by DBOS now (so: not an `async def`)."""
        decision = call.decision
        # A fork that forked after an approval holds its origin's decision: good for reusing the origin's outcome, not for an effect.
        origin_approved = bool(decision and decision["approval_id"] and ids.approval_run(decision["approval_id"]) != self.run_id)
        return tool_call_step(call.tool, call.arguments, call.call_id, previous and previous["idempotency_key"], first_attempt,
                              origin=self.reuses_from, origin_approved=origin_approved)

    async def request_approvals(self, asks: list[Ask]) -> list[str | None]:
        return await request_approvals(asks, origin=self.reuses_from)

    async def delegate(self, call: ToolCall, limits: Limits) -> dict[str, Any]:
        child_agent = call.tool.delegate.name
        child = await delegate_step(call.tool.name, child_agent, call.arguments, call.call_id)
        with SetWorkflowID(child), tracing.carried():  # a DBOS child workflow, named once: a recovered parent finds it again
            handle = await DBOS.start_workflow_async(agent_run, {"agent": child_agent, "input": call.arguments["input"], "limits": asdict(limits)})
        with contextlib.suppress(Exception):  # a failed child raises its failure here; the outcome step reads how it ended
            await handle.get_result()
        return await child_outcome_step(child)

    async def decision(self, ask: Ask, approval_id: str | None) -> dict[str, Any]:
        return await wait_for_decision(ask, approval_id)

    async def rollback(self, reason: str) -> None:
        await (await start_rollback(self.run_id, self.agent.name, reason)).get_result()


class AgentRun:
    """One run of an agent: its budgets, turns and re-asks, and every durable call it makes."""

    def __init__(self, agent: Agent[Any], ops: Operations, *, model: str | None = None, instructions: str | None = None,
                 inherited: Limits | None = None) -> None:
        """`inherited`: what the parent had left, for a child run; the tighter of it and the agent's own bounds hold."""
        self.run_agent = agent
        """The agent the run started with: its budgets hold throughout, and its rollback covers every agent it may hand to."""
        self.agent = agent
        """The agent reasoning now: another after a handoff."""
        self.limits = Limits(max_turns=agent.max_turns, max_tokens=agent.max_tokens, max_cost_usd=agent.max_cost_usd).tighter(inherited)
        self.ops = ops
        self.model_override = model
        """A fork's model: it holds for every agent of the run."""
        self.instructions = instructions
        self.reasks_left = agent.max_reasks
        self.reasks: list[dict[str, Any]] = []
        """Problems the next model call tells the model about (recorded as its `reask` event)."""
        self.tools_used: list[str] = []
        self.tokens = 0
        self.cost_usd = 0.0
        self.turn = 0
        self.delegated_turns = 0
        """Model calls of this run's child runs: they count against its `max_turns` too."""
        self.sent = 0
        self.deadline: float | None = None
        self.halted: Halted | None = None
        """Set once the run failed: every later call is refused, in case a framework swallowed the failure."""
        # A framework may run several tool calls at once; one at a time keeps the order of step IDs
        # the order the calls were made in, so a recovered run replays the same steps.
        self.tool_lock = asyncio.Lock()

    async def execute(self, user_input: str) -> Any:
        token = _current.set(self)
        try:
            agent = self.run_agent
            started_at = await self.ops.event("run_started", {"agent": agent.name, "input": user_input})
            self.deadline = least(started_at + agent.max_seconds if agent.max_seconds else None, self.limits.deadline)  # a child's: its parent's
            output = await agent.drive(self, user_input)
            self.refuse_after_failure()  # a framework that swallowed the run's failure does not make it a success
            await self.ops.event("run_finished", {"status": "succeeded", "turns": self.turn})
            return output
        except Halted as halted:
            raise halted.failure from None
        except BaseExceptionGroup as group:  # a framework's task group gathered it
            halted = group.subgroup(Halted)
            if halted is not None:
                raise leaves(halted)[0].failure from None
            if not isinstance(group, Exception):  # DBOS's cancellation, say
                raise
            await self.fail("internal_error", f"{type(group).__name__}: {group}", halt=False)
        except RunFailed:
            raise
        except Exception as exc:  # a bug in a tool's code path, a framework or Keel: still a terminal state with a reason
            await self.fail("internal_error", f"{type(exc).__name__}: {exc}", halt=False)
        finally:
            _current.reset(token)

    async def keel_loop(self, user_input: str) -> Any:
        """Keel's own reasoning loop: Chat Completions with the agent's tools, until a valid final
        answer. A handoff the model chooses goes on with the same conversation under the other agent."""
        conversation: list[dict[str, Any]] = [
            {"role": "system", "content": self.agent.system_prompt(self.instructions)},
            {"role": "user", "content": user_input},
        ]
        while True:
            agent = self.agent
            message = await self.ask_model(conversation, agent.tool_schemas, label=agent.name if self.run_agent.handoffs else None)
            conversation.append(message)
            calls = message.get("tool_calls") or []
            if not calls:
                output, problem = agent.parse_output(message["content"])
                if problem is None:
                    return output
                await self.reask(problem, None)
                conversation.append({"role": "user", "content": f"Your final answer was not accepted: {problem}. Try again."})
                continue
            handoffs = [call for call in calls if call["function"]["name"] in agent.handoffs]
            tool_calls = [call for call in calls if call not in handoffs]
            replies = dict(zip([call["id"] for call in tool_calls], await self.replies_to(tool_calls), strict=True))
            replies |= {call["id"]: {"assistant": agent.handoffs[call["function"]["name"]].name} if n == 0 else
                        {"error": {"kind": "ignored", "message": "one handoff per turn: this one was not made"}} for n, call in enumerate(handoffs)}
            conversation.extend({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(replies[call["id"]])} for call in calls)
            if handoffs:
                await self.hand_off(agent.handoffs[handoffs[0]["function"]["name"]], conversation)

    async def replies_to(self, calls: list[dict[str, Any]]) -> list[Any]:
        if not calls:
            return []
        return await self.tool_replies(calls) if self.agent.parallel_tool_calls else [await self.tool_outcome(call) for call in calls]

    async def hand_off(self, target: Agent[Any], conversation: list[dict[str, Any]]) -> None:
        """Go on under `target`: its instructions replace the system prompt (so the next model call
        records the whole conversation it is sent), its tools and approval rules hold from now on."""
        await self.ops.event("handoff", {"from": self.agent.name, "to": target.name})
        self.agent = target
        conversation[0] = {"role": "system", "content": target.system_prompt()}
        self.sent = 0

    async def ask_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, label: str | None = None) -> dict[str, Any]:
        """One model call (a durable step, retried by the agent's policy): the assistant message, as
        Chat Completions JSON. Past `max_turns` or a budget, or when the call fails, the run fails.
        `label` names who asks (a framework's agent), for the timeline."""
        self.refuse_after_failure()
        agent = self.agent
        max_turns = self.limits.max_turns
        if max_turns is not None and self.turn + self.delegated_turns >= max_turns:
            await self.fail("max_turns_exceeded", f"no final answer after {max_turns} turns")
        await self.check_budgets()
        self.turn += 1
        request = ModelRequest(model=self.model_override or agent.model, messages=list(messages), tools=tools, turn=self.turn,
                               already_sent=min(self.sent, len(messages)),
                               retry=agent.model_retry, timeout=agent.model_timeout, deadline=self.deadline, label=label,
                               reasks=self.reasks, reasks_left=self.reasks_left)
        self.reasks = []
        reply = await self.ops.model(request)
        self.sent = len(messages)
        if not reply["ok"]:
            await self.fail(failure_reason(reply["error"], "model"), f"model call failed: {reply['error']['message']}")
        self.tokens += reply["usage"]["total_tokens"]
        self.cost_usd += reply["usage"]["cost_usd"]
        return reply["message"]

    async def call_tool(self, call: dict[str, Any]) -> str:
        """Run one of the model's tool calls (`{"id", "function": {"name", "arguments"}}`); returns the
        content (JSON text) of the tool message that answers it. A failure the model cannot fix fails the run."""
        self.refuse_after_failure()
        async with self.tool_lock:
            return json.dumps(await self.tool_outcome(call))

    async def tool_outcome(self, call: dict[str, Any]) -> Any:
        """The reply to one tool call: asked about if it needs approval, then made through the ledger."""
        found, arguments, problem = self.agent.parse_call(call)
        if found is None or problem is not None:
            return await self.invalid_call(call, problem)
        decision = await self.decision(found, arguments, call["id"])
        if (refused := await self.refusal(found, decision)) is not None:
            return refused
        tool_call = ToolCall(found, arguments, call["id"], decision)
        if found.delegate is not None:
            return await self.delegate(tool_call)
        return await self.answer(tool_call, (await self.tools([tool_call]))[0])

    async def delegate(self, call: ToolCall) -> Any:
        """A call of an agent tool: its agent runs as a child run, within what this run has left; the
        child's answer is the reply, and a child that fails fails this run."""
        limits = Limits(max_turns=left(self.limits.max_turns, self.turn + self.delegated_turns), max_tokens=left(self.limits.max_tokens, self.tokens),
                        max_cost_usd=left(self.limits.max_cost_usd, self.cost_usd), deadline=self.deadline)
        outcome = await self.ops.delegate(call, limits)
        self.tools_used.append(call.tool.name)  # the child's effects: this run's rollback rolls the child back
        self.delegated_turns += outcome["turns"]
        self.tokens += outcome["tokens"]
        self.cost_usd += outcome["cost_usd"]
        if outcome["status"] == "succeeded":
            return outcome["output"]
        spent = outcome["reason"] in (Reason.BUDGET_EXHAUSTED, Reason.MAX_TURNS_EXCEEDED)  # what the child had was this run's too
        await self.fail(outcome["reason"] if spent else Reason.CHILD_FAILED,
                        f"child run {outcome['child_run_id']} ({call.tool.delegate.name}) ended {outcome['status']}: "
                        f"{outcome['error'] or outcome['reason']}")

    async def tool_replies(self, calls: list[dict[str, Any]]) -> list[Any]:
        """The replies to one turn's tool calls, made at once: every approval they need is asked for
        first, the calls that need none run while the approvals wait (each on its own), and the
        approved calls then run together."""
        if any(getattr(self.agent.tools.get(call["function"]["name"]), "delegate", None) for call in calls):
            return [await self.tool_outcome(call) for call in calls]  # a child run is awaited in workflow code, between steps
        replies: dict[str, Any] = {}
        free: list[ToolCall] = []
        asking: list[ToolCall] = []
        for call in calls:
            found, arguments, problem = self.agent.parse_call(call)
            if found is None or problem is not None:
                replies[call["id"]] = await self.invalid_call(call, problem)
            else:
                (asking if self.agent.needs_approval(found, arguments) else free).append(ToolCall(found, arguments, call["id"]))
        asks = [self.ask(c.tool, c.arguments, c.call_id) for c in asking]
        approval_ids = await self.ops.request_approvals(asks)
        running = self.ops.start_tools(free) if free else None
        try:
            decisions = [await self.ops.decision(ask, approval_id) for ask, approval_id in zip(asks, approval_ids, strict=True)]
        except BaseException:  # cancelled while waiting: the calls in flight end before the run does
            if running is not None:
                await asyncio.gather(running, return_exceptions=True)
            raise
        made = await self.ops.finish_tools(free, await running) if running else []
        self.count_effects(free, made)
        approved: list[ToolCall] = []
        for call, decision in zip(asking, decisions, strict=True):
            if (refused := await self.refusal(call.tool, decision)) is not None:  # a rejection may fail the run: after the effects are counted
                replies[call.call_id] = refused
            else:
                approved.append(ToolCall(call.tool, call.arguments, call.call_id, decision))
        outcomes = await self.tools(approved) if approved else []
        self.count_effects(approved, outcomes)
        for call, outcome in [*zip(free, made, strict=True), *zip(approved, outcomes, strict=True)]:
            replies[call.call_id] = await self.answer(call, outcome)
        return [replies[call["id"]] for call in calls]

    async def tools(self, calls: list[ToolCall]) -> list[dict[str, Any]]:
        return await self.ops.finish_tools(calls, await self.ops.start_tools(calls))

    def count_effects(self, calls: list[ToolCall], outcomes: list[dict[str, Any]]) -> None:
        """Every effect made counts before any reply can fail the run, so its rollback undoes them all."""
        self.tools_used += [call.tool.name for call, outcome in zip(calls, outcomes, strict=True) if outcome["ok"]]

    async def invalid_call(self, call: dict[str, Any], problem: str | None) -> dict[str, Any]:
        await self.reask(problem or "unknown tool", call["id"])
        return {"error": {"kind": INVALID_REPLY, "message": problem}}

    def ask(self, tool: Tool, arguments: dict[str, Any], call_id: str) -> Ask:
        return Ask(tool.name, tool.approval, arguments, call_id, reusable=tool.idempotency_key is None)

    async def decision(self, tool: Tool, arguments: dict[str, Any], call_id: str) -> dict[str, Any] | None:
        """The settled decision on this call, or None if it needs none."""
        if not self.agent.needs_approval(tool, arguments):
            return None
        return await self.approval(self.ask(tool, arguments, call_id))

    async def approval(self, ask: Ask) -> dict[str, Any]:
        return await self.ops.decision(ask, (await self.ops.request_approvals([ask]))[0])

    async def refusal(self, tool: Tool, decision: dict[str, Any] | None) -> dict[str, Any] | None:
        """The reply to a call a person did not approve (or the run fails, under `on_reject="fail"`); None: go ahead."""
        if decision is None or decision["status"] in GO_AHEAD:
            return None
        message = f"a person did not approve this call ({decision['status']}): {decision['comment'] or 'no comment'}"
        if tool.approval.on_reject == "fail":
            await self.fail("approval_rejected", f"{tool.name}: {message}")
        return {"error": {"kind": "not_approved", "message": message}}

    async def answer(self, call: ToolCall, outcome: dict[str, Any]) -> Any:
        """The reply to a call the ledger answered with `outcome`; a failure the model cannot fix fails the run."""
        if not outcome["ok"] and outcome["error"]["kind"] == NEEDS_APPROVAL:  # a fork holding only its origin's approval asks for its own, once
            decision = await self.decision(call.tool, call.arguments, call.call_id)
            if (refused := await self.refusal(call.tool, decision)) is not None:
                return refused
            outcome = (await self.tools([ToolCall(call.tool, call.arguments, call.call_id, decision)]))[0]
        if outcome["ok"]:
            self.tools_used.append(call.tool.name)
            return outcome["result"]
        error = outcome["error"]
        if error["kind"] == "ask_model":
            await self.reask(error["message"], call.call_id)
            return {"error": error}
        await self.fail(failure_reason(error, "tool"), f"tool {call.tool.name} failed: {error['message']}")

    async def record(self, kind: str, payload: dict[str, Any]) -> None:
        """An event of the framework's own (a handoff) in the run's timeline, as a step."""
        self.refuse_after_failure()
        await self.ops.event(kind, payload)

    async def ask_person(self, name: str, policy: ApprovalPolicy, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
        """Wait (durably) for a person's decision on `name` with these arguments: a framework's own
        pause for a human (a LangGraph `interrupt`) as a Keel approval. A rejection under
        `on_reject="fail"` fails the run; otherwise the settled decision is returned."""
        self.refuse_after_failure()
        decision = await self.approval(Ask(name, policy, arguments, call_id))
        if decision["status"] != "approved" and policy.on_reject == "fail":
            await self.fail("approval_rejected", f"{name}: a person did not approve ({decision['status']}): {decision['comment'] or 'no comment'}")
        return decision

    def refuse_after_failure(self) -> None:
        if self.halted is not None:
            raise self.halted

    async def check_budgets(self) -> None:
        """Refuse the next model call once a budget is spent (totals come from recorded outputs)."""
        limits = self.limits
        if limits.max_tokens is not None and self.tokens >= limits.max_tokens:
            await self.fail("budget_exhausted", f"used {self.tokens} tokens of a budget of {limits.max_tokens}")
        if limits.max_cost_usd is not None and self.cost_usd >= limits.max_cost_usd:
            await self.fail("budget_exhausted", f"spent ${self.cost_usd:.4f} of a budget of ${limits.max_cost_usd}")

    async def reask(self, problem: str, tool_call_id: str | None = None) -> None:
        """Count a reply the model must redo; past the agent's bound, the run fails. The next model
        call records the re-ask (an event of its own step: the loop's steps stay as they were)."""
        self.reasks_left -= 1
        if self.reasks_left < 0:
            await self.fail("invalid_model_output", problem)
        self.reasks.append({"problem": problem, "tool_call_id": tool_call_id})

    async def fail(self, reason: str, message: str, *, halt: bool = True) -> NoReturn:
        """Record the failure, undo the run's effects, and stop: through any framework loop in between
        (`Halted`), unless this is the run's own boundary."""
        await self.ops.event("run_finished", {"status": "failed", "reason": reason, "message": message})
        if needs_rollback(self.run_agent, self.tools_used):
            await self.ops.rollback(reason)
        self.halted = Halted(RunFailed(reason, message))
        if halt:
            raise self.halted
        raise self.halted.failure


def leaves(group: BaseExceptionGroup) -> list[Any]:
    return [leaf for e in group.exceptions for leaf in (leaves(e) if isinstance(e, BaseExceptionGroup) else [e])]


def failure_reason(error: dict[str, Any], source: str) -> str:
    kinds = {"transient": "retries_exhausted", "circuit_open": "circuit_open", "budget": "budget_exhausted"}
    return kinds.get(error["kind"], f"{source}_failed")
