"""A failure is classified by what happened, whichever HTTP library the caller used: `openai` 3 speaks
HTTP through `httpx2`, a tool may use `httpx` or `httpx2`, and their errors share no class."""

import socket
import threading
from collections.abc import Iterator
from types import ModuleType

import httpx
import httpx2
import pytest

from steps.retry import classify

LIBRARIES = [httpx, httpx2]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a hung dependency."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def answering_server() -> Iterator[str]:
    """Answers every request with the status and headers its path asks for, then cuts `/cut` mid-body."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                path = conn.recv(65536).split(b" ")[1].decode()
                if path == "/cut":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    continue
                status, _, retry_after = path.strip("/").partition("/")
                extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
                conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n".encode())

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def failure_of(library: ModuleType, url: str, *, timeout: float = 5.0) -> BaseException:
    with library.Client(timeout=timeout) as client:
        try:
            client.get(url).raise_for_status()
        except Exception as exc:
            return exc
    raise AssertionError(f"{url} did not fail")


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda lib: lib.__name__)
def test_a_refused_connection_is_transient(library: ModuleType) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    assert classify(failure_of(library, f"http://127.0.0.1:{port}/")).kind == "transient"


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda lib: lib.__name__)
def test_a_reply_that_never_comes_is_transient(library: ModuleType, silent_server: str) -> None:
    failure = classify(failure_of(library, silent_server, timeout=0.3))
    assert (failure.kind, failure.type) == ("transient", "ReadTimeout")


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda lib: lib.__name__)
def test_a_body_cut_midway_is_transient(library: ModuleType, answering_server: str) -> None:
    failure = classify(failure_of(library, f"{answering_server}/cut"))
    assert (failure.kind, failure.type) == ("transient", "RemoteProtocolError")


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda lib: lib.__name__)
def test_statuses_are_classified_with_their_retry_after(library: ModuleType, answering_server: str) -> None:
    unavailable = classify(failure_of(library, f"{answering_server}/503/7"))
    missing = classify(failure_of(library, f"{answering_server}/404"))
    assert (unavailable.kind, unavailable.status, unavailable.retry_after) == ("transient", 503, 7.0)
    assert (missing.kind, missing.status) == ("permanent", 404)
