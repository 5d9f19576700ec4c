"""The web console end to end: a person logs in, starts a run that needs approval, approves it in
the inbox and watches the run page's live timeline reach success; in headless Chromium (Debian's
`chromium`, driven by Playwright with `executable_path`: nothing is downloaded)."""

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_approval, wait_for_run
from tests.processes import Worker

# Chromium cannot reach the internet here: without these flags its background connections are refused.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "no Chromium found and it could not be installed: `apt-get install -y chromium` (Debian's package; .ci/run does it)"


def find_chromium() -> str | None:
    for candidate in (os.environ.get("KEEL_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium; installed with apt-get where it is missing and we may (root, Debian)."""
    path = find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        path = find_chromium()
    if path is None:
        pytest.skip(NO_CHROMIUM)
    return path


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            await context.close()


async def test_log_in_start_a_run_approve_it_in_the_inbox_and_watch_it_succeed_live(
    browser, service: Worker, api_keys: dict[str, str], db: psycopg.AsyncConnection, customer: str
) -> None:
    from playwright.async_api import expect

    run_page = browser.pages[0] if browser.pages else await browser.new_page()

    await run_page.goto(f"{service.url}/console")
    await expect(run_page).to_have_url(re.compile(r"/console/login\?next="))
    await run_page.get_by_label("API key").fill(api_keys["admin"])
    await run_page.get_by_role("button", name="Log in").click()
    await expect(run_page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()

    start = run_page.get_by_role("region", name="Start a run")
    await start.get_by_label("Agent").select_option("billing")
    await start.get_by_label("Input").fill(f"Upgrade customer {customer} to the enterprise plan")
    await start.get_by_role("button", name="Start").click()
    await expect(run_page).to_have_url(re.compile(r"/console/runs/[0-9a-f]+$"))
    run_id = unquote(run_page.url.rsplit("/", 1)[1])
    await expect(run_page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible()

    # The run page stays open and is never reloaded (a marker in its window would not survive a reload):
    # what it shows from here on comes from its live timeline. The inbox is another tab.
    await run_page.evaluate("window.keelTestMarker = 1")
    await expect(run_page.locator("#run-status")).to_have_text("awaiting_approval", timeout=30_000)
    await expect(run_page.locator("#timeline tr.kind-approval_requested")).to_contain_text("charge_customer needs approval")
    inbox = await browser.new_page()
    await inbox.goto(f"{service.url}/console/approvals")
    row = inbox.get_by_role("row").filter(has=inbox.get_by_role("link", name=run_id))
    await expect(row).to_contain_text("charge_customer")
    await expect(row).to_contain_text('"amount_cents": 49900')
    await row.get_by_role("button", name="Approve").click()
    await expect(inbox).to_have_url(f"{service.url}/console/approvals")
    await expect(inbox.get_by_role("link", name=run_id)).to_have_count(0)

    # The stream brings the rest of the timeline, then `end` and the final state.
    await expect(run_page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
    await expect(run_page.locator("#live-state")).to_have_text("The run ended: succeeded.")
    timeline = run_page.locator("#timeline")
    await expect(timeline.locator("tr.kind-approval_decided")).to_contain_text("approved by test-admin")
    await expect(timeline.locator("tr.kind-tool_result").filter(has_text="charge_customer")).to_have_count(1)
    await expect(timeline.locator("tr.kind-run_finished")).to_contain_text("succeeded")
    await expect(run_page.locator("#run-output")).to_be_visible()
    await expect(run_page.get_by_role("heading", name="Waiting for approval")).to_have_count(0)
    await expect(run_page.locator("#live-tokens pre")).to_have_count(0)  # model output was shown while it streamed, then replaced
    assert await run_page.evaluate("window.keelTestMarker") == 1

    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    assert await fetch_value(db, "SELECT status FROM keel.runs WHERE run_id = %s", run_id) == "succeeded"
    assert await fetch_value(db, "SELECT decided_by FROM keel.approvals WHERE run_id = %s", run_id) == "test-admin"


# Every state of the run page's live model output, as the page shows it (recorded on each change).
RECORD_TOKENS = """
window.keelTokens = [];
document.addEventListener("DOMContentLoaded", function () {
  var tokens = document.getElementById("live-tokens");
  if (!tokens) return;
  new MutationObserver(function () { window.keelTokens.push(tokens.textContent); })
    .observe(tokens, {childList: true, subtree: true, characterData: true});
});
"""


async def test_the_run_page_drops_the_streamed_output_of_a_failed_attempt(
    browser, service: Worker, api: httpx.AsyncClient, model: httpx.AsyncClient, api_keys: dict[str, str]
) -> None:
    from playwright.async_api import expect

    text = f"a reply that streams in pieces {uuid.uuid4().hex}"
    await model.post("/faults", json={"kind": "cut_stream", "match": text})  # the first attempt breaks off halfway
    run_id = (await api.post("/v1/runs", json={"agent": "probe", "input": f"say {text}"})).json()["run_id"]
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as login:  # a session of the approve key, as the login form makes it
        await login.post("/console/login", data={"key": api_keys["approve"], "next": "/console"})
        session = login.cookies["keel_session"]
    await browser.add_cookies([{"name": "keel_session", "value": session, "url": service.url}])
    await browser.add_init_script(RECORD_TOKENS)
    page = browser.pages[0] if browser.pages else await browser.new_page()

    await page.goto(f"{service.url}/console/runs/{run_id}")  # the stream starts from the beginning, whenever the page opens
    await expect(page.locator("#live-state")).to_have_text("The run ended: succeeded.", timeout=60_000)
    await expect(page.locator("#timeline tr.kind-retry")).to_have_count(1)
    shown = await page.evaluate("window.keelTokens")
    run = await wait_for_run(api, run_id)

    assert run["output"] == text
    broken = [state for state in shown if state and text.startswith(state) and state != text]
    assert broken, f"the broken attempt's output was shown while it streamed: {shown}"
    assert text in shown, f"the retried attempt's output was shown alone, without the broken one's: {shown}"
    assert not [state for state in shown if len(state) > len(text)], f"never both attempts at once: {shown}"
    assert shown[-1] == "", "the streamed output gives way to the recorded response"


async def test_the_console_sends_strangers_to_the_login_form_and_refuses_a_submit_key_the_inbox(
    service: Worker, api: httpx.AsyncClient, api_keys: dict[str, str], customer: str
) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as browser:
        stranger = await browser.get("/console/runs/anything?x=1")
        posting = await browser.post("/console/approvals/anything", data={"decision": "approve"})
        wrong = await browser.post("/console/login", data={"key": "keel_not-a-key", "next": "/console"})
        login = await browser.post("/console/login", data={"key": api_keys["submit"], "next": "https://evil.example/"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await browser.get("/console")).text).group(1)
        started = await browser.post("/console/runs", data={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan",
                                                            "csrf": csrf})
        run_id = started.headers["location"].rsplit("/", 1)[1]
        waiting = await wait_for_approval(api, run_id)
        run_page = await browser.get(f"/console/runs/{run_id}")
        inbox = await browser.get("/console/approvals")
        approving = await browser.post(f"/console/approvals/{waiting['approval_id']}", data={"decision": "approve", "csrf": csrf})
        still = (await api.get(f"/v1/approvals/{waiting['approval_id']}")).json()
        logout = await browser.post("/console/logout", data={"csrf": csrf})
        after = await browser.get("/console")
    await api.post(f"/v1/runs/{run_id}/cancel")

    assert stranger.status_code == 303 and stranger.headers["location"] == "/console/login?next=/console/runs/anything%3Fx%3D1"
    assert posting.status_code == 303 and posting.headers["location"] == "/console/login?next=/console"
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert login.status_code == 303 and login.headers["location"] == "/console"  # never off-site
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("keel_session=") and api_keys["submit"] not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert started.status_code == 303 and started.headers["location"] == f"/console/runs/{run_id}"
    assert run_page.status_code == 200 and "awaiting_approval" in run_page.text
    assert "Deciding needs a key with role approve." in run_page.text and ">Approve</button>" not in run_page.text
    assert inbox.status_code == 403 and "This needs a key with role approve" in inbox.text and "Traceback" not in inbox.text
    assert approving.status_code == 403 and "<h1>Not allowed</h1>" in approving.text
    assert still["status"] == "pending"
    assert logout.status_code == 303 and 'keel_session=""' in logout.headers["set-cookie"]
    assert after.status_code == 303 and after.headers["location"].startswith("/console/login")


async def test_with_keys_off_the_console_needs_no_login(start_worker) -> None:
    worker = start_worker("console-auth-off", KEEL_AUTH="off")
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as browser:
        runs = await browser.get("/console")
        login = await browser.get("/console/login?next=/console/approvals")
        inbox = await browser.get("/console/approvals")

    assert runs.status_code == 200 and "Start a run" in runs.text and "Log out" not in runs.text
    assert login.status_code == 303 and login.headers["location"] == "/console/approvals"
    assert inbox.status_code == 200


@pytest.fixture
def other_site() -> Iterator[Callable[[str, str], str]]:
    """A web server on another port of the same host (same-site, not same-origin): where an attacker's
    page would be. `publish(path, html)` serves a page and returns its URL."""
    pages: dict[str, bytes] = {}

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def publish(path: str, html: str) -> str:
        pages[path] = html.encode()
        return f"http://127.0.0.1:{server.server_port}{path}"

    yield publish
    server.shutdown()
    server.server_close()


def forged_form(action: str, fields: dict[str, str]) -> str:
    inputs = "".join(f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items())
    return f'<!doctype html><form id="f" method="post" action="{action}">{inputs}</form><script>document.getElementById("f").submit()</script>'


async def test_a_page_on_another_port_cannot_act_in_a_logged_in_console(
    browser, service: Worker, api: httpx.AsyncClient, api_keys: dict[str, str], db: psycopg.AsyncConnection, customer: str, other_site
) -> None:
    """Issue 13 item 7: a page served from another port started a run and approved a $499 charge in a
    logged-in admin's browser (SameSite=Strict does not cover another port of the same host)."""
    from playwright.async_api import expect

    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    waiting = await wait_for_approval(api, run_id)
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(f"{service.url}/console/login")
    await page.get_by_label("API key").fill(api_keys["admin"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    forged_input = f"say forged {uuid.uuid4().hex}"

    await page.goto(other_site("/start", forged_form(f"{service.url}/console/runs", {"agent": "probe", "input": forged_input})))
    await page.wait_for_url(f"{service.url}/console/**")
    started = await page.content()
    await page.goto(other_site("/approve", forged_form(f"{service.url}/console/approvals/{waiting['approval_id']}", {"decision": "approve"})))
    await page.wait_for_url(f"{service.url}/console/**")
    approved = await page.content()
    approval = (await api.get(f"/v1/approvals/{waiting['approval_id']}")).json()
    await api.post(f"/v1/runs/{run_id}/cancel")

    assert await fetch_value(db, "SELECT count(*) FROM keel.runs WHERE input = %s", forged_input) == 0
    assert approval["status"] == "pending"
    assert "another origin" in started and "another origin" in approved
