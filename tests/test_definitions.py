"""Declaring agents and tools: schemas come from signatures, mistakes raise UserError at once."""

from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

import workflows
from steps.tools import provided
from workflows import Agent, ToolContext, UserError, tool


@tool
async def refund(ctx: ToolContext, invoice_id: str, amount_cents: int, reason: str = "requested") -> dict[str, Any]:
    """Refund part of an invoice.

    Args:
        invoice_id: The invoice to refund.
        amount_cents: How much, in cents.
    """
    return {"invoice_id": invoice_id}


def test_the_schema_comes_from_the_signature_and_docstring() -> None:
    schema = refund.schema()["function"]

    assert schema["name"] == "refund"
    assert schema["description"] == "Refund part of an invoice."
    assert schema["parameters"]["required"] == ["invoice_id", "amount_cents"]
    assert schema["parameters"]["properties"]["amount_cents"] == {"description": "How much, in cents.", "title": "Amount Cents", "type": "integer"}
    assert schema["parameters"]["additionalProperties"] is False
    assert "ctx" not in schema["parameters"]["properties"]


def test_arguments_are_validated_and_coerced_to_json() -> None:
    assert refund.validate({"invoice_id": "I-1", "amount_cents": "250"}) == {"invoice_id": "I-1", "amount_cents": 250, "reason": "requested"}
    with pytest.raises(Exception, match="amount_cents"):
        refund.validate({"invoice_id": "I-1", "amount_cents": "lots"})
    with pytest.raises(Exception, match="extra"):
        refund.validate({"invoice_id": "I-1", "amount_cents": 1, "currency": "EUR"})


def test_a_business_key_is_namespaced_by_tool() -> None:
    keyed = tool(idempotency_key=lambda a: a["order"])(refund.function)
    assert keyed.business_key({"order": "o-1"}) == "refund:o-1"
    assert refund.business_key({"order": "o-1"}) is None


def test_tool_mistakes_are_user_errors() -> None:
    def sync_tool(x: int) -> int:
        return x

    async def untyped(x):  # type: ignore[no-untyped-def]
        return x

    async def variadic(*args: int) -> int:
        return 0

    async def fine(x: int) -> int:
        return x

    with pytest.raises(UserError, match="async def"):
        tool(sync_tool)
    with pytest.raises(UserError, match="type annotation"):
        tool(untyped)
    with pytest.raises(UserError, match=r"\*args"):
        tool(variadic)
    with pytest.raises(UserError, match="must match"):
        tool(name="has spaces")(fine)


def test_agent_mistakes_are_user_errors() -> None:
    class NotAModel:
        pass

    with pytest.raises(UserError, match="same name"):
        Agent("dupe-tools", instructions="x", tools=[refund, refund])
    with pytest.raises(UserError, match="Pydantic model"):
        Agent("bad-output", instructions="x", output_type=NotAModel)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="must match"):
        Agent("Bad Name", instructions="x")
    with pytest.raises(UserError, match="max_turns"):
        Agent("no-turns", instructions="x", max_turns=0)
    Agent("defined-once", instructions="x")
    with pytest.raises(UserError, match="already defined"):
        Agent("defined-once", instructions="x")


def test_model_replies_are_parsed_into_problems_not_exceptions() -> None:
    class Answer(BaseModel):
        total: int

    agent = Agent("parser", instructions="x", tools=[refund], output_type=Answer)
    call = {"id": "c1", "function": {"name": "refund", "arguments": '{"invoice_id": "I-1", "amount_cents": 5}'}}

    assert agent.parse_output('{"total": 3}') == ({"total": 3}, None)
    assert "does not match" in agent.parse_output("three")[1]
    assert agent.parse_call(call)[1:] == ({"invoice_id": "I-1", "amount_cents": 5, "reason": "requested"}, None)
    assert "no tool named" in agent.parse_call({"id": "c", "function": {"name": "nope", "arguments": "{}"}})[2]
    assert "not valid JSON" in agent.parse_call({"id": "c", "function": {"name": "refund", "arguments": "{"}})[2]
    assert "invalid arguments" in agent.parse_call({"id": "c", "function": {"name": "refund", "arguments": "{}"}})[2]
    assert "JSON schema" in agent.system_prompt()


def test_the_public_api_is_pinned() -> None:
    exported = {name for name, value in vars(workflows).items() if not name.startswith("_") and not isinstance(value, ModuleType)}
    assert set(workflows.__all__) == exported
    assert {"Agent", "tool", "ToolContext", "RetryPolicy", "AskModel", "UserError"} <= set(workflows.__all__)


def test_a_tool_gets_the_deps_its_context_asks_for() -> None:
    class Payments:
        pass

    class Nothing:
        pass

    @tool
    async def pay(ctx: ToolContext[Payments], amount_cents: int) -> None:
        """Pay."""

    payments = Payments()
    workflows.provide(payments)

    assert (pay.takes_ctx, pay.deps_type) == (True, Payments)
    assert provided(Payments) is payments
    assert provided(None) is None and refund.deps_type is None
    with pytest.raises(UserError, match=r"no Nothing was provided: call workflows.provide\(Nothing\(...\)\)"):
        provided(Nothing)


def test_a_result_is_typed_by_its_agent() -> None:
    class Answer(BaseModel):
        total: int

    typed = Agent("typed-answer", instructions="x", output_type=Answer)
    plain = Agent("plain-answer", instructions="x")

    assert typed.result({"total": 3}) == Answer(total=3)
    assert plain.result("three") == "three"
