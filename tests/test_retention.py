"""`keel gc` removes the runs that ended, from every table of DBOS and Keel, and nothing else: never a
run that waits (for a person, or for an operator after a compensation gave up), never a ledger row
under a business key unless told to."""

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from app.database import psycopg_conninfo
from app.schema import migrate
from tests.conftest import wait_for_approval, wait_for_run
from tests.processes import KEEL, ROOT, Worker
from tests.test_migrations import empty_database, env_for  # noqa: F401  (a fixture)

REFERENCES = """
SELECT n.nspname, c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
WHERE n.nspname IN ('dbos', 'keel') AND c.relkind = 'r' AND NOT a.attisdropped
  AND a.attname IN ('workflow_uuid', 'destination_uuid', 'run_id', 'forked_from', 'parent_workflow_id', 'workflow_id')
"""


def rows_naming(conn: psycopg.Connection, ids: list[str]) -> dict[str, int]:
    """Rows in any table of DBOS or Keel whose workflow or run column names one of `ids`."""
    found = {}
    for schema, table, column in conn.execute(REFERENCES).fetchall():
        count = conn.execute(f'SELECT count(*) FROM {schema}.{table} WHERE "{column}" = ANY(%s)', (ids,)).fetchone()[0]
        if count:
            found[f"{schema}.{table}.{column}"] = count
    return found


def family(conn: psycopg.Connection, run_id: str) -> list[str]:
    """The run and the workflows it started (rollback, compensations), by the IDs DBOS recorded."""
    return [row[0] for row in conn.execute(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid = %s OR starts_with(workflow_uuid, %s)", (run_id, f"{run_id}:")).fetchall()]


def gc(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KEEL), "gc", "--older-than", "0s", *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


async def start(api: httpx.AsyncClient, agent: str, text: str) -> str:
    response = await api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def test_gc_removes_ended_runs_everywhere_and_keeps_waiting_runs_and_business_keys(
        empty_database: Callable[..., str], worker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    url = empty_database("retention")
    migrate(url)
    conninfo = psycopg_conninfo(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for customer in ("C-8801", "C-8802", "C-8803", "C-8804"):
            conn.execute("INSERT INTO sandbox.customers VALUES (%s, 'Retention', %s, 'basic')", (customer, f"{customer.lower()}@example.com"))
    env = env_for(worker_env, url, KEEL_EXECUTOR_ID="retention")
    worker = Worker(env=env, log=tmp_path / "worker.log").start()
    try:
        async with worker.client(timeout=30) as api:
            keyed = await wait_for_run(api, await start(api, "probe", 'call open_ticket with {"customer_id": "C-8801", "subject": "gc-business-key"}'))
            done = await wait_for_run(api, await start(api, "billing", "Upgrade customer C-8801 to the pro plan"))
            waiting = await start(api, "billing", "Upgrade customer C-8802 to the enterprise plan")
            await wait_for_approval(api, waiting)
            await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": "C-8803", "times": 100})
            undone = await wait_for_run(api, await start(api, "billing", "Upgrade customer C-8803 to the pro plan"))
            # Then every refund is refused (a permanent failure): the next rollback waits for an operator.
            await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": "C-8804", "times": 100})
            await api.post("/sandbox/faults", json={"service": "payments", "kind": "reject", "match": "charge_id", "times": 1000})
            stuck = await wait_for_run(api, await start(api, "billing", "Upgrade customer C-8804 to the pro plan"), timeout=180)

            removed = gc(env)
            with psycopg.connect(conninfo) as conn:
                gone_ids = family(conn, done["run_id"]) + family(conn, undone["run_id"])  # none: they are gone
                left = rows_naming(conn, [done["run_id"], undone["run_id"], f"{undone['run_id']}:rollback", f"{undone['run_id']}:compensate:1"])
                keyed_ledger = conn.execute("SELECT count(*) FROM keel.tool_calls WHERE run_id = %s", (keyed["run_id"],)).fetchone()[0]
                keyed_rest = rows_naming(conn, [keyed["run_id"]])
                kept = {run_id: bool(rows_naming(conn, family(conn, run_id))) for run_id in (waiting, stuck["run_id"])}
            approval = (await api.get(f"/v1/runs/{waiting}")).json()["pending_approval"]["approval_id"]
            await api.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
            finished = await wait_for_run(api, waiting)
            with_keys = gc(env, "--business-keys")
            with psycopg.connect(conninfo) as conn:
                keyed_ledger_after = conn.execute("SELECT count(*) FROM keel.tool_calls WHERE run_id = %s", (keyed["run_id"],)).fetchone()[0]
                tickets = conn.execute("SELECT count(*) FROM sandbox.tickets WHERE subject = 'gc-business-key'").fetchone()[0]
    finally:
        worker.stop()

    assert (done["status"], undone["status"], stuck["status"]) == ("succeeded", "compensated", "compensation_failed")
    assert removed.returncode == 0, removed.stderr
    assert "removed 3 run(s)" in removed.stdout  # the business-keyed run, the succeeded one and the compensated one
    assert gone_ids == [] and left == {}
    assert keyed_ledger == 1 and keyed_rest == {"keel.tool_calls.run_id": 1}  # only its business-keyed ledger row is left
    assert kept == {waiting: True, stuck["run_id"]: True}  # waiting for a person, and for an operator
    assert finished["status"] == "succeeded"  # gc did not disturb the run that waited
    assert with_keys.returncode == 0 and "removed 1 run(s)" in with_keys.stdout  # the run that waited, now ended
    assert keyed_ledger_after == 0  # its run was removed by the first gc: the row is swept once business keys may go
    assert tickets == 1  # the demo's own tables are the outside world: never Keel's to remove


async def test_with_a_retention_setting_the_workers_collect_by_themselves(
        empty_database: Callable[..., str], worker_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    url = empty_database("retention_duty")
    migrate(url)
    env = env_for(worker_env, url, KEEL_EXECUTOR_ID="retention-duty", KEEL_GC_OLDER_THAN="1s", KEEL_GC_INTERVAL="0.5")
    worker = Worker(env=env, log=tmp_path / "worker.log").start()
    try:
        async with worker.client(timeout=30) as api:
            ended = await wait_for_run(api, await start(api, "probe", "say collect me"))
            waiting = await start(api, "probe", 'call transfer with {"customer_id": "C-1", "amount_cents": 5}')
            await wait_for_approval(api, waiting)
            deadline = time.monotonic() + 120
            with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
                while family(conn, ended["run_id"]):
                    assert time.monotonic() < deadline, "no worker collected the ended run"
                    time.sleep(0.2)
                await asyncio.sleep(3)  # several rounds more: the waiting run must survive them
                waiting_left = family(conn, waiting)
    finally:
        worker.stop()

    assert ended["status"] == "succeeded"
    assert waiting_left == [waiting]
    assert "gc: removed 1 run(s)" in worker.log.read_text()
