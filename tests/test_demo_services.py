"""The demo services (`/sandbox`, the fake payments and mail with fault knobs, and `/scripted`, the
offline model) are for the zero-config local run: on by default only there, off once a model is
configured, never served on a non-loopback interface, and the offline model's request log (every
run's input) needs a key."""

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.conftest import wait_for_run
from tests.processes import ROOT, Worker, free_port, stop, wait_until_up

KEEL = str(Path(sys.executable).parent / "keel")


def without_demo_setting(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "KEEL_DEMO_SERVICES"}


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, True),  # the zero-config local run: embedded database, no model, loopback
    ({"OPENAI_API_KEY": "sk-x"}, False),
    ({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, False),
    ({"DATABASE_URL": "postgresql://db/keel"}, False),
    ({"KEEL_HOST": "0.0.0.0"}, False),
    ({"OPENAI_API_KEY": "sk-x", "KEEL_DEMO_SERVICES": "on"}, True),
    ({"KEEL_DEMO_SERVICES": "off"}, False),
])
def test_the_default_is_on_only_for_the_zero_config_local_run(environment: dict[str, str], expected: bool) -> None:
    unset = {"DATABASE_URL": None, "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "KEEL_DEMO_SERVICES": None, "KEEL_HOST": "127.0.0.1"}
    assert Settings(_env_file=None, **{**unset, **environment}).demo_services is expected


def test_a_worker_with_a_model_configured_serves_no_demo_services(worker_env: dict[str, str], logs: Path) -> None:
    worker = Worker(env={**without_demo_setting(worker_env), "KEEL_EXECUTOR_ID": "demo-default", "KEEL_QUEUE": "runs-demo-default"},
                    log=logs / "worker-demo-default.log").start()
    try:
        charges = httpx.get(f"{worker.url}/sandbox/payments/charges", timeout=10)
        fault = httpx.post(f"{worker.url}/sandbox/faults", json={"service": "payments", "kind": "unavailable"}, timeout=10)
        model = httpx.get(f"{worker.url}/scripted/v1/models", timeout=10)
    finally:
        worker.stop()

    assert (charges.status_code, fault.status_code, model.status_code) == (404, 404, 404)


async def test_the_offline_models_request_log_needs_a_key(worker_env: dict[str, str], logs: Path, api_keys: dict[str, str]) -> None:
    env = {k: v for k, v in worker_env.items() if not k.startswith("OPENAI_")}
    worker = Worker(env={**env, "KEEL_DEMO_SERVICES": "on", "KEEL_EXECUTOR_ID": "demo-offline", "KEEL_QUEUE": "runs-demo-offline"},
                    log=logs / "worker-demo-offline.log").start()
    try:
        async with worker.client(timeout=30) as api:
            run = await wait_for_run(api, (await api.post("/v1/runs", json={"agent": "probe", "input": "say secret-input"})).json()["run_id"])
            with_key = await api.get("/scripted/requests")
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as stranger:
            anonymous = await stranger.get("/scripted/requests")
            chat = await stranger.post("/scripted/v1/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
            submitter = await stranger.get("/scripted/requests", headers={"Authorization": f"Bearer {api_keys['submit']}"})
    finally:
        worker.stop()

    assert run["status"] == "succeeded" and run["output"] == "secret-input"  # Keel's own client may use it
    assert anonymous.status_code == 401 and "secret-input" not in anonymous.text
    assert chat.status_code == 401
    assert submitter.status_code == 403
    assert with_key.status_code == 200 and any("secret-input" in entry["first_user"] for entry in with_key.json())


def test_demo_services_refuse_a_non_loopback_bind(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = {**worker_env, "KEEL_DEMO_SERVICES": "on", "KEEL_HOST": "0.0.0.0", "KEEL_PORT": str(free_port()), "KEEL_EXECUTOR_ID": "demo-public"}
    process = subprocess.Popen([KEEL, "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        stop(process)

    assert process.returncode != 0
    assert "KEEL_DEMO_SERVICES" in output and "loopback" in output


def public_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture
def served_on_every_interface(worker_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """The app deployed like any FastAPI app (`uvicorn --factory app.main:create_app --host 0.0.0.0`),
    where Keel's own settings do not know the bind."""
    port = free_port()
    env = {**worker_env, "KEEL_DEMO_SERVICES": "on", "KEEL_EXECUTOR_ID": "demo-everywhere", "KEEL_QUEUE": "runs-demo-everywhere"}
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
        yield port
    finally:
        stop(process)


def test_demo_services_answer_only_over_loopback(served_on_every_interface: int) -> None:
    address = public_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = served_on_every_interface

    local = httpx.get(f"http://127.0.0.1:{port}/sandbox/payments/charges", timeout=10)
    public = httpx.get(f"http://{address}:{port}/sandbox/payments/charges", timeout=10)
    forwarded = httpx.get(f"http://127.0.0.1:{port}/sandbox/payments/charges", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)

    assert local.status_code == 200
    assert public.status_code == 403 and "loopback" in public.text
    assert forwarded.status_code == 403
