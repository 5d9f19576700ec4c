"""The billing agent's tools.

`create_ticket` and `update_plan` write to Keel's own database through `ctx.db`, so their effect
commits with the ledger's outcome, exactly once. `charge_customer` and `send_email` call HTTP
services and send the call's idempotency key; `charge_customer` can also reconcile: ask the
payments service whether a charge with its key already exists. A charge above $100 waits for a
person's approval. If the run fails, the ticket is closed, the charge refunded and the plan
restored, newest first; the email cannot be unsent."""

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from app.sandbox.faults import take_fault
from workflows import AskModel, PermanentToolError, ToolContext, provide, tool


@dataclass(frozen=True)
class Sandbox:
    """What the billing tools talk to: `ctx.deps` of every `ToolContext[Sandbox]`."""

    http: httpx.AsyncClient
    """The sandbox services (payments, mail), at the URL the application configured."""


def configure(sandbox_url: str) -> Sandbox:
    """Provide the tools' clients, pointed at the sandbox services (`app` calls this at start-up)."""
    sandbox = Sandbox(http=httpx.AsyncClient(base_url=sandbox_url, timeout=10.0))
    provide(sandbox)
    return sandbox


class Charge(BaseModel):
    charge_id: str
    customer_id: str
    amount_cents: int
    description: str
    status: str


@tool
async def lookup_customer(ctx: ToolContext, customer_id: str) -> dict[str, Any]:
    """Look up a customer: name, email, current plan, and the plans on offer with their prices.

    Args:
        customer_id: The customer's ID, such as C-42.
    """
    row = await (await ctx.db.execute(
        "SELECT id, name, email, plan FROM sandbox.customers WHERE id = %s", (customer_id,))).fetchone()
    if row is None:
        raise AskModel(f"there is no customer {customer_id}")
    plans = await (await ctx.db.execute("SELECT name, price_cents FROM sandbox.plans ORDER BY price_cents")).fetchall()
    return {"id": row[0], "name": row[1], "email": row[2], "plan": row[3],
            "plans": {name: {"price_cents": price} for name, price in plans}}


async def close_ticket(ctx: ToolContext, arguments: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Undo `create_ticket`: close the ticket."""
    ticket = int(result["ticket_id"].removeprefix("T-"))
    await ctx.db.execute("UPDATE sandbox.tickets SET status = 'closed' WHERE id = %s", (ticket,))
    return {"ticket_id": result["ticket_id"], "status": "closed"}


@tool(compensation=close_ticket)
async def create_ticket(ctx: ToolContext, customer_id: str, subject: str) -> dict[str, Any]:
    """Open a support ticket for the customer.

    Args:
        customer_id: The customer's ID.
        subject: What the ticket is about.
    """
    row = await (await ctx.db.execute(
        "INSERT INTO sandbox.tickets (customer_id, subject, idempotency_key) VALUES (%s, %s, %s) RETURNING id",
        (customer_id, subject, ctx.idempotency_key))).fetchone()
    return {"ticket_id": f"T-{row[0]}", "status": "open"}


async def find_charge(ctx: ToolContext[Sandbox]) -> Charge | None:
    response = await ctx.deps.http.get("/payments/charges", params={"idempotency_key": ctx.idempotency_key})
    response.raise_for_status()
    found = response.json()
    return Charge.model_validate(found[0]) if found else None


async def refund_charge(ctx: ToolContext[Sandbox], arguments: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Undo `charge_customer`: refund the charge in full."""
    response = await ctx.deps.http.post("/payments/refunds", json={"charge_id": result["charge_id"], "reason": "run rolled back"},
                                 headers={"Idempotency-Key": ctx.idempotency_key})
    response.raise_for_status()
    return response.json()


APPROVAL_THRESHOLD_CENTS = 10_000


@tool(reconcile=find_charge, compensation=refund_charge,
      requires_approval=lambda arguments: arguments["amount_cents"] > APPROVAL_THRESHOLD_CENTS)
async def charge_customer(ctx: ToolContext[Sandbox], customer_id: str, amount_cents: int, description: str) -> Charge:
    """Charge the customer's card on file.

    Args:
        customer_id: The customer's ID.
        amount_cents: The amount in cents, greater than zero.
        description: What the charge is for, as shown on the statement.
    """
    response = await ctx.deps.http.post(
        "/payments/charges",
        json={"customer_id": customer_id, "amount_cents": amount_cents, "description": description},
        headers={"Idempotency-Key": ctx.idempotency_key},
    )
    response.raise_for_status()
    return Charge.model_validate(response.json())


async def restore_plan(ctx: ToolContext, arguments: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Undo `update_plan`: put the customer back on the previous plan."""
    await ctx.db.execute("UPDATE sandbox.customers SET plan = %s WHERE id = %s", (result["previous_plan"], result["customer_id"]))
    await ctx.db.execute(
        "INSERT INTO sandbox.plan_changes (customer_id, from_plan, to_plan, idempotency_key) VALUES (%s, %s, %s, %s)",
        (result["customer_id"], result["plan"], result["previous_plan"], ctx.idempotency_key))
    return {"customer_id": result["customer_id"], "plan": result["previous_plan"]}


@tool(compensation=restore_plan)
async def update_plan(ctx: ToolContext, customer_id: str, plan: str) -> dict[str, Any]:
    """Move the customer to another plan.

    Args:
        customer_id: The customer's ID.
        plan: The name of the new plan, such as pro.
    """
    fault = await take_fault("plans", customer_id)
    if fault is not None:  # the demo's way to fail a run at this step and watch the rollback
        raise PermanentToolError(f"the plan service refused to change {customer_id}'s plan (sandbox fault)")
    row = await (await ctx.db.execute(
        "SELECT plan FROM sandbox.customers WHERE id = %s FOR UPDATE", (customer_id,))).fetchone()
    if row is None:
        raise AskModel(f"there is no customer {customer_id}")
    known = await (await ctx.db.execute("SELECT 1 FROM sandbox.plans WHERE name = %s", (plan,))).fetchone()
    if not known:
        raise AskModel(f"there is no plan {plan!r}")
    await ctx.db.execute("UPDATE sandbox.customers SET plan = %s WHERE id = %s", (plan, customer_id))
    await ctx.db.execute(
        "INSERT INTO sandbox.plan_changes (customer_id, from_plan, to_plan, idempotency_key) VALUES (%s, %s, %s, %s)",
        (customer_id, row[0], plan, ctx.idempotency_key))
    return {"customer_id": customer_id, "plan": plan, "previous_plan": row[0]}


@tool(irreversible=True)
async def send_email(ctx: ToolContext[Sandbox], to: str, subject: str, body: str) -> dict[str, Any]:
    """Send an email to the customer.

    Args:
        to: The recipient's email address.
        subject: The subject line.
        body: The message text.
    """
    response = await ctx.deps.http.post("/mail/messages", json={"to": to, "subject": subject, "body": body},
                                 headers={"Idempotency-Key": ctx.idempotency_key})
    response.raise_for_status()
    return response.json()
