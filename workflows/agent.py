"""`Agent`: the declaration of an agent, and the registry of agents by their durable name."""

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, Protocol

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar

from steps.errors import UserError
from steps.retry import RetryPolicy
from steps.tools import ApprovalPolicy, Tool, tool

AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HANDOFF_PREFIX = "transfer_to_"
"""A handoff is offered to the model as a tool named so (the OpenAI Agents SDK's convention)."""
MAX_TOOL_NAME = 64
OutputT = TypeVar("OutputT", default=str)
"""The type of an agent's final answer: its `output_type`, or `str` without one."""
_registry: dict[str, "Agent[Any]"] = {}


class Turns(Protocol):
    """What an agent's reasoning loop can ask of the durable run it is in (`workflows.agent_loop.AgentRun`):
    Keel's own loop uses it, and so do the framework adapters (`workflows.frameworks`)."""

    turn: int
    """Model calls so far."""

    async def keel_loop(self, user_input: str) -> Any: ...
    async def ask_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, label: str | None = None) -> dict[str, Any]: ...
    async def call_tool(self, call: dict[str, Any]) -> str: ...
    async def ask_person(self, name: str, policy: ApprovalPolicy, arguments: dict[str, Any], call_id: str) -> dict[str, Any]: ...
    async def reask(self, problem: str, tool_call_id: str | None = None) -> None: ...
    async def record(self, kind: str, payload: dict[str, Any]) -> None: ...
    async def fail(self, reason: str, message: str) -> NoReturn: ...


class UnknownAgent(UserError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(_registry)) or "none"
        super().__init__(f"unknown agent {name!r} (known: {known})")
        self.name = name


