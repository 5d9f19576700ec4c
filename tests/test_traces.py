"""OpenTelemetry traces (KEEL_OTLP_ENDPOINT): a worker exports over OTLP/HTTP to a collector in this
test, which decodes what the real exporter sends. A run is one trace, on every execution: its spans
are named and carry the GenAI conventions, the ledger's keys, the approval's decision and the undos,
and a run recovered after a SIGKILL joins the trace its first execution started."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import Worker

pytestmark = pytest.mark.process


@dataclass
class Collector:
    """An OTLP/HTTP traces receiver: every span it was sent, flattened."""

    url: str = ""
    spans: list[dict[str, Any]] = field(default_factory=list)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                       "parent_id": span.parent_span_id.hex(), "service": service, "status": span.status.code,
                                       "attributes": {a.key: value(a.value) for a in span.attributes}})

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["attributes"].get("keel.run_id") == run_id]

    async def wait_for(self, found: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := found()):
            assert time.monotonic() < deadline, f"spans never arrived; received: {sorted({s['name'] for s in self.spans})}"
            await asyncio.sleep(0.1)
        return result


def value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.receive(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def traced_worker(start_worker: Callable[..., Worker], collector: Collector) -> Callable[[], Worker]:
    # Spans leave the worker within 100 ms, so those of a worker about to be killed are not lost with it.
    return lambda: start_worker("traced", KEEL_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, f"{name} in {[s['name'] for s in spans]}"
    return found[0]


async def start(api: Any, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": "billing", "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_a_run_is_one_trace_with_genai_model_calls_and_ledger_keyed_tool_calls(
        traced_worker: Callable[[], Worker], collector: Collector, db: psycopg.AsyncConnection, customer: str) -> None:
    async with traced_worker().client() as api:
        run_id = await start(api, f"Upgrade customer {customer} to the pro plan")
        assert (await wait_for_run(api, run_id))["status"] == "succeeded"
    spans = await collector.wait_for(lambda: any(s["name"] == "invoke_agent billing" for s in collector.of_run(run_id)) and collector.of_run(run_id))

    submit, run = one(spans, "keel.submit"), one(spans, "invoke_agent billing")
    assert {s["trace_id"] for s in spans} == {submit["trace_id"]} and run["parent_id"] == submit["span_id"]
    assert run["service"] == "keel" and run["attributes"]["gen_ai.agent.name"] == "billing"
    assert run["attributes"]["keel.run.status"] == "succeeded" and run["attributes"]["keel.run.tokens"] > 0

    chats = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    responses = await fetch_value(db, "SELECT count(*) FROM keel.events WHERE run_id = %s AND kind = 'llm_response'", run_id)
    assert len(chats) == responses >= 2
    for chat in chats:
        attributes = chat["attributes"]
        assert chat["name"] == f"chat {attributes['gen_ai.request.model']}" and chat["parent_id"] == run["span_id"]
        assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.response.model"]
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["gen_ai.response.finish_reasons"] in (["tool_calls"], ["stop"])

    charge = one(spans, "execute_tool charge_customer")["attributes"]
    key = await fetch_value(db, "SELECT idempotency_key FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'", run_id)
    assert (charge["keel.tool.idempotency_key"], charge["keel.tool.attempt"], charge["keel.tool.outcome"]) == (key, 1, "succeeded")
    assert charge["gen_ai.tool.call.id"] and charge["gen_ai.operation.name"] == "execute_tool"


async def test_a_run_recovered_after_a_sigkill_continues_its_trace_through_the_approval(
        traced_worker: Callable[[], Worker], collector: Collector, customer: str) -> None:
    worker = traced_worker()
    async with worker.client() as api:
        run_id = await start(api, f"Upgrade customer {customer} to the enterprise plan")
        await wait_for_approval(api, run_id)
    before = await collector.wait_for(lambda: [s for s in collector.of_run(run_id) if s["name"].startswith("chat ")])
    worker.kill()  # the first execution's run span and approval wait never end: only the recovered ones are exported

    async with traced_worker().client() as api:
        approval = await wait_for_approval(api, run_id)
        await api.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve"})
        assert (await wait_for_run(api, run_id))["status"] == "succeeded"
    spans = await collector.wait_for(lambda: any(s["name"] == "invoke_agent billing" for s in collector.of_run(run_id)) and collector.of_run(run_id))

    submit, recovered = one(spans, "keel.submit"), one(spans, "invoke_agent billing")
    assert {s["trace_id"] for s in spans} == {submit["trace_id"]}
    assert recovered["parent_id"] == submit["span_id"]  # parented to the stored context, not to the killed execution
    assert before[0]["parent_id"] not in (recovered["span_id"], submit["span_id"])  # a child of the first execution's run span

    wait = one(spans, "keel.approval_wait")
    assert wait["parent_id"] == recovered["span_id"] and wait["attributes"]["keel.approval.status"] == "approved"
    assert wait["attributes"]["gen_ai.tool.name"] == "charge_customer" and wait["attributes"]["keel.approval_id"] == approval["approval_id"]
    assert one(spans, "execute_tool charge_customer")["parent_id"] == recovered["span_id"]


async def test_a_rollback_and_its_undos_are_spans_of_the_run_s_trace(
        traced_worker: Callable[[], Worker], collector: Collector, db: psycopg.AsyncConnection, customer: str) -> None:
    async with traced_worker().client() as api:
        await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
        run_id = await start(api, f"Upgrade customer {customer} to the pro plan")
        assert (await wait_for_run(api, run_id, timeout=120))["status"] == "compensated"
    spans = await collector.wait_for(lambda: any(s["name"] == "compensate charge_customer" for s in collector.of_run(run_id))
                                     and any(s["name"] == "invoke_agent billing" for s in collector.of_run(run_id)) and collector.of_run(run_id))

    run, rollback, undo = one(spans, "invoke_agent billing"), one(spans, "keel.rollback"), one(spans, "compensate charge_customer")
    assert {s["trace_id"] for s in spans} == {run["trace_id"]}
    assert run["attributes"]["keel.run.status"] == "failed" and run["attributes"]["keel.run.reason"] == "tool_failed"
    assert rollback["parent_id"] == run["span_id"] and undo["parent_id"] == rollback["span_id"]
    charge_key = await fetch_value(db, "SELECT idempotency_key FROM keel.tool_calls WHERE run_id = %s AND tool = 'charge_customer'", run_id)
    assert undo["attributes"]["keel.compensation.effect_key"] == charge_key
    refund = one(spans, "execute_tool undo_charge_customer")
    assert refund["parent_id"] == undo["span_id"] and refund["attributes"]["keel.tool.outcome"] == "succeeded"
