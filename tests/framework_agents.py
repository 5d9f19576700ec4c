"""Framework agents for the tests (loaded by the shared worker, and by workers a test starts for them)."""

import json
import re
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from tests.agents import open_ticket
from workflows import ApprovalPolicy
from workflows.frameworks.langgraph import LangGraphAgent, langchain_tools

(TICKET,) = langchain_tools([open_ticket])


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def refund_graph() -> Any:
    """Open a ticket (a Keel tool the node calls itself), then ask a person (`interrupt`), then answer."""

    async def prepare(state: State) -> dict[str, Any]:
        customer = re.search(r"C-\d+", state["messages"][0].content).group(0)  # type: ignore[union-attr]
        ticket = await TICKET.ainvoke({"customer_id": customer, "subject": f"refund for {customer}"})
        return {"messages": [AIMessage(json.dumps(ticket))]}

    async def confirm(state: State) -> dict[str, Any]:
        decision = interrupt({"action": "refund", "amount_cents": 500})
        return {"messages": [AIMessage(json.dumps({"approved": decision["approved"], "status": decision["status"]}))]}

    graph = StateGraph(State)
    graph.add_node("prepare", prepare)
    graph.add_node("confirm", confirm)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "confirm")
    return graph.compile()


refund_langgraph = LangGraphAgent("refund_langgraph", refund_graph(), tools=[open_ticket])
refund_langgraph_quick = LangGraphAgent("refund_langgraph_quick", refund_graph(), tools=[open_ticket], interrupts=ApprovalPolicy(required=True, timeout=1))
refund_langgraph_strict = LangGraphAgent("refund_langgraph_strict", refund_graph(), tools=[open_ticket],
                                         interrupts=ApprovalPolicy(required=True, on_reject="fail"))


def broken_graph() -> Any:
    async def broken(state: State) -> dict[str, Any]:
        raise RuntimeError("the node broke")

    graph = StateGraph(State)
    graph.add_node("broken", broken)
    graph.add_edge(START, "broken")
    return graph.compile()


broken_langgraph = LangGraphAgent("broken_langgraph", broken_graph(), tools=[])
