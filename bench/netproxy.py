"""A flaky network between Keel and PostgreSQL: an asyncio TCP proxy that speaks just enough of the
PostgreSQL wire protocol to hurt in the worst places.

- `drop_first`: the first N connections are accepted and reset at once (the client reads "server
  closed the connection unexpectedly"), as during a failover.
- `cut_when`: the first client message that contains each of these texts (a table's name, say) is
  not forwarded; its connection is reset: a connection that was up dies in the middle of a
  conversation, at a chosen point.
- `reset_rate`: each message batch a client sends is, with this probability, not forwarded; both
  sides of the connection are reset instead (RST to the client).
- `lose_commit_rate`: each reply to a statement that committed is, with this probability, thrown
  away after the server committed, and both sides are closed: the client cannot know whether its
  transaction committed. The proxy sees a commit in the server's replies, so simple (`Q`) and
  extended-protocol (`P`/`B`/`E`/`S`) COMMITs alike are caught: a `CommandComplete` tagged `COMMIT`
  (an explicit transaction), or one tagged `INSERT`/`UPDATE`/`DELETE`/`MERGE` whose `ReadyForQuery`
  says the session is idle (a write that committed on its own, in autocommit mode).

The proxy answers a client's SSL and GSS encryption requests with "no" itself, so the rest of the
conversation is plain messages it can read. `NetProxy.counts` says what it did."""

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

ENCRYPTION_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest
IMPLICIT_COMMITS = (b"INSERT", b"UPDATE", b"DELETE", b"MERGE")


@dataclass(frozen=True, kw_only=True)
class Faults:
    drop_first: int = 0
    cut_when: tuple[str, ...] = ()
    reset_rate: float = 0.0
    lose_commit_rate: float = 0.0
    seed: int = 0


@dataclass
class Counts:
    connections: int = 0
    dropped: int = 0
    resets: int = 0
    lost_commit_replies: int = 0
    """Replies to an explicit COMMIT, thrown away after the server committed."""
    lost_autocommit_replies: int = 0
    """Replies to a write that committed on its own (autocommit), thrown away."""


class Lost(Exception):
    """The proxy cut this connection on purpose."""


def upstream_address(url: str) -> tuple[str, int] | str:
    """Where the database of a libpq URL listens: (host, port), or a Unix socket's path."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "/var/run/postgresql"
    host = host if isinstance(host, str) else host[0]
    port = parsed.port or 5432
    return str(Path(host) / f".s.PGSQL.{port}") if host.startswith("/") else (host, port)


def proxied_url(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's (127.0.0.1:`port`)."""
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
    return parsed.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)


@dataclass
class NetProxy:
    upstream: tuple[str, int] | str
    faults: Faults = field(default_factory=Faults)
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)
        self.cuts_left = [text.encode() for text in self.faults.cut_when]

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        if self.counts.connections <= self.faults.drop_first:
            self.counts.dropped += 1
            reset(client_writer)
            return
        server_writer = None
        try:
            startup = await read_startup(client_reader, client_writer)
            if isinstance(self.upstream, str):
                server_reader, server_writer = await asyncio.open_unix_connection(self.upstream)
            else:
                server_reader, server_writer = await asyncio.open_connection(*self.upstream)
            server_writer.write(startup)
            await asyncio.gather(self.client_to_server(client_reader, server_writer),
                                 self.server_to_client(server_reader, client_writer))
        except (Lost, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            reset(client_writer)
            if server_writer is not None:
                reset(server_writer)

    async def client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.cut(data) or self.rng.random() < self.faults.reset_rate:
                self.counts.resets += 1
                raise Lost("reset")
            writer.write(data)
            await writer.drain()
        raise Lost("client closed")

    async def server_to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[bytes] = []  # the reply to an autocommit write, until ReadyForQuery says whether it committed
        while True:
            kind, message = await read_message(reader)
            if kind == b"C" and message[5:].rstrip(b"\0") == b"COMMIT" and self.lose():
                self.counts.lost_commit_replies += 1
                raise Lost("COMMIT reply")
            if kind == b"C" and message[5:].startswith(IMPLICIT_COMMITS):
                held.append(message)
                continue
            if held and kind == b"Z":
                if message[5:6] == b"I" and self.lose():
                    self.counts.lost_autocommit_replies += 1
                    raise Lost("autocommit reply")
                writer.write(b"".join(held))
                held.clear()
            if held:
                held.append(message)
            else:
                writer.write(message)
            if kind in (b"Z", b"A", b"N", b"S"):  # the end of a reply, or a message nobody asked for
                await writer.drain()

    def cut(self, data: bytes) -> bool:
        for text in self.cuts_left:
            if text in data:
                self.cuts_left.remove(text)
                return True
        return False

    def lose(self) -> bool:
        return self.rng.random() < self.faults.lose_commit_rate


async def read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The client's startup message; encryption requests before it are answered "no" here."""
    while True:
        header = await reader.readexactly(8)
        length, code = struct.unpack("!ii", header)
        body = await reader.readexactly(length - 8)
        if code not in ENCRYPTION_REQUESTS:
            return header + body
        writer.write(b"N")
        await writer.drain()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], header + await reader.readexactly(length - 4)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (no FIN): what a dropped connection looks like to its peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ProxyThread:
    """Runs a `NetProxy` on an event loop of its own, so a caller that blocks (starting a worker,
    say) never stalls the traffic of the workers it waits for."""

    def __init__(self, proxy: NetProxy, port: int = 0) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(proxy.handle, "127.0.0.1", port))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="netproxy", daemon=True)
        self.thread.start()
        ready.wait(10)
        assert self.server is not None, "the proxy did not start"
        self.port: int = self.server.sockets[0].getsockname()[1]

    def url(self, database_url: str) -> str:
        return proxied_url(database_url, self.port)

    def stop(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> "ProxyThread":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
