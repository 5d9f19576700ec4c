"""What a page of runs and a `/metrics` scrape cost, with EXPLAIN ANALYZE, on a database of synthetic runs.

    python -m bench.run_listing --runs 5000        # BENCH_DATABASE_URL names the server (default: local 5432)

It drops and creates its own database (`keel_bench_listing`), migrates it, writes `--runs` synthetic
runs with SQL (`bench/sql/synthetic_runs.sql`), and prints the execution time and the top of the plan
of each query `GET /v1/runs` and `/metrics` run (with JIT off, as Keel runs them). Run it on a
checkout before and after a change to `keel.runs` to compare."""

import argparse
import subprocess
from pathlib import Path

import psycopg

from app.database import psycopg_conninfo
from app.routers.metrics import COMPENSATIONS, RUNS
from app.schema import migrate
from bench.names import bench_database
from bench.suite.setup import fresh_database
from workflows.runs import COLUMNS, STATUS_CANDIDATES

DATABASE = bench_database("_listing")
SEED = Path(__file__).parent / "sql" / "synthetic_runs.sql"
PAGE = f"SELECT {COLUMNS} FROM keel.runs WHERE true {{}} ORDER BY created_at DESC, run_id DESC LIMIT 50"
QUERIES = {
    "README: newest 20": "SELECT run_id, agent, status, reason, turns, tokens, cost_usd, waiting_for, created_at FROM keel.runs "
                         "ORDER BY created_at DESC LIMIT 20",
    "GET /v1/runs": PAGE.format(""),
    "GET /v1/runs?status=awaiting_approval": PAGE.format(f"AND {STATUS_CANDIDATES['awaiting_approval']} AND status = 'awaiting_approval'"),
    "GET /v1/runs?status=compensated": PAGE.format(f"AND {STATUS_CANDIDATES['compensated']} AND status = 'compensated'"),
    "GET /v1/runs?agent=probe": PAGE.format("AND agent = 'probe'"),
    "/metrics keel_runs": RUNS.replace("%(window)s", "300"),
    "/metrics keel_compensations": COMPENSATIONS.replace("%(window)s", "300"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    args = parser.parse_args()
    url = fresh_database(DATABASE)
    migrate(url)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"n={args.runs}", "-f", str(SEED), psycopg_conninfo(url)], check=True)
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        conn.execute("SET jit = off")  # as Keel runs these queries
        for name, query in QUERIES.items():
            lines = [row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {query}").fetchall()]
            took = next(line for line in lines if line.startswith("Execution Time"))
            scans = [line.strip() for line in lines if "Scan" in line and "never executed" not in line][:3]
            print(f"{name}: {took}\n    " + "\n    ".join(scans))


if __name__ == "__main__":
    main()
