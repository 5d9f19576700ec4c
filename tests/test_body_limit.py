"""`KEEL_MAX_BODY_BYTES` holds while the body is read: a chunked body (no `Content-Length`) is
refused with 413 as soon as it passes the limit, not after it has been read and parsed in full."""

import json
import socket

import httpx

from tests.processes import Worker

LIMIT = 1_048_576  # the default KEEL_MAX_BODY_BYTES


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def request_head(service: Worker) -> bytes:
    headers = ["POST /v1/runs HTTP/1.1", f"Host: 127.0.0.1:{service.port}", "Content-Type: application/json",
               "Transfer-Encoding: chunked", *(f"{name}: {value}" for name, value in service.headers.items())]
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(service: Worker) -> None:
    """The body never ends (no last chunk): only a server that counts while reading can answer."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(request_head(service))
        piece = b" " * 65_536
        for _ in range(LIMIT // len(piece) + 2):
            sock.sendall(chunk(piece))
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = sock.recv(65_536)
            assert received, f"the connection closed without an answer: {answer!r}"
            answer += received
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += sock.recv(65_536)

    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "too_large"


def test_a_chunked_body_under_the_limit_is_read_as_usual(service: Worker) -> None:
    def pieces():
        yield b'{"agent": "probe", '
        yield b'"input": "say chunked"}'

    response = httpx.post(f"{service.url}/v1/runs", content=pieces(), headers={**service.headers, "Content-Type": "application/json"})

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 202, response.text
