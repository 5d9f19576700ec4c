"""LangGraph inside a Keel run (`pip install keel[langgraph]`).

    from workflows.frameworks.langgraph import ChatKeel, LangGraphAgent, langchain_tools

    graph = create_agent(ChatKeel(), langchain_tools([lookup_customer, charge_customer]), system_prompt="...")
    support = LangGraphAgent("support", graph, output_type=Resolution)

`ChatKeel` is a LangChain chat model whose every call is a Keel model step; `langchain_tools` turns
Keel `@tool`s into LangChain tools whose every call goes through Keel's ledger (and approval gate).
A node's `interrupt(value)` is a Keel approval: it waits in the inbox, expires by the agent's
`interrupts` policy, and the decision (`{"approved", "status", "decided_by", "comment"}`) is what
`interrupt()` returns when the graph resumes.

The graph must be compiled without a checkpointer: the run's durability is Keel's (see
`workflows.frameworks`), and a checkpointer of the graph's own would, on recovery, resume from its
own saved state while Keel replays the run from the start, so the two would disagree. Keel gives
each run an in-memory checkpointer of its own, which LangGraph needs to pause at an interrupt and
resume; it is dropped when the run ends and nothing relies on it across a crash."""

import inspect
import json
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.pregel import Pregel
from langgraph.types import Command
from pydantic import ConfigDict

from steps.errors import UserError
from steps.tools import ApprovalPolicy, Tool, tool
from workflows.agent import Agent, OutputT, Turns
from workflows.agent_loop import Halted, current_run

__all__ = ["ChatKeel", "KeelTool", "LangGraphAgent", "from_langchain", "langchain_tools"]

INTERRUPT = "interrupt"
"""The tool name an interrupt's approval request is filed under, in the inbox and the timeline."""
INTERRUPTS = ApprovalPolicy(required=True)
"""By default an interrupt waits a day, then counts as rejected; a rejection is the node's to handle."""


class ChatKeel(BaseChatModel):
    """A LangChain chat model whose every call is a Keel model step, with the run's model, retry
    policy, breakers, budgets, events and live token stream. It runs only inside a Keel run, and
    only asynchronously (`ainvoke`): Keel runs graphs on its event loop."""

    @property
    def _llm_type(self) -> str:
        return "keel"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Keel tools are described to the model as Keel describes them; any other, as LangChain does."""
        return self.bind(tools=[t.keel.schema() if isinstance(t, KeelTool) else convert_to_openai_tool(t) for t in tools], **kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        try:
            reply = await current_run().ask_model(convert_to_openai_messages(messages), kwargs.get("tools") or [])
        except Halted as halted:  # LangChain's async callbacks mishandle a BaseException: carry it as an Exception to `drive`
            raise RunHalted(halted) from None
        calls = [{"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"] or "{}"), "id": c["id"], "type": "tool_call"}
                 for c in reply.get("tool_calls") or []]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply["content"] or "", tool_calls=calls))])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise UserError("ChatKeel is asynchronous: Keel runs the graph with ainvoke")


class RunHalted(Exception):
    """The run failed during a model call; `LangGraphAgent.drive` raises the `Halted` it carries."""

    def __init__(self, halted: Halted) -> None:
        super().__init__(str(halted))
        self.halted = halted


class KeelTool(BaseTool):
    """A Keel `@tool` as a LangChain tool: each call goes through Keel's approval gate and ledger."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    keel: Tool

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        """A `ToolCall` (as `ToolNode` sends) is answered with a `ToolMessage`; plain arguments (a
        node calling the tool itself) with the tool's JSON result."""
        run = current_run()
        if isinstance(input, dict) and input.get("type") == "tool_call":
            content = await run.call_tool({"id": input["id"], "function": {"name": self.name, "arguments": input["args"]}})
            return ToolMessage(content=content, tool_call_id=input["id"], name=self.name)
        call_id = f"{self.name}:{len(run.tools_used)}:{run.turn}"
        return json.loads(await run.call_tool({"id": call_id, "function": {"name": self.name, "arguments": input}}))

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"tool {self.name} is asynchronous: Keel runs the graph with ainvoke")


def langchain_tools(tools: Sequence[Tool | BaseTool | Any]) -> list[KeelTool]:
    """Keel tools as LangChain tools. A plain async function is made a tool as `@tool` makes it, an
    existing LangChain tool as `from_langchain` makes it (use that to give it `@tool`'s options)."""
    built = [t if isinstance(t, Tool) else from_langchain(t) if isinstance(t, BaseTool) else tool(t) for t in tools]
    return [KeelTool(name=t.name, description=t.description, args_schema=t.arguments, keel=t) for t in built]


