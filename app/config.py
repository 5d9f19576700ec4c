"""Keel's settings, read once from the environment (and `.env`) at start-up."""

import ipaddress
import os
import re
import socket
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFLINE_MODEL = "scripted"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w`."""
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration: a number and one of s, m, h, d, w (`30d`)")
    return timedelta(**{UNITS[match[2]]: float(match[1])})


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(None, alias="DATABASE_URL")
    """Absent: an embedded PostgreSQL under `data_dir` is started and used."""
    data_dir: Path = Field(Path(".keel"), alias="KEEL_DATA_DIR")
    executor_id: str = Field("", alias="KEEL_EXECUTOR_ID", pattern=r"^[A-Za-z0-9._:/@-]{0,200}$")
    """This process's stable, unique DBOS executor ID; empty: `<hostname>:<port>` (see `default_executor_id`)."""
    workers: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)), alias="KEEL_WORKERS", ge=1, le=256)
    """Worker processes `keel serve` runs behind its port; default one per core."""
    migration_wait: float = Field(30.0, alias="KEEL_MIGRATION_WAIT", ge=0)
    """Seconds a worker waits for `keel migrate` to bring the database to head before it refuses to start."""
    app_version: str = Field("keel-0.2", alias="KEEL_APP_VERSION")
    """The pinned DBOS application version: only runs of this version are recovered here."""

    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    model: str = Field("gpt-4.1-mini", alias="KEEL_MODEL")
    model_timeout: float = Field(60.0, alias="KEEL_MODEL_TIMEOUT", gt=0)

    stream_tokens: bool = Field(True, alias="KEEL_STREAM_TOKENS")
    """Send model output to the runs' live feeds (`/v1/runs/{id}/stream`) as it arrives."""
    model_prices: dict[str, tuple[float, float]] = Field(default_factory=dict, alias="KEEL_MODEL_PRICES")
    """JSON: model -> [USD per million input tokens, per million output tokens], for cost budgets."""
    breaker_threshold: int = Field(5, alias="KEEL_BREAKER_THRESHOLD", ge=1)
    """Consecutive transient failures that open a dependency's circuit."""
    breaker_cooldown: float = Field(30.0, alias="KEEL_BREAKER_COOLDOWN", gt=0)
    """Seconds a circuit stays open before one probe call is let through."""
    undo_retry_budget: float = Field(24 * 3600.0, alias="KEEL_UNDO_RETRY_BUDGET", gt=0)
    """Seconds an undo may spend waiting to try again after transient failures; its next failure after that is final."""
    db_pool_size: int = Field(10, alias="KEEL_DB_POOL_SIZE", ge=2)
    """Connections for the ledger and events; a running tool holds one only while it uses `ctx.db`."""
    max_body_bytes: int = Field(1_048_576, alias="KEEL_MAX_BODY_BYTES", ge=1024)
    """Larger request bodies are refused with 413."""
    startup_timeout: float = Field(120.0, alias="KEEL_STARTUP_TIMEOUT", gt=0)
    """Seconds start-up keeps retrying transient database errors (with backoff) before it gives up."""
    heartbeat_interval: float = Field(5.0, alias="KEEL_HEARTBEAT_INTERVAL", gt=0)
    metrics_window: float = Field(300.0, alias="KEEL_METRICS_WINDOW", gt=0)
    """Seconds of recent history `/metrics` covers (besides everything still in flight)."""
    otlp_endpoint: str | None = Field(None, alias="KEEL_OTLP_ENDPOINT", pattern=r"^https?://\S+$")
    """OTLP/HTTP traces URL (`http://collector:4318/v1/traces`): export a span per run, model call, tool call,
    approval wait and undo (needs `pip install 'keel[otel]'`); unset: no tracing."""

    auth: Literal["keys", "off"] = Field("keys", alias="KEEL_AUTH")
    """`keys`: every `/v1` request needs an API key. `off`: none does (local development only)."""
    session_ttl: float = Field(8 * 3600, alias="KEEL_SESSION_TTL", gt=0)
    """Seconds a console login lasts (it also ends at logout, or when its key is revoked)."""
    api_key: SecretStr | None = Field(None, alias="KEEL_API_KEY")
    """The key the CLI sends; absent: the local key `keel serve` wrote under `data_dir`."""
    queue: str = Field("keel_runs", alias="KEEL_QUEUE", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    """The DBOS queue this worker takes runs from; the workers of one pool share it."""
    worker_concurrency: int = Field(200, alias="KEEL_WORKER_CONCURRENCY", ge=1)
    """Runs one worker works on at once (one waiting for an approval or a sleep leaves its slot); the rest wait
    in the queue, and so do recovered runs. 200 finished 1,000 runs of a 1 s model soonest on two cores
    (docs/architecture.md, Scale-out); unbounded, the worker was CPU-bound and slower. DBOS keeps it with the queue."""
    global_concurrency: int | None = Field(None, alias="KEEL_GLOBAL_CONCURRENCY", ge=1)
    """Runs all workers of the queue execute at once; unset: no limit."""
    max_queued_runs: int | None = Field(None, alias="KEEL_MAX_QUEUED_RUNS", ge=1)
    """New runs are refused with 429 while this many wait in the queue for a worker; unset: no bound."""
    queue_poll_interval: float = Field(0.1, alias="KEEL_QUEUE_POLL_INTERVAL", gt=0)
    """Seconds between a worker's looks at the queue: the most a queued run waits for a free worker to notice it."""
    model_rate_limit: str | None = Field(None, alias="KEEL_MODEL_RATE_LIMIT", pattern=r"^\d+/\d+(\.\d+)?$")
    """`requests/seconds` per model endpoint (base URL + model), shared by all workers, e.g. `500/60`."""
    model_concurrency: int | None = Field(None, alias="KEEL_MODEL_CONCURRENCY", ge=1)
    """Requests in flight per model endpoint, across all workers."""

    gc_older_than: timedelta | None = Field(None, alias="KEEL_GC_OLDER_THAN")
    """Workers remove runs that ended longer ago than this (`30d`, `12h`, ...), as `keel gc` does; unset: never."""
    gc_interval: float = Field(3600.0, alias="KEEL_GC_INTERVAL", gt=0)
    """Seconds between two rounds of that (one worker does each round)."""
    gc_business_keys: bool = Field(False, alias="KEEL_GC_BUSINESS_KEYS")
    """Remove ledger rows under business keys too (a later run with the same key would then repeat the effect)."""

    host: str = Field("127.0.0.1", alias="KEEL_HOST")
    port: int = Field(8000, alias="KEEL_PORT", ge=1, le=65535)
    sandbox_url: str | None = Field(None, alias="KEEL_SANDBOX_URL")
    """Where the demo's sandbox services live; absent: this service's own `/sandbox`."""
    demo_services_setting: bool | None = Field(None, alias="KEEL_DEMO_SERVICES")
    """`on`/`off`; unset: on only for the zero-config local run (see `demo_services`)."""
    offline_model_token: SecretStr | None = Field(None, alias="KEEL_OFFLINE_MODEL_TOKEN")
    """The key Keel's model client sends to the offline model; unset: a random one per process.
    `keel serve` gives its workers one, since a worker's model call may reach any worker of the port."""
    agent_modules: str = Field("app.demo.billing,app.demo.support", alias="KEEL_AGENT_MODULES")
    """Comma-separated modules imported at start-up; each defines `Agent`s."""
    failpoints: str = Field("", alias="KEEL_FAILPOINTS")
    """Comma-separated failpoints that SIGKILL this process (crash tests only)."""

    @field_validator("gc_older_than", mode="before")
    @classmethod
    def duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) and value else value or None

    @model_validator(mode="after")
    def default_executor_id(self) -> "Settings":
        """Unique on a host (a port has one listener) and the same after a restart on that port."""
        if not self.executor_id:
            self.executor_id = f"{socket.gethostname()}:{self.port}"
        return self

    @property
    def offline(self) -> bool:
        """No model endpoint configured: use the scripted model this service mounts."""
        return self.openai_api_key is None and self.openai_base_url is None

    @property
    def demo_services(self) -> bool:
        """Mount `/sandbox` and (offline) `/scripted`: as set, else only for the zero-config local run
        (embedded database, no model configured, a loopback bind)."""
        if self.demo_services_setting is not None:
            return self.demo_services_setting
        return self.offline and self.database_url is None and is_loopback(self.host)

    @property
    def local_key_path(self) -> Path:
        return self.data_dir / "api-key"

    @property
    def model_rate(self) -> tuple[int, float] | None:
        """`KEEL_MODEL_RATE_LIMIT` as (requests, period in seconds)."""
        if not self.model_rate_limit:
            return None
        requests, period = self.model_rate_limit.split("/")
        return int(requests), float(period)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_base_url(self) -> str | None:
        return f"{self.base_url}/scripted/v1" if self.offline else self.openai_base_url

    @property
    def model_api_key(self) -> str:
        return self.openai_api_key.get_secret_value() if self.openai_api_key else "offline"

    @property
    def model_name(self) -> str:
        return OFFLINE_MODEL if self.offline else self.model

    @property
    def sandbox_base_url(self) -> str:
        return self.sandbox_url or f"{self.base_url}/sandbox"


@lru_cache
def get_settings() -> Settings:
    return Settings()
