"""`keel`: serve, migrate, and start or inspect runs through the service's HTTP API."""

import asyncio
import json
import logging
import os
import secrets
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
from steps.run_status import ENDED

T = TypeVar("T")


@click.group()
def main() -> None:
    """Keel: durable execution for AI agents, on PostgreSQL."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default KEEL_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default KEEL_PORT, 8000).")
@click.option("--workers", default=None, type=click.IntRange(1, 256), help="Worker processes behind the port (default KEEL_WORKERS, one per core).")
@click.option("--executor-id", default=None, help="Stable ID of this worker, or the base of its workers' IDs (default KEEL_EXECUTOR_ID, <hostname>:<port>).")
@click.option("--queue", default=None, help="The queue of runs the workers share with their pool (default KEEL_QUEUE, keel_runs).")
@click.option("--concurrency", "worker_concurrency", default=None, type=int, help="Runs one worker works on at once (default KEEL_WORKER_CONCURRENCY, 200).")
@click.option("--global-concurrency", default=None, type=int, help="Runs across the pool (default KEEL_GLOBAL_CONCURRENCY, no limit).")
@click.option("--fd", default=None, type=int, hidden=True, help="Accept on this inherited, bound socket (a supervised worker).")
def serve(fd: int | None, **options: Any) -> None:
    """Run the Keel service: N worker processes behind one port, each with its own executor ID.

    Every worker is the whole service (API, console, /healthz, /readyz, /metrics) and takes runs from
    the pool's queue; start more on other machines against the same database."""
    import socket

    from app.serve import PortInUse, Supervisor, bind, serve_one

    given = {name: value for name, value in options.items() if value is not None}
    settings = Settings(**given)  # validated as if set in the environment (the default executor ID follows --port)
    try:
        sock = socket.socket(fileno=fd) if fd is not None else bind(settings.host, settings.port)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from None
    if settings.workers == 1:
        serve_one(settings, sock)
        return
    start_database(settings)
    # A worker's call to the offline model may be accepted by any worker of the port: they must share its key.
    os.environ.setdefault("KEEL_OFFLINE_MODEL_TOKEN", secrets.token_urlsafe(32))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")  # as uvicorn's lines, between the workers'
    sys.exit(Supervisor(sock, worker_children(settings, sock, given)).run())


def worker_children(settings: Settings, sock: Any, given: dict[str, Any]) -> list[Any]:
    """`keel serve --fd` workers, one per executor ID, with the options this command was given."""
    from app.serve import Child, worker_ids

    passed = [arg for name in ("queue", "worker_concurrency", "global_concurrency") if name in given
              for arg in (f"--{name.removeprefix('worker_').replace('_', '-')}", str(given[name]))]
    base = [sys.executable, "-m", "app.cli", "serve", "--workers", "1", "--fd", str(sock.fileno()),
            "--host", settings.host, "--port", str(settings.port), *passed]
    return [Child(executor_id, [*base, "--executor-id", executor_id]) for executor_id in worker_ids(settings.executor_id, settings.workers)]


def start_database(settings: Settings) -> None:
    """Start the embedded server (if that is the database) once, before the workers join it."""
    from app.database import database_url

    database_url(settings)


@main.command()
def migrate() -> None:
    """Create or upgrade the database: DBOS's schema, then Keel's. One migrator at a time (an advisory
    lock), and a no-op at head, so every deploy step or worker host may run it."""
    from app.database import database_url, redact
    from app.schema import migrate as run_migrations

    url = database_url(get_settings())
    changed = run_migrations(url)
    click.echo(f"{'migrated' if changed else 'already at head:'} {redact(url)}")


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from app.config import parse_duration

        try:
            return value if not isinstance(value, str) else parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command()
@click.option("--older-than", required=True, type=DurationType(), help="Remove runs that ended longer ago than this: 30d, 12h, 90m, ...")
@click.option("--business-keys", is_flag=True,
              help="Remove their ledger rows under business keys too: a later run with the same key would then repeat the effect.")
def gc(older_than: Any, business_keys: bool) -> None:
    """Remove runs that ended long ago, from DBOS's tables and Keel's, consistently.

    Never a run that is queued, running, waiting, compensating, or whose compensation waits for an
    operator; never a ledger row under a business key, unless --business-keys."""
    from workflows.retention import collect

    done = with_database(lambda conn: collect(conn, older_than, business_keys=business_keys))
    click.echo(f"removed {done.runs} run(s) that ended more than {older_than} ago: {done.workflows} DBOS workflows, "
               f"{done.keel_rows} rows of Keel's tables, {done.ledger_rows} ledger rows")


@main.command("database-url")
def database_url_command() -> None:
    """Print the database URL (starting the embedded server if needed), e.g. for the dbos CLI."""
    from app.database import database_url

    click.echo(database_url(get_settings()))


@main.command("dbos", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dbos_command(args: tuple[str, ...]) -> None:
    """DBOS's own command line, on Keel's database, from any directory: `keel dbos workflow list`.

    The `dbos` command finds the database only through `dbos-config.yaml` in the current directory (or
    `-s URL`); this fills in `--sys-db-url` with the database Keel uses (DATABASE_URL, or the embedded server)."""
    from dbos.cli.cli import app as dbos_cli

    from app.database import database_url

    command: click.Command = dbos_cli
    for arg in args:  # down the groups to the command the arguments name
        if not isinstance(command, click.Group) or arg not in command.commands:
            break
        command = command.commands[arg]
    takes_url = any(param.name == "system_database_url" for param in command.params)
    if takes_url and not {"-s", "--sys-db-url"} & set(args):
        args = (*args, "--sys-db-url", database_url(get_settings()))
    dbos_cli.main(args=list(args), prog_name="keel dbos")


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
    """Run `action` on a connection to Keel's database, which must be migrated (`keel migrate`): this never migrates."""
    from app.database import database_url, psycopg_conninfo
    from app.schema import SchemaNotReady, wait_for_schema

    url = database_url(get_settings())
    try:
        wait_for_schema(url, timeout=0)
    except SchemaNotReady as exc:
        raise click.ClickException(str(exc)) from None

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
@click.option("--tree", is_flag=True, help="With the timelines of its child runs, each under the call that started it.")
def events(run_id: str, as_json: bool, tree: bool) -> None:
    """Show a run's timeline."""
    timeline = tree_timeline(run_id) if tree else [(0, run_id, event) for event in request("GET", f"/v1/runs/{run_id}/events")]
    if as_json:
        for depth, source_run, event in timeline:
            click.echo(json.dumps({**event, "run_id": source_run, "depth": depth} if tree else event))
        return
    start = datetime.fromisoformat(timeline[0][2]["at"]) if timeline else None
    for depth, source_run, event in timeline:
        offset = (datetime.fromisoformat(event["at"]) - start).total_seconds()
        undo = ids.undo_label(source_run, event["source"])
        where = f" [{undo}]" if undo else ""
        click.echo(f"{offset:8.3f}s  {'  ' * depth}#{event['step_id']:<3} {event['kind']:<22} {event['summary'] or ''}{where}")


def tree_timeline(run_id: str, depth: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
    """The run's events, each child run's right after the `child_started` event of the call that started it."""
    timeline = []
    for event in request("GET", f"/v1/runs/{run_id}/events"):
        timeline.append((depth, run_id, event))
        if event["kind"] == "child_started":
            timeline += tree_timeline(event["payload"]["child_run_id"], depth + 1)
    return timeline


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
        if current["status"] in ENDED:
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


if __name__ == "__main__":  # `python -m app.cli`: how `keel serve` starts its workers
    main()