def from_langchain(existing: BaseTool, **options: Any) -> Tool:
    """An existing LangChain tool as a Keel tool, with `@tool`'s options (`reconcile=`, `compensation=`,
    `requires_approval=`, `irreversible=`, `idempotency_key=`, `retry=`, ...): its calls then go through
    the ledger. Its name, description and argument schema are the LangChain tool's."""
    if isinstance(existing, KeelTool):
        return existing.keel
    fields = existing.get_input_schema().model_fields

    async def call(**arguments: Any) -> Any:
        return await existing.ainvoke(arguments)

    call.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=field.annotation,
                          default=inspect.Parameter.empty if field.is_required() else field.default)
        for name, field in fields.items()])
    call.__annotations__ = {name: field.annotation for name, field in fields.items()}
    args = "".join(f"\n    {name}: {field.description}" for name, field in fields.items() if field.description)
    call.__doc__ = f"{existing.description}\n\nArgs:{args}" if args else existing.description
    return tool(call, name=existing.name, **options)


class LangGraphAgent(Agent[OutputT]):
    """A compiled LangGraph graph, run as a Keel agent: started like any other (`POST /v1/runs`,
    `keel run`, the console), its input becomes the graph's first human message, and its final
    answer is the last message's text (validated against `output_type`, re-asked when it is not).

    `graph`: a compiled graph (a `StateGraph`'s `compile()`, or `langchain.agents.create_agent`) whose
    model is `ChatKeel` and whose tools come from `langchain_tools`, compiled without a checkpointer.
    `tools`: the Keel tools it calls; by default those found in its `ToolNode`s. `interrupts`: the
    approval policy of an `interrupt()` (its deadline, what expiry and rejection mean). Every other
    keyword is `Agent`'s; a step of the graph counts as a turn only when it calls the model."""

    framework = "langgraph"

    def __init__(self, name: str, graph: Pregel, *, tools: Sequence[Tool] | None = None,
                 interrupts: ApprovalPolicy = INTERRUPTS, **options: Any) -> None:
        if not isinstance(graph, Pregel):
            raise UserError(f"graph of agent {name!r} must be a compiled LangGraph graph (call .compile())")
        if graph.checkpointer not in (None, False):
            raise UserError(f"graph of agent {name!r} has a checkpointer: compile it without one. Keel makes the run durable, and a "
                            "second store of its state would resume from its own checkpoint while Keel replays the run")
        super().__init__(name, instructions=options.pop("instructions", ""), tools=list(tools if tools is not None else graph_tools(graph)),
                         **options)
        self.graph = graph
        self.interrupts = interrupts

    async def drive(self, run: Turns, user_input: str) -> Any:
        graph = self.graph.copy({"checkpointer": InMemorySaver()})  # a run's own scratch space, for interrupts
        config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * self.max_turns + 10}

        async def invoke(graph_input: Any) -> dict[str, Any]:
            try:
                return await graph.ainvoke(graph_input, config)
            except RunHalted as stopped:
                raise stopped.halted from None

        state = await invoke({"messages": [HumanMessage(user_input)]})
        while True:
            if state.get("__interrupt__"):
                state = await invoke(Command(resume=await self.decide(run, state["__interrupt__"])))
                continue
            output, problem = self.parse_output(final_text(state))
            if problem is None:
                return output
            await run.reask(problem)
            state = await invoke({"messages": [HumanMessage(f"Your final answer was not accepted: {problem}. Try again.")]})

    async def decide(self, run: Turns, interrupts: list[Any]) -> Any:
        """A person's decision on the graph's (first) interrupt, through Keel's approval inbox."""
        value = interrupts[0].value
        decision = await run.ask_person(INTERRUPT, self.interrupts, value if isinstance(value, dict) else {"value": value},
                                        f"interrupt:{run.turn}")
        return {"approved": decision["status"] == "approved", "status": decision["status"], "decided_by": decision.get("decided_by"),
                "comment": decision.get("comment")}


def graph_tools(graph: Pregel) -> list[Tool]:
    """The Keel tools in the graph's `ToolNode`s."""
    found: dict[str, Tool] = {}
    for node in graph.nodes.values():
        bound = node.bound
        if isinstance(bound, ToolNode):
            found.update({t.keel.name: t.keel for t in bound.tools_by_name.values() if isinstance(t, KeelTool)})
    return list(found.values())


def final_text(state: dict[str, Any]) -> str | None:
    messages = state.get("messages") or []
    if not messages or not isinstance(messages[-1], AIMessage):
        return None
    content = messages[-1].content
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content if isinstance(part, dict))
