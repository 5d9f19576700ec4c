"""`GET /metrics`: Prometheus text format, computed from Postgres at scrape time.

All of Keel's state is in Postgres, so these are the cluster's numbers, the same from every worker:
scrape one worker (or one at a time), not all of them added up.

A scrape costs in proportion to the work in flight and to the last `KEEL_METRICS_WINDOW` seconds,
never to every run ever made: each query reads an index over what is unfinished (runs, rollbacks,
approvals, compensations) or over a recent time range. So run counts cover the runs still in flight
or waiting on someone and those created in the window; retries and latencies cover the window
(gauge histograms: read them as they are, not with `rate()`)."""

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from psycopg import AsyncConnection

from steps import db

router = APIRouter(tags=["operations"])
BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]

# Each arm reads one index: Keel's on created_at, DBOS's partial ones on pending, queued and delayed
# workflows, Keel's on open compensations. The lateral `OFFSET 0` keeps the view from being joined
# as a whole: each counted run is looked up by its key.
RUNS = """
WITH counted AS (
    SELECT workflow_uuid AS run_id FROM dbos.workflow_status
    WHERE name = 'keel.agent_run' AND to_timestamp(created_at / 1000.0) > now() - make_interval(secs => %(window)s)
    UNION SELECT workflow_uuid FROM dbos.workflow_status WHERE status = 'PENDING' AND name = 'keel.agent_run'
    UNION SELECT workflow_uuid FROM dbos.workflow_status WHERE status = 'ENQUEUED' AND name = 'keel.agent_run'
    UNION SELECT workflow_uuid FROM dbos.workflow_status WHERE status = 'DELAYED' AND name = 'keel.agent_run'
    UNION SELECT left(workflow_uuid, -length(':rollback')) FROM dbos.workflow_status
          WHERE status IN ('PENDING', 'ENQUEUED') AND name = 'keel.rollback'
    UNION SELECT run_id FROM keel.compensations WHERE status IN ('pending', 'running', 'parked', 'failed')
)
SELECT run.status, count(*) FROM counted CROSS JOIN LATERAL (SELECT status FROM keel.runs WHERE run_id = counted.run_id OFFSET 0) run
GROUP BY run.status
"""
COMPENSATIONS = """
SELECT status, count(*) FROM keel.compensations
WHERE status IN ('pending', 'running', 'parked', 'failed') OR updated_at > now() - make_interval(secs => %(window)s)
GROUP BY status
"""
RECENT = "created_at > now() - make_interval(secs => %(window)s)"


class Snapshot:
    """A collector that yields metric families built beforehand (the queries are async)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    window = {"window": request.app.state.settings.metrics_window}
    async with db.pool().connection() as conn, conn.transaction():
        # Short indexed reads: PostgreSQL's JIT, tempted by the view's per-run lookups, would spend
        # seconds compiling what runs in milliseconds (measured: 4.9 s of 5.4 s at 50,000 runs).
        await conn.execute("SET LOCAL jit = off")
        scrape = Scrape(conn, window)
        families = [
            await scrape.gauge("keel_runs", "Runs by Keel status: every run not at rest, and those created in the metrics window",
                               RUNS, ["status"]),
            await scrape.gauge("keel_approvals_waiting", "Tool calls waiting for a person",
                               "SELECT count(*) FROM keel.approvals WHERE status = 'pending'", []),
            await scrape.gauge("keel_breaker_open", "1 while a dependency's circuit is open or half-open",
                               "SELECT dependency, (state <> 'closed')::int FROM keel.breakers", ["dependency"]),
            await scrape.gauge("keel_compensations", "Compensations by status: every one not finished, and those changed in the metrics window",
                               COMPENSATIONS, ["status"]),
            await scrape.gauge("keel_compensations_parked", "Undo calls waiting durably to try again, by the kind of failure they met",
                               "SELECT error ->> 'kind', count(*) FROM keel.compensations WHERE status = 'parked' GROUP BY 1", ["kind"]),
            await scrape.gauge("keel_recent_retries", "Retried attempts of model and tool calls in the metrics window",
                               f"SELECT count(*) FROM keel.events WHERE kind = 'retry' AND {RECENT}", []),
            await scrape.histogram("keel_recent_llm_latency_seconds", "Latency of the model calls answered in the metrics window",
                                   f"SELECT (payload ->> 'latency_ms')::int FROM keel.events WHERE kind = 'llm_response' AND {RECENT}"),
            await scrape.histogram("keel_recent_tool_call_seconds", "Duration, intent to outcome, of the tool calls completed in the metrics window",
                                   """SELECT extract(epoch FROM completed_at - created_at) * 1000 FROM keel.tool_calls
                                      WHERE completed_at > now() - make_interval(secs => %(window)s)"""),
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class Scrape:
    """One scrape's queries, on one connection, with the window as their `%(window)s`."""

    def __init__(self, conn: AsyncConnection, window: dict[str, Any]) -> None:
        self.conn = conn
        self.window = window

    async def rows(self, query: str) -> list[tuple]:
        return await (await self.conn.execute(query, self.window if "%(window)s" in query else None)).fetchall()

    async def gauge(self, name: str, documentation: str, query: str, labels: list[str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=labels)
        for *label_values, value in await self.rows(query):
            family.add_metric([str(v) for v in label_values], float(value))
        return family

    async def histogram(self, name: str, documentation: str, query: str) -> GaugeHistogramMetricFamily:
        """Cumulative buckets of the values in the window (milliseconds in SQL, seconds out)."""
        bucket_sql = ", ".join(f"count(*) FILTER (WHERE v <= {bound})" for bound in BUCKETS_MS)
        (*counts, total, value_sum), = await self.rows(f"SELECT {bucket_sql}, count(*), coalesce(sum(v), 0) FROM ({query}) AS t(v)")
        buckets = [(str(bound / 1000), float(count)) for bound, count in zip(BUCKETS_MS, counts, strict=True)] + [("+Inf", float(total))]
        return GaugeHistogramMetricFamily(name, documentation, buckets=buckets, gsum_value=float(value_sum) / 1000)
