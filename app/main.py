"""The Keel service: `create_app(settings)` and the lifespan that wires the lower layers."""

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from openai import AsyncOpenAI
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app import console, demo_services, sandbox
from app.auth import ensure_local_key
from app.body_limit import BodyLimit
from app.config import Settings, get_settings
from app.database import database_url, psycopg_conninfo, redact
from app.demo import billing
from app.routers import approvals, doctor, keys, metrics, runs
from app.schema import migration_head, wait_for_schema
from app.schemas import errors
from app.startup import Startup
from steps import breaker, db, failpoints, llm, ratelimit, tracing
from steps.breaker import BreakerSettings
from workflows import ApprovalConflict, ApprovalNotFound, IdempotencyConflict, QueueFull, RunConflict, RunNotFound, UnknownAgent, UserError, agent_names, saga
from workflows.approvals import redeliver_decisions
from workflows.cancels import finish_outside_cancels
from workflows.executor_claim import ExecutorClaim
from workflows.retention import keep_collecting
from workflows.run_logging import log_run_failures_on_one_line
from workflows.run_queue import RunQueue
from workflows.workers import OrphanWatch, beat, take_over_dead_workers

log = logging.getLogger("keel")
DEMO_INPUT = "Upgrade customer C-42 to the pro plan"
POOL_WAIT = 10.0  # seconds one try waits for a pool's first connection


def dbos_config(settings: Settings, url: str) -> DBOSConfig:
    return {
        "name": "keel",
        "system_database_url": url,
        "application_version": settings.app_version,
        "executor_id": settings.executor_id,
        "serializer": DBOSPortableJSONSerializer(),
        "run_migrations": False,  # `migrate` ran them, before Keel's own that depend on them
        "notification_listener_polling_interval_sec": 0.1,
        # DBOS makes its executor the loop's default one, and its async checkpoints run there: unbounded,
        # it grows a thread per concurrent checkpoint call (docs/benchmarks.md, workload 5).
        "max_executor_threads": 32,
        # DBOS pings each connection it checks out (two per step) unless told not to; a connection a
        # PostgreSQL restart broke fails its statement instead, which DBOS and Keel retry as an outage
        # (`bench/chaos.py --pg-restarts`, docs/chaos.md).
        "db_engine_kwargs": {"pool_pre_ping": False},
        **({"enable_otlp": True, "otlp_traces_endpoints": [settings.otlp_endpoint], "otel_attribute_format": "semconv"}
           if settings.otlp_endpoint else {}),
    }


@asynccontextmanager
async def keel_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if refusal := demo_services.refusal_to_start(settings) or tracing_refusal(settings):
        raise UserError(refusal)
    startup = Startup(settings.startup_timeout)  # every step that talks to the database is retried while it fails transiently
    url = await startup.step("reach the database", lambda: asyncio.to_thread(database_url, settings))
    # `keel migrate` migrates; workers never do
    await startup.step("find the schema at head", lambda: asyncio.to_thread(wait_for_schema, url, settings.migration_wait))
    claim = ExecutorClaim(psycopg_conninfo(url), settings.executor_id, settings.app_version, stale_after=3 * settings.heartbeat_interval)
    # before DBOS launches: its launch recovers the pending runs of this executor ID
    await startup.step("claim the executor ID", claim.acquire)
    pool = AsyncConnectionPool(psycopg_conninfo(url), min_size=1, max_size=settings.db_pool_size, kwargs={"autocommit": True}, open=False)
    sandbox_pool = AsyncConnectionPool(psycopg_conninfo(url), min_size=1, max_size=5, kwargs={"autocommit": True}, open=False)
    await pool.open()
    await sandbox_pool.open()
    await startup.step("open the connection pools", lambda: asyncio.gather(pool.wait(POOL_WAIT), sandbox_pool.wait(POOL_WAIT)))
    db.configure(pool)
    sandbox.configure(sandbox_pool)
    model = AsyncOpenAI(base_url=settings.model_base_url, api_key=app.state.offline_model_token or settings.model_api_key, max_retries=0,
                        timeout=settings.model_timeout)
    llm.configure(model, default_model=settings.model_name, prices=settings.model_prices, stream_tokens=settings.stream_tokens,
                  timeout=settings.model_timeout)
    breaker.configure(BreakerSettings(failure_threshold=settings.breaker_threshold, cooldown=settings.breaker_cooldown))
    failpoints.configure(settings.failpoints)
    ratelimit.configure(ratelimit.RateLimits(rate=settings.model_rate, concurrency=settings.model_concurrency, lease=settings.model_timeout + 30))
    sandbox_clients = billing.configure(settings.sandbox_base_url)
    saga.configure(retry_budget=settings.undo_retry_budget)
    queue = run_queue(settings)
    await startup.step("launch DBOS", lambda: launch_dbos(settings, url, queue))
    await startup.step("register the run queue", queue.register)  # before the first request, which enqueues on it
    key = await startup.step("read the local API key", lambda: local_key(settings))
    heartbeat = asyncio.create_task(heartbeats(settings, claim))
    retention = None
    if settings.gc_older_than:  # `keel gc` as a duty of the workers
        retention = asyncio.create_task(keep_collecting(settings.gc_older_than, settings.gc_interval, business_keys=settings.gc_business_keys))
    announce(settings, url, key)
    try:
        yield
    finally:
        heartbeat.cancel()
        if retention:
            retention.cancel()
        DBOS.destroy(workflow_completion_timeout_sec=0)
        await model.close()
        await sandbox_clients.http.aclose()
        await pool.close()
        await sandbox_pool.close()
        db.configure(None)
        sandbox.configure(None)
        await claim.release()


