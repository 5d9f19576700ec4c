"""`keel`: serve, migrate, and start or inspect runs through the service's HTTP API."""

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
import httpx
import psycopg

from app import auth
from app.config import Settings, get_settings
from steps import ids

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled"}


@click.group()
def main() -> None:
    """Keel: durable execution for AI agents, on PostgreSQL."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default KEEL_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default KEEL_PORT, 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the Keel service (one worker process)."""
    run_service(host=host, port=port)


@main.command()
@click.option("--executor-id", default=None, help="This worker's stable ID (default KEEL_EXECUTOR_ID, else <hostname>:<port>).")
@click.option("--host", default=None, help="Interface for its HTTP API, /healthz, /readyz, /metrics (default KEEL_HOST).")
@click.option("--port", default=None, type=int, help="Port (default KEEL_PORT, 8000); one per worker on a machine.")
@click.option("--queue", default=None, help="The queue of runs it shares with its pool (default KEEL_QUEUE, keel_runs).")
@click.option("--concurrency", "worker_concurrency", default=None, type=int, help="Runs per worker, waiting ones too (default KEEL_WORKER_CONCURRENCY, none).")
@click.option("--global-concurrency", default=None, type=int, help="Runs across the pool (default KEEL_GLOBAL_CONCURRENCY, no limit).")
def worker(executor_id: str | None, **options: Any) -> None:
    """Run one worker of a pool: it takes runs from the queue it shares with the others, and takes
    over the runs of a worker that died. Start as many as you like, on one machine or many."""
    settings = get_settings()
    port = options["port"] or settings.port
    if executor_id is None and "executor_id" not in settings.model_fields_set:
        executor_id = f"{settings.executor_id}:{port}"  # distinct per worker on a machine, and the same after a restart
    run_service(executor_id=executor_id, **options)


def run_service(**overrides: Any) -> None:
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@main.command()
def migrate() -> None:
    """Create or upgrade the database: DBOS's schema, then Keel's."""
    from app.database import database_url, redact
    from app.database import migrate as run_migrations

    url = database_url(get_settings())
    run_migrations(url)
    click.echo(f"migrated {redact(url)}")


@main.command("database-url")
def database_url_command() -> None:
    """Print the database URL (starting the embedded server if needed), e.g. for the dbos CLI."""
    from app.database import database_url

    click.echo(database_url(get_settings()))


@main.command("stop-database")
def stop_database() -> None:
    """Stop the embedded PostgreSQL (it outlives the service, so restarts are fast)."""
    from app.database import stop_embedded_postgres

    stop_embedded_postgres(get_settings().data_dir)
    click.echo("stopped")


@main.group()
def keys() -> None:
    """Manage API keys (directly in the database: this is how the first admin key is made)."""


