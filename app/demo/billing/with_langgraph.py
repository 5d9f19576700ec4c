"""The billing agent as a LangGraph graph (`pip install keel[langgraph]`), run by Keel: the same
tools, the same ledger, approvals and compensations as `billing`. Two spellings of one graph: a
`StateGraph` written out (`billing_langgraph`), and LangChain's prebuilt tool-calling agent
(`billing_langgraph_prebuilt`). Load it with `KEEL_AGENT_MODULES=app.demo.billing.with_langgraph`."""

from typing import Annotated, Any, TypedDict

from langchain.agents import create_agent
from langchain_core.messages import AnyMessage, SystemMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from app.demo.billing.agent import Resolution, billing
from app.demo.billing.tools import charge_customer, create_ticket, lookup_customer, send_email, update_plan
from workflows.frameworks.langgraph import ChatKeel, LangGraphAgent, langchain_tools

TOOLS = langchain_tools([lookup_customer, create_ticket, charge_customer, update_plan, send_email])
INSTRUCTIONS = billing.system_prompt()  # the same instructions, with the JSON schema of a Resolution


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def billing_graph() -> Any:
    model = ChatKeel().bind_tools(TOOLS)

    async def agent(state: State) -> dict[str, Any]:
        return {"messages": [await model.ainvoke([SystemMessage(INSTRUCTIONS), *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


billing_langgraph = LangGraphAgent("billing_langgraph", billing_graph(), output_type=Resolution, max_turns=12)
billing_langgraph_prebuilt = LangGraphAgent("billing_langgraph_prebuilt", create_agent(ChatKeel(), TOOLS, system_prompt=INSTRUCTIONS),
                                            output_type=Resolution, max_turns=12)