def tracing_refusal(settings: Settings) -> str | None:
    """Why tracing cannot start as configured; on the way, turn Keel's side of it on or off."""
    tracing.configure(settings.otlp_endpoint is not None)
    if settings.otlp_endpoint:
        try:
            importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError:
            return "KEEL_OTLP_ENDPOINT is set, but OpenTelemetry's SDK and OTLP exporter are not installed: pip install 'keel[otel]'"
    return None


def run_queue(settings: Settings) -> RunQueue:
    """The queue this worker takes runs from, with the limits `settings` give it."""
    return RunQueue(name=settings.queue, worker_concurrency=settings.worker_concurrency, global_concurrency=settings.global_concurrency,
                    polling_interval=settings.queue_poll_interval, max_queued=settings.max_queued_runs)


async def launch_dbos(settings: Settings, url: str, queue: RunQueue) -> None:
    DBOS(config=dbos_config(settings, url))
    log_run_failures_on_one_line()
    queue.listen()
    try:
        DBOS.launch()  # inside uvicorn's loop, so recovered runs execute on it
    except Exception:
        DBOS.destroy()  # a launch that failed half-way cannot be launched again: the next try starts afresh
        raise


async def heartbeats(settings: Settings, claim: ExecutorClaim) -> None:
    """Tell `keel.workers` this executor is alive (and hold its claim), take over the runs of workers
    that are not (and this worker's own runs that no task runs any more), deliver decisions whose
    messages were lost, and finish runs cancelled from outside Keel."""
    orphans = OrphanWatch()
    while True:
        try:
            await claim.keep()
            await beat(settings.executor_id, settings.app_version)
            # Later than `keel doctor` calls a worker gone: a supervisor restarting it under its own ID is cheaper.
            await take_over_dead_workers(settings.executor_id, stale_after=6 * settings.heartbeat_interval)
            await orphans.adopt(settings.executor_id)
            await redeliver_decisions(grace=2 * settings.heartbeat_interval)
            await finish_outside_cancels()
        except Exception:  # a missed beat is not worth a crash; the next one may go through
            log.exception("heartbeat failed")
        await asyncio.sleep(settings.heartbeat_interval)


async def local_key(settings: Settings) -> str | None:
    """On a local install (embedded database) with keys on: the admin key to print, kept for the CLI."""
    if settings.auth == "off" or settings.database_url:
        return None
    async with db.pool().connection() as conn, conn.transaction():
        # The workers of one `keel serve --workers N` start together: one makes the key, the others read it.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('keel.local-key', 0))")
        return await ensure_local_key(conn, settings.local_key_path)


