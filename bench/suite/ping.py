"""Does `pool_pre_ping` (DBOS's default for its SQLAlchemy pool) show up in `xact_commit`? A read and a
write per checkout, like a DBOS step's checkpoint read and write, 50 times, with and without it, on a
database of its own (`keel_bench_ping`); counters read after the pool's backends have exited (which
flushes their statistics)."""

import time
from typing import Any

import psycopg
import sqlalchemy as sa

from bench.names import bench_database
from bench.suite.setup import conninfo, fresh_database

DB = bench_database("_ping")


def stat() -> tuple[int, int]:
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (DB,)).fetchone()
    return row[0], row[1]


def measure(pairs: int = 50) -> dict[str, Any]:
    print("pool_pre_ping: commits per checkpoint-like read + write, with and without", flush=True)
    url = fresh_database(DB).replace("postgresql://", "postgresql+psycopg://", 1)
    result: dict[str, Any] = {"pairs": pairs}
    for ping in (True, False):
        engine = sa.create_engine(url, pool_pre_ping=ping, pool_size=2, max_overflow=0)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x int)"))
        engine.dispose()
        time.sleep(1.5)
        before = stat()
        for _ in range(pairs):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT count(*) FROM t"))
                conn.commit()
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        engine.dispose()
        time.sleep(1.5)
        after = stat()
        result["with" if ping else "without"] = {"commits": (after[0] - before[0]) / pairs, "rollbacks": (after[1] - before[1]) / pairs}
        print(f"  pool_pre_ping={ping}: {result['with' if ping else 'without']}", flush=True)
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    return result
