"""API keys: every `/v1` endpoint needs one; roles decide who may submit, approve and administer."""

import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_approval
from tests.processes import ROOT, Worker

KEEL = str(Path(sys.executable).parent / "keel")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def anonymous(service: Worker) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/approvals", "/v1/doctor", "/v1/keys", "/v1/runs/nope/events"])
async def test_no_key_is_401_with_a_bearer_challenge(anonymous: httpx.AsyncClient, path: str) -> None:
    response = await anonymous.get(path)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


async def test_a_wrong_key_is_401(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/v1/runs", headers=bearer("keel_not-a-key"))

    assert response.status_code == 401
    assert "not valid" in response.json()["error"]["message"]


async def test_health_and_readiness_need_no_key(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/readyz")).status_code == 200


async def test_a_revoked_key_is_refused_at_once(api: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> None:
    created = (await api.post("/v1/keys", json={"name": "short-lived", "role": "submit"})).json()
    before = await anonymous.get("/v1/runs", headers=bearer(created["key"]))

    revoked = await api.delete(f"/v1/keys/{created['key_id']}")
    after = await anonymous.get("/v1/runs", headers=bearer(created["key"]))

    assert before.status_code == 200
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert "key" not in revoked.json()  # the secret is shown once, at creation


async def test_a_submit_key_cannot_approve(api: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[str, str],
                                           db: psycopg.AsyncConnection, customer: str) -> None:
    submitted = await anonymous.post("/v1/runs", headers=bearer(api_keys["submit"]),
                                     json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})
    run_id = submitted.json()["run_id"]
    waiting = await wait_for_approval(api, run_id)

    refused = await anonymous.post(f"/v1/approvals/{waiting['approval_id']}", headers=bearer(api_keys["submit"]), json={"decision": "approve"})
    approved = await anonymous.post(f"/v1/approvals/{waiting['approval_id']}", headers=bearer(api_keys["approve"]), json={"decision": "approve"})

    assert submitted.status_code == 202
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert approved.status_code == 200 and approved.json()["decided_by"] == "test-approve"
    assert await fetch_value(db, "SELECT key_id FROM keel.run_submitters WHERE run_id = %s", run_id) is not None


async def test_an_approve_key_cannot_submit_and_only_admins_manage_keys(anonymous: httpx.AsyncClient, api_keys: dict[str, str]) -> None:
    submitting = await anonymous.post("/v1/runs", headers=bearer(api_keys["approve"]), json={"agent": "probe", "input": "say hi"})
    listing = await anonymous.get("/v1/keys", headers=bearer(api_keys["submit"]))
    creating = await anonymous.post("/v1/keys", headers=bearer(api_keys["approve"]), json={"name": "x", "role": "admin"})

    assert submitting.status_code == 403
    assert listing.status_code == 403
    assert creating.status_code == 403


async def test_cancelling_another_keys_run_needs_admin(api: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[str, str],
                                                       customer: str) -> None:
    owner = (await api.post("/v1/keys", json={"name": "owner", "role": "submit"})).json()["key"]
    run_id = (await anonymous.post("/v1/runs", headers=bearer(owner),
                                   json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    await wait_for_approval(api, run_id)

    by_stranger = await anonymous.post(f"/v1/runs/{run_id}/cancel", headers=bearer(api_keys["submit"]))
    by_owner = await anonymous.post(f"/v1/runs/{run_id}/cancel", headers=bearer(owner))

    assert by_stranger.status_code == 403
    assert by_owner.status_code == 200 and by_owner.json()["status"] in ("compensating", "cancelled")


def test_keel_keys_create_prints_a_working_key_once(worker_env: dict[str, str], service: Worker) -> None:
    created = subprocess.run([KEEL, "keys", "create", "--role", "submit", "--name", "from-cli"], cwd=ROOT, env=worker_env,
                             capture_output=True, text=True)
    key = created.stdout.strip()
    listed = subprocess.run([KEEL, "keys", "list"], cwd=ROOT, env=worker_env, capture_output=True, text=True)

    assert created.returncode == 0, created.stderr
    assert key.startswith("keel_") and "shown once" in created.stderr
    assert httpx.get(f"{service.url}/v1/runs", headers=bearer(key)).status_code == 200
    assert "from-cli" in listed.stdout and key not in listed.stdout
