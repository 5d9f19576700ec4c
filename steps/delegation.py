"""The steps around a child run: an agent tool's call hands its input to another agent, which runs as
a child run (`workflows.agent_loop` starts and awaits it).

`delegate_step` names the child after the call's ledger key, so a retried or recovered parent never
starts a second one, and records the call in the parent's ledger (result: the child's run ID), so the
parent's rollback finds it among its effects, in order, and undoes it by rolling the child back.
`child_outcome_step` reads how the child ended, and what it spent, for the parent's budgets."""

from typing import Any

from dbos import DBOS
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from steps import db, events, ids
from steps.retry import OUTAGE_RETRIES

RECORD_DELEGATION = """
INSERT INTO keel.tool_calls (idempotency_key, run_id, step_id, tool, tool_call_id, arguments, status, result, completed_at)
VALUES (%s, %s, %s, %s, %s, %s, 'succeeded', %s, now())
ON CONFLICT (idempotency_key) DO NOTHING
"""
CHILD_OUTCOME = "SELECT status, reason, output, error, turns, tokens, cost_usd FROM keel.runs WHERE run_id = %s"


@DBOS.step(name="keel.delegate", **OUTAGE_RETRIES)
async def delegate_step(tool: str, agent: str, arguments: dict[str, Any], tool_call_id: str) -> str:
    """Record the call of agent tool `tool` (handing `arguments["input"]` to `agent`); returns the child's run ID."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "delegate_step runs inside a workflow"
    child = ids.child_run_id(run_id, step_id)
    async with db.pool().connection() as conn, conn.transaction():
        await conn.execute(RECORD_DELEGATION, (ids.ledger_key(run_id, step_id), run_id, step_id, tool, tool_call_id, Jsonb(arguments),
                                               Jsonb({"run_id": child, "agent": agent})))
        await events.record(run_id, step_id, "child_started", {"tool": tool, "agent": agent, "child_run_id": child, "input": arguments["input"]},
                            conn=conn)
    return child


@DBOS.step(name="keel.child_outcome", **OUTAGE_RETRIES)
async def child_outcome_step(child_run_id: str) -> dict[str, Any]:
    """How the child run ended (`status`, `reason`, `output`, `error`) and what it spent (`turns`, `tokens`, `cost_usd`)."""
    run_id, step_id = DBOS.workflow_id, DBOS.step_id
    assert run_id is not None and step_id is not None, "child_outcome_step runs inside a workflow"
    async with db.pool().connection() as conn:
        row = await (await conn.cursor(row_factory=dict_row).execute(CHILD_OUTCOME, (child_run_id,))).fetchone()
        assert row is not None, f"child run {child_run_id} is missing"
        outcome = {**row, "tokens": int(row["tokens"]), "cost_usd": float(row["cost_usd"]), "child_run_id": child_run_id}  # sums are numeric
        await events.record(run_id, step_id, "child_finished", {k: v for k, v in outcome.items() if k != "output"}, conn=conn)
    return outcome
