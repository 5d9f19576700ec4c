"""The support desk, two ways of passing work to billing.

`support` looks a customer up and reads their recent charges at once (two tools in one turn), hands
a plan change to the billing agent as a child run, and replies to the customer. Its reply is the
last step, so a reply that fails after billing succeeded rolls the child back: the charge is
refunded and the plan restored, once.

`front_desk` looks the customer up, opens the ticket, and hands the conversation itself to billing:
the same run goes on under billing, which picks up where the front desk left off."""

from typing import Any, Literal

from pydantic import BaseModel

from app.demo.billing import Resolution, Sandbox, billing
from app.demo.billing.tools import create_ticket, lookup_customer
from workflows import Agent, ToolContext, tool


class Triage(BaseModel):
    customer_id: str
    category: Literal["plan_change", "question"]
    summary: str


@tool
async def recent_charges(ctx: ToolContext[Sandbox], customer_id: str) -> list[dict[str, Any]]:
    """The customer's most recent charges, newest first.

    Args:
        customer_id: The customer's ID, such as C-42.
    """
    response = await ctx.deps.http.get("/payments/charges", params={"customer_id": customer_id})
    response.raise_for_status()
    return response.json()[:10]


@tool(irreversible=True)
async def reply_to_customer(ctx: ToolContext[Sandbox], to: str, message: str) -> dict[str, Any]:
    """Answer the customer's support request by email.

    Args:
        to: The customer's email address.
        message: The answer.
    """
    response = await ctx.deps.http.post("/mail/messages", json={"to": to, "subject": "Your support request", "body": message},
                                        headers={"Idempotency-Key": ctx.idempotency_key})
    response.raise_for_status()
    return response.json()


support = Agent(
    "support",
    instructions=(
        "You are a support agent. Look the customer up and read their recent charges, together. Hand "
        "any change of plan to the billing agent, then reply to the customer."
    ),
    tools=[lookup_customer, recent_charges, billing, reply_to_customer],
    output_type=Triage,
    max_turns=20,
)

front_desk = Agent(
    "front_desk",
    instructions=(
        "You are the front desk. Look the customer up and open a ticket for their request, then hand "
        "any change of plan to the billing agent."
    ),
    tools=[lookup_customer, create_ticket],
    handoffs=[billing],
    output_type=Resolution,
    max_turns=12,
)
