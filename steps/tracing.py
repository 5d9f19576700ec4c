"""OpenTelemetry traces of Keel's runs, on top of DBOS's own tracing.

With OTLP on (`KEEL_OTLP_ENDPOINT`), DBOS opens a span for each workflow and step and makes it the
current one: a run (`keel.agent_run`), its rollback and undos (`keel.rollback`, `keel.compensate`),
each model call (`keel.llm`) and tool call (`keel.tool_call`). Keel does not open those again; it
names them and adds what they lack:

- a run: `invoke_agent <agent>`, with its status, reason, turns and tokens at the end;
- a model call: `chat <model>`, with the OpenTelemetry GenAI conventions (`gen_ai.*`: the model
  asked for and the one that answered, tokens in and out, finish reason, response ID);
- a tool call: `execute_tool <tool>`, with the idempotency key, the attempt and the outcome;
- an undo: `compensate <tool>`, with the key of the effect it undoes;
- an approval wait: a span of Keel's own, `keel.approval_wait`, with the decision.

A run's spans join one trace on every execution, recoveries on another worker included: starting a
run opens a `keel.submit` span and stores its context in the workflow's attributes (DBOS's
`PropagateOtelContext`), which DBOS reads each time the workflow starts executing. A rollback and its
undos carry the run's context the same way.

Off by default: then nothing here imports OpenTelemetry, and every function is a no-op."""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

_enabled = False


def configure(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def annotate(attributes: dict[str, Any], *, name: str | None = None) -> None:
    """Set `attributes` (None values left out) on the current span, and rename it to `name`."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    if name is not None:
        span.update_name(name)
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})


@contextmanager
def span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A span of Keel's own around the block, a child of the current one (`annotate` inside it
    annotates this span)."""
    if not _enabled:
        yield
        return
    from opentelemetry import trace

    with trace.get_tracer("keel").start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None}):
        yield


def carried() -> Any:
    """Workflows started inside this block carry the current trace context in their attributes, so
    their spans join this trace whenever and wherever they execute."""
    if not _enabled:
        return nullcontext()
    from dbos import PropagateOtelContext

    return PropagateOtelContext()


@contextmanager
def submitting(run_id: str, agent: str) -> Iterator[None]:
    """Around starting a run: the `keel.submit` span every execution of the run is parented to."""
    with span("keel.submit", {"keel.run_id": run_id, "gen_ai.agent.name": agent}), carried():
        yield


def run_started(run_id: str, agent: str) -> None:
    annotate({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, "keel.run_id": run_id}, name=f"invoke_agent {agent}")


def run_ended(status: str, *, reason: str | None = None, turns: int | None = None, tokens: int | None = None) -> None:
    annotate({"keel.run.status": status, "keel.run.reason": reason, "keel.run.turns": turns, "keel.run.tokens": tokens})


def model_called(run_id: str, turn: int, model: str, outcome: dict[str, Any]) -> None:
    """`outcome`: the `llm_response` event's payload, plus the response `id`; or a failed call's `error`."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                                  "keel.run_id": run_id, "keel.turn": turn}
    if "error" in outcome:
        attributes |= {"error.type": outcome["error"]["type"], "keel.error.kind": outcome["error"]["kind"], "keel.attempts": outcome.get("attempts")}
    else:
        attributes |= {"gen_ai.response.model": outcome["model"], "gen_ai.response.id": outcome.get("id"),
                       "gen_ai.response.finish_reasons": [outcome["finish_reason"] or "unknown"],
                       "gen_ai.usage.input_tokens": outcome["prompt_tokens"], "gen_ai.usage.output_tokens": outcome["completion_tokens"],
                       "keel.attempts": outcome["attempts"], "keel.cost_usd": outcome["cost_usd"]}
    annotate(attributes, name=f"chat {model}")


def tool_called(run_id: str, tool: str, tool_call_id: str, reply: dict[str, Any]) -> None:
    """`reply`: what the tool step returns (`ok`, `idempotency_key`, `attempts`, ...)."""
    if reply["ok"]:
        outcome = "deduplicated" if reply.get("deduplicated") else "reconciled" if reply.get("reconciled") else "succeeded"
    else:
        outcome = "failed"
    error = reply.get("error") or {}
    annotate({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.call.id": tool_call_id, "keel.run_id": run_id,
              "keel.tool.idempotency_key": reply.get("idempotency_key"), "keel.tool.attempt": reply.get("attempts"),
              "keel.tool.outcome": outcome, "error.type": error.get("type"), "keel.error.kind": error.get("kind")},
             name=f"execute_tool {tool}")


def compensation_started(run_id: str, tool: str, n: int, effect_key: str) -> None:
    annotate({"keel.run_id": run_id, "gen_ai.tool.name": tool, "keel.compensation.n": n, "keel.compensation.effect_key": effect_key},
             name=f"compensate {tool}")
