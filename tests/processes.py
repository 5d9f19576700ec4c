"""Real processes for the tests: Keel workers (`keel serve`) and the scripted model server."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEEL = Path(sys.executable).parent / "keel"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{url} did not come up in {timeout}s:\n{log.read_text()[-4000:]}")


@dataclass
class Worker:
    """A `keel serve` process. `kill()` is a real SIGKILL: no cleanup code of the worker runs."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The API key to call it with: `KEEL_API_KEY`, else the local key it wrote under its data folder."""
        key = self.env.get("KEEL_API_KEY")
        if key is None and (local := Path(self.env.get("KEEL_DATA_DIR", ROOT / ".keel")) / "api-key").exists():
            key = local.read_text().strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, **kwargs)

    def start(self, timeout: float = 60) -> "Worker":
        env = {**self.env, "KEEL_PORT": str(self.port)}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(KEEL), "serve"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_until_up(f"{self.url}/healthz", self.process, self.log, timeout)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def wait_for_exit(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def stop(process: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL if in-flight requests (a held-back reply, say) outlast `grace`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_scripted_model(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.scripted_model", "--port", str(port)],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/v1/models", process, log)
    return process, url
