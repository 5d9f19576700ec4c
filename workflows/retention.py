"""Retention: `keel gc` removes the rows of runs that ended long ago, from DBOS's tables and Keel's, in
one transaction per batch, so a run is either wholly there or wholly gone.

A run is removed only when it and every workflow Keel derived from it (its rollback, its
compensations, its children) ended before the cutoff, and no fork of it is still going (a fork may
still read its origin's ledger). So a run that is queued, running, waiting for a person or a timer,
compensating, or whose compensation gave up and waits for an operator, is never touched.

The ledger keeps, by default, the rows under a business key (`@tool(idempotency_key=...)`): a later
run with the same business key finds the recorded outcome there instead of repeating the effect, so
those rows go only when the caller says so (`business_keys=True`). Rows under keys derived from the
run's own ID (`<run>:<step>`, `<run>:compensate:<n>`) can never be hit again once the run is gone.

Keel's rows are found by their `run_id` column in every table of schema `keel`, so a table added
later is covered without a change here."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from steps import db, dbos_seam
from steps.ids import rollback_id

log = logging.getLogger("keel")
LOCK = "keel.gc"
BATCH = 500

ENDED = list(dbos_seam.DBOS_ENDED)
# Runs that ended before the cutoff, oldest first, of which no fork is still going; locked, so a
# concurrent resume waits for this transaction (or this one skips the run).
CANDIDATES = """
SELECT r.workflow_uuid FROM dbos.workflow_status r
WHERE r.name = 'keel.agent_run' AND r.status = ANY(%(ended)s) AND r.updated_at < %(cutoff)s
  AND r.parent_workflow_id IS NULL  -- a child run goes with its parent's family, never before: the parent's rollback reads it
  AND r.workflow_uuid <> ALL(%(kept)s)
  AND NOT EXISTS (SELECT 1 FROM keel.forks f JOIN dbos.workflow_status fork ON fork.workflow_uuid = f.run_id
                  WHERE f.forked_from = r.workflow_uuid AND fork.status <> ALL(%(ended)s))
ORDER BY r.updated_at LIMIT %(batch)s
FOR UPDATE OF r SKIP LOCKED
"""
COMPENSATIONS = "SELECT run_id, workflow_id FROM keel.compensations WHERE run_id = ANY(%s) AND workflow_id IS NOT NULL"
CHILDREN = "SELECT parent_workflow_id, workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = ANY(%s)"
STATES = "SELECT workflow_uuid, status = ANY(%s) AND updated_at < %s FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)"
KEEL_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
WHERE n.nspname = 'keel' AND c.relkind IN ('r', 'p') AND a.attname = 'run_id' AND NOT a.attisdropped AND c.relname <> 'tool_calls'
ORDER BY c.relname
"""
DBOS_PAYLOADS = ("workflow_input", "workflow_output", "operation_outputs")  # no foreign key: DBOS deletes them itself too
# With `business_keys`: the ledger rows left behind by runs an earlier gc removed, once as old as the cutoff.
ORPHANED_LEDGER = """
DELETE FROM keel.tool_calls t WHERE t.updated_at < now() - %s::interval
  AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status s WHERE s.workflow_uuid = t.run_id)
"""
LEDGER = """
DELETE FROM keel.tool_calls WHERE run_id = ANY(%(ids)s)
  AND (%(business_keys)s OR idempotency_key = run_id OR starts_with(idempotency_key, run_id || ':'))
"""


@dataclass
class Collected:
    runs: int = 0
    workflows: int = 0
    keel_rows: int = 0
    ledger_rows: int = 0

    def add(self, other: "Collected") -> None:
        self.runs += other.runs
        self.workflows += other.workflows
        self.keel_rows += other.keel_rows
        self.ledger_rows += other.ledger_rows


async def collect(conn: psycopg.AsyncConnection, older_than: timedelta, *, business_keys: bool = False, batch: int = BATCH) -> Collected:
    """Remove every run that ended more than `older_than` ago (see the module's docstring), in batches."""
    async with held(conn):
        return await collect_all(conn, older_than, business_keys=business_keys, batch=batch)


