"""`/metrics` speaks Prometheus and counts what Postgres recorded."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for_run


async def test_metrics_count_runs_and_latencies(api: httpx.AsyncClient, customer: str) -> None:
    run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "billing", "input": f"Upgrade customer {customer} to the pro plan"})).json()["run_id"])

    response = await api.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    assert run["status"] == "succeeded"
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    succeeded = [s.value for s in families["keel_runs"].samples if s.labels == {"status": "succeeded"}]
    assert succeeded and succeeded[0] >= 1  # created within the metrics window
    # Gauge histograms over the window: buckets, then `_gcount` and `_gsum` as gauges of their own.
    llm_count = families["keel_recent_llm_latency_seconds_gcount"].samples[0].value
    llm_sum = families["keel_recent_llm_latency_seconds_gsum"].samples[0].value
    tool_count = next(s.value for s in families["keel_recent_tool_call_seconds"].samples if s.labels == {"le": "+Inf"})
    assert llm_count >= 6 and llm_sum > 0 and tool_count >= 5
    assert {"keel_approvals_waiting", "keel_breaker_open", "keel_compensations", "keel_recent_retries"} <= set(families)
