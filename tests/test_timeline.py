"""Every model call, tool call, retry, approval and compensation is a row, in order, written once."""

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.conftest import wait_for_run
from tests.processes import ROOT, Worker

FULL_STORY = [
    "run_started",
    "llm_request", "retry", "llm_response", "tool_call", "tool_result",      # lookup_customer, after a 429
    "llm_request", "llm_response", "tool_call", "tool_result",               # create_ticket
    "llm_request", "llm_response", "approval_requested", "approval_decided",  # charge_customer waits...
    "tool_call", "tool_result",                                              # ...and is approved
    "llm_request", "llm_response", "tool_call", "tool_result",               # update_plan fails
    "run_finished", "rollback_started",
    "compensation_started", "tool_call", "tool_result", "compensation_finished",  # refund
    "compensation_started", "tool_call", "tool_result", "compensation_finished",  # close the ticket
]


async def kinds(db: psycopg.AsyncConnection, run_id: str) -> list[str]:
    rows = await (await db.execute("SELECT kind FROM keel.timeline WHERE run_id = %s ORDER BY seq", (run_id,))).fetchall()
    return [kind for (kind,) in rows]


async def test_a_run_with_a_retry_an_approval_and_a_rollback_tells_its_whole_story(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, service: Worker, worker_env: dict
) -> None:
    await model.post("/faults", json={"kind": "status", "status": 429, "retry_after": 0.1, "match": customer})
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    deadline = time.monotonic() + 30
    while not (run := (await api.get(f"/v1/runs/{run_id}")).json())["pending_approval"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await api.post(f"/v1/approvals/{run['pending_approval']['approval_id']}", json={"decision": "approve", "decided_by": "ann"})
    await wait_for_run(api, run_id)

    timeline = (await api.get(f"/v1/runs/{run_id}/events")).json()
    printed = subprocess.run([str(Path(sys.executable).parent / "keel"), "events", run_id], cwd=ROOT, capture_output=True, text=True,
                             env={**worker_env, "KEEL_PORT": str(service.port)})

    assert [event["kind"] for event in timeline] == FULL_STORY
    assert await kinds(db, run_id) == FULL_STORY
    assert [event["seq"] for event in timeline] == list(range(1, len(FULL_STORY) + 1))
    summaries = [event["summary"] for event in timeline]
    assert "approved by ann via test-admin" in summaries
    assert any(s.startswith("failed (tool_failed)") for s in summaries)
    assert printed.returncode == 0, printed.stderr
    assert re.search(r"approval_decided\s+approved by ann via test-admin", printed.stdout)
    assert "[compensate:1]" in printed.stdout


async def test_no_event_is_written_twice_after_a_sigkill(start_worker: Callable[..., Worker], api: httpx.AsyncClient,
                                                          db: psycopg.AsyncConnection, customer: str) -> None:
    twin = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"])
    worker = start_worker("timeline-crash", KEEL_FAILPOINTS="tool.after_commit:update_plan")
    async with worker.client() as own:
        run_id = (await own.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"]
    assert worker.wait_for_exit() == -9
    start_worker("timeline-crash")
    await wait_for_run(api, run_id)

    assert await kinds(db, run_id) == await kinds(db, twin["run_id"])
    duplicates = await (await db.execute(
        """SELECT count(*) FROM (SELECT 1 FROM keel.timeline WHERE run_id = %s GROUP BY source, step_id, kind, attempt HAVING count(*) > 1) d""",
        (run_id,))).fetchone()
    assert duplicates == (0,)


async def test_secrets_never_reach_events_or_checkpoints(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, worker_env: dict) -> None:
    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"])
    secret = worker_env["OPENAI_API_KEY"]

    leaks = await (await db.execute(
        """SELECT (SELECT count(*) FROM keel.events WHERE payload::text LIKE %(s)s),
                  (SELECT count(*) FROM dbos.operation_outputs WHERE output LIKE %(s)s OR error LIKE %(s)s),
                  (SELECT count(*) FROM dbos.workflow_input WHERE inputs LIKE %(s)s)""", {"s": f"%{secret}%"})).fetchone()

    assert run["status"] == "succeeded"
    assert leaks == (0, 0, 0)


async def test_the_readme_sql_examples_run_as_written(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"])
    blocks = re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    uncommented = ["\n".join(line for line in block.splitlines() if not line.startswith("--")) for block in blocks]
    statements = [s.strip().replace("RUN_ID", run["run_id"]) for text in uncommented for s in text.split(";") if s.strip()]

    results = [await (await db.execute(statement)).fetchall() for statement in statements]

    assert len(statements) >= 9
    assert sum(1 for rows in results if rows) >= 6  # most examples find rows of the run
