"""Cancelling a run that waits for approval makes its request `cancelled`: every approvals read
still answers, with a status the document allows."""

import typing

import httpx
import psycopg

from app.schemas import ApprovalView
from steps.approvals import APPROVAL_STATUSES
from tests.conftest import fetch_value, wait_for_approval, wait_for_run


async def test_listing_reading_and_filtering_approvals_after_a_cancel(api: httpx.AsyncClient, customer: str) -> None:
    """Issue 13 item 6: these answered 500 (and `?status=cancelled` 422) after an ordinary cancel."""
    run_id = (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
    waiting = await wait_for_approval(api, run_id)
    await api.post(f"/v1/runs/{run_id}/cancel")
    await wait_for_run(api, run_id)

    everything = await api.get("/v1/approvals", params={"limit": 1000})
    of_the_run = await api.get("/v1/approvals", params={"run_id": run_id})
    one = await api.get(f"/v1/approvals/{waiting['approval_id']}")
    cancelled = await api.get("/v1/approvals", params={"status": "cancelled"})
    decided_after = await api.post(f"/v1/approvals/{waiting['approval_id']}", json={"decision": "approve"})

    assert everything.status_code == 200
    assert of_the_run.status_code == 200 and [a["status"] for a in of_the_run.json()] == ["cancelled"]
    assert one.status_code == 200 and one.json()["status"] == "cancelled"
    assert cancelled.status_code == 200 and waiting["approval_id"] in {a["approval_id"] for a in cancelled.json()}
    assert decided_after.status_code == 409


async def test_the_response_model_allows_every_status_the_table_can_hold(db: psycopg.AsyncConnection) -> None:
    check = await fetch_value(db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'approvals_status_check'")
    allowed_by_table = set(__import__("re").findall(r"'(\w+)'", check))

    assert allowed_by_table == set(APPROVAL_STATUSES)
    assert set(typing.get_args(ApprovalView.model_fields["status"].annotation)) == set(APPROVAL_STATUSES)
