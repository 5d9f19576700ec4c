"""Listing runs costs in proportion to the page, and one run whose stored text cannot be rendered
breaks nobody's listing."""

import asyncio
import uuid

import httpx
import psycopg
from dbos import DBOSClient, DBOSPortableJSONSerializer

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from workflows.runs import COLUMNS, STATUS_CANDIDATES


async def plan(db: psycopg.AsyncConnection, query: str) -> dict:
    """The plan PostgreSQL would run `query` with, were a sequential scan its last resort."""
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        rows = await (await db.execute(f"EXPLAIN (FORMAT JSON) {query}")).fetchone()
    return rows[0][0]["Plan"]


def outer_path(node: dict) -> list[dict]:
    """The plan's nodes from the top down to the scan that drives it (subplans left out)."""
    path = [node]
    while children := [child for child in node.get("Plans", []) if child.get("Parent Relationship") in ("Outer", "Member", None)]:
        node = children[0]
        path.append(node)
    return path


async def test_a_page_of_runs_is_read_in_order_from_an_index(db: psycopg.AsyncConnection) -> None:
    for query in (f"SELECT {COLUMNS} FROM keel.runs ORDER BY created_at DESC, run_id DESC LIMIT 20",
                  "SELECT run_id, agent, status, reason, turns, tokens, cost_usd, waiting_for, created_at FROM keel.runs ORDER BY created_at DESC LIMIT 20",
                  f"SELECT {COLUMNS} FROM keel.runs WHERE (created_at, run_id) < (now(), 'x') ORDER BY created_at DESC, run_id DESC LIMIT 20"):
        path = outer_path(await plan(db, query))

        assert path[-1].get("Index Name") == "keel_agent_runs_created_idx", path
        assert "Sort" not in [node["Node Type"] for node in path]  # the page comes from the index in order: no run outside it is computed


async def test_a_status_filter_narrows_by_index_and_finds_exactly_that_status(api: httpx.AsyncClient, db: psycopg.AsyncConnection,
                                                                             customer: str) -> None:
    await api.post("/sandbox/faults", json={"service": "plans", "kind": "unavailable", "match": customer})
    inputs = [("billing", f"Upgrade customer {customer} to the pro plan"), ("probe", "say listed"),
              ("probe", 'call refuse with {"reason": "listing"}')]
    ended = [await wait_for_run(api, (await api.post("/v1/runs", json={"agent": a, "input": i})).json()["run_id"]) for a, i in inputs]
    waiting = (await api.post("/v1/runs", json={"agent": "probe", "input": f'call transfer with {{"customer_id": "{customer}", "amount_cents": 5}}'})).json()
    approval = await wait_for_approval(api, waiting["run_id"])
    cancelled = (await api.post("/v1/runs", json={"agent": "probe", "input": f'call transfer with {{"customer_id": "{customer}", "amount_cents": 6}}'})).json()
    await wait_for_approval(api, cancelled["run_id"])
    await api.post(f"/v1/runs/{cancelled['run_id']}/cancel")

    try:
        seen = {run["status"] for run in ended} | {"awaiting_approval", "cancelled"}
        assert {"compensated", "succeeded", "failed"} <= seen
        for status, candidates in STATUS_CANDIDATES.items():
            everything = await fetch_value(db, "SELECT count(*) FROM keel.runs WHERE status = %s", status)
            narrowed = await fetch_value(db, f"SELECT count(*) FROM keel.runs WHERE status = %s AND {candidates}", status)
            assert narrowed == everything, status  # the narrowing never loses a run of that status
            listed = (await api.get("/v1/runs", params={"status": status, "limit": 200})).json()["runs"]
            assert len(listed) == min(everything, 200) and all(run["status"] == status for run in listed)
    finally:  # leave no run waiting on the shared worker (other tests' workers would take it over)
        await api.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "reject"})
        await wait_for_run(api, waiting["run_id"])


async def test_one_run_whose_input_cannot_be_rendered_breaks_nobody_s_listing(
    api: httpx.AsyncClient, db: psycopg.AsyncConnection, database_url: str
) -> None:
    # DBOS stores the input as JSON text; "\u0000" is valid JSON that PostgreSQL's jsonb refuses.
    mine = (await api.post("/v1/runs", json={"agent": "probe", "input": "say next to a broken run"})).json()["run_id"]
    broken = f"unreadable-{uuid.uuid4().hex[:8]}"
    client = DBOSClient(system_database_url=database_url, serializer=DBOSPortableJSONSerializer())
    try:
        await asyncio.to_thread(client.enqueue, {"workflow_name": "keel.agent_run", "queue_name": "nobody-listens", "workflow_id": broken},
                                {"agent": "probe", "input": "a\x00b"})
        assert "\\u0000" in await fetch_value(db, "SELECT inputs FROM dbos.workflow_input WHERE workflow_uuid = %s", broken)

        listing = await api.get("/v1/runs", params={"limit": 200})
        one = await api.get(f"/v1/runs/{broken}")
        other = await api.get(f"/v1/runs/{mine}")
        metrics = await api.get("/metrics")
        counted = await fetch_value(db, "SELECT count(*) FROM keel.runs WHERE input IS NOT NULL")
    finally:
        client.destroy()
        await db.execute("DELETE FROM dbos.workflow_status WHERE workflow_uuid = %s", (broken,))
        await db.execute("DELETE FROM dbos.workflow_input WHERE workflow_uuid = %s", (broken,))

    assert listing.status_code == 200 and {broken, mine} <= {run["run_id"] for run in listing.json()["runs"]}
    assert one.status_code == 200 and one.json()["input"] == "a\ufffdb" and one.json()["status"] == "queued"
    assert other.status_code == 200 and metrics.status_code == 200 and counted >= 2
