"""The outgoing side of a WebSocket: a bounded outbox and the writer that drains it.

Routing never waits for a socket. The hub and the event bus hand each message to a
socket's :class:`SocketOutbox` with :meth:`~SocketOutbox.offer`, which only appends to a
bounded list. Each socket's writer (:class:`_Writer`: loop callbacks, no task of its own
while idle) sends what is queued: everything queued by the time it runs, in order, as
one write to the connection (one system call for the ack of a desktop's action and the
session update it caused), bounded by a timeout when the connection does not take it. A
socket that falls behind, because its outbox is full or a send timed out, is closed with
code :data:`CLOSE_TOO_SLOW` (4008, "too slow"); its client reconnects and gets a fresh
``hello``. Nothing it missed is replayed: the snapshot in ``hello`` replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable, MutableSet
from typing import Any, Protocol

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from gateway import fastjson

__all__ = ["CLOSE_REPLACED", "CLOSE_TOO_SLOW", "Link", "SocketOutbox", "converse", "dumps", "encode"]

log = structlog.get_logger("cti_gateway.api.sockets")

#: WebSocket close code for a client that does not read fast enough (application range).
CLOSE_TOO_SLOW = 4008
#: WebSocket close code for a desktop socket closed because the agent opened a newer one
#: beyond ``server.max_desktops_per_agent``.
CLOSE_REPLACED = 4009

Message = dict[str, Any]


class Link(Protocol):
    """What a socket's writer needs of the WebSocket it writes to: aiohttp's
    ``WebSocketResponse`` (the supervisor stream, a desktop on a connection aiohttp already
    owned) or the gateway's own desktop connection (:mod:`.desktop_socket`).

    Data frames go straight to the connection's transport (uncompressed text frames, built
    here); the link keeps the control frames (ping, pong, close) and the closing handshake."""

    @property
    def compress(self) -> int | bool: ...

    @property
    def closed(self) -> bool:
        """True once the closing handshake started (nothing more may be sent)."""
        ...

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        """Send one frame through the link itself (only used when it compresses)."""
        ...

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        """The closing handshake with ``code``; returns when it ended (or gave up)."""
        ...


def dumps(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(message: Message) -> bytes:
    """A message as the UTF-8 payload of a text frame. A string that UTF-8 cannot carry
    (a lone surrogate that got in from somewhere) goes out as a JSON ``\\uXXXX`` escape
    instead of failing the send. Raises TypeError / ValueError for what is not JSON."""
    fast = fastjson.dumps(message)
    if fast is not None:
        return fast
    text = dumps(message)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


class SocketOutbox:
    """A :class:`gateway.hub.Subscriber`: bounded, never blocks, closes the socket on overflow.

    Until a socket's writer is attached (:func:`converse`, once the handshake is done) what
    is offered waits here; afterwards every change wakes the writer with one loop callback
    per turn (no task and no event per socket: an idle desktop costs only this object and
    its connection, see docs/performance.md, P4)."""

    __slots__ = ("maxsize", "name", "_items", "overflowed", "closed", "close_with", "_writer")

    def __init__(self, maxsize: int, *, name: str = "socket") -> None:
        self.maxsize = max(1, int(maxsize))
        self.name = name
        #: what waits to be sent, oldest first (None while empty: nothing allocated per idle socket)
        self._items: list[Message] | None = None
        #: set once: the socket fell behind (then everything offered is discarded)
        self.overflowed = False
        #: set once: no more messages (the socket is closing)
        self.closed = False
        #: set once: close the socket with this code and reason (e.g. replaced by a newer one)
        self.close_with: tuple[int, bytes] | None = None
        self._writer: _Writer | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def _wake(self) -> None:
        if self._writer is not None:
            self._writer.wake()

    # -- Subscriber protocol (called synchronously by the hub / bus)

    def offer(self, message: Message) -> bool:
        """Queue a message; False if the outbox is full (the caller then calls :meth:`overflow`).

        Once the socket is closing (or already overflowed), messages are discarded and True
        is returned: the socket is going away and a second overflow report adds nothing.
        """
        if self.closed or self.overflowed:
            return True
        items = self._items
        if items is None:
            self._items = [message]
        elif len(items) >= self.maxsize:
            return False
        else:
            items.append(message)
        self._wake()
        return True

    def overflow(self) -> None:
        """The socket fell behind: drop what is queued and let the writer close it."""
        if not self.overflowed and not self.closed:
            log.warning("socket_too_slow", socket=self.name, queued=len(self))
        self.overflowed = True
        self._items = None
        self._wake()

    # -- the socket's own side

    def put_front(self, message: Message) -> None:
        """Queue a message ahead of everything (``hello``), regardless of the bound."""
        if not (self.closed or self.overflowed):
            self._items = [message, *(self._items or ())]
            self._wake()

    def send(self, message: Message) -> None:
        """Queue a reply of the socket's own (ack, error, pong); overflow if full."""
        if not self.offer(message):
            self.overflow()

    def close(self) -> None:
        self.closed = True
        self._items = None
        self._wake()

    def evict(self, code: int, reason: bytes) -> None:
        """Have the writer close the socket with ``code`` and ``reason`` (nothing more is sent)."""
        if not (self.closed or self.overflowed):
            self.close_with = (code, reason)
        self.close()

    def take_now(self) -> list[Message] | None:
        """Every message queued (oldest first; maybe none), or None once the outbox is
        closed or overflowed."""
        if self.overflowed or self.closed:
            return None
        items, self._items = self._items, None
        return items or []


