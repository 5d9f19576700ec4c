"""`keel serve`: take the port first, then run one worker, or supervise N workers behind it.

The port is bound before anything else happens, so a second `keel serve` on a taken port exits before
it has touched the database, let alone recovered a live worker's runs. With N workers, this process
binds the socket, and each worker is a `keel serve --fd` child that accepts on it (as uvicorn's and
gunicorn's workers do) under its own executor ID `<id>/<n>`: the same ID every time worker n is
started, so a worker restarted after a crash recovers its own runs at once. A worker that dies is
started again; a worker that cannot start on the first boot (its database is not migrated, its
executor ID is taken) stops them all, as gunicorn does."""

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from app.config import Settings

STARTUP_FAILURE = 3  # uvicorn's exit status when the lifespan refused to start
RESTART_BACKOFF_CAP = 30.0
STOP_GRACE = 10.0
PR_SET_PDEATHSIG = 1
log = logging.getLogger("keel.serve")


class PortInUse(RuntimeError):
    pass


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}. Is another Keel (or anything else) using the port?") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_one(settings: Settings, sock: socket.socket) -> None:
    """Run one worker on an already bound socket; exit with status 3 if it refused to start."""
    import uvicorn

    from app.main import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="info"))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def worker_ids(base: str, count: int) -> list[str]:
    """One worker keeps the ID as it is; several get `<id>/1` ... `<id>/<count>`."""
    return [base] if count == 1 else [f"{base}/{n}" for n in range(1, count + 1)]


def die_with_parent() -> None:
    """In a worker, before exec: the kernel sends it SIGTERM if the supervisor dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a worker outlives a killed supervisor
        pass


@dataclass
class Child:
    executor_id: str
    command: list[str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    generation: int = 0
    quick_exits: int = 0
    restart_at: float = 0.0

    def start(self, sock: socket.socket) -> None:
        self.process = subprocess.Popen(self.command, pass_fds=(sock.fileno(),), preexec_fn=die_with_parent)
        self.started = time.monotonic()
        self.generation += 1
        log.info("worker %s started (pid %d)", self.executor_id, self.process.pid)


@dataclass
class Supervisor:
    """Keeps one process per executor ID running until it is told to stop."""

    sock: socket.socket
    children: list[Child]
    stopping: bool = field(default=False, init=False)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.stop)
        for child in self.children:
            child.start(self.sock)
        try:
            while not self.stopping:
                if (status := self.watch()) is not None:
                    return status
                time.sleep(0.2)
            return 0
        finally:
            self.shut_down()

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def watch(self) -> int | None:
        """Restart workers that died; a status to exit with if one could not start on the first boot."""
        now = time.monotonic()
        for child in self.children:
            assert child.process is not None
            if child.restart_at:
                if now >= child.restart_at:
                    child.restart_at = 0.0
                    child.start(self.sock)
                continue
            code = child.process.poll()
            if code is None:
                continue
            if code == STARTUP_FAILURE and child.generation == 1:
                log.error("worker %s could not start (its log says why): stopping", child.executor_id)
                return STARTUP_FAILURE
            lived = now - child.started
            child.quick_exits = child.quick_exits + 1 if lived < 10 else 0
            delay = min(RESTART_BACKOFF_CAP, 2.0 ** child.quick_exits - 1)  # 0 s after a long life, then 1, 3, 7, ... s
            log.warning("worker %s (pid %d) exited with status %s after %.0f s; restarting it%s",
                        child.executor_id, child.process.pid, code, lived, f" in {delay:.0f} s" if delay else "")
            if delay:
                child.restart_at = now + delay
            else:
                child.start(self.sock)
        return None

    def shut_down(self) -> None:
        live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in live:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in live:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sock.close()
