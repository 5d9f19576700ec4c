"""The billing agent as a Pydantic AI agent (`pip install keel[pydantic-ai]`), run by Keel: the same
tools, ledger, approvals and compensations as `billing`; Pydantic AI validates the final answer.
Load it with `KEEL_AGENT_MODULES=app.demo.billing.with_pydantic_ai`."""

from pydantic_ai import Agent, PromptedOutput

from app.demo.billing.agent import Resolution, billing
from app.demo.billing.tools import charge_customer, create_ticket, lookup_customer, send_email, update_plan
from workflows.frameworks.pydantic_ai import PydanticAIAgent

support = Agent(instructions=billing.instructions, output_type=PromptedOutput(Resolution), name="billing")

billing_pydantic_ai = PydanticAIAgent("billing_pydantic_ai", support, tools=[lookup_customer, create_ticket, charge_customer, update_plan, send_email],
                                      output_type=Resolution, max_turns=12)
