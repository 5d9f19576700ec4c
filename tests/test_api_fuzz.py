"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): valid and
invalid requests to every `/v1` operation; none may get a 5xx, and every response must match the
document (status, content type, body schema, headers). A worker of its own, on a database of its
own, takes the fuzzer's requests, so the runs and keys it makes touch no other test."""

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_DATABASE, WORKER_MODULES, fresh_database, make_key
from tests.processes import Worker

EXAMPLES = int(os.environ.get("KEEL_FUZZ_EXAMPLES", "25"))
"""Examples per operation and mode; CI keeps the default, a longer hunt raises it."""
# CI draws the same examples every time (a red CI is a regression, not a new draw); KEEL_FUZZ_RANDOM=1
# draws new ones each time: `KEEL_FUZZ_RANDOM=1 KEEL_FUZZ_EXAMPLES=500 make test` hunts for new failures.


@pytest.fixture(scope="module")
def fuzzed_worker(database_url: str, worker_env: dict[str, str], logs: Path) -> Iterator[Worker]:
    url = fresh_database(database_url, f"{TEST_DATABASE}_fuzz")
    worker = Worker(env={**worker_env, "DATABASE_URL": url, "KEEL_EXECUTOR_ID": "fuzz", "KEEL_API_KEY": make_key(url, "admin")},
                    log=logs / "worker-fuzz.log").start()
    yield worker
    worker.stop()


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
