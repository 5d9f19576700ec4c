"""The graph of workload 8 (`bench/suite/frameworks.py`), made durable two ways: run by Keel
(`LangGraphAgent`), or compiled with LangGraph's `AsyncPostgresSaver` (`postgres_runner`)."""

import json
import uuid
from typing import Annotated, Any, TypedDict

from dbos import DBOS, SetWorkflowID
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from bench.suite import variants as v
from workflows.frameworks.langgraph import ChatKeel, LangGraphAgent, langchain_tools


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def work_graph(model: BaseChatModel, tools: list[Any]) -> StateGraph:
    bound = model.bind_tools(tools)

    async def agent(state: State) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke([SystemMessage(v.SYSTEM), *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph


class PlainChat(BaseChatModel):
    """The bench model through the same `openai` client, as a LangChain chat model: no Keel in the way."""

    @property
    def _llm_type(self) -> str:
        return "bench"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        completion = await v.MODEL["client"].chat.completions.create(model="scripted", messages=convert_to_openai_messages(messages),
                                                                     tools=kwargs.get("tools"))
        m = completion.choices[0].message
        calls = [{"name": c.function.name, "args": json.loads(c.function.arguments), "id": c.id, "type": "tool_call"} for c in m.tool_calls or []]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=m.content or "", tool_calls=calls))])

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError


async def plain_work(n: int) -> dict[str, int]:
    """Do one unit of work.

    Args:
        n: Which unit.
    """
    return await v.run_work(n)


bench_langgraph = LangGraphAgent("bench-langgraph", work_graph(ChatKeel(), langchain_tools([v.work])).compile(), max_turns=200)


async def keel_langgraph_run(prompt: str) -> Any:
    from workflows.agent_loop import agent_run

    with SetWorkflowID(uuid.uuid4().hex):
        handle = await DBOS.start_workflow_async(agent_run, {"agent": bench_langgraph.name, "input": prompt})
    return await handle.get_result()



def postgres_runner(saver: Any) -> Any:
    """The same graph with a plain chat model and tool, compiled with `saver`."""
    graph = work_graph(PlainChat(), [StructuredTool.from_function(coroutine=plain_work, name="work")]).compile(checkpointer=saver)

    async def run(prompt: str) -> Any:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 10_000}
        return (await graph.ainvoke({"messages": [HumanMessage(prompt)]}, config, durability="sync"))["messages"][-1].content

    return run
