"""What must hold after chaos, checked with SQL: no run lost or stuck, every effect exactly once,
rolled-back runs undone exactly once, the ledger agreeing with the sandbox row for row, and no
duplicate in Keel's own records: one ledger intent per tool call, one execution per ledger outcome,
DBOS's checkpoints agreeing with the ledger, one approval per call, one compensation per effect,
and no undo given up on a transient failure."""

from typing import Any

import psycopg

from steps.run_status import ENDED

PRICES = {"pro": 4900, "enterprise": 49900}
EFFECTS = """
SELECT c.id, c.plan,
       (SELECT count(*) FROM sandbox.payments p WHERE p.customer_id = c.id) AS payments,
       (SELECT count(*) FROM sandbox.payments p WHERE p.customer_id = c.id AND p.status = 'refunded') AS refunded,
       (SELECT coalesce(sum(amount_cents), 0) FROM sandbox.payments p WHERE p.customer_id = c.id) AS charged,
       (SELECT count(*) FROM sandbox.refunds r JOIN sandbox.payments p USING (charge_id) WHERE p.customer_id = c.id) AS refunds,
       (SELECT count(*) FROM sandbox.tickets t WHERE t.customer_id = c.id) AS tickets,
       (SELECT count(*) FROM sandbox.tickets t WHERE t.customer_id = c.id AND t.status = 'closed') AS closed,
       (SELECT count(*) FROM sandbox.plan_changes x WHERE x.customer_id = c.id) AS plan_changes,
       (SELECT count(*) FROM sandbox.emails e WHERE e.recipient = c.email) AS emails
FROM sandbox.customers c WHERE c.id = ANY(%s)
"""
RECORD_CHECKS = {
    # Two ledger rows for one tool call of a run: a retried step that took a second key.
    "duplicate_ledger_intents": "SELECT count(*) FROM (SELECT 1 FROM keel.tool_calls GROUP BY run_id, tool_call_id HAVING count(*) > 1) d",
    # A key whose tool ran to success more than once (a deduplicated answer does not count).
    "duplicate_ledger_outcomes": """SELECT count(*) FROM (SELECT 1 FROM keel.events WHERE kind = 'tool_result' AND (payload ->> 'ok')::boolean
                                    AND NOT coalesce((payload ->> 'deduplicated')::boolean, false)
                                    GROUP BY payload ->> 'idempotency_key' HAVING count(*) > 1) d""",
    # A tool step's checkpointed result that is not the ledger's (the step's effect ran again, or another one did).
    "checkpoints_disagreeing_with_ledger": """SELECT count(*) FROM dbos.operation_outputs o JOIN keel.tool_calls c
                                               ON c.idempotency_key = o.output::jsonb ->> 'idempotency_key'
                                               WHERE o.function_name = 'keel.tool_call' AND (o.output::jsonb ->> 'ok')::boolean
                                               AND (c.status <> 'succeeded' OR c.result IS DISTINCT FROM o.output::jsonb -> 'result')""",
    # A workflow that, replayed from its checkpoints, met a different history than it recorded.
    "checkpoint_replay_errors": """SELECT count(*) FROM dbos.workflow_output o JOIN dbos.workflow_status s USING (workflow_uuid)
                                    WHERE s.name LIKE 'keel.%' AND o.error ~ '(UnexpectedStep|Nondeterminism|ConflictID)'""",
    # Two approval requests for one tool call of a run.
    "duplicate_approvals": "SELECT count(*) FROM (SELECT 1 FROM keel.approvals GROUP BY run_id, tool_call_id HAVING count(*) > 1) d",
    # Two compensations planned for one effect.
    "duplicate_compensations": "SELECT count(*) FROM (SELECT 1 FROM keel.compensations GROUP BY idempotency_key HAVING count(*) > 1) d",
}
# (sandbox table, its idempotency key column, the tool whose ledger rows must match it)
LEDGERED = [("payments", "charge_customer"), ("tickets", "create_ticket"), ("emails", "send_email"), ("refunds", "undo_charge_customer")]


def expected_effects(kind: str, plan: str) -> dict[str, Any]:
    if kind == "rollback":  # update_plan fails: ticket closed, charge refunded, plan untouched, no email
        return {"plan": "basic", "payments": 1, "refunded": 1, "charged": PRICES[plan], "refunds": 1, "tickets": 1, "closed": 1,
                "plan_changes": 0, "emails": 0}
    return {"plan": plan, "payments": 1, "refunded": 0, "charged": PRICES[plan], "refunds": 0, "tickets": 1, "closed": 0,
            "plan_changes": 1, "emails": 1}


