"""Units of durable work: the LLM call, tool calls through the ledger, retries and events."""
