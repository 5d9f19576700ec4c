"""The billing-support agent: upgrades a customer's plan, charging and notifying them."""

from pydantic import BaseModel

from app.demo.billing.tools import charge_customer, create_ticket, lookup_customer, send_email, update_plan
from workflows import Agent


class Resolution(BaseModel):
    customer_id: str
    plan: str
    ticket_id: str | None
    charge_id: str | None
    amount_cents: int
    summary: str


billing = Agent(
    "billing",
    instructions=(
        "You are a billing support agent. To change a customer's plan: look the customer up, open a "
        "ticket, charge the plan's price, update the plan, and email the customer a confirmation."
    ),
    tools=[lookup_customer, create_ticket, charge_customer, update_plan, send_email],
    output_type=Resolution,
    max_turns=12,
)
