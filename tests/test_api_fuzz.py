"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): valid and
invalid requests to every `/v1` operation; none may get a 5xx, and every response must match the
document (status, content type, body schema, headers). A worker of its own, on a database of its
own, takes the fuzzer's requests, so the runs and keys it makes touch no other test. Before the
fuzzer starts, that database holds runs in the states that broke listings before (cancelled with a
cancelled approval, compensated, forked, approved, waiting), so every listing reads them."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from app.config import Settings
from app.main import create_app
from steps.run_status import ENDED
from tests.conftest import TEST_DATABASE, WORKER_MODULES, fresh_database, make_key
from tests.processes import Worker

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("KEEL_FUZZ_EXAMPLES", "25"))
"""Examples per operation and mode; CI keeps the default, a longer hunt raises it."""
# CI draws the same examples every time (a red CI is a regression, not a new draw); KEEL_FUZZ_RANDOM=1
# draws new ones each time: `KEEL_FUZZ_RANDOM=1 KEEL_FUZZ_EXAMPLES=500 make test` hunts for new failures.


@pytest.fixture(scope="module")
def fuzzed_worker(database_url: str, worker_env: dict[str, str], logs: Path) -> Iterator[Worker]:
    url = fresh_database(database_url, f"{TEST_DATABASE}_fuzz")
    worker = Worker(env={**worker_env, "DATABASE_URL": url, "KEEL_EXECUTOR_ID": "fuzz", "KEEL_API_KEY": make_key(url, "admin")},
                    log=logs / "worker-fuzz.log").start()
    try:
        with httpx.Client(base_url=worker.url, headers=worker.headers, timeout=30) as api:
            seed_runs(api, url)
        yield worker
    finally:
        worker.stop()


def seed_runs(api: httpx.Client, url: str) -> None:
    """Runs in every state a listing must render: cancelled (its approval cancelled), compensated, forked, approved, waiting."""
    with psycopg.connect(url, autocommit=True) as conn:
        for customer in ("F-1", "F-2", "F-3", "F-4"):
            conn.execute("INSERT INTO sandbox.customers VALUES (%s, 'Fuzz', %s, 'basic')", (customer, f"{customer.lower()}@example.com"))
        conn.execute("INSERT INTO sandbox.faults (service, kind, match, remaining) VALUES ('plans', 'unavailable', 'F-2', 1000)")

    def start(text: str) -> str:
        response = api.post("/v1/runs", json={"agent": "billing", "input": text})
        assert response.status_code == 202, response.text
        return response.json()["run_id"]

    cancelled, compensated, approved, waiting = (start(f"Upgrade customer F-{n} to the {plan} plan")
                                                 for n, plan in ((1, "enterprise"), (2, "pro"), (3, "enterprise"), (4, "enterprise")))
    for run_id in (cancelled, approved, waiting):
        wait_until(api, run_id, {"awaiting_approval"})
    api.post(f"/v1/runs/{cancelled}/cancel").raise_for_status()
    approval = api.get(f"/v1/runs/{approved}").json()["pending_approval"]["approval_id"]
    api.post(f"/v1/approvals/{approval}", json={"decision": "approve", "comment": "fuzz"}).raise_for_status()
    assert wait_until(api, cancelled, ENDED) == "cancelled"
    assert wait_until(api, compensated, ENDED) == "compensated"
    assert wait_until(api, approved, ENDED) == "succeeded"
    forked = api.post(f"/v1/runs/{approved}/fork", json={"from_step": 2}).json()["run_id"]
    wait_until(api, forked, ENDED | {"awaiting_approval"})




def wait_until(api: httpx.Client, run_id: str, statuses: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(f"/v1/runs/{run_id}").json()["status"]
        if status in statuses:
            return status
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}")


# The document this code serves (checked against the served one below): known when tests are collected.
schema = schemathesis.openapi.from_dict(create_app(Settings(KEEL_AGENT_MODULES=WORKER_MODULES)).openapi()).include(path_regex=r"^/(v1/|healthz|readyz)")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# A valid request may still name a run, approval or key that does not exist (404), conflict with one
# that does (409), or carry a page cursor no schema can describe (400, the only use of 400).
schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "400", "401", "403", "404", "409"]


def test_the_served_document_is_the_one_fuzzed(fuzzed_worker: Worker) -> None:
    assert httpx.get(f"{fuzzed_worker.url}/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not os.environ.get("KEEL_FUZZ_RANDOM"))
def test_no_request_gets_a_5xx_and_every_response_matches_the_schema(case: schemathesis.Case, fuzzed_worker: Worker) -> None:
    case.call_and_validate(base_url=fuzzed_worker.url, headers=fuzzed_worker.headers, timeout=30)
