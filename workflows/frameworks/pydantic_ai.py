"""Pydantic AI inside a Keel run (`pip install keel[pydantic-ai]`).

    from pydantic_ai import Agent, PromptedOutput
    from workflows.frameworks.pydantic_ai import PydanticAIAgent

    inner = Agent(instructions="...", output_type=PromptedOutput(Resolution))
    support = PydanticAIAgent("support", inner, tools=[lookup_customer, charge_customer])

Define the Pydantic AI agent as usual, without a model; Keel runs it with `KeelModel` (every request a
Keel model step) and adds its Keel tools as `KeelToolset` (every call through Keel's ledger and
approval gate), through `Agent.run(model=..., toolsets=...)`. Tools registered on the Pydantic AI
agent itself run inline, with no ledger: give tools with effects to Keel. Pydantic AI's own output
validation and retries stay in charge of the final answer."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import (
    InstructionPart,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool
from pydantic_ai.usage import UsageLimits
from pydantic_core import SchemaValidator, core_schema

from steps.errors import UserError
from steps.tools import Tool
from workflows.agent import Agent, OutputT, Turns
from workflows.agent_loop import current_run

__all__ = ["KeelModel", "KeelToolset", "PydanticAIAgent"]

JSON = TypeAdapter(Any)
ANY_ARGUMENTS = SchemaValidator(core_schema.dict_schema())
"""Keel validates a tool's arguments itself (and tells the model what is wrong, counting a re-ask)."""


class KeelModel(Model):
    """A Pydantic AI model whose every request is a Keel model step (the run's model, retry policy,
    breakers, budgets, events and live token stream). Only inside a Keel run."""

    @property
    def model_name(self) -> str:
        return "keel"

    @property
    def system(self) -> str:
        return "keel"

    async def request(self, messages: list[ModelMessage], model_settings: ModelSettings | None,
                      model_request_parameters: ModelRequestParameters) -> ModelResponse:
        model_settings, parameters = self.prepare_request(model_settings, model_request_parameters)
        tools = [*parameters.function_tools, *parameters.output_tools]
        reply = await current_run().ask_model(chat_messages(self.prepare_messages(messages, parameters), parameters),
                                              [tool_schema(t) for t in tools])
        parts: list[Any] = [TextPart(reply["content"])] if reply.get("content") else []
        parts += [ToolCallPart(c["function"]["name"], c["function"]["arguments"], tool_call_id=c["id"]) for c in reply.get("tool_calls") or []]
        return ModelResponse(parts=parts, model_name=self.model_name)


def tool_schema(definition: ToolDefinition) -> dict[str, Any]:
    return {"type": "function", "function": {"name": definition.name, "description": definition.description or "",
                                             "parameters": definition.parameters_json_schema}}


def chat_messages(messages: list[ModelMessage], parameters: ModelRequestParameters) -> list[dict[str, Any]]:
    """Pydantic AI's history as Chat Completions messages, its instructions first."""
    instructions = InstructionPart.join(parameters.instruction_parts) if parameters.instruction_parts else None
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for message in messages:
        if isinstance(message, ModelRequest):
            out += [m for part in message.parts if (m := request_part(part)) is not None]
        elif isinstance(message, ModelResponse):
            out.append(assistant_message(message))
    return out


def request_part(part: Any) -> dict[str, Any] | None:
    if isinstance(part, SystemPromptPart):
        return {"role": "system", "content": part.content}
    if isinstance(part, UserPromptPart):
        text = part.content if isinstance(part.content, str) else "".join(c for c in part.content if isinstance(c, str))
        return {"role": "user", "content": text}
    if isinstance(part, ToolReturnPart):
        content = part.content if isinstance(part.content, str) else json.dumps(JSON.dump_python(part.content, mode="json"))
        return {"role": "tool", "tool_call_id": part.tool_call_id, "content": content}
    return None  # parts that carry nothing for a Chat Completions model (settings deltas, ...)


def assistant_message(response: ModelResponse) -> dict[str, Any]:
    text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
    if calls:
        message["tool_calls"] = [{"id": c.tool_call_id, "type": "function", "function": {"name": c.tool_name, "arguments": c.args_as_json_str()}}
                                 for c in calls]
    return message


@dataclass
class KeelToolset(AbstractToolset[Any]):
    """Keel tools as a Pydantic AI toolset: each call goes through Keel's approval gate and ledger.
    Calls run one at a time (`sequential`), so a recovered run replays them in the same order."""

    tools: Sequence[Tool]

    @property
    def id(self) -> str:
        return "keel"

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        return {t.name: ToolsetTool(toolset=self, max_retries=0, args_validator=ANY_ARGUMENTS, tool_def=ToolDefinition(
            name=t.name, description=t.description, parameters_json_schema=t.schema()["function"]["parameters"], sequential=True))
            for t in self.tools}

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]) -> Any:
        if ctx.tool_call_id is None:
            raise UserError(f"tool {name} was called without a tool call ID")
        return json.loads(await current_run().call_tool({"id": ctx.tool_call_id, "function": {"name": name, "arguments": tool_args}}))


class PydanticAIAgent(Agent[OutputT]):
    """A Pydantic AI agent, run as a Keel agent: its input is the user prompt, its final answer its
    `result.output` (as JSON). `tools` are the Keel tools it may call; every other keyword is `Agent`'s
    (`output_type` there types `result()`; the Pydantic AI agent's own `output_type` shapes the answer)."""

    framework = "pydantic-ai"

    def __init__(self, name: str, agent: PydanticAgent[Any, Any], *, tools: Sequence[Tool | Any] = (), **options: Any) -> None:
        if not isinstance(agent, PydanticAgent):
            raise UserError(f"agent {name!r} needs a pydantic_ai.Agent")
        super().__init__(name, instructions=options.pop("instructions", ""), tools=list(tools), **options)
        self.agent = agent
        self.toolset = KeelToolset(list(self.tools.values()))

    async def drive(self, run: Turns, user_input: str) -> Any:
        # Keel's `max_turns` is the limit that counts: Pydantic AI's own stops one request later.
        limits = UsageLimits(request_limit=self.max_turns + 1)
        try:
            result = await self.agent.run(user_input, model=KeelModel(), toolsets=[self.toolset], usage_limits=limits)
        except UnexpectedModelBehavior as exc:  # its own output retries are spent
            await run.fail("invalid_model_output", str(exc))
        return JSON.dump_python(result.output, mode="json")
