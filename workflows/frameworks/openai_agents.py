"""The OpenAI Agents SDK inside a Keel run (`pip install keel[openai-agents]`).

    from agents import Agent
    from workflows.frameworks.openai_agents import OpenAIAgentsAgent, function_tools

    specialist = Agent(name="billing", instructions="...", tools=function_tools([charge_customer]), output_type=Resolution)
    triage = Agent(name="triage", instructions="...", handoffs=[specialist])
    support = OpenAIAgentsAgent("support", triage)

Keel runs the starting agent with `Runner.run`, its `RunConfig` naming `KeelModel` for every agent
(through the SDK's model and model-provider seams): each model call is a Keel model step. Tools made
by `function_tools` go through Keel's ledger and approval gate. A handoff is a `handoff` event in the
run's timeline, and the model calls after it carry the new agent's name. The SDK's tracing is off
(the timeline is the trace); its own function tools, without Keel, run inline with no ledger."""

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Agent as SDKAgent
from agents import FunctionTool, ModelBehaviorError, RunConfig, RunContextWrapper, RunHooks, Runner
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem
from agents.models.chatcmpl_converter import Converter
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool_context import ToolContext as SDKToolContext
from agents.usage import Usage
from openai.types.chat import ChatCompletionMessage
from pydantic import TypeAdapter

from steps.errors import UserError
from steps.tools import Tool, tool
from workflows.agent import Agent, OutputT, Turns
from workflows.agent_loop import current_run

__all__ = ["KeelModel", "KeelModelProvider", "OpenAIAgentsAgent", "function_tools"]

JSON = TypeAdapter(Any)


class KeelModel(Model):
    """An Agents SDK model whose every call is a Keel model step (the run's model, retry policy,
    breakers, budgets, events and live token stream). Only inside a Keel run, and not streamed."""

    def __init__(self) -> None:
        self.agent_name: str | None = None
        """The SDK agent that asks (set by `KeelHooks` as each agent starts), for the timeline."""

    async def get_response(self, system_instructions: str | None, input: str | list[TResponseInputItem], model_settings: Any,
                           tools: list[Any], output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff[Any, Any]],
                           tracing: ModelTracing, **kwargs: Any) -> ModelResponse:
        system = "\n\n".join(filter(None, [system_instructions, output_instructions(output_schema)]))
        messages = [*([{"role": "system", "content": system}] if system else []), *Converter.items_to_messages(input)]
        schemas = [t.on_invoke_tool.tool.schema() if isinstance(t.on_invoke_tool, KeelInvoker) else Converter.tool_to_openai(t) for t in tools]
        schemas += [Converter.convert_handoff_tool(h) for h in handoffs]
        reply = await current_run().ask_model(json.loads(json.dumps(messages, default=str)), schemas, label=self.agent_name)
        message = ChatCompletionMessage.model_validate({"role": "assistant", "content": reply.get("content"), "tool_calls": reply.get("tool_calls")})
        return ModelResponse(output=Converter.message_to_output_items(message), usage=Usage(requests=1), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise UserError("Keel runs Agents SDK agents with Runner.run; the run's live feed streams the model's output")


def output_instructions(schema: AgentOutputSchemaBase | None) -> str | None:
    """What Chat Completions' `response_format` would say, as an instruction (Keel's model step sends none)."""
    if schema is None or schema.is_plain_text():
        return None
    return f"When you are done, reply with only a JSON object matching this JSON schema:\n{json.dumps(schema.json_schema())}"


class KeelModelProvider(ModelProvider):
    """Every model name an agent gives resolves to Keel's model step."""

    def __init__(self, model: KeelModel) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


@dataclass(frozen=True)
class KeelInvoker:
    """A function tool's `on_invoke_tool` that calls the Keel tool through the run's ledger."""

    tool: Tool

    async def __call__(self, ctx: SDKToolContext[Any], arguments: str) -> str:
        return await current_run().call_tool({"id": ctx.tool_call_id, "function": {"name": self.tool.name, "arguments": arguments}})


def function_tools(tools: Sequence[Tool | Any]) -> list[FunctionTool]:
    """Keel tools (or plain async functions, made tools as `@tool` would) as Agents SDK function tools."""
    built = [t if isinstance(t, Tool) else tool(t) for t in tools]
    return [FunctionTool(name=t.name, description=t.description, params_json_schema=t.schema()["function"]["parameters"],
                         on_invoke_tool=KeelInvoker(t), strict_json_schema=False) for t in built]


class KeelHooks(RunHooks[Any]):
    """Puts handoffs in the run's timeline, and tells the model which agent asks."""

    def __init__(self, run: Turns, model: KeelModel) -> None:
        self.run = run
        self.model = model

    async def on_agent_start(self, context: Any, agent: SDKAgent[Any]) -> None:
        self.model.agent_name = agent.name

    async def on_handoff(self, context: RunContextWrapper[Any], from_agent: SDKAgent[Any], to_agent: SDKAgent[Any]) -> None:
        await self.run.record("handoff", {"from": from_agent.name, "to": to_agent.name})


class OpenAIAgentsAgent(Agent[OutputT]):
    """An Agents SDK agent (and the agents it hands off to), run as a Keel agent: its input is the
    user message, its final answer the run's `final_output` (as JSON). Every other keyword is
    `Agent`'s; `tools` defaults to the Keel tools of the starting agent and of every agent it can
    reach by handoffs."""

    framework = "openai-agents"

    def __init__(self, name: str, agent: SDKAgent[Any], *, tools: Sequence[Tool] | None = None, **options: Any) -> None:
        if not isinstance(agent, SDKAgent):
            raise UserError(f"agent {name!r} needs an agents.Agent")
        super().__init__(name, instructions=options.pop("instructions", ""), tools=list(tools if tools is not None else reachable_tools(agent)),
                         **options)
        self.agent = agent

    async def drive(self, run: Turns, user_input: str) -> Any:
        model = KeelModel()
        config = RunConfig(model=model, model_provider=KeelModelProvider(model), tracing_disabled=True)
        try:  # Keel's `max_turns` is the limit that counts: the SDK's own stops one turn later
            result = await Runner.run(self.agent, user_input, max_turns=self.max_turns + 1, hooks=KeelHooks(run, model), run_config=config)
        except ModelBehaviorError as exc:  # a final answer that does not match the agent's output type, say
            await run.fail("invalid_model_output", str(exc))
        return JSON.dump_python(result.final_output, mode="json")


def reachable_tools(start: SDKAgent[Any]) -> list[Tool]:
    """The Keel tools of `start` and of every agent reachable from it by handoffs."""
    found: dict[str, Tool] = {}
    seen: set[int] = set()
    pending = [start]
    while pending:
        agent = pending.pop()
        if id(agent) in seen:
            continue
        seen.add(id(agent))
        found.update({t.on_invoke_tool.tool.name: t.on_invoke_tool.tool for t in agent.tools
                      if isinstance(t, FunctionTool) and isinstance(t.on_invoke_tool, KeelInvoker)})
        pending += [h for h in agent.handoffs if isinstance(h, SDKAgent)]
    return list(found.values())
