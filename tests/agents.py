"""A test agent whose tools exercise the ledger, loaded by test workers (`KEEL_AGENT_MODULES`).

The scripted model drives it with inputs like `call pay with {"customer_id": "C-1", ...}`."""

import asyncio
import hashlib
from typing import Any

from app.demo.billing import Resolution, billing
from app.demo.billing.tools import Sandbox
from app.demo.support import Triage, support
from workflows import Agent, ApprovalPolicy, AskModel, PermanentToolError, RetryPolicy, ToolContext, TransientToolError, tool


@tool
async def pay(ctx: ToolContext[Sandbox], customer_id: str, amount_cents: int) -> dict[str, Any]:
    """Charge through the payments sandbox, relying on its Idempotency-Key alone (no reconcile)."""
    response = await ctx.deps.http.post("/payments/charges", headers={"Idempotency-Key": ctx.idempotency_key},
                                 json={"customer_id": customer_id, "amount_cents": amount_cents, "description": "probe"})
    response.raise_for_status()
    return response.json()


@tool(retry=RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05))
async def flaky(ctx: ToolContext, succeed_on: int) -> dict[str, int]:
    """Fail transiently until attempt `succeed_on`."""
    if ctx.attempt < succeed_on:
        raise TransientToolError(f"attempt {ctx.attempt} failed", retry_after=0.01)
    return {"attempt": ctx.attempt}


@tool
async def refuse(reason: str) -> None:
    """Fail permanently."""
    raise PermanentToolError(reason)


@tool
async def square(n: int) -> int:
    """Square a non-negative number."""
    if n < 0:
        raise AskModel("n must not be negative")
    return n * n


@tool(idempotency_key=lambda arguments: arguments["subject"])
async def open_ticket(ctx: ToolContext, customer_id: str, subject: str) -> dict[str, Any]:
    """Open a ticket, once per subject (a business key) whatever the run."""
    row = await (await ctx.db.execute(
        "INSERT INTO sandbox.tickets (customer_id, subject, idempotency_key) VALUES (%s, %s, %s) RETURNING id",
        (customer_id, subject, ctx.idempotency_key))).fetchone()
    return {"ticket_id": f"T-{row[0]}"}


@tool(requires_approval=True)
async def transfer(ctx: ToolContext, customer_id: str, amount_cents: int) -> dict[str, Any]:
    """Move money (a person must approve); the effect is a row in sandbox.payments."""
    await ctx.db.execute(
        """INSERT INTO sandbox.payments (charge_id, idempotency_key, customer_id, amount_cents, description)
           VALUES (%s, %s, %s, %s, 'transfer')""", (f"tr_{ctx.idempotency_key}", ctx.idempotency_key, customer_id, amount_cents))
    return {"transferred": amount_cents}


@tool(approval=ApprovalPolicy(required=True, on_reject="fail"))
async def strict_transfer(customer_id: str, amount_cents: int) -> dict[str, Any]:
    """Like transfer, but a rejection fails the run."""
    return {"transferred": amount_cents}


@tool(approval=ApprovalPolicy(required=True, timeout=1))
async def quick_confirm(note: str) -> str:
    """Needs approval within a second."""
    return note


@tool(approval=ApprovalPolicy(required=True, timeout=1, on_expire="escalate"))
async def escalating_confirm(note: str) -> str:
    """Needs approval within a second, escalated once before it expires."""
    return note


