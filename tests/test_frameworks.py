"""LangGraph, the OpenAI Agents SDK and Pydantic AI inside Keel runs: what each framework adds beyond
the billing scenarios that all four billing agents pass (tests/test_demo_happy_path.py and others).

The test agents live in `tests.framework_agents`, which only workers import: an agent registered in
this process when tests are collected would change the OpenAPI document `test_api_fuzz` fuzzes."""

import json
import subprocess
import sys
from collections.abc import Callable

import httpx
import psycopg
import pytest
from langchain_core.tools import tool as langchain_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from tests.conftest import WORKER_MODULES, fetch_value, wait_for_approval, wait_for_run
from tests.processes import ROOT, Worker
from workflows import UserError
from workflows.frameworks.langgraph import ChatKeel, LangGraphAgent, from_langchain, langchain_tools

FRAMEWORK_BILLING_AGENTS = ["billing_langgraph", "billing_openai_agents", "billing_pydantic_ai"]


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_a_langgraph_interrupt_waits_in_the_inbox_and_the_decision_resumes_the_graph(api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                                          customer: str) -> None:
    run_id = await start(api, "refund_langgraph", f"Refund customer {customer}")
    waiting = await wait_for_approval(api, run_id)
    inbox = (await api.get("/v1/approvals", params={"status": "pending", "run_id": run_id})).json()

    await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "approve", "comment": "fine"})
    run = await wait_for_run(api, run_id)

    assert (waiting["tool"], waiting["arguments"]) == ("interrupt", {"action": "refund", "amount_cents": 500})
    assert [item["approval_id"] for item in inbox] == [waiting["approval_id"]]
    assert run["status"] == "succeeded", run
    assert json.loads(run["output"]) == {"approved": True, "status": "approved"}
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE customer_id = %s", customer) == 1


async def test_an_unanswered_interrupt_expires_and_the_graph_hears_it(api: httpx.AsyncClient, customer: str) -> None:
    run = await wait_for_run(api, await start(api, "refund_langgraph_quick", f"Refund customer {customer}"))

    assert run["status"] == "succeeded", run
    assert json.loads(run["output"]) == {"approved": False, "status": "expired"}


async def test_a_rejected_interrupt_can_fail_the_run(api: httpx.AsyncClient, customer: str) -> None:
    run_id = await start(api, "refund_langgraph_strict", f"Refund customer {customer}")
    waiting = await wait_for_approval(api, run_id)

    await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "reject"})
    run = await wait_for_run(api, run_id)

    assert (run["status"], run["reason"]) == ("failed", "approval_rejected")


async def test_a_graph_waiting_on_an_interrupt_survives_sigkill_without_a_checkpointer(start_worker: Callable[..., Worker],
                                                                                       db: psycopg.AsyncConnection, customer: str) -> None:
    modules = {"KEEL_AGENT_MODULES": f"{WORKER_MODULES},tests.framework_agents"}
    worker = start_worker("interrupt-crash", **modules)
    async with worker.client() as api:
        run_id = await start(api, "refund_langgraph", f"Refund customer {customer}")
        approval_id = (await wait_for_approval(api, run_id))["approval_id"]

    worker.kill()
    worker = start_worker("interrupt-crash", **modules)
    async with worker.client() as api:
        assert (await wait_for_approval(api, run_id))["approval_id"] == approval_id  # the same request, not a second one
        await api.post(f"/v1/approvals/{approval_id}", json={"decision": "approve"})
        run = await wait_for_run(api, run_id)

    assert run["status"] == "succeeded", run
    assert json.loads(run["output"])["approved"] is True
    assert await fetch_value(db, "SELECT count(*) FROM keel.approvals WHERE run_id = %s", run_id) == 1
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE customer_id = %s", customer) == 1
    assert await fetch_value(db, "SELECT attempts FROM keel.tool_calls WHERE run_id = %s", run_id) == 1  # replayed, not called again


async def test_agents_sdk_handoffs_show_in_the_timeline(api: httpx.AsyncClient, customer: str) -> None:
    run = await wait_for_run(api, await start(api, "billing_openai_agents", f"Upgrade customer {customer} to the pro plan"))
    events = (await api.get(f"/v1/runs/{run['run_id']}/events")).json()

    handoffs = [e for e in events if e["kind"] == "handoff"]
    askers = [e["payload"]["agent"] for e in events if e["kind"] == "llm_request"]
    assert run["status"] == "succeeded", run
    assert [(h["payload"], h["summary"]) for h in handoffs] == [
        ({"from": "triage", "to": "billing specialist"}, "triage hands the conversation to billing specialist")]
    assert askers == ["triage"] + ["billing specialist"] * 6
    assert events.index(handoffs[0]) < next(i for i, e in enumerate(events) if e["kind"] == "tool_call")