class Agent(Generic[OutputT]):
    """An agent: instructions, a model, tools, and what its final answer must look like.

    `name` is its durable identity (recorded with every run), so it is required and unique.
    Mistakes in the declaration raise `UserError` here, not on turn seven. `Agent[Resolution]`
    (inferred from `output_type`) gives a typed `result()`."""

    framework: ClassVar[str | None] = None
    """The framework whose loop reasons (`workflows.frameworks`), or None for Keel's own."""

    def __init__(
        self,
        name: str,
        *,
        instructions: str,
        tools: "list[Tool | Agent[Any] | Any]" = (),  # type: ignore[assignment]
        model: str | None = None,
        output_type: type[OutputT] | None = None,
        max_turns: int = 10,
        max_reasks: int = 3,
        model_retry: RetryPolicy | None = None,
        model_timeout: float | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        max_seconds: float | None = None,
        requires_approval: Callable[[Tool, dict[str, Any]], bool] | None = None,
        parallel_tool_calls: bool = True,
        handoffs: "list[Agent[OutputT]]" = (),  # type: ignore[assignment]
    ) -> None:
        """Budgets (`max_turns`, `max_tokens`, `max_cost_usd`, `max_seconds` of wall-clock time) are
        computed from recorded step outputs, so a recovered run sees the same totals; the next model
        call is refused once one is spent. `model_timeout` bounds one model call, in seconds.
        `requires_approval(tool, arguments)` adds an agent-wide rule to the tools' own.
        `parallel_tool_calls`: the tool calls the model asks for in one turn run at once; False runs
        them one after another, in the model's order, for tools that must not overlap.
        `handoffs`: agents the model may hand the conversation to, as it would call a tool
        (`transfer_to_<name>`); the run goes on under that agent, with its instructions and tools,
        within the budgets of the agent the run started with. They answer with the same
        `output_type`, since a run has one answer."""
        if not AGENT_NAME.match(name):
            raise UserError(f"agent name {name!r} must match {AGENT_NAME.pattern}")
        if name in _registry:
            raise UserError(f"an agent named {name!r} is already defined")
        if output_type is not None and not (isinstance(output_type, type) and issubclass(output_type, BaseModel)):
            raise UserError(f"output_type of agent {name!r} must be a Pydantic model class")
        if max_turns < 1 or max_reasks < 0:
            raise UserError("max_turns must be at least 1 and max_reasks at least 0")
        for label, limit in (("max_tokens", max_tokens), ("max_cost_usd", max_cost_usd), ("max_seconds", max_seconds),
                             ("model_timeout", model_timeout)):
            if limit is not None and limit <= 0:
                raise UserError(f"{label} must be positive, not {limit}")
        self.name = name
        self.instructions = instructions
        self.tools = {t.name: t for t in (t if isinstance(t, Tool) else t.as_tool() if isinstance(t, Agent) else tool(t) for t in tools)}
        if len(self.tools) != len(tools):
            raise UserError(f"agent {name!r} has two tools with the same name")
        self.model = model
        self.output_type = output_type
        self.max_turns = max_turns
        self.max_reasks = max_reasks
        self.model_retry = model_retry or RetryPolicy()
        self.model_timeout = model_timeout
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.max_seconds = max_seconds
        self.requires_approval = requires_approval
        self.parallel_tool_calls = parallel_tool_calls
        self.handoffs = {f"{HANDOFF_PREFIX}{target.name}": target for target in handoffs}
        self.reachable_tools = self._reachable_tools()
        """Every tool a run of this agent may call: its own, and those of the agents it may hand to."""
        self.tool_schemas = [t.schema() for t in self.tools.values()] + [
            handoff_schema(tool_name, target) for tool_name, target in self.handoffs.items()]
        _registry[name] = self

    def _reachable_tools(self) -> dict[str, Tool]:
        reachable = dict(self.tools)
        for tool_name, target in self.handoffs.items():
            if tool_name in self.tools or len(tool_name) > MAX_TOOL_NAME:
                raise UserError(f"agent {self.name!r} cannot offer its handoff to {target.name!r} as a tool named {tool_name!r}: "
                                f"{'a tool has that name' if tool_name in self.tools else f'longer than {MAX_TOOL_NAME} characters'}")
            if target.output_type is not self.output_type:
                raise UserError(f"agent {self.name!r} cannot hand off to {target.name!r}: a run has one answer, and they answer with "
                                f"{_type_name(self.output_type)} and {_type_name(target.output_type)}")
            for name, found in target.reachable_tools.items():
                if reachable.setdefault(name, found) is not found:  # the ledger names a call by its tool's name alone
                    raise UserError(f"agent {self.name!r} reaches two different tools named {name!r} (one through {target.name!r})")
        return reachable

    def as_tool(self, name: str | None = None, description: str | None = None) -> Tool:
        """This agent as another agent's tool (`tools=[agent]` does the same with the defaults): a call
        hands the model's `input` to this agent as a child run, which the caller awaits durably.

        The child has its own timeline and ledger; it spends from what the caller has left (turns,
        tokens, cost, wall-clock), it is cancelled with the caller, and the caller's rollback rolls
        it back, at the call's place among the caller's effects."""
        async def delegate(input: str) -> Any:
            """Args:
                input: what to ask the agent, in full: it sees nothing of this conversation.
            """
            raise AssertionError("an agent tool's call runs as a child run, not as a function")  # pragma: no cover

        built = tool(delegate, name=name or self.name)
        return dataclasses.replace(built, delegate=self, description=description or f"Ask the {self.name} agent: {_summary(self.instructions)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, tools={list(self.tools)})"

    async def drive(self, run: Turns, user_input: str) -> Any:
        """Reason until a final answer (JSON), asking `run` for every model and tool call. Keel's own
        loop; a framework adapter overrides this to run its framework's loop on the same calls."""
        return await run.keel_loop(user_input)

    def result(self, output: Any) -> OutputT:
        """A run's recorded output (JSON) as the typed final answer: an `output_type` instance, or the text."""
        if self.output_type is None:
            return output  # type: ignore[no-any-return]
        return self.output_type.model_validate(output)  # type: ignore[attr-defined, no-any-return]

    def system_prompt(self, instructions: str | None = None) -> str:
        """The agent's instructions (or others, for a fork), with the output schema it must follow."""
        instructions = instructions or self.instructions
        if self.output_type is None:
            return instructions
        schema = json.dumps(self.output_type.model_json_schema())
        return f"{instructions}\n\nWhen you are done, reply with only a JSON object matching this JSON schema:\n{schema}"

    def needs_approval(self, tool: Tool, arguments: dict[str, Any]) -> bool:
        return tool.approval.needed_for(arguments) or bool(self.requires_approval and self.requires_approval(tool, arguments))

    def parse_output(self, content: str | None) -> tuple[Any, str | None]:
        """The final answer as JSON, or the problem to tell the model."""
        if self.output_type is None:
            return (content, None) if content else (None, "the reply was empty")
        try:
            return self.output_type.model_validate_json(content or "").model_dump(mode="json"), None
        except ValidationError as exc:
            return None, f"the final answer does not match the schema: {_errors(exc)}"

    def parse_call(self, call: dict[str, Any]) -> tuple[Tool | None, dict[str, Any], str | None]:
        """The tool and validated arguments of a model's tool call, or the problem to tell the model."""
        function = call["function"]
        found = self.tools.get(function["name"])
        if found is None:
            return None, {}, f"there is no tool named {function['name']!r}; the tools are {', '.join(self.tools)}"
        try:  # the model's JSON text, or arguments a framework already parsed
            arguments = function["arguments"] if isinstance(function["arguments"], dict) else json.loads(function["arguments"] or "{}")
        except json.JSONDecodeError as exc:
            return found, {}, f"the arguments are not valid JSON ({exc})"
        try:
            return found, found.validate(arguments), None
        except ValidationError as exc:
            return found, {}, f"invalid arguments for {found.name}: {_errors(exc)}"


def get_agent(name: str) -> Agent[Any]:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownAgent(name) from None


def agent_names() -> list[str]:
    return sorted(_registry)


def handoff_schema(tool_name: str, target: Agent[Any]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": tool_name, "description": f"Hand the conversation to the {target.name} agent: {_summary(target.instructions)}",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}


def _type_name(output_type: type | None) -> str:
    return "text" if output_type is None else output_type.__name__


def _summary(instructions: str) -> str:
    first = instructions.strip().split("\n\n", 1)[0]
    return " ".join(first.split())[:300]


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
