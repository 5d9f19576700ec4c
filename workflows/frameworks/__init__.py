"""Agent frameworks inside a Keel run: LangGraph, the OpenAI Agents SDK and Pydantic AI.

The framework reasons; Keel makes it durable. Each adapter plugs into its framework's own seams:
its model calls become Keel model steps (`AgentRun.ask_model`: classified retries, `Retry-After`,
breakers, budgets, events, the live token stream) and its tools are Keel `@tool`s, called through
the ledger (`AgentRun.call_tool`: idempotency keys, reconcile, approvals, compensations). Import
`workflows.frameworks.langgraph`, `.openai_agents` or `.pydantic_ai`; each needs its extra
(`pip install keel[langgraph]`, `[openai-agents]`, `[pydantic-ai]`), and the core imports none.

On recovery DBOS runs the workflow again from the start: the framework's loop runs again too, and
every model and tool call it makes is served from its checkpoint until the first one that has none.
So the framework keeps no state of its own between runs, and needs no checkpointer of its own."""