@keys.command("create")
@click.option("--role", type=click.Choice(["submit", "approve", "admin"]), required=True)
@click.option("--name", required=True, help="Who or what uses the key; recorded as the decider of approvals.")
def create_key_command(role: str, name: str) -> None:
    """Create a key and print it. It is shown this once: Keel stores only its digest."""
    from pydantic import ValidationError

    from app.routers.keys import KeyCreate

    try:
        body = KeyCreate(name=name, role=role)  # type: ignore[arg-type]  # the same rules as POST /v1/keys
    except ValidationError as exc:
        raise click.BadParameter("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    row, secret = with_database(lambda conn: auth.create_key(conn, body.name, body.role))
    click.echo(f"created {row['key_id']} ({row['role']}) for {row['name']}; the key, shown once:", err=True)
    click.echo(secret)


@keys.command("list")
def list_keys_command() -> None:
    """Key IDs, names and roles (never the keys)."""
    for row in with_database(auth.list_keys):
        revoked = f"  revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else ""
        click.echo(f"{row['key_id']}  {row['role']:<8} {row['name']}  created {row['created_at']:%Y-%m-%d %H:%M}{revoked}")


@keys.command("revoke")
@click.argument("key_id")
def revoke_key_command(key_id: str) -> None:
    """Revoke KEY_ID: the next request with it gets 401."""
    row = with_database(lambda conn: auth.revoke_key(conn, key_id))
    if row is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {row['key_id']} ({row['name']})")


def with_database(action: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """Run `action` on a connection to Keel's database (migrated first, so a new install works)."""
    from app.database import database_url, migrate, psycopg_conninfo

    url = database_url(get_settings())
    migrate(url)

    async def connected() -> T:
        async with await psycopg.AsyncConnection.connect(psycopg_conninfo(url), autocommit=True) as conn:
            return await action(conn)

    return asyncio.run(connected())


@main.command()
@click.argument("agent")
@click.argument("input")
@click.option("--key", default=None, help="Idempotency key: repeating it (with the same API key) returns the same run.")
@click.option("--wait", is_flag=True, help="Wait for the run to end and print its result.")
def run(agent: str, input: str, key: str | None, wait: bool) -> None:
    """Start AGENT on INPUT."""
    headers = {"Idempotency-Key": key} if key else {}
    started = request("POST", "/v1/runs", json={"agent": agent, "input": input}, headers=headers)
    click.echo(f"run {started['run_id']}: {started['status']}")
    if wait:
        finish(started["run_id"])


@main.command()
@click.argument("run_id")
def status(run_id: str) -> None:
    """Show one run."""
    show(request("GET", f"/v1/runs/{run_id}"))


@main.command()
@click.option("--status", "status_filter", default=None, help="e.g. running, awaiting_approval, succeeded, failed, compensated")
@click.option("--agent", default=None)
@click.option("--limit", default=20, show_default=True)
def runs(status_filter: str | None, agent: str | None, limit: int) -> None:
    """List runs, newest first."""
    params = {k: v for k, v in {"status": status_filter, "agent": agent, "limit": limit}.items() if v is not None}
    for item in request("GET", "/v1/runs", params=params)["runs"]:
        reason = f" ({item['reason']})" if item["reason"] else ""
        click.echo(f"{item['created_at'][:19]}  {item['run_id']:<34} {item['agent'] or '-':<10} {item['status']}{reason}")


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, for machines.")
def events(run_id: str, as_json: bool) -> None:
    """Show a run's timeline."""
    timeline = request("GET", f"/v1/runs/{run_id}/events")
    if as_json:
        for event in timeline:
            click.echo(json.dumps(event))
        return
    start = datetime.fromisoformat(timeline[0]["at"]) if timeline else None
    for event in timeline:
        offset = (datetime.fromisoformat(event["at"]) - start).total_seconds()
        undo = ids.undo_label(run_id, event["source"])
        where = f" [{undo}]" if undo else ""
        click.echo(f"{offset:8.3f}s  #{event['step_id']:<3} {event['kind']:<22} {event['summary'] or ''}{where}")


@main.command()
@click.argument("run_id")
@click.option("--from-step", type=int, required=True, help="The first step to run live (see `keel events`).")
@click.option("--model", default=None, help="Run the live part with this model.")
@click.option("--instructions", default=None, help="Run the live part with these instructions.")
@click.option("--redo-effects", is_flag=True, help="Make the effects after the fork point again (by default a call the origin "
                                                      "made with the same arguments reuses its recorded outcome).")
@click.option("--wait", is_flag=True, help="Wait for the new run to end and print its result.")
def fork(run_id: str, from_step: int, model: str | None, instructions: str | None, redo_effects: bool, wait: bool) -> None:
    """Start a new run from RUN_ID's recorded history up to a step, live from there."""
    body = {"from_step": from_step, "model": model, "instructions": instructions, "redo_effects": redo_effects}
    forked = request("POST", f"/v1/runs/{run_id}/fork", json=body)
    click.echo(f"run {forked['run_id']}: {forked['status']} (forked from {run_id} at step {from_step})")
    if wait:
        finish(forked["run_id"])


@main.command()
@click.argument("run_ids", nargs=-1)
@click.option("--pending", is_flag=True, help="Replay every run that has not ended (the check before a deploy).")
def replay(run_ids: tuple[str, ...], pending: bool) -> None:
    """Check that the current code makes the same decisions as recorded runs (nothing is called)."""
    if not run_ids and not pending:
        raise click.UsageError("name runs to replay, or pass --pending")
    ids = list(run_ids) + (pending_runs() if pending else [])
    if not ids:
        click.echo("no runs are pending: nothing to replay", err=True)
        return
    diverged = 0
    for run_id in ids:
        report = request("POST", f"/v1/runs/{run_id}/replay")
        if report["same"]:
            click.echo(f"{run_id}: same decisions ({len(report['steps'])} steps)")
        else:
            diverged += 1
            click.echo(f"{run_id}: DIVERGES: {report['divergence']}")
    click.echo(f"{len(ids)} replayed, {diverged} diverge", err=True)
    sys.exit(1 if diverged else 0)


def pending_runs() -> list[str]:
    """Every run that has not ended, page by page."""
    ids: list[str] = []
    for status in ("running", "awaiting_approval", "compensating"):
        params: dict[str, Any] = {"status": status, "limit": 200}
        while True:
            page = request("GET", "/v1/runs", params=params)
            ids += [item["run_id"] for item in page["runs"]]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    return ids


@main.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run: it stops, and its effects are undone newest first."""
    show(request("POST", f"/v1/runs/{run_id}/cancel"))


@main.command()
@click.argument("run_id")
def resume(run_id: str) -> None:
    """Hand a stopped run (dead-lettered, or on a worker that is gone) to any live worker."""
    show(request("POST", f"/v1/runs/{run_id}/resume"))


@main.command()
def doctor() -> None:
    """List runs that are not progressing, and what would move them."""
    findings = request("GET", "/v1/doctor")
    for finding in findings:
        click.echo(f"{finding['run_id']}  {finding['problem']}: {finding['fix']}")
    click.echo(f"{len(findings)} finding(s)", err=True)


@main.command()
@click.argument("run_id")
def compensate(run_id: str) -> None:
    """Retry a run's compensations that gave up."""
    show(request("POST", f"/v1/runs/{run_id}/compensate"))


@main.command()
@click.option("--status", "status_filter", default="pending", show_default=True, help="pending, approved, rejected, expired, cancelled or all")
def approvals(status_filter: str) -> None:
    """List approval requests (the inbox)."""
    params = {} if status_filter == "all" else {"status": status_filter}
    for item in request("GET", "/v1/approvals", params=params):
        arguments = json.dumps(item["arguments"])
        decided = f"  by {decider(item)}" if item["decided_by"] else ""
        click.echo(f"{item['approval_id']}  {item['status']:<9} {item['tool']} {arguments}  expires {item['expires_at'][:19]}{decided}")


@main.command()
@click.argument("approval_id")
@click.option("--comment", default=None)
@click.option("--by", "decided_by", default=None, help="Who decides, when the API key is shared (default: the key's name).")
def approve(approval_id: str, comment: str | None, decided_by: str | None) -> None:
    """Approve a waiting tool call: the run goes on."""
    decide_command(approval_id, "approve", comment, decided_by)


@main.command()
@click.argument("approval_id")
@click.option("--comment", default=None)
@click.option("--by", "decided_by", default=None, help="Who decides, when the API key is shared (default: the key's name).")
def reject(approval_id: str, comment: str | None, decided_by: str | None) -> None:
    """Reject a waiting tool call."""
    decide_command(approval_id, "reject", comment, decided_by)


def decide_command(approval_id: str, decision: str, comment: str | None, decided_by: str | None) -> None:
    body = {"decision": decision, "comment": comment, "decided_by": decided_by}
    item = request("POST", f"/v1/approvals/{approval_id}", json=body)
    click.echo(f"{item['approval_id']}: {item['status']} by {decider(item)}")


def decider(approval: dict[str, Any]) -> str:
    """A decider's name with the key it used (names are not unique)."""
    key = approval.get("decided_by_key_id")
    return f"{approval['decided_by']} ({key})" if key else str(approval["decided_by"])


def finish(run_id: str) -> None:
    """Wait for the run to end, print it, and exit 0 only if it succeeded."""
    final = wait_for(run_id)
    show(final)
    sys.exit(0 if final["status"] == "succeeded" else 1)


def wait_for(run_id: str, interval: float = 0.5) -> dict[str, Any]:
    last = None
    while True:
        current = request("GET", f"/v1/runs/{run_id}")
        progress = (current["status"], current["turns"])
        if progress != last:
            waiting = current.get("pending_approval")
            detail = f" (keel approve {waiting['approval_id']})" if waiting else ""
            click.echo(f"  {current['status']}, turn {current['turns']}{detail}", err=True)
            last = progress
        if current["status"] in TERMINAL:
            return current
        time.sleep(interval)


def auth_header(settings: Settings) -> dict[str, str]:
    """`KEEL_API_KEY`, else the key a local `keel serve` wrote for this data directory."""
    if settings.api_key:
        return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    if settings.local_key_path.exists():
        return {"Authorization": f"Bearer {settings.local_key_path.read_text().strip()}"}
    return {}


def show(item: dict[str, Any]) -> None:
    click.echo(json.dumps(item, indent=2))


def request(method: str, path: str, **kwargs: Any) -> Any:
    settings = get_settings()
    base = settings.base_url
    headers = {**kwargs.pop("headers", {}), **auth_header(settings)}
    try:
        response = httpx.request(method, f"{base}{path}", timeout=30, headers=headers, **kwargs)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach Keel at {base} ({exc}); is `keel serve` running?") from None
    if response.is_error:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise click.ClickException(f"{response.status_code}: {message}")
    return response.json()
