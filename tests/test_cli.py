"""The `keel` and `dbos` command lines, run as a user would, against a live service."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.processes import ROOT, Worker, free_port, stop, wait_until_up

BIN = Path(sys.executable).parent


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_keel_run_wait_prints_the_result(service: Worker, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "KEEL_PORT": str(service.port)}

    done = cli([str(BIN / "keel"), "run", "probe", "say from the cli", "--wait"], env)
    run_id = done.stdout.split()[1].rstrip(":")
    status = cli([str(BIN / "keel"), "status", run_id], env)
    listing = cli([str(BIN / "keel"), "runs", "--agent", "probe", "--status", "succeeded"], env)

    assert done.returncode == 0, done.stderr
    assert '"output": "from the cli"' in done.stdout
    assert "succeeded" in done.stderr  # progress goes to stderr
    assert '"status": "succeeded"' in status.stdout
    assert run_id in listing.stdout


def test_keel_reports_errors_clearly(service: Worker, worker_env: dict[str, str]) -> None:
    unknown = cli([str(BIN / "keel"), "run", "nobody", "hi"], {**worker_env, "KEEL_PORT": str(service.port)})
    unreachable = cli([str(BIN / "keel"), "status", "x"], {**worker_env, "KEEL_PORT": str(free_port())})

    assert unknown.returncode == 1 and "unknown agent 'nobody'" in unknown.stderr
    assert unreachable.returncode == 1 and "is `keel serve` running?" in unreachable.stderr


def test_keel_replay_pending_with_nothing_pending_says_so_and_succeeds(
    start_worker: Callable[..., Worker], own_database: Callable[[str], dict[str, str]], worker_env: dict[str, str]
) -> None:
    env = own_database("nothing_pending")
    worker = start_worker("nothing-pending", **env)

    done = cli([str(BIN / "keel"), "replay", "--pending"], {**worker_env, **env, "KEEL_PORT": str(worker.port)})
    neither = cli([str(BIN / "keel"), "replay"], {**worker_env, **env, "KEEL_PORT": str(worker.port)})

    assert done.returncode == 0, done.stderr
    assert "no runs are pending: nothing to replay" in done.stderr
    assert neither.returncode == 2 and "name runs to replay, or pass --pending" in neither.stderr


def test_keel_migrate_is_repeatable(worker_env: dict[str, str]) -> None:
    done = cli([str(BIN / "keel"), "migrate"], worker_env)
    assert done.returncode == 0, done.stderr
    assert "already at head" in done.stdout  # the session's database was migrated: nothing to do, nothing done


def test_dbos_cli_lists_keel_runs(service: Worker, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "PATH": f"{BIN}:{os.environ['PATH']}"}
    run_id = httpx.post(f"{service.url}/v1/runs", json={"agent": "probe", "input": "say listed"}, headers=service.headers).json()["run_id"]

    listing = cli([str(BIN / "dbos"), "workflow", "get", run_id], env)

    assert listing.returncode == 0, listing.stderr
    assert '"name": "keel.agent_run"' in listing.stdout


def test_keel_dbos_finds_the_database_from_any_directory(service: Worker, worker_env: dict[str, str], tmp_path: Path) -> None:
    run_id = httpx.post(f"{service.url}/v1/runs", json={"agent": "probe", "input": "say elsewhere"}, headers=service.headers).json()["run_id"]

    found = subprocess.run([str(BIN / "keel"), "dbos", "workflow", "get", run_id], cwd=tmp_path, env=worker_env,
                           capture_output=True, text=True, timeout=120)

    assert found.returncode == 0, found.stderr
    assert '"name": "keel.agent_run"' in found.stdout
    assert list(tmp_path.iterdir()) == []  # no keel.sqlite (or anything else) left behind


def test_dbos_start_runs_the_service(worker_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**worker_env, "KEEL_PORT": str(port), "KEEL_EXECUTOR_ID": "dbos-start", "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = tmp_path / "dbos-start.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(BIN / "dbos"), "start"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
        process.send_signal(signal.SIGTERM)  # forwarded to the service's process group
        process.wait(20)  # dbos start exits at once (status 1), without waiting for the service
        deadline = time.monotonic() + 20
        while "Application shutdown complete" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(process)

    assert "Keel is running at" in log.read_text()
    assert "Application shutdown complete" in log.read_text()
