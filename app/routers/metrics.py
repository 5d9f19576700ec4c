"""`GET /metrics`: Prometheus text format, computed from Postgres at scrape time.

All of Keel's state is in Postgres, so these are the cluster's numbers, the same from every worker:
scrape one worker (or one at a time), not all of them added up."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from steps import db

router = APIRouter(tags=["operations"])
BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]


class Snapshot:
    """A collector that yields metric families built beforehand (the queries are async)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    families = [
        await gauge("keel_runs", "Runs by Keel status", "SELECT status, count(*) FROM keel.runs GROUP BY status", ["status"]),
        await gauge("keel_approvals_waiting", "Tool calls waiting for a person", "SELECT count(*) FROM keel.approvals WHERE status = 'pending'", []),
        await gauge("keel_breaker_open", "1 while a dependency's circuit is open or half-open",
                    "SELECT dependency, (state <> 'closed')::int FROM keel.breakers", ["dependency"]),
        await gauge("keel_compensations", "Compensations by status", "SELECT status, count(*) FROM keel.compensations GROUP BY status", ["status"]),
        await gauge("keel_compensations_parked", "Undo calls waiting durably to try again, by the kind of failure they met",
                    "SELECT error ->> 'kind', count(*) FROM keel.compensations WHERE status = 'parked' GROUP BY 1", ["kind"]),
        await counter("keel_retries", "Retried attempts of model and tool calls", "SELECT count(*) FROM keel.events WHERE kind = 'retry'"),
        await histogram("keel_llm_latency_seconds", "Model call latency", "SELECT latency_ms FROM keel.llm_calls"),
        await histogram("keel_tool_call_seconds", "Tool call duration, intent to outcome",
                        "SELECT duration_ms FROM keel.tool_calls_view WHERE duration_ms IS NOT NULL"),
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def rows(query: str) -> list[tuple]:
    async with db.pool().connection() as conn:
        return await (await conn.execute(query)).fetchall()


async def gauge(name: str, documentation: str, query: str, labels: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for *label_values, value in await rows(query):
        family.add_metric([str(v) for v in label_values], float(value))
    return family


async def counter(name: str, documentation: str, query: str) -> CounterMetricFamily:
    (total,), = await rows(query)
    return CounterMetricFamily(name, documentation, value=float(total))


async def histogram(name: str, documentation: str, query: str) -> HistogramMetricFamily:
    """Cumulative buckets of the recorded values (milliseconds in SQL, seconds out)."""
    bucket_sql = ", ".join(f"count(*) FILTER (WHERE v <= {bound})" for bound in BUCKETS_MS)
    (*counts, total, value_sum), = await rows(f"SELECT {bucket_sql}, count(*), coalesce(sum(v), 0) FROM ({query}) AS t(v)")
    buckets = [(str(bound / 1000), float(count)) for bound, count in zip(BUCKETS_MS, counts, strict=True)] + [("+Inf", float(total))]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=float(value_sum) / 1000)
