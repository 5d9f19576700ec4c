"""A run cancelled from outside Keel (DBOS's own CLI, `dbos workflow cancel`) is finished like one
cancelled through Keel: its approval request is cancelled and its effects undone, so the ticket is
closed, nothing can be approved any more, and `keel.runs` and `/metrics` agree. Until a worker has
finished it, `keel doctor` says what happened and what to do.

A worker of its own on a database of its own: its heartbeat (the duty that finishes such runs) runs
at start-up and then not for an hour, so the test sees the run before and after."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from app.database import psycopg_conninfo
from tests.conftest import wait_for_approval, wait_for_run
from tests.processes import ROOT, Worker

BIN = Path(sys.executable).parent


def metric(text: str, name: str, **labels: str) -> float:
    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    return sum(s.value for s in family.samples if s.labels == labels)


async def test_a_run_cancelled_by_the_dbos_cli_is_rolled_back_and_its_approval_cancelled(
    start_worker: Callable[..., Worker], own_database: Callable[[str], dict[str, str]], worker_env: dict[str, str]
) -> None:
    env = {**own_database("outside_cancel"), "KEEL_HEARTBEAT_INTERVAL": "3600"}
    worker = start_worker("outside-cancel", **env)
    async with worker.client(timeout=30) as api:
        run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": "Upgrade customer C-7 to the enterprise plan"})).json()["run_id"]
        approval = await wait_for_approval(api, run_id)  # a ticket is open, and the $499 charge waits for a person

        cancelled = subprocess.run([str(BIN / "dbos"), "workflow", "cancel", run_id], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                   env={**worker_env, **env, "PATH": f"{BIN}:{os.environ['PATH']}"})
        assert cancelled.returncode == 0, cancelled.stderr
        findings = (await api.get("/v1/doctor")).json()

    assert [(f["run_id"], f["problem"]) for f in findings] == [(run_id, "cancelled_outside")]
    assert f"keel cancel {run_id}" in findings[0]["fix"]

    worker.stop()
    worker = start_worker("outside-cancel", **env)  # its first heartbeat finds the run
    async with worker.client(timeout=30) as api:
        run = await wait_for_run(api, run_id)
        deadline = time.monotonic() + 30
        while [c["status"] for c in run["compensations"]] != ["succeeded"]:  # the rollback closes the ticket
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.1)
            run = (await api.get(f"/v1/runs/{run_id}")).json()
        decision = await api.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve"})
        findings = (await api.get("/v1/doctor")).json()
        metrics = (await api.get("/metrics")).text
        events = (await api.get(f"/v1/runs/{run_id}/events")).json()

    assert run["status"] == "cancelled"
    assert decision.status_code == 409  # the request was cancelled: approving it now charges nobody
    assert findings == []
    assert [e["summary"] for e in events if e["kind"] == "run_finished"][0].startswith("cancelled (cancelled): cancelled outside Keel")
    async with await psycopg.AsyncConnection.connect(psycopg_conninfo(env["DATABASE_URL"]), autocommit=True) as db:
        ticket, charges = await (await db.execute(
            """SELECT (SELECT string_agg(status, ',') FROM sandbox.tickets WHERE customer_id = 'C-7'),
                      (SELECT count(*) FROM sandbox.payments WHERE customer_id = 'C-7')""")).fetchone()
        statuses = dict(await (await db.execute("SELECT status, count(*) FROM keel.runs GROUP BY status")).fetchall())
        pending = (await (await db.execute("SELECT count(*) FROM keel.approvals WHERE status = 'pending'")).fetchone())[0]
    assert (ticket, charges) == ("closed", 0)
    assert statuses == {"cancelled": 1} and pending == 0
    assert metric(metrics, "keel_runs", status="cancelled") == 1 and metric(metrics, "keel_approvals_waiting") == pending