@pytest.mark.parametrize("agent", FRAMEWORK_BILLING_AGENTS)
async def test_model_calls_are_keel_model_steps_and_a_failure_ends_the_run_through_the_frameworks_loop(
        agent: str, api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    # The first call meets a 503 with Retry-After (Keel retries it); the call after the ticket a 400 (the run fails, the ticket is
    # undone): the framework must neither retry on its own nor swallow the run's failure.
    after = 3 if agent == "billing_openai_agents" else 2  # model calls before the 400 (the 503's retry is not counted); the SDK's triage first
    await model.post("/faults", json={"kind": "status", "status": 503, "retry_after": 0.2, "match": customer, "times": 1})
    await model.post("/faults", json={"kind": "status", "status": 400, "match": customer, "after": after, "times": 1})

    run = await wait_for_run(api, await start(api, agent, f"Upgrade customer {customer} to the pro plan"))

    assert (run["status"], run["reason"]) == ("compensated", "model_failed"), run
    assert [(c["tool"], c["status"]) for c in run["compensations"]] == [("create_ticket", "succeeded")]
    assert await fetch_value(db, "SELECT string_agg(status, ',') FROM sandbox.tickets WHERE customer_id = %s", customer) == "closed"
    retries = await (await db.execute("SELECT payload -> 'error' ->> 'status', (payload ->> 'wait')::float FROM keel.events WHERE run_id = %s AND kind = 'retry'",
                                      (run["run_id"],))).fetchall()
    assert len(retries) == 1 and retries[0][0] == "503" and retries[0][1] >= 0.2  # Retry-After honoured


async def test_a_framework_that_breaks_ends_the_run_with_a_reason(api: httpx.AsyncClient) -> None:
    run = await wait_for_run(api, await start(api, "broken_langgraph", "hello"))

    assert (run["status"], run["reason"]) == ("failed", "internal_error"), run
    assert "the node broke" in run["error"]


def test_a_graph_with_a_checkpointer_of_its_own_is_refused() -> None:
    graph = StateGraph(MessagesState)
    graph.add_node("nothing", lambda state: {})
    graph.add_edge(START, "nothing")
    with pytest.raises(UserError, match="checkpointer"):
        LangGraphAgent("saves-its-own-state", graph.compile(checkpointer=InMemorySaver()))


async def test_the_seams_refuse_to_run_outside_a_keel_run() -> None:
    with pytest.raises(UserError, match="only inside a Keel run"):
        await ChatKeel().ainvoke("hello")


def test_the_core_imports_and_serves_without_any_framework_installed() -> None:
    blocked = ["langgraph", "langchain", "langchain_core", "agents", "pydantic_ai"]
    script = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Blocked())
import app.cli, workflows
from app.config import Settings
from app.main import create_app
create_app(Settings(KEEL_AGENT_MODULES="app.demo.billing")).openapi()
try:
    import workflows.frameworks.langgraph
except ModuleNotFoundError:
    print("core ok")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "core ok", done.stderr


async def test_an_existing_langchain_tool_takes_the_options_of_keel_tools() -> None:
    @langchain_tool
    async def search(query: str, limit: int = 3) -> str:
        """Search the knowledge base.

        Args:
            query: What to look for.
            limit: How many hits.
        """
        return f"{limit} hits for {query}"

    wrapped = from_langchain(search, irreversible=True, dependency="knowledge-base")
    parameters = wrapped.schema()["function"]["parameters"]

    assert (wrapped.name, wrapped.irreversible, wrapped.dependency) == ("search", True, "knowledge-base")
    assert parameters["required"] == ["query"] and parameters["properties"]["query"]["description"] == "What to look for."
    assert await wrapped.invoke(None, {"query": "refunds"}) == "3 hits for refunds"  # type: ignore[arg-type]
    assert langchain_tools([search])[0].keel.name == "search"


async def test_a_framework_run_forks_with_another_model_but_not_other_instructions(api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                                   customer: str) -> None:
    run = await wait_for_run(api, await start(api, "billing_pydantic_ai", f"Upgrade customer {customer} to the pro plan"))
    from_step = await fetch_value(db, "SELECT step_id FROM keel.events WHERE run_id = %s AND kind = 'tool_call' AND payload ->> 'tool' = 'update_plan'",
                                  run["run_id"])

    refused = await api.post(f"/v1/runs/{run['run_id']}/fork", json={"from_step": from_step, "instructions": "Be brief."})
    response = await api.post(f"/v1/runs/{run['run_id']}/fork", json={"from_step": from_step, "model": "scripted-2"})
    fork = await wait_for_run(api, response.json()["run_id"])

    assert refused.status_code == 422 and "model only" in refused.json()["error"]["message"]
    assert fork["status"] == "succeeded", fork
    live = await (await db.execute("SELECT tool FROM keel.tool_calls WHERE run_id = %s ORDER BY step_id", (fork["run_id"],))).fetchall()
    assert live == [("update_plan",), ("send_email",)]  # the framework ran again from the start; the calls before the fork were served
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    models = await (await db.execute("SELECT DISTINCT payload ->> 'model' FROM keel.events WHERE run_id = %s AND kind = 'llm_request'",
                                     (fork["run_id"],))).fetchall()
    assert models == [("scripted-2",)]
