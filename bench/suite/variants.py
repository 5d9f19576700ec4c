"""The same agent five ways: a plain Python loop (the floor), raw DBOS, Keel, LangGraph + PostgresSaver,
(Temporal lives in `temporal_variant`). Each runs the script its prompt names (`tools=N`: N tool-calling model turns, one `work` tool
call each, then a final model turn); the model and the tool are the same objects in every variant."""

import asyncio
import json
import operator
import time
import uuid
from typing import Annotated, Any, TypedDict

from dbos import DBOS, SetWorkflowID

from bench.suite.model import TOOL_SCHEMA, tool_result
from workflows import Agent, tool

SYSTEM = "You are a benchmark agent."
TOOL_LATENCY = {"seconds": 0.0}  # the tool's latency, set by a workload
TOOLS_RUNNING = {"now": 0, "peak": 0}  # tool calls inside `run_work` at once (workload 9)
MODEL: dict[str, Any] = {}  # the shared clients ("client", and "sync" for the sync variant), set at start-up


def first_messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


async def ask(messages: list[dict[str, Any]]) -> dict[str, Any]:
    completion = await MODEL["client"].chat.completions.create(model="scripted", messages=messages, tools=[TOOL_SCHEMA])
    m = completion.choices[0].message
    out: dict[str, Any] = {"role": "assistant", "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in m.tool_calls]
    return out


def ask_sync(messages: list[dict[str, Any]]) -> dict[str, Any]:
    completion = MODEL["sync"].chat.completions.create(model="scripted", messages=messages, tools=[TOOL_SCHEMA])
    m = completion.choices[0].message
    out: dict[str, Any] = {"role": "assistant", "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in m.tool_calls]
    return out


async def run_work(n: int) -> dict[str, int]:
    if TOOL_LATENCY["seconds"]:
        TOOLS_RUNNING["now"] += 1
        TOOLS_RUNNING["peak"] = max(TOOLS_RUNNING["peak"], TOOLS_RUNNING["now"])
        try:
            await asyncio.sleep(TOOL_LATENCY["seconds"])
        finally:
            TOOLS_RUNNING["now"] -= 1
    return tool_result(n)


def tool_reply(call: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}


# --- the floor: a plain Python loop -------------------------------------------------------------

async def plain_agent(prompt: str) -> str:
    messages = first_messages(prompt)
    while True:
        reply = await ask(messages)
        messages.append(reply)
        if not reply.get("tool_calls"):
            return reply["content"]
        for call in reply["tool_calls"]:
            messages.append(tool_reply(call, await run_work(json.loads(call["function"]["arguments"])["n"])))


# --- raw DBOS: an async workflow, one async step per model call and per tool call ------------------

@DBOS.step(name="bench.model")
async def raw_model_step(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return await ask(messages)


@DBOS.step(name="bench.tool")
async def raw_tool_step(n: int) -> dict[str, int]:
    return await run_work(n)


@DBOS.workflow(name="bench.raw_agent")
async def raw_agent(prompt: str) -> str:
    messages = first_messages(prompt)
    while True:
        reply = await raw_model_step(messages)
        messages.append(reply)
        if not reply.get("tool_calls"):
            return reply["content"]
        for call in reply["tool_calls"]:
            messages.append(tool_reply(call, await raw_tool_step(json.loads(call["function"]["arguments"])["n"])))


async def raw_dbos_run(prompt: str) -> str:
    with SetWorkflowID(uuid.uuid4().hex):
        handle = await DBOS.start_workflow_async(raw_agent, prompt)
    return await handle.get_result()


# --- raw DBOS, synchronous: a sync workflow on DBOS's thread pool, sync steps, the sync openai client ---

@DBOS.step(name="bench.model_sync")
def raw_model_step_sync(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return ask_sync(messages)


@DBOS.step(name="bench.tool_sync")
def raw_tool_step_sync(n: int) -> dict[str, int]:
    if TOOL_LATENCY["seconds"]:
        time.sleep(TOOL_LATENCY["seconds"])
    return tool_result(n)


@DBOS.workflow(name="bench.raw_agent_sync")
def raw_agent_sync(prompt: str) -> str:
    messages = first_messages(prompt)
    while True:
        reply = raw_model_step_sync(messages)
        messages.append(reply)
        if not reply.get("tool_calls"):
            return reply["content"]
        for call in reply["tool_calls"]:
            messages.append(tool_reply(call, raw_tool_step_sync(json.loads(call["function"]["arguments"])["n"])))


def _raw_sync(prompt: str) -> str:
    with SetWorkflowID(uuid.uuid4().hex):
        handle = DBOS.start_workflow(raw_agent_sync, prompt)
    return handle.get_result()


async def raw_dbos_sync_run(prompt: str) -> str:
    """Waited for from a thread (as an async caller must): the workflow runs on DBOS's thread pool."""
    return await asyncio.to_thread(_raw_sync, prompt)


# --- Keel: a real Agent with a @tool, through keel.agent_run ----------------------------------------

@tool
async def work(n: int) -> dict[str, int]:
    """Do one unit of work.

    Args:
        n: Which unit.
    """
    return await run_work(n)


bench_agent = Agent("bench", instructions=SYSTEM, tools=[work], max_turns=200)


async def keel_run(prompt: str) -> Any:
    from workflows.agent_loop import agent_run

    with SetWorkflowID(uuid.uuid4().hex):
        handle = await DBOS.start_workflow_async(agent_run, {"agent": "bench", "input": prompt})
    return await handle.get_result()


async def keel_start(prompt: str, run_id: str | None = None, queued: bool = False) -> str:
    """Start a run at once, as the per-step workloads do; `queued`: enqueue it on Keel's run queue, as
    `POST /v1/runs` does, so the worker admits it when it has room."""
    from workflows import run_queue
    from workflows.agent_loop import agent_run

    run_id = run_id or uuid.uuid4().hex
    with SetWorkflowID(run_id):
        if queued:
            await DBOS.enqueue_workflow_async(run_queue.current().name, agent_run, {"agent": "bench", "input": prompt})
        else:
            await DBOS.start_workflow_async(agent_run, {"agent": "bench", "input": prompt})
    return run_id


# --- LangGraph with AsyncPostgresSaver, durability="sync" ----------------------------------------------

class GraphState(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]


async def lg_model(state: GraphState) -> dict[str, Any]:
    return {"messages": [await ask(state["messages"])]}


async def lg_tool(state: GraphState) -> dict[str, Any]:
    calls = state["messages"][-1]["tool_calls"]
    return {"messages": [tool_reply(c, await run_work(json.loads(c["function"]["arguments"])["n"])) for c in calls]}


def lg_route(state: GraphState) -> str:
    return "tool" if state["messages"][-1].get("tool_calls") else "__end__"


class LangGraphVariant:
    def __init__(self, conninfo: str, pool_size: int = 10) -> None:
        self.conninfo = conninfo
        self.pool_size = pool_size

    async def start(self) -> None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.graph import StateGraph
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(self.conninfo, min_size=1, max_size=self.pool_size, open=False,
                                        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await self.pool.open()
        self.saver = AsyncPostgresSaver(self.pool)
        await self.saver.setup()
        builder = StateGraph(GraphState)
        builder.add_node("model", lg_model)
        builder.add_node("tool", lg_tool)
        builder.add_edge("__start__", "model")
        builder.add_conditional_edges("model", lg_route, ["tool", "__end__"])
        builder.add_edge("tool", "model")
        self.graph = builder.compile(checkpointer=self.saver)

    async def run(self, prompt: str, thread_id: str | None = None) -> str:
        config = {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}, "recursion_limit": 10_000}
        state = await self.graph.ainvoke({"messages": first_messages(prompt)}, config, durability="sync")
        return state["messages"][-1]["content"]

    async def stop(self) -> None:
        await self.pool.close()
