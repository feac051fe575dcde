"""A scripted TCP peer for adapter tests: plays a vendor's server (Asterisk AMI, FreeSWITCH
ESL ...) on a free loopback port, in the test's event loop.

The test decides everything the "vendor" does, and the bytes are real TCP:

* :meth:`ScriptedServer.send` writes bytes to the connected client, split at random points
  into several writes with tiny pauses (``split=True``), so the adapter's framing must cope
  with any split of the stream across reads;
* :meth:`ScriptedServer.expect` waits for the client to have sent something matching a
  predicate (e.g. an AMI action block) and returns it; everything received stays in
  :attr:`Connection.received`;
* ``on_connect`` runs for each new client (e.g. send the AMI banner), ``reply`` is called
  with each complete client message (split by ``delimiter``) and may answer it;
* :meth:`ScriptedServer.drop` resets the current connection, :meth:`ScriptedServer.stop` /
  :meth:`ScriptedServer.start` take the whole "vendor" away and back on the same port.

Recorded transcripts (``tests/fixtures``, copied with their headers from the project's
shared fixtures) are read with :func:`fixture_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

#: real recorded vendor traffic (copied from the project's shared fixtures, headers kept)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: the line that ends a fixture's ``#`` header; the raw transcript follows byte for byte
FIXTURE_SEPARATOR = b"#--- end of header; raw transcript follows byte-for-byte ---\n"


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: complete client messages (split on the server's delimiter), in order
    received: list[bytes] = field(default_factory=list)
    buffer: bytes = b""
    closed: bool = False


OnConnect = Callable[["ScriptedServer", Connection], Awaitable[None]]
Reply = Callable[["ScriptedServer", Connection, bytes], Awaitable[None]]


class ScriptedServer:
    def __init__(
        self,
        *,
        delimiter: bytes = b"\r\n\r\n",
        on_connect: OnConnect | None = None,
        reply: Reply | None = None,
        seed: int | None = None,
    ) -> None:
        self.delimiter = delimiter
        self.on_connect = on_connect
        self.reply = reply
        self.rng = random.Random(seed)
        self.port = 0
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection (the vendor is gone; the port stays ours
        to start again)."""
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            self._close(conn)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def current(self) -> Connection:
        live = [c for c in self.connections if not c.closed]
        if not live:
            raise AssertionError("no client is connected")
        return live[-1]

    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> Connection:
        """Wait until ``count`` clients have connected in all (reconnects count)."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < count or self.connections[count - 1].closed:
            if time.monotonic() > deadline:
                raise AssertionError(f"no client connection #{count} within {timeout} s")
            await asyncio.sleep(0.01)
        return self.connections[count - 1]

    async def send(self, data: bytes | str, *, split: bool = True, conn: Connection | None = None) -> None:
        """Write ``data`` to the client, at random split points when ``split``."""
        raw = data.encode() if isinstance(data, str) else data
        target = conn or self.current
        pieces = [raw]
        if split and len(raw) > 1:
            cuts = sorted(self.rng.sample(range(1, len(raw)), min(len(raw) - 1, self.rng.randint(1, 4))))
            pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        for piece in pieces:
            target.writer.write(piece)
            await target.writer.drain()
            if split:
                await asyncio.sleep(0.001)

    async def expect(
        self, match: Callable[[bytes], bool] | str, *, timeout: float = 5.0, conn: Connection | None = None
    ) -> bytes:
        """The first client message (not yet returned by ``expect``) that ``match`` accepts;
        a ``str`` is a regular expression searched in the message."""
        if isinstance(match, str):
            pattern = re.compile(match.encode())

            def accepts(message: bytes) -> bool:
                return pattern.search(message) is not None

        else:
            accepts = match
        deadline = time.monotonic() + timeout
        while True:
            for c in [conn] if conn else self.connections:
                for i, message in enumerate(c.received):
                    if accepts(message):
                        del c.received[i]
                        return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m for c in self.connections for m in c.received]
                raise AssertionError(f"the client sent nothing matching {match!r} within {timeout} s; got {seen!r}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.05))

    def drop(self) -> None:
        """Reset the current connection (the vendor drops the line)."""
        self._close(self.current)

    def _close(self, conn: Connection) -> None:
        conn.closed = True
        transport = conn.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.on_connect is not None:
                await self.on_connect(self, conn)
            while not conn.closed:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                conn.buffer += chunk
                while self.delimiter in conn.buffer:
                    message, conn.buffer = conn.buffer.split(self.delimiter, 1)
                    conn.received.append(message)
                    self._arrived.set()
                    if self.reply is not None:
                        await self.reply(self, conn, message)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # stop() cancels us; ending normally keeps asyncio's stream callback (3.11) from
            # logging the cancellation as an "unhandled exception in client_connected_cb"
            pass
        finally:
            conn.closed = True
            self._tasks.discard(task)
            writer.close()


def fixture_bytes(name: str) -> bytes:
    """The raw recorded transcript of ``tests/fixtures/NAME``, without its header."""
    header, sep, raw = (FIXTURES / name).read_bytes().partition(FIXTURE_SEPARATOR)
    if not sep:
        raise ValueError(f"{name} has no fixture header separator")
    return raw
