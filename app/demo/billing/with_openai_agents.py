"""The billing agent in the OpenAI Agents SDK (`pip install keel[openai-agents]`), run by Keel: a
triage agent hands the conversation to a billing specialist, which has the same tools, ledger,
approvals and compensations as `billing`; the handoff shows in the run's timeline.
Load it with `KEEL_AGENT_MODULES=app.demo.billing.with_openai_agents`."""

from agents import Agent

from app.demo.billing.agent import Resolution, billing
from app.demo.billing.tools import charge_customer, create_ticket, lookup_customer, send_email, update_plan
from workflows.frameworks.openai_agents import OpenAIAgentsAgent, function_tools

specialist = Agent(name="billing specialist", instructions=billing.instructions, output_type=Resolution,
                   tools=function_tools([lookup_customer, create_ticket, charge_customer, update_plan, send_email]))
triage = Agent(name="triage", instructions="You route customer requests. Hand anything about plans, charges or invoices to the billing specialist.",
               handoffs=[specialist])

billing_openai_agents = OpenAIAgentsAgent("billing_openai_agents", triage, output_type=Resolution, max_turns=13)
