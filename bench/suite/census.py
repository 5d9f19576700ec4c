"""Which statements and transactions one run sends, counted in the client: DBOS through its SQLAlchemy
engine's events (`before_cursor_execute`, `commit`, pool `checkout`), Keel through psycopg's
`AsyncConnection.execute` and `transaction`, patched for the duration. It explains workload 2's commit
counts, and separates writing transactions from read-only ones (which `xact_commit` also counts)."""

import collections
import re
import threading
from typing import Any

import psycopg
from sqlalchemy import event

from bench.suite.harness import Harness
from steps import dbos_seam

BACKGROUND = ("queue", "notification", "listener", "scheduler", "heartbeat")
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|WITH\b.*\b(INSERT|UPDATE|DELETE)\b)", re.IGNORECASE | re.DOTALL)


def normalise(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()[:100]


class Census:
    def __init__(self) -> None:
        self.statements: collections.Counter[tuple[str, str]] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()
        self.dbos_wrote: dict[int, bool] = {}

    @staticmethod
    def foreground() -> bool:
        return not any(b in threading.current_thread().name.lower() for b in BACKGROUND)

    def dbos_statement(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if self.foreground():
            self.statements[("DBOS", normalise(statement))] += 1
            if WRITES.match(statement):
                self.dbos_wrote[id(conn)] = True

    def dbos_checkout(self, *args: Any) -> None:
        if self.foreground():
            self.counts["dbos_checkouts"] += 1

    def dbos_commit(self, conn: Any) -> None:
        if self.foreground():
            self.counts["dbos_commits"] += 1
            if self.dbos_wrote.pop(id(conn), False):
                self.counts["dbos_write_commits"] += 1

    def install(self, engine: Any) -> None:
        event.listen(engine, "before_cursor_execute", self.dbos_statement)
        event.listen(engine, "commit", self.dbos_commit)
        event.listen(engine.pool, "checkout", self.dbos_checkout)
        original_execute, original_transaction = psycopg.AsyncConnection.execute, psycopg.AsyncConnection.transaction
        census = self

        async def execute(conn: psycopg.AsyncConnection, query: Any, *args: Any, **kwargs: Any) -> Any:
            text = query if isinstance(query, str) else str(getattr(query, "_obj", query))
            census.statements[("Keel", normalise(text))] += 1
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:  # autocommit: a transaction of its own
                census.counts["keel_autocommits"] += 1
                census.counts["keel_write_autocommits"] += bool(WRITES.match(text))
            return await original_execute(conn, query, *args, **kwargs)

        def transaction(conn: psycopg.AsyncConnection, *args: Any, **kwargs: Any) -> Any:
            census.counts["keel_transaction_blocks"] += 1
            return original_transaction(conn, *args, **kwargs)

        psycopg.AsyncConnection.execute = execute  # type: ignore[method-assign]
        psycopg.AsyncConnection.transaction = transaction  # type: ignore[method-assign]

        def uninstall() -> None:
            psycopg.AsyncConnection.execute = original_execute  # type: ignore[method-assign]
            psycopg.AsyncConnection.transaction = original_transaction  # type: ignore[method-assign]
            event.remove(engine, "before_cursor_execute", self.dbos_statement)
            event.remove(engine, "commit", self.dbos_commit)
            event.remove(engine.pool, "checkout", self.dbos_checkout)

        self.uninstall = uninstall


async def count(harness: Harness, variant: str, prompt: str, runs: int) -> dict[str, Any]:
    """Per run: statements (by sender and text), transactions, writing transactions, DBOS pool checkouts."""
    census = Census()
    census.install(dbos_seam.system_database_engine())
    try:
        for _ in range(runs):
            await harness.variants[variant](prompt)
    finally:
        census.uninstall()
    c = census.counts
    return {
        "statements": [(who, sql, n / runs) for (who, sql), n in census.statements.most_common()],
        "statements_per_run": sum(census.statements.values()) / runs,
        "transactions_per_run": (c["dbos_commits"] + c["keel_autocommits"] + c["keel_transaction_blocks"]) / runs,
        "write_transactions_per_run": (c["dbos_write_commits"] + c["keel_write_autocommits"] + c["keel_transaction_blocks"]) / runs,
        "dbos_checkouts_per_run": c["dbos_checkouts"] / runs,
        "detail_per_run": {k: v / runs for k, v in c.items()},
    }
