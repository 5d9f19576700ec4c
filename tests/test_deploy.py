"""Keel deploys like any FastAPI app: `uvicorn app.main:app` and `fastapi run` serve the module-level
app, whose lifespan (database, executor claim, DBOS) starts only when the server starts it."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import ROOT, free_port, stop, wait_until_up

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("server", ["uvicorn", "fastapi"])
def test_an_asgi_server_serves_the_module_level_app(server: str, worker_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    command = {"uvicorn": [str(BIN / "uvicorn"), "app.main:app", "--port", str(port)],
               "fastapi": [str(BIN / "fastapi"), "run", "--port", str(port)]}[server]
    log = tmp_path / f"{server}.log"
    with log.open("wb") as out:  # from the project directory: `fastapi run` finds app.main:app in pyproject.toml
        process = subprocess.Popen(command, cwd=ROOT, env={**worker_env, "KEEL_EXECUTOR_ID": f"deploy-{server}"},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", process, log)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        run = httpx.post(f"http://127.0.0.1:{port}/v1/runs", json={"agent": "probe", "input": "say deployed"},
                         headers={"Authorization": f"Bearer {worker_env['KEEL_API_KEY']}"}, timeout=30)
    finally:
        stop(process)

    assert health == {"status": "ok", "executor_id": f"deploy-{server}"}
    assert run.status_code == 202, run.text


def test_importing_the_app_touches_no_database() -> None:
    # Nothing listens on this port: an import that connected anywhere would fail.
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    imported = subprocess.run([sys.executable, "-c", "import app.main; print(type(app.main.app).__name__)"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "FastAPI"