def announce(settings: Settings, url: str, key: str | None) -> None:
    model = "the offline scripted model" if settings.offline else f"{settings.model_name} at {settings.model_base_url or 'OpenAI'}"
    if settings.auth == "off":
        access, header = "API keys: OFF (KEEL_AUTH=off): anyone who can reach this port is an admin", ""
    elif key:
        access, header = f"admin API key (also in {settings.local_key_path}, where the CLI finds it): {key}", f" -H 'Authorization: Bearer {key}'"
    else:
        access, header = "API keys: required; create one with `keel keys create --role admin --name you`", " -H \"Authorization: Bearer $KEEL_API_KEY\""
    demo = "on (/sandbox, /scripted; loopback only)" if settings.demo_services else "off"
    log.warning(
        "Keel is running at %s (executor %s, version %s)\n  database: %s\n  model: %s\n  demo services: %s\n  %s\n  console: %s/console\n  try it:\n"
        "    curl -s -X POST %s/v1/runs%s -H 'Content-Type: application/json' -d '{\"agent\": \"billing\", \"input\": \"%s\"}'\n"
        "    curl -s %s/v1/runs%s",
        settings.base_url, settings.executor_id, settings.app_version, redact(url), model, demo, access, settings.base_url,
        settings.base_url, header, DEMO_INPUT, settings.base_url, header,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="Keel", version="0.1.0", lifespan=keel_lifespan, description="Durable execution for AI agents, native to PostgreSQL.")
    app.state.settings = settings
    app.state.migration_head = migration_head()
    for module in filter(None, (m.strip() for m in app.state.settings.agent_modules.split(","))):
        importlib.import_module(module)  # before the OpenAPI document (it lists the agents) and before DBOS launches
    app.openapi = lambda: openapi_with_agents(app)  # type: ignore[method-assign]
    app.include_router(runs.router)
    app.include_router(approvals.router)
    app.include_router(doctor.router)
    app.include_router(keys.router)
    app.include_router(metrics.router)
    app.include_router(console.router)
    app.state.offline_model_token = demo_services.mount(app, settings)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (and which worker answered)."""
        return {"status": "ok", "executor_id": app.state.settings.executor_id}

    @app.get("/readyz", tags=["health"], responses=errors(503))
    async def readyz() -> JSONResponse:
        """The database answers and has Keel's latest migration: this worker can take runs."""
        async with db.pool().connection() as conn:
            applied = (await (await conn.execute("SELECT version_num FROM keel.alembic_version")).fetchone() or [None])[0]
        head = app.state.migration_head
        if applied != head:
            return JSONResponse({"error": {"code": "not_ready", "message": f"migration {applied} applied, {head} expected", "details": None}},
                                status_code=503)
        return JSONResponse({"status": "ready", "migration": applied})

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # counts a body's bytes as they are read, chunked ones too
    add_error_handlers(app)
    return app


def allowed_methods(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return methods


def openapi_with_agents(app: FastAPI) -> dict[str, Any]:
    """The generated document, with the agents this service runs as the choices for `RunCreate.agent`."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["components"]["schemas"]["RunCreate"]["properties"]["agent"]["enum"] = agent_names()
        app.openapi_schema = schema
    return app.openapi_schema


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 429: "too_many_requests"}


def add_error_handlers(app: FastAPI) -> None:
    """One error shape for every refusal: `{"error": {"code", "message", "details"}}`."""

    def error(status: int, code: str, message: str, details: object = None) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return error(422, "invalid_request", "the request is not valid", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route; a path may have several
            response.headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        return response

    @app.exception_handler(psycopg.DataError)
    async def unstorable_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # The last line of defence: the request models refuse what PostgreSQL cannot store (NUL characters, say).
        return error(422, "invalid_request", f"a value cannot be stored: {exc}")

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return error(503, "database_unavailable", "the database is not reachable; try again shortly")

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        if isinstance(exc, (RunNotFound, ApprovalNotFound)):
            return error(404, "not_found", str(exc))
        if isinstance(exc, (IdempotencyConflict, ApprovalConflict, RunConflict)):
            return error(409, "conflict", str(exc))
        if isinstance(exc, QueueFull):
            response = error(429, "too_many_requests", str(exc))
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        code = "unknown_agent" if isinstance(exc, UnknownAgent) else "invalid_request"
        return error(422, code, str(exc))


app = create_app()
"""For `uvicorn app.main:app`, `fastapi run` and other ASGI servers (settings from the environment, read
now; the database, DBOS and the executor claim wait for the lifespan). `keel serve` builds its own."""