async def collect_all(conn: psycopg.AsyncConnection, older_than: timedelta, *, business_keys: bool, batch: int = BATCH) -> Collected:
    total = Collected()
    kept: list[str] = []  # ended, but something derived from them has not (a rollback in progress, say)
    while True:
        looked_at, done = await collect_batch(conn, older_than, kept, business_keys=business_keys, batch=batch)
        total.add(done)
        if not looked_at:
            break
    if business_keys:
        total.ledger_rows += (await conn.execute(ORPHANED_LEDGER, (older_than,))).rowcount
    return total


async def collect_batch(conn: psycopg.AsyncConnection, older_than: timedelta, kept: list[str], *, business_keys: bool, batch: int) -> tuple[int, Collected]:
    """One batch, in one transaction: how many runs it looked at, and what it removed. The runs it had
    to keep are added to `kept`, so the next batch looks further."""
    async with conn.transaction():
        cutoff = (await (await conn.execute("SELECT (extract(epoch FROM now() - %s::interval) * 1000)::bigint", (older_than,))).fetchone())[0]
        runs = [row[0] for row in await (await conn.execute(CANDIDATES, {"ended": ENDED, "cutoff": cutoff, "batch": batch, "kept": kept})).fetchall()]
        if not runs:
            return 0, Collected()
        families = await families_of(conn, runs)
        settled = dict(await (await conn.execute(STATES, (ENDED, cutoff, [w for f in families.values() for w in f]))).fetchall())
        gone = [run for run, family in families.items() if all(settled.get(w, True) for w in family)]  # absent: never started
        kept.extend(run for run in runs if run not in gone)
        ids = [w for run in gone for w in families[run]]
        if not ids:
            return len(runs), Collected()
        keel_rows = 0
        for table in [row[0] for row in await (await conn.execute(KEEL_TABLES)).fetchall()]:
            keel_rows += (await conn.execute(f"DELETE FROM keel.{table} WHERE run_id = ANY(%s)", (ids,))).rowcount
        ledger_rows = (await conn.execute(LEDGER, {"ids": ids, "business_keys": business_keys})).rowcount
        for table in DBOS_PAYLOADS:
            await conn.execute(f"DELETE FROM dbos.{table} WHERE workflow_uuid = ANY(%s)", (ids,))
        # Its events, notifications and streams go with it (foreign keys, ON DELETE CASCADE).
        workflows = (await conn.execute("DELETE FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,))).rowcount
    return len(runs), Collected(runs=len(gone), workflows=workflows, keel_rows=keel_rows, ledger_rows=ledger_rows)


async def families_of(conn: psycopg.AsyncConnection, runs: list[str]) -> dict[str, list[str]]:
    """Each run with the workflows Keel derived from it: its rollback, its compensations, and the
    children of any of them, recursively."""
    families = {run: [run, rollback_id(run)] for run in runs}
    for run, workflow_id in await (await conn.execute(COMPENSATIONS, (runs,))).fetchall():
        families[run].append(workflow_id)
    owner = {w: run for run, family in families.items() for w in family}
    parents = list(owner)
    while parents:
        children = await (await conn.execute(CHILDREN, (parents,))).fetchall()
        parents = [child for parent, child in children if child not in owner]
        for parent, child in children:
            if child not in owner:
                owner[child] = owner[parent]
                families[owner[parent]].append(child)
    return families


class held:
    """`keel.gc`'s advisory lock for the block: one collector at a time (the CLI's and the workers')."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        while not await try_lock(self.conn):
            await asyncio.sleep(1)

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK,))


async def try_lock(conn: psycopg.AsyncConnection) -> bool:
    return (await (await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK,))).fetchone())[0]


async def keep_collecting(older_than: timedelta, every: float, *, business_keys: bool) -> None:
    """A worker's duty when a retention is configured: collect every `every` seconds. Every worker has
    it; the lock makes the first one do the round's work and the others skip it."""
    while True:
        await asyncio.sleep(every)
        try:
            async with db.pool().connection() as conn:
                if not await try_lock(conn):
                    continue
                try:
                    done = await collect_all(conn, older_than, business_keys=business_keys)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK,))
            if done.runs:
                log.warning("gc: removed %d run(s) that ended more than %s ago (%d workflows, %d Keel rows, %d ledger rows)",
                         done.runs, older_than, done.workflows, done.keel_rows, done.ledger_rows)
        except Exception:  # a failed round is retried at the next one
            log.exception("gc failed")
