"""A worker that dies and stays dead: a live worker notices its silence and takes its runs over;
they finish with every effect once, and the dead worker's return does not run them again."""

import asyncio
import time
from collections.abc import Callable

import psycopg

from tests.conftest import fetch_value, wait_for_run
from tests.processes import Worker

FAST_BEATS = {"KEEL_HEARTBEAT_INTERVAL": "0.5"}


async def test_a_dead_workers_runs_are_finished_by_another(start_worker: Callable[..., Worker], db: psycopg.AsyncConnection, customer: str) -> None:
    doomed = start_worker("takeover-doomed", **FAST_BEATS)
    survivor = start_worker("takeover-survivor", **FAST_BEATS)
    async with doomed.client() as client:
        run_id = (await client.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
        deadline = time.monotonic() + 30
        while (await client.get(f"/v1/runs/{run_id}")).json()["status"] != "awaiting_approval":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    doomed.kill()

    async with survivor.client() as client:
        deadline = time.monotonic() + 30
        # The survivor claims the dead executor and requeues its runs; any live worker (the survivor,
        # or the suite's shared one) may then dequeue and finish them.
        while await fetch_value(db, "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = %s", run_id) in ("takeover-doomed", None):
            assert time.monotonic() < deadline, "no live worker took the run over"
            await asyncio.sleep(0.1)
        approval = await fetch_value(db, "SELECT approval_id FROM keel.approvals WHERE run_id = %s", run_id)
        await client.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
        run = await wait_for_run(client, run_id)
    returned = start_worker("takeover-doomed", **FAST_BEATS)

    assert run["status"] == "succeeded"
    assert await fetch_value(db, "SELECT taken_over_by FROM keel.workers WHERE executor_id = 'takeover-doomed'") == "takeover-survivor"
    counts = await (await db.execute(
        """SELECT (SELECT count(*) FROM sandbox.payments WHERE customer_id = %(c)s), (SELECT count(*) FROM sandbox.tickets WHERE customer_id = %(c)s),
                  (SELECT count(*) FROM keel.approvals WHERE run_id = %(r)s)""", {"c": customer, "r": run_id})).fetchone()
    assert counts == (1, 1, 1)
    assert "No workflows to recover" in returned.log.read_text()  # the returning worker does not run it again
