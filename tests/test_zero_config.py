"""With no DATABASE_URL and no model configured, Keel starts its own PostgreSQL and its offline
model: the README's first command, on a machine with nothing installed."""

import os
import subprocess
from pathlib import Path

import pytest

from app.database import stop_embedded_postgres
from tests.conftest import wait_for_run
from tests.processes import KEEL, ROOT, Worker

pytestmark = [pytest.mark.process, pytest.mark.smoke]


async def test_a_fresh_data_folder_serves_the_demo_and_keeps_its_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_", "DATABASE_URL"))}
    env.update({"KEEL_DATA_DIR": str(tmp_path / "keel"), "KEEL_EXECUTOR_ID": "zero-config", "PYTHONPATH": str(ROOT)})
    worker = Worker(env=env, log=tmp_path / "worker.log")
    try:
        migrated = subprocess.run([str(KEEL), "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # as `make run` does
        worker.start()
        async with worker.client() as api:
            response = await api.post("/v1/runs", json={"agent": "billing", "input": "Upgrade customer C-42 to the pro plan"})
            run = await wait_for_run(api, response.json()["run_id"])
        worker.stop()
        worker.start()  # a restart finds the same database
        async with worker.client() as api:
            again = (await api.get(f"/v1/runs/{run['run_id']}")).json()
    finally:
        worker.stop()
        stop_embedded_postgres(tmp_path / "keel")

    assert migrated.returncode == 0, migrated.stderr
    assert run["status"] == "succeeded", run
    assert run["output"]["charge_id"].startswith("ch_")
    assert again["status"] == "succeeded"
    assert "model: the offline scripted model" in worker.log.read_text()
