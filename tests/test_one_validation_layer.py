"""Every door validates with the same models and limits before anything is stored: the console's
forms go through the API's request models, so what the API refuses the console refuses too."""

import re

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_approval
from tests.processes import Worker


async def count_runs(db: psycopg.AsyncConnection) -> int:
    return await fetch_value(db, "SELECT count(*) FROM dbos.workflow_status WHERE name = 'keel.agent_run'")


@pytest.fixture
async def console(service: Worker, api_keys: dict[str, str]) -> httpx.AsyncClient:
    """A logged-in browser (cookie jar), with the CSRF token of its session in `console.csrf`."""
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        await client.post("/console/login", data={"key": api_keys["admin"], "next": "/console"})
        page = await client.get("/console")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        client.csrf = match.group(1) if match else ""  # type: ignore[attr-defined]
        yield client


async def test_a_nul_byte_from_the_console_is_refused_and_stores_nothing(console: httpx.AsyncClient, api: httpx.AsyncClient,
                                                                          db: psycopg.AsyncConnection) -> None:
    """The reproduction of issue 13 item 10: `input=a%00b` answered 422 but created the run, and the
    stored input broke every listing of runs."""
    before = await count_runs(db)

    response = await console.post("/console/runs", content=f"agent=probe&input=a%00b&csrf={console.csrf}",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 422
    assert await count_runs(db) == before
    assert (await api.get("/v1/runs")).status_code == 200
    assert (await console.get("/console")).status_code == 200
    assert await fetch_value(db, "SELECT count(*) FROM keel.runs") >= before


async def test_the_console_refuses_an_input_the_api_refuses(console: httpx.AsyncClient, api: httpx.AsyncClient,
                                                             db: psycopg.AsyncConnection) -> None:
    before = await count_runs(db)
    text = "say " + "x" * 900_000

    by_console = await console.post("/console/runs", data={"agent": "probe", "input": text, "csrf": console.csrf})
    by_api = await api.post("/v1/runs", json={"agent": "probe", "input": text})

    assert (by_console.status_code, by_api.status_code) == (422, 422)
    assert "input" in by_console.text
    assert await count_runs(db) == before


async def test_the_console_refuses_a_comment_the_api_refuses(console: httpx.AsyncClient, api: httpx.AsyncClient, customer: str) -> None:
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    waiting = await wait_for_approval(api, run_id)

    by_console = await console.post(f"/console/approvals/{waiting['approval_id']}",
                                    data={"decision": "approve", "comment": "x" * 50_000, "csrf": console.csrf})
    by_api = await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "approve", "comment": "x" * 50_000})
    still = (await api.get(f"/v1/approvals/{waiting['approval_id']}")).json()
    await api.post(f"/v1/runs/{run_id}/cancel")

    assert (by_console.status_code, by_api.status_code) == (422, 422)
    assert still["status"] == "pending" and still["comment"] is None


async def test_console_filters_and_paths_with_nul_are_refused_cleanly(console: httpx.AsyncClient) -> None:
    listing = await console.get("/console", params={"agent": "a\x00b"})
    run_page = await console.get("/console/runs/a%00b")

    assert listing.status_code == 200
    assert run_page.status_code == 404 and "Traceback" not in run_page.text
