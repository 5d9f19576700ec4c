"""Deterministic reply planner: a Chat Completions conversation in, the next assistant reply out.

The planner is a pure function of the conversation. It picks a script from the FIRST user
message and reads the tool results so far (Keel's convention: JSON content; a failure is an
object with a top-level "error" key holding {"kind", "message", ...}) to know its progress.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

FALLBACK_CONTENT = "I can only upgrade plans or call tools."
INVALID_ARGUMENTS_KIND = "invalid_arguments"
BILLING_STEPS: tuple[str, ...] = (
    "lookup_customer",
    "create_ticket",
    "charge_customer",
    "update_plan",
    "send_email",
)

HANDOFF_PREFIX = "transfer_to_"
"""Tools named so hand the conversation to another agent (the OpenAI Agents SDK's handoffs)."""
_BILLING_REQUEST = re.compile(r"upgrade customer ([A-Za-z]-?\d+) to the (\w+) plan", re.IGNORECASE)
_SUPPORT_REQUEST = re.compile(r"support request from customer ([A-Za-z]-?\d+)", re.IGNORECASE)
_PLAN_CHANGE = re.compile(r"(?:move|switch|upgrade)\b.*?\bto the (\w+) plan", re.IGNORECASE)
_SAY_REQUEST = re.compile(r"say\s+(.*)", re.IGNORECASE | re.DOTALL)
_CALL_CLAUSE = re.compile(r"\s*call\s+([\w.:-]+)\s+with\s+", re.IGNORECASE)
_THEN = re.compile(r"\s*then\s+", re.IGNORECASE)
_AND = re.compile(r"\s*and\s+(?=call\s)", re.IGNORECASE)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ToolResult:
    tool_name: str | None
    value: Any


@dataclass(frozen=True)
class Conversation:
    first_user_text: str
    assistant_turns: int
    results: list[ToolResult]


@dataclass(frozen=True)
class Progress:
    """How far a fixed sequence of tool steps got: outputs of finished steps, latest failure of the current one."""

    outputs: list[Any]
    failure: dict[str, Any] | None

    @property
    def must_give_up(self) -> bool:
        return self.failure is not None and failure_kind(self.failure) != INVALID_ARGUMENTS_KIND


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def first_user_text(messages: Sequence[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            return message_text(message)
    return ""


def is_failure(value: Any) -> bool:
    return isinstance(value, dict) and "error" in value


def failure_kind(value: dict[str, Any]) -> str | None:
    error = value.get("error")
    return error.get("kind") if isinstance(error, dict) else None


def failure_message(value: dict[str, Any]) -> str:
    error = value.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("kind") or "unknown error")
    return str(error)


def read_conversation(messages: Sequence[dict[str, Any]]) -> Conversation:
    tool_names: dict[str, str] = {}
    results: list[ToolResult] = []
    assistant_turns = 0
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            assistant_turns += 1
            for call in message.get("tool_calls") or []:
                tool_names[call.get("id")] = (call.get("function") or {}).get("name")
        elif role == "tool":
            value = _parse_json_or_text(message_text(message))
            results.append(ToolResult(tool_names.get(message.get("tool_call_id")), value))
    return Conversation(first_user_text(messages), assistant_turns, results)


def follow_steps(step_tools: Sequence[str], results: Sequence[ToolResult]) -> Progress:
    """Walk results in order; results naming another tool than the current step's are ignored
    (e.g. the answer to a call of an unknown tool), so the step is simply asked for again."""
    outputs: list[Any] = []
    failure: dict[str, Any] | None = None
    for result in results:
        if len(outputs) == len(step_tools):
            break
        if result.tool_name != step_tools[len(outputs)]:
            continue
        if is_failure(result.value):
            failure = result.value
        else:
            outputs.append(result.value)
            failure = None
    return Progress(outputs, failure)


def next_reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
    conversation = read_conversation(messages)
    offered = {(tool.get("function") or {}).get("name") for tool in tools or []}
    scripts: tuple[Callable[[Conversation, set[str | None]], Reply | None], ...] = (
        _say_script,
        _generic_script,
        _support_script,
        _billing_script,
    )
    for script in scripts:
        reply = script(conversation, offered)
        if reply is not None:
            return reply
    return Reply(content=FALLBACK_CONTENT)


def parse_call_script(text: str) -> list[list[tuple[str, dict[str, Any]]]] | None:
    """`call <tool> with <JSON object>` clauses joined by ` then ` (one turn after another) or ` and `
    (in the same turn), as the calls of each turn; None if the text is not one."""
    decoder = json.JSONDecoder()
    turns: list[list[tuple[str, dict[str, Any]]]] = [[]]
    position = 0
    while True:
        clause = _CALL_CLAUSE.match(text, position)
        if clause is None:
            return None
        try:
            arguments, position = decoder.raw_decode(text, clause.end())
        except json.JSONDecodeError:
            return None
        if not isinstance(arguments, dict):
            return None
        turns[-1].append((clause.group(1), arguments))
        if joined := _AND.match(text, position):
            position = joined.end()
        elif then := _THEN.match(text, position):
            position = then.end()
            turns.append([])
        else:
            return turns if not text[position:].strip() else None


def _say_script(conversation: Conversation, offered: set[str | None]) -> Reply | None:
    request = _SAY_REQUEST.match(conversation.first_user_text.strip())
    return Reply(content=request.group(1)) if request else None


def _generic_script(conversation: Conversation, offered: set[str | None]) -> Reply | None:
    turns = parse_call_script(conversation.first_user_text)
    if turns is None:
        return None
    calls = [call for turn in turns for call in turn]
    progress = follow_steps([name for name, _ in calls], conversation.results)
    if progress.must_give_up:
        return Reply(content=json.dumps(progress.failure))
    step = len(progress.outputs)
    if step == len(calls):
        return Reply(content=json.dumps(progress.outputs[-1]))
    done = 0
    for turn in turns:  # the rest of the turn the next call is in, all at once
        if step < done + len(turn):
            return _tool_calls(conversation, turn[step - done:])
        done += len(turn)
    raise AssertionError("unreachable: step < len(calls)")


def _support_script(conversation: Conversation, offered: set[str | None]) -> Reply | None:
    """The support demo: both lookups in one turn, a plan change handed to `billing`, then the reply."""
    request = _SUPPORT_REQUEST.search(conversation.first_user_text)
    if request is None or "billing" not in offered:
        return None
    customer_id = request.group(1)
    change = _PLAN_CHANGE.search(conversation.first_user_text)
    results = {result.tool_name: result.value for result in conversation.results}

    def answer(summary: str) -> Reply:
        return Reply(content=json.dumps({"customer_id": customer_id, "category": "plan_change" if change else "question", "summary": summary}))

    if failed := next((r for r in conversation.results if is_failure(r.value)), None):
        return answer(f"Could not help: {failed.tool_name} failed: {failure_message(failed.value)}")
    if "lookup_customer" not in results:
        return _tool_calls(conversation, [("lookup_customer", {"customer_id": customer_id}), ("recent_charges", {"customer_id": customer_id})])
    if change and "billing" not in results:
        return _tool_call(conversation, "billing", {"input": f"Upgrade customer {customer_id} to the {change.group(1)} plan"})
    done = _field(results.get("billing"), "summary") or f"{len(results.get('recent_charges') or [])} recent charge(s) on file."
    if "reply_to_customer" not in results:
        return _tool_call(conversation, "reply_to_customer", {"to": _field(results["lookup_customer"], "email"), "message": done})
    return answer(done)


def _billing_script(conversation: Conversation, offered: set[str | None]) -> Reply | None:
    request = _BILLING_REQUEST.search(conversation.first_user_text)
    if request is None:
        return None
    customer_id, plan = request.group(1), request.group(2).lower()

    def give_up(reason: str) -> Reply:
        outcome = {"customer_id": customer_id, "plan": plan, "ticket_id": None, "charge_id": None,
                   "amount_cents": 0, "summary": f"Could not complete: {reason}"}
        return Reply(content=json.dumps(outcome))

    progress = follow_steps(BILLING_STEPS, conversation.results)
    step = len(progress.outputs)
    if progress.must_give_up and progress.failure is not None:
        return give_up(f"{BILLING_STEPS[step]} failed: {failure_message(progress.failure)}")
    price = _plan_price(progress.outputs[0], plan) if progress.outputs else 0
    if price is None:
        return give_up(f"plan {plan!r} is not available for customer {customer_id}")
    customer, ticket, charge = (progress.outputs + [None, None, None])[:3]
    ticket_id = _field(ticket, "ticket_id")
    charge_id = _field(charge, "charge_id")
    amount = _field(charge, "amount_cents")
    amount_cents = amount if isinstance(amount, int) else price
    email = _field(customer, "email")
    subject = f"Upgrade to {plan} plan"
    if step == len(BILLING_STEPS):
        summary = (f"Upgraded customer {customer_id} to the {plan} plan, charged {amount_cents} cents "
                   f"(ticket {ticket_id}, charge {charge_id}) and emailed {email}.")
        outcome = {"customer_id": customer_id, "plan": plan, "ticket_id": ticket_id, "charge_id": charge_id,
                   "amount_cents": amount_cents, "summary": summary}
        return Reply(content=json.dumps(outcome))
    tool = BILLING_STEPS[step]
    handoff = next((name for name in sorted(filter(None, offered)) if name.startswith(HANDOFF_PREFIX)), None)
    if tool not in offered and handoff:  # an agent that cannot do the step hands the conversation on
        return _tool_call(conversation, handoff, {})
    if tool not in offered:
        return give_up(f"tool {tool} is not offered")
    if tool == "send_email" and not email:
        return give_up(f"customer {customer_id} has no email address")
    arguments_by_tool: dict[str, dict[str, Any]] = {
        "lookup_customer": {"customer_id": customer_id},
        "create_ticket": {"customer_id": customer_id, "subject": subject},
        "charge_customer": {"customer_id": customer_id, "amount_cents": price, "description": subject},
        "update_plan": {"customer_id": customer_id, "plan": plan},
        "send_email": {
            "to": email,
            "subject": f"Your {plan} plan is active",
            "body": f"Your {plan} plan is now active; we charged {amount_cents} cents (ticket {ticket_id}).",
        },
    }
    return _tool_call(conversation, tool, arguments_by_tool[tool])


def _tool_call(conversation: Conversation, name: str, arguments: dict[str, Any]) -> Reply:
    return _tool_calls(conversation, [(name, arguments)])


def _tool_calls(conversation: Conversation, calls: list[tuple[str, dict[str, Any]]]) -> Reply:
    return Reply(content=None, tool_calls=[ToolCall(f"call_{conversation.assistant_turns}_{n}", name, arguments)
                                           for n, (name, arguments) in enumerate(calls)])


def _plan_price(customer: Any, plan: str) -> int | None:
    plans = _field(customer, "plans")
    price = _field(_field(plans, plan), "price_cents")
    return price if isinstance(price, int) and not isinstance(price, bool) else None


def _field(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _parse_json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
