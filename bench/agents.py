"""Agents the benchmarks run (loaded by their workers through `KEEL_AGENT_MODULES`)."""

from workflows import Agent, tool


@tool(requires_approval=True)
async def confirm(note: str) -> str:
    """Confirm a note; a person must approve."""
    return note


waiter = Agent("waiter", instructions="Call confirm.", tools=[confirm], max_turns=3)
