"""Replay: run a recorded run's workflow logic again, serving every model call, tool call, approval
and event from what was recorded (nothing is called), and report whether today's code makes the same
decisions, step by step. Run it over pending runs before a deploy to see which would break."""

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from steps import db
from steps.errors import RunFailed
from steps.llm import ModelRequest
from steps.run_status import REPLAYED_TO_THE_END
from workflows.agent import Agent, get_agent
from workflows.agent_loop import AgentRun, ToolCall
from workflows.approvals import NOT_NEEDED, Ask
from workflows.forks import fork_overrides
from workflows.runs import get_run

RECORDED_STEPS = """
SELECT function_id, function_name, output, error FROM dbos.operation_outputs
WHERE workflow_uuid = %s AND function_name NOT LIKE 'DBOS.%%' ORDER BY function_id
"""
RECORDED_EVENTS = "SELECT step_id, kind, payload FROM keel.events WHERE run_id = %s AND attempt = 0"


# Signals that end a replay. BaseException, so the loop's own `except Exception` (which turns a bug
# into a failed run) lets them through, as it does DBOS's cancellation.
class Diverged(BaseException):
    pass


class OutOfHistory(BaseException):
    """The recorded run stops here (it is still running): the code agreed with it so far."""


@dataclass
class RecordedOperations:
    """`Operations` served from a run's checkpoints; each call checks that the code asks for what
    the run did at that point."""

    steps: list[dict[str, Any]]
    events: dict[int, dict[str, Any]]
    finished: bool
    position: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)

    def take(self, name: str, doing: str) -> dict[str, Any]:
        if self.position >= len(self.steps):
            if not self.finished:
                raise OutOfHistory()
            raise Diverged(f"the recorded run ended here; the code goes on to {doing}")
        row = self.steps[self.position]
        self.position += 1
        if row["function_name"] != name:
            raise Diverged(f"step {row['function_id']}: the run recorded {row['function_name']}, the code calls {doing}")
        self.trace.append({"step": row["function_id"], "operation": doing})
        return row

    def output(self, row: dict[str, Any]) -> Any:
        return json.loads(row["output"]) if row["output"] is not None else None

    async def event(self, kind: str, payload: dict[str, Any]) -> float:
        row = self.take("keel.event", f"event {kind}")
        recorded = self.events.get((row["function_id"], kind))
        if recorded is None:
            raise Diverged(f"step {row['function_id']}: the code records {kind}, the run recorded another event")
        return self.output(row)

    def start_tools(self, calls: list[ToolCall]) -> Awaitable[list[dict[str, Any]]]:
        firsts = [self.tool_step(call) for call in calls]  # taken now, in order, as the live run numbered them
        return done(firsts)

    async def finish_tools(self, calls: list[ToolCall], firsts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.parked("keel.tool_call", self.doing(call), first=first) for call, first in zip(calls, firsts, strict=True)]

    def doing(self, call: ToolCall) -> str:
        return f"tool {call.tool.name}({json.dumps(call.arguments)})"

    def tool_step(self, call: ToolCall) -> dict[str, Any]:
        outcome = self.output(self.take("keel.tool_call", self.doing(call)))
        recorded = self.events.get((self.trace[-1]["step"], "tool_call"), {})
        if (recorded.get("tool"), recorded.get("arguments")) != (call.tool.name, call.arguments):
            raise Diverged(f"step {self.trace[-1]['step']}: the run called {recorded.get('tool')}({json.dumps(recorded.get('arguments'))}), "
                           f"the code calls {self.doing(call)}")
        return outcome

    async def model(self, request: ModelRequest) -> dict[str, Any]:
        return self.parked("keel.llm", f"model call (turn {request.turn})")

    def parked(self, name: str, doing: str, *, first: dict[str, Any] | None = None) -> dict[str, Any]:
        """A step (or the outcome `first` of one already taken) and, where it asked to park, its durable
        wait and the calls that followed."""
        outcome = first if first is not None else self.output(self.take(name, doing))
        while outcome.get("park") is not None and not outcome["ok"]:
            self.take("keel.event", "event parked")
            outcome = self.output(self.take(name, doing))
        return outcome

    async def delegate(self, call: ToolCall, limits: Any) -> dict[str, Any]:
        self.take("keel.delegate", self.doing(call))
        self.take("keel.agent_run", f"child run of {call.tool.delegate.name}")
        return self.output(self.take("keel.child_outcome", f"outcome of the child run of {call.tool.delegate.name}"))

    async def request_approvals(self, asks: list[Ask]) -> list[str | None]:
        return [self.output(self.take("keel.approval_request", f"approval for {ask.name}"))["approval_id"] for ask in asks]

    async def decision(self, ask: Ask, approval_id: str | None) -> dict[str, Any]:
        if approval_id is None:  # a fork's call answered with its origin's outcome
            return NOT_NEEDED
        while True:
            settled = self.output(self.take("keel.approval_settle", f"decision on {ask.name}"))
            if settled["status"] != "pending":
                return settled

    async def rollback(self, reason: str) -> None:
        self.take("keel.rollback", f"rollback ({reason})")


async def done(value: Any) -> Any:
    return value


async def replay_run(run_id: str, agent: Agent | None = None) -> dict[str, Any]:
    """Replay run `run_id` with the current code (or `agent`); returns the report."""
    run = await get_run(run_id)
    async with db.pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        steps = await (await cursor.execute(RECORDED_STEPS, (run_id,))).fetchall()
        events = {(e["step_id"], e["kind"]): e["payload"] for e in await (await cursor.execute(RECORDED_EVENTS, (run_id,))).fetchall()}
    finished = run["status"] in REPLAYED_TO_THE_END
    ops = RecordedOperations(steps, events, finished)
    replay = AgentRun(agent or get_agent(run["agent"]), ops, **await fork_overrides(run_id))
    divergence, outcome = None, None
    try:
        outcome = {"status": "succeeded", "output": await replay.execute(run["input"])}
    except RunFailed as failed:
        outcome = {"status": "failed", "reason": failed.reason}
    except Diverged as exc:
        divergence = str(exc)
    except OutOfHistory:
        outcome = {"status": run["status"]}
    if divergence is None and finished and ops.position < len(steps):
        extra = steps[ops.position]
        divergence = f"step {extra['function_id']}: the run went on to {extra['function_name']}, the code stopped"
    recorded = {"status": run["status"], "reason": run["reason"]} if run["status"] != "succeeded" else {"status": "succeeded", "output": run["output"]}
    if divergence is None and finished and not same_outcome(recorded, outcome):
        divergence = f"the run ended {recorded}, the code ends {outcome}"
    return {"run_id": run_id, "same": divergence is None, "divergence": divergence, "steps": ops.trace,
            "recorded_outcome": recorded, "replayed_outcome": outcome}


def same_outcome(recorded: dict[str, Any], replayed: dict[str, Any] | None) -> bool:
    if replayed is None:
        return False
    if recorded["status"] == "succeeded":
        return replayed == recorded
    return replayed["status"] == "failed" and replayed.get("reason") == recorded.get("reason")
