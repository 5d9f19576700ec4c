"""A decision records who made it by key ID as well as by name (names are not unique), and the API,
the console and the CLI show both."""

import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import ROOT, Worker

KEEL = str(Path(sys.executable).parent / "keel")


async def test_two_keys_with_one_name_are_told_apart(api: httpx.AsyncClient, service: Worker, worker_env: dict[str, str],
                                                     db: psycopg.AsyncConnection, customer: str) -> None:
    first = (await api.post("/v1/keys", json={"name": "sub1", "role": "approve"})).json()
    second = (await api.post("/v1/keys", json={"name": "sub1", "role": "approve"})).json()
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    waiting = await wait_for_approval(api, run_id)

    approve = subprocess.run([KEEL, "approve", waiting["approval_id"], "--comment", "fine"], cwd=ROOT, capture_output=True, text=True,
                             env={**worker_env, "KEEL_PORT": str(service.port), "KEEL_API_KEY": second["key"]})
    await wait_for_run(api, run_id)
    shown = (await api.get(f"/v1/approvals/{waiting['approval_id']}")).json()
    listed = subprocess.run([KEEL, "approvals", "--status", "all"], cwd=ROOT, capture_output=True, text=True,
                            env={**worker_env, "KEEL_PORT": str(service.port)})
    async with service.client(timeout=30) as client:
        page = await client.get(f"/console/runs/{run_id}", headers={"Authorization": api.headers["Authorization"]})

    assert approve.returncode == 0, approve.stderr
    assert second["key_id"] in approve.stdout and "sub1" in approve.stdout
    assert (shown["decided_by"], shown["decided_by_key_id"]) == ("sub1", second["key_id"])
    assert first["key_id"] not in (shown["decided_by_key_id"],)
    assert await fetch_value(db, "SELECT decided_by_key_id FROM keel.approvals WHERE approval_id = %s", waiting["approval_id"]) == second["key_id"]
    assert second["key_id"] in next(line for line in listed.stdout.splitlines() if waiting["approval_id"] in line)
    assert page.status_code == 200 and second["key_id"] in page.text