def check(url: str, keys: list[str], mix: list[tuple[str, str, str]]) -> dict[str, Any]:
    violations: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        runs = {row[0]: row[1:] for row in conn.execute(
            "SELECT run_id, status, reason, recovery_attempts FROM keel.runs WHERE run_id = ANY(%s)", (keys,)).fetchall()}
        columns = ["id", "plan", "payments", "refunded", "charged", "refunds", "tickets", "closed", "plan_changes", "emails"]
        effects = {row[0]: dict(zip(columns, row, strict=True)) for row in conn.execute(EFFECTS, ([c for c, _, _ in mix],)).fetchall()}
        ledger_gaps = {}
        for table, tool in LEDGERED:
            ledger = "SELECT idempotency_key FROM keel.tool_calls WHERE tool = %s AND status = 'succeeded'"
            without_outcome = conn.execute(f"SELECT count(*) FROM sandbox.{table} WHERE idempotency_key NOT IN ({ledger})", (tool,)).fetchone()[0]
            without_effect = conn.execute(f"SELECT count(*) FROM ({ledger}) l WHERE idempotency_key NOT IN (SELECT idempotency_key FROM sandbox.{table})",
                                          (tool,)).fetchone()[0]
            ledger_gaps[table] = (without_outcome, without_effect)
        duplicated = {name: conn.execute(query).fetchone()[0] for name, query in RECORD_CHECKS.items()}
        transient_undo_failures = conn.execute(
            "SELECT count(*) FROM keel.compensations WHERE status = 'failed' AND error ->> 'kind' <> 'permanent'").fetchone()[0]
        unrecorded = conn.execute(
            """SELECT count(*) FROM keel.tool_calls c WHERE c.status = 'succeeded' AND NOT EXISTS (
                   SELECT 1 FROM keel.events e WHERE e.kind = 'tool_result' AND e.payload ->> 'idempotency_key' = c.idempotency_key
                   AND (e.payload ->> 'ok')::boolean)""").fetchone()[0]
    duplicates = 0
    for key, (customer, plan, kind) in zip(keys, mix, strict=True):
        status = runs.get(key, (None,))[0]
        wanted = "compensated" if kind == "rollback" else "succeeded"
        if status != wanted:
            violations.append(f"run {key} ({kind}) ended {status} ({runs.get(key, (None, None))[1]}), expected {wanted}")
        got, want = effects[customer], expected_effects(kind, plan)
        duplicates += sum(max(0, got[name] - 1) for name in ("payments", "refunds", "tickets", "emails", "plan_changes"))
        for name, value in want.items():
            if got[name] != value:
                violations.append(f"customer {customer} ({kind}, run {key}): {name} is {got[name]}, expected {value}")
    for table, (without_outcome, without_effect) in ledger_gaps.items():
        if without_outcome or without_effect:
            violations.append(f"{table}: {without_outcome} effect(s) without a ledger outcome, {without_effect} outcome(s) without an effect")
    if unrecorded:
        violations.append(f"{unrecorded} ledger outcome(s) without a tool_result event")
    violations += [f"{name.replace('_', ' ')}: {count}" for name, count in duplicated.items() if count]
    if transient_undo_failures:
        violations.append(f"{transient_undo_failures} compensation(s) failed on a transient cause")
    statuses = [value[0] for value in runs.values()]
    return {
        "submitted": len(keys),
        "succeeded": statuses.count("succeeded"),
        "compensated": statuses.count("compensated"),
        "failed": statuses.count("failed"),
        "compensation_failed": statuses.count("compensation_failed"),
        "pending": sum(1 for s in statuses if s not in ENDED),
        "lost": len(set(keys) - set(runs)),
        "duplicate_effects": duplicates,
        "effects_without_ledger_outcome": sum(gap[0] for gap in ledger_gaps.values()),
        "ledger_outcomes_without_effect": sum(gap[1] for gap in ledger_gaps.values()),
        "ledger_outcomes_without_event": unrecorded,
        **duplicated,
        "runs_recovered": sum(1 for value in runs.values() if (value[2] or 0) > 1),
        "violations": violations,
    }