#: Bytes waiting in a connection's send buffer beyond which the writer waits for it to
#: drain (bounded by the send timeout) before it writes more (aiohttp's own default).
WRITE_BUFFER_LIMIT = 2**16
#: How often a writer waiting for a full send buffer looks again (seconds).
DRAIN_POLL_S = 0.005


def text_frames(payloads: list[bytes]) -> bytes:
    """Unmasked, uncompressed WebSocket text frames (RFC 6455 section 5.2, server to client)."""
    parts: list[bytes] = []
    for payload in payloads:
        size = len(payload)
        if size < 126:
            parts.append(_HEAD1(0x81, size))
        elif size < 65536:
            parts.append(_HEAD2(0x81, 126, size))
        else:
            parts.append(_HEAD3(0x81, 127, size))
        parts.append(payload)
    return b"".join(parts)


_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack


class _Writer:
    """Sends what one socket's outbox holds, from loop callbacks (no task per socket).

    Woken by the outbox, it runs once per loop turn and sends everything queued by then:
    on a connection without compression as one write of all its frames (aiohttp's own
    writer still sends the control frames: ping, pong, close, each whole); with compression
    (a browser may ask for it) frame by frame through aiohttp, which keeps the compressor's
    state, in a task that lives only while that batch is being sent. When the connection's
    send buffer holds more than :data:`WRITE_BUFFER_LIMIT`, it looks again every
    :data:`DRAIN_POLL_S` and sends nothing more until it drained; if that takes longer than
    ``send_timeout`` the connection is dropped as too slow.

    The writer never stops while the socket stays open: whatever stops it (the peer went
    away, a message that is not JSON, a bug) also closes or drops the connection, so the
    reader ends too and the socket is unregistered. A socket that is open but no longer
    sends (a "mute" desktop that still counts as connected) cannot happen."""

    __slots__ = (
        "ws",
        "outbox",
        "transport",
        "send_timeout",
        "close_timeout",
        "loop",
        "_scheduled",
        "_poll",
        "_deadline",
        "task",
        "done",
    )

    def __init__(
        self,
        ws: Link,
        outbox: SocketOutbox,
        transport: asyncio.Transport | None,
        *,
        send_timeout: float,
        close_timeout: float,
    ) -> None:
        self.ws = ws
        self.outbox = outbox
        self.transport = transport
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.loop = asyncio.get_running_loop()
        self._scheduled = False
        #: while the send buffer is full: the next look at it, and when to give up
        self._poll: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        #: a send through aiohttp (compressed) or the closing handshake, while one runs
        self.task: asyncio.Task[None] | None = None
        #: stopped: nothing more is sent (the socket is closed or being closed)
        self.done = False
        outbox._writer = self
        self.wake()

    def wake(self) -> None:
        """Something changed in the outbox: send it this turn (unless a send is under way:
        that one looks again when it is through)."""
        if self._scheduled or self.done or self._poll is not None:
            return
        if self.task is not None and not self.task.done():
            return
        self._scheduled = True
        self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if self.done:
            return
        try:
            messages = self.outbox.take_now()
            if messages is None:
                self._finish()
                return
            if not messages:
                return
            payloads, broken = _encode_all(messages)
            # nothing of a sent batch stays referenced while the socket waits for the next
            # (an idle desktop would otherwise keep its last messages, e.g. a 4 KB hello)
            del messages
            transport = self.transport
            if self.ws.compress or transport is None:
                self.task = self.loop.create_task(self._send_frames(payloads, broken))
                return
            if payloads:
                if self.ws.closed or transport.is_closing():
                    raise ConnectionResetError("the connection is closing")
                transport.write(text_frames(payloads))
            if broken is not None:
                self._broken(*broken)
            elif transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                # the peer does not read as fast as we write: wait (bounded) until it took enough
                self._deadline = self.loop.time() + self.send_timeout
                self._poll = self.loop.call_later(DRAIN_POLL_S, self._drained)
        except Exception as exc:  # the peer went away while we were sending, or a bug: drop it
            self._drop(exc)

    def _drained(self) -> None:
        self._poll = None
        if self.done:
            return
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            self._drop(ConnectionResetError("the connection closed"))
        elif transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT:
            self._run()  # what was queued meanwhile (or the outbox closed meanwhile)
        elif self.loop.time() >= self._deadline:
            self._timed_out()
        else:
            self._poll = self.loop.call_later(DRAIN_POLL_S, self._drained)

    async def _send_frames(self, payloads: list[bytes], broken: tuple[Message, Exception] | None) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                for payload in payloads:
                    await self.ws.send_frame(payload, WSMsgType.TEXT)
        except TimeoutError:
            self._timed_out()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._drop(exc)
            return
        if broken is not None:
            self._broken(*broken)
            return
        self.task = None
        self.wake()

    # -- how it stops

    def _finish(self) -> None:
        """The outbox closed or overflowed: close the socket as it says."""
        self.done = True
        outbox = self.outbox
        if outbox.overflowed and not self.ws.closed:
            self._closing(CLOSE_TOO_SLOW, b"too slow")
        elif outbox.close_with is not None and not self.ws.closed:
            self._closing(*outbox.close_with)

    def _broken(self, message: Message, error: Exception) -> None:
        # skipping it would leave the desktop's picture silently wrong: close (1011), the
        # client reconnects and gets a fresh hello
        log.error("socket_message_not_json", socket=self.outbox.name, type=message.get("type"), exc_info=error)
        self.done = True
        self.outbox.close()
        self._closing(WSCloseCode.INTERNAL_ERROR, b"internal error")

    def _timed_out(self) -> None:
        log.warning("socket_send_timeout", socket=self.outbox.name, timeout_s=self.send_timeout)
        self.done = True
        self.outbox.overflow()
        # a cancelled send may have left half a frame on the wire: no close frame after it
        _abort(self.transport)

    def _drop(self, exc: Exception) -> None:
        log.debug("socket_send_failed", socket=self.outbox.name, error=repr(exc))
        self.done = True
        self.outbox.close()
        _abort(self.transport)

    def _closing(self, code: int, reason: bytes) -> None:
        self.task = self.loop.create_task(_close(self.ws, self.transport, code, reason, self.close_timeout))

    def halt(self) -> None:
        """The connection is gone: nothing more is sent (no handshake to wait for)."""
        self.done = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    async def stop(self) -> None:
        """The socket is going away (the outbox is closed): finish what the outbox says
        (e.g. the close code of an eviction) and let a closing handshake end, briefly."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if not self.done and (self.task is None or self.task.done()):
            self._run()
        task = self.task
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, self.close_timeout + 1.0)
        self.done = True


def _encode_all(messages: list[Message]) -> tuple[list[bytes], tuple[Message, Exception] | None]:
    """The payloads of ``messages`` in order, up to the first that is not JSON (returned
    with its error: those before it are still sent)."""
    payloads: list[bytes] = []
    for message in messages:
        try:
            payloads.append(encode(message))
        except (TypeError, ValueError) as exc:
            return payloads, (message, exc)
    return payloads, None


#: The answer to a binary frame (the socket stays open). Shared: never changed.
BINARY_REPLY: Message = {
    "type": "error",
    "ref": None,
    "code": "invalid_request",
    "message": "binary frames are not supported: send JSON text",
}


async def answering(reply: Awaitable[Message], name: str) -> Message:
    """The reply a client message gets: what ``reply`` (the handler's coroutine) returns,
    or, when the handler fails (a bug), an ``internal_error``: a socket answers every
    message, it never goes quiet. Both desktop connections (aiohttp's route and the
    gateway's own) answer through here."""
    try:
        return await reply
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("socket_message_failed", socket=name)
        return {
            "type": "error",
            "ref": None,
            "code": "internal_error",
            "message": "the gateway failed to process the message",
        }


async def converse(
    ws: web.WebSocketResponse,
    request: web.Request,
    outbox: SocketOutbox,
    on_text: Callable[[str], Awaitable[Message]],
    *,
    open_sockets: MutableSet[Any],
    send_timeout: float,
    close_timeout: float,
) -> None:
    """Run one prepared-to-be WebSocket: handshake, a writer draining ``outbox``, and a
    reader answering each text frame with ``on_text(text)`` (through the same outbox, so
    replies keep their order with pushed messages), until either side closes or the client
    falls behind. Always tidies up: the outbox closes, the writer ends, the socket closes."""
    writer: _Writer | None = None
    try:
        await ws.prepare(request)
        open_sockets.add(ws)
        writer = _Writer(ws, outbox, request.transport, send_timeout=send_timeout, close_timeout=close_timeout)
        async for msg in ws:
            if writer.done:  # the writer stopped (and closed the socket): stop reading
                break
            if msg.type is WSMsgType.TEXT:
                reply = await answering(on_text(msg.data), outbox.name)
            elif msg.type is WSMsgType.BINARY:
                reply = BINARY_REPLY
            else:  # ERROR: the reader failed (e.g. message too big); aiohttp closes
                break
            outbox.send(reply)
            if outbox.overflowed:
                break
    finally:
        outbox.close()
        if writer is not None:
            # the writer may be closing a too-slow socket: let it finish, briefly
            await writer.stop()
        with contextlib.suppress(BaseException):
            await ws.close()
        open_sockets.discard(ws)


async def _close(ws: Link, transport: asyncio.Transport | None, code: int, reason: bytes, timeout: float) -> None:
    """Close with ``code``; if the closing handshake does not finish in time, drop the connection
    (a link that bounds its own handshake, the gateway's desktop connection, ends it itself:
    half-closed after the close frame went out, never reset while the frame may be unread)."""
    if getattr(ws, "bounded_close", False):
        await ws.close(code=code, message=reason)
        return
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), timeout)
    except asyncio.CancelledError:
        _abort(transport)
        raise
    except Exception:
        _abort(transport)


def _abort(transport: asyncio.Transport | None) -> None:
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
