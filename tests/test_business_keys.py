"""A tool's business key deduplicates its effect across runs, not only within one."""

import uuid

import httpx
import psycopg

from tests.conftest import fetch_value, wait_for_run


async def test_two_runs_with_the_same_business_key_open_one_ticket(api: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str) -> None:
    subject = f"refund-{uuid.uuid4().hex[:8]}"
    text = f'call open_ticket with {{"customer_id": "{customer}", "subject": "{subject}"}}'

    first = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "probe", "input": text})).json()["run_id"])
    second = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "probe", "input": text})).json()["run_id"])

    assert first["run_id"] != second["run_id"]
    assert first["output"] == second["output"]
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.tickets WHERE subject = %s", subject) == 1
    assert await fetch_value(db, """SELECT payload ->> 'deduplicated' FROM keel.events
                                    WHERE run_id = %s AND kind = 'tool_result'""", second["run_id"]) == "true"
