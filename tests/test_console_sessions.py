"""The console's sessions live on the server: the cookie is a random session ID (never the API key),
stored as a digest, with an expiry, ended at logout. Every state-changing console request carries the
session's CSRF token and comes from the console's own origin."""

import hashlib
import re

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_approval
from tests.processes import Worker

COOKIE = "keel_session"


async def log_in(client: httpx.AsyncClient, key: str) -> str:
    """Log in through the form; returns the CSRF token the console's pages carry."""
    response = await client.post("/console/login", data={"key": key, "next": "/console"})
    assert response.status_code == 303, response.text
    return csrf_of(await client.get("/console"))


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


@pytest.fixture
async def browser(service: Worker) -> httpx.AsyncClient:
    """A client with a cookie jar and no API key: what a browser has."""
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        yield client


async def count_runs(db: psycopg.AsyncConnection) -> int:
    return await fetch_value(db, "SELECT count(*) FROM dbos.workflow_status WHERE name = 'keel.agent_run'")


async def test_the_cookie_is_a_session_not_the_key(browser: httpx.AsyncClient, api_keys: dict[str, str], db: psycopg.AsyncConnection) -> None:
    response = await browser.post("/console/login", data={"key": api_keys["admin"], "next": "/console"})
    cookie = browser.cookies[COOKIE]

    assert response.status_code == 303
    assert api_keys["admin"] not in response.headers["set-cookie"] and cookie != api_keys["admin"]
    assert "HttpOnly" in response.headers["set-cookie"] and "SameSite=strict" in response.headers["set-cookie"]
    stored = await fetch_value(db, "SELECT expires_at > now() FROM keel.console_sessions WHERE digest = %s",
                               hashlib.sha256(cookie.encode()).hexdigest())
    assert stored is True
    assert await fetch_value(db, "SELECT count(*) FROM keel.console_sessions WHERE digest = %s", cookie) == 0


async def test_logout_ends_the_session_on_the_server(browser: httpx.AsyncClient, service: Worker, api_keys: dict[str, str]) -> None:
    token = await log_in(browser, api_keys["admin"])
    stolen = browser.cookies[COOKIE]

    logout = await browser.post("/console/logout", data={"csrf": token})
    async with httpx.AsyncClient(base_url=service.url, timeout=30, cookies={COOKIE: stolen}) as replay:
        after = await replay.get("/console")
        reading = await replay.get("/v1/runs")

    assert logout.status_code == 303
    assert after.status_code == 303 and after.headers["location"].startswith("/console/login")
    assert reading.status_code == 401


async def test_an_expired_session_is_refused(browser: httpx.AsyncClient, api_keys: dict[str, str], db: psycopg.AsyncConnection) -> None:
    await log_in(browser, api_keys["admin"])
    digest = hashlib.sha256(browser.cookies[COOKIE].encode()).hexdigest()
    await db.execute("UPDATE keel.console_sessions SET expires_at = now() - interval '1 second' WHERE digest = %s", (digest,))

    after = await browser.get("/console")

    assert after.status_code == 303 and after.headers["location"].startswith("/console/login")


async def test_a_revoked_key_ends_its_sessions(browser: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    created = (await api.post("/v1/keys", json={"name": "leaving", "role": "admin"})).json()
    await log_in(browser, created["key"])

    await api.delete(f"/v1/keys/{created['key_id']}")
    after = await browser.get("/console")

    assert after.status_code == 303


async def test_a_post_without_the_csrf_token_changes_nothing(browser: httpx.AsyncClient, api_keys: dict[str, str],
                                                             db: psycopg.AsyncConnection) -> None:
    token = await log_in(browser, api_keys["admin"])
    before = await count_runs(db)

    missing = await browser.post("/console/runs", data={"agent": "probe", "input": "say hi"})
    wrong = await browser.post("/console/runs", data={"agent": "probe", "input": "say hi", "csrf": token[:-2] + "xx"})

    assert missing.status_code == 403 and wrong.status_code == 403
    assert await count_runs(db) == before


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:1"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site"},
])
async def test_a_post_from_another_origin_is_refused_even_with_the_token(browser: httpx.AsyncClient, api_keys: dict[str, str],
                                                                         db: psycopg.AsyncConnection, headers: dict[str, str]) -> None:
    token = await log_in(browser, api_keys["admin"])
    before = await count_runs(db)

    response = await browser.post("/console/runs", data={"agent": "probe", "input": "say hi", "csrf": token}, headers=headers)

    assert response.status_code == 403 and "origin" in response.text.lower()
    assert await count_runs(db) == before


async def test_a_post_from_the_consoles_own_origin_with_the_token_works(browser: httpx.AsyncClient, service: Worker,
                                                                        api_keys: dict[str, str]) -> None:
    token = await log_in(browser, api_keys["admin"])

    response = await browser.post("/console/runs", data={"agent": "probe", "input": "say hi", "csrf": token},
                                  headers={"Origin": service.url, "Sec-Fetch-Site": "same-origin"})

    assert response.status_code == 303 and response.headers["location"].startswith("/console/runs/")


async def test_the_session_cookie_only_reads_the_api(browser: httpx.AsyncClient, api: httpx.AsyncClient, api_keys: dict[str, str],
                                                     customer: str) -> None:
    """A page on another port of the same host is same-site: its requests carry a SameSite=Strict cookie.
    So the cookie may read `/v1` (the live timeline does), and every `/v1` write needs the bearer key."""
    await log_in(browser, api_keys["admin"])
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    await wait_for_approval(api, run_id)

    reading = await browser.get(f"/v1/runs/{run_id}")
    cancelling = await browser.post(f"/v1/runs/{run_id}/cancel")
    still = (await api.get(f"/v1/runs/{run_id}")).json()
    await api.post(f"/v1/runs/{run_id}/cancel")

    assert reading.status_code == 200
    assert cancelling.status_code == 401
    assert still["status"] == "awaiting_approval"
