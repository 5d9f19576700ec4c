"""Bad input gets a clear 4xx and starts nothing; a model's bad tool calls are data, not crashes."""

import json

import httpx
import psycopg
import pytest

from tests.conftest import fetch_value, wait_for_run


async def count_runs(db: psycopg.AsyncConnection) -> int:
    return await fetch_value(db, "SELECT count(*) FROM dbos.workflow_status")


async def test_unknown_agent_is_refused_and_nothing_starts(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    before = await count_runs(db)

    response = await api.post("/v1/runs", json={"agent": "nobody", "input": "hi"}, headers={"Idempotency-Key": "unknown-agent-1"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_agent"
    assert "billing" in response.json()["error"]["message"]
    assert await count_runs(db) == before


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"agent": "billing"}',
    b'{"agent": "billing", "input": ""}',
    b'{"agent": "billing", "input": "x", "priority": 1}',
    b'["billing", "x"]',
])
async def test_malformed_bodies_get_422_with_details(api: httpx.AsyncClient, db: psycopg.AsyncConnection, body: bytes) -> None:
    before = await count_runs(db)

    response = await api.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["details"]
    assert await count_runs(db) == before


async def test_bad_idempotency_key_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/runs", json={"agent": "probe", "input": "say hi"}, headers={"Idempotency-Key": "has spaces/and slashes"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_text_postgres_cannot_store_is_422_not_500(api: httpx.AsyncClient) -> None:
    """Found by the fuzzer: NUL characters and lone surrogates used to reach PostgreSQL and come back as 500."""
    nul = await api.post("/v1/runs", json={"agent": "probe", "input": "say \u0000"})
    surrogate = await api.post("/v1/runs", content=b'{"agent": "probe", "input": "say \\ud800"}', headers={"Content-Type": "application/json"})
    nul_in_path = await api.get("/v1/runs/a%00b")

    assert [nul.status_code, surrogate.status_code, nul_in_path.status_code] == [422, 422, 422]
    assert surrogate.json()["error"]["details"][0]["loc"] == ["body", "input"]


async def test_unknown_run_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/runs/no-such-run")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_bad_cursor_is_400_and_one_with_foreign_characters_is_422(api: httpx.AsyncClient) -> None:
    undecodable = await api.get("/v1/runs", params={"cursor": "bm90LWEtY3Vyc29y"})  # base64 of "not-a-cursor"
    malformed = await api.get("/v1/runs", params={"cursor": "%%%"})

    assert undecodable.status_code == 400 and undecodable.json()["error"]["message"] == "invalid cursor"
    assert malformed.status_code == 422


@pytest.mark.parametrize("fault", ["invalid_arguments", "malformed_arguments", "unknown_tool"])
async def test_bad_tool_calls_go_back_to_the_model_and_the_run_continues(
    api: httpx.AsyncClient, model: httpx.AsyncClient, db: psycopg.AsyncConnection, customer: str, fault: str
) -> None:
    text = f"Upgrade customer {customer} to the pro plan"
    await model.post("/faults", json={"kind": fault, "match": customer, "after": 2})

    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": text})).json()["run_id"])

    assert run["status"] == "succeeded", run
    assert run["turns"] == 7  # six turns plus the re-ask
    assert await fetch_value(db, "SELECT count(*) FROM sandbox.payments WHERE customer_id = %s", customer) == 1
    told = await fetch_value(db, """SELECT payload -> 'messages' FROM keel.events
                                    WHERE run_id = %s AND kind = 'llm_request' AND payload ->> 'turn' = '4'""", run["run_id"])
    answer = next(message for message in told if message["role"] == "tool")
    assert json.loads(answer["content"])["error"]["kind"] == "invalid_arguments"


async def test_too_many_bad_replies_fail_the_run_with_a_reason(api: httpx.AsyncClient, model: httpx.AsyncClient, customer: str) -> None:
    await model.post("/faults", json={"kind": "invalid_arguments", "match": customer, "times": 10})

    response = await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
    run = await wait_for_run(api, response.json()["run_id"])

    assert run["status"] == "failed"
    assert run["reason"] == "invalid_model_output"
    assert "customer_id" in run["error"]


async def test_final_answer_must_match_the_output_type(api: httpx.AsyncClient, model: httpx.AsyncClient, customer: str) -> None:
    await model.post("/faults", json={"kind": "bad_final", "match": customer, "times": 1})

    response = await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})
    run = await wait_for_run(api, response.json()["run_id"])

    assert run["status"] == "succeeded"
    assert run["turns"] == 7
    assert run["output"]["customer_id"] == customer


async def test_a_body_over_the_limit_is_413(api: httpx.AsyncClient, db: psycopg.AsyncConnection) -> None:
    before = await count_runs(db)

    response = await api.post("/v1/runs", json={"agent": "probe", "input": "say " + "x" * 2_000_000})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert await count_runs(db) == before


async def test_ready_when_the_database_has_the_latest_migration(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