@tool
async def nap(seconds: float) -> dict[str, float]:
    """Sleep, then say how long."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@tool
async def charge_then_wait(ctx: ToolContext[Sandbox], customer_id: str, amount_cents: int, seconds: float) -> dict[str, Any]:
    """Charge through the payments sandbox (its Idempotency-Key makes a repeat return the first charge),
    then, on the first attempt only, wait `seconds`: a call still in flight when its worker is killed."""
    response = await ctx.deps.http.post("/payments/charges", headers={"Idempotency-Key": ctx.idempotency_key},
                                        json={"customer_id": customer_id, "amount_cents": amount_cents, "description": "then wait"})
    response.raise_for_status()
    if ctx.attempt == 1:
        await asyncio.sleep(seconds)
    return response.json()


PROBE_TOOLS = [pay, flaky, refuse, square, open_ticket, transfer, strict_transfer, quick_confirm, escalating_confirm, nap, charge_then_wait]
probe = Agent("probe", instructions="Call the tools you are asked to call.", tools=PROBE_TOOLS, max_turns=6, max_reasks=2)
in_sequence = Agent("in-sequence", instructions="Call the tools you are asked to call.", tools=PROBE_TOOLS, max_turns=6,
                    parallel_tool_calls=False)
"""The probe with its tool calls one after another, as a turn's calls ran before Keel ran them at once."""


@tool(dependency="payments-guarded", retry=RetryPolicy(max_attempts=10, initial_delay=0.01, max_delay=0.05))
async def pay_guarded(ctx: ToolContext[Sandbox], customer_id: str, amount_cents: int) -> dict[str, Any]:
    """Charge through the payments sandbox, behind a circuit breaker of its own."""
    response = await ctx.deps.http.post("/payments/charges", headers={"Idempotency-Key": ctx.idempotency_key},
                                 json={"customer_id": customer_id, "amount_cents": amount_cents, "description": "guarded"})
    response.raise_for_status()
    return response.json()


patient = Agent(
    "patient",
    instructions="Call the tools you are asked to call.",
    tools=[pay_guarded, square],
    model_retry=RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5),
    model_timeout=1.0,
)


def response_lost(key: str, attempt: int, rate: float = 0.05) -> bool:
    """A reproducible coin per (call, attempt): the seed's 5% of tool calls whose response is lost."""
    digest = hashlib.sha256(f"{key}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


async def charge_step(ctx: ToolContext[Sandbox], customer_id: str, n: int) -> dict[str, Any]:
    """Charge one cent for step n. One response in twenty is lost after the charge went through."""
    response = await ctx.deps.http.post("/payments/charges", headers={"Idempotency-Key": ctx.idempotency_key},
                                 json={"customer_id": customer_id, "amount_cents": 1, "description": f"step {n}"})
    response.raise_for_status()
    if response_lost(ctx.idempotency_key, ctx.attempt):
        raise TransientToolError("the response was lost after the charge")
    return {"step": n}


FAST = RetryPolicy(max_attempts=8, initial_delay=0.01, max_delay=0.05)
NO_RETRIES = RetryPolicy(max_attempts=1)
fourteen = Agent("fourteen", instructions="Do the fourteen steps.", tools=[tool(retry=FAST)(charge_step)],
                 model_retry=FAST, max_turns=16)
fourteen_without_retries = Agent("fourteen-without-retries", instructions="Do the fourteen steps.",
                                 tools=[tool(retry=NO_RETRIES)(charge_step)], model_retry=NO_RETRIES, max_turns=16)

billing_on_a_budget = Agent(
    "billing-on-a-budget",
    instructions=billing.instructions,
    tools=list(billing.tools.values()),
    output_type=Resolution,
    max_tokens=700,
)
billing_in_a_hurry = Agent(
    "billing-in-a-hurry",
    instructions=billing.instructions,
    tools=list(billing.tools.values()),
    output_type=Resolution,
    max_seconds=3.0,
)

delegator = Agent("delegator", instructions="Hand work to the agents you are asked to call.",
                  tools=[probe.as_tool(name="ask_probe"), billing, refuse], max_turns=12)
"""Calls the probe (`ask_probe`) and the billing agent (`billing`, as `tools=[billing]` names it) as child runs."""
thrifty_delegator = Agent("thrifty-delegator", instructions="Hand work to the probe.", tools=[probe], max_tokens=300)
"""A parent whose token budget its child runs spend too."""

support_on_a_budget = Agent("support-on-a-budget", instructions=support.instructions, tools=list(support.tools.values()),
                            output_type=Triage, max_tokens=750)
"""The support demo with a token budget its billing child runs out of: after its ticket, before its charge."""
