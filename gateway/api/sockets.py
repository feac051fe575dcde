"""The outgoing side of a WebSocket: a bounded outbox and the task that drains it.

Routing never waits for a socket. The hub and the event bus hand each message to a
socket's :class:`SocketOutbox` with :meth:`~SocketOutbox.offer`, which only appends to a
bounded deque. One writer task per socket (:func:`pump`) sends what is queued: everything
queued by the time it runs, in order, as one write to the connection (one system call for
the ack of a desktop's action and the session update it caused), bounded by a timeout
when the connection does not take it. A socket that falls behind, because its outbox is
full or a send timed out, is closed with code :data:`CLOSE_TOO_SLOW` (4008, "too slow");
its client reconnects and gets a fresh ``hello``. Nothing it missed is replayed: the
snapshot in ``hello`` replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections import deque
from collections.abc import Awaitable, Callable, MutableSet
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from gateway import fastjson

__all__ = ["CLOSE_REPLACED", "CLOSE_TOO_SLOW", "SocketOutbox", "converse", "dumps", "encode", "pump"]

log = structlog.get_logger("cti_gateway.api.sockets")

#: WebSocket close code for a client that does not read fast enough (application range).
CLOSE_TOO_SLOW = 4008
#: WebSocket close code for a desktop socket closed because the agent opened a newer one
#: beyond ``server.max_desktops_per_agent``.
CLOSE_REPLACED = 4009

Message = dict[str, Any]


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
    """A :class:`gateway.hub.Subscriber`: bounded, never blocks, closes the socket on overflow."""

    def __init__(self, maxsize: int, *, name: str = "socket") -> None:
        self.maxsize = max(1, int(maxsize))
        self.name = name
        self._items: deque[Message] = deque()
        self._wake = asyncio.Event()
        #: set once: the socket fell behind (then everything offered is discarded)
        self.overflowed = False
        #: set once: no more messages (the socket is closing)
        self.closed = False
        #: set once: close the socket with this code and reason (e.g. replaced by a newer one)
        self.close_with: tuple[int, bytes] | None = None

    def __len__(self) -> int:
        return len(self._items)

    # -- Subscriber protocol (called synchronously by the hub / bus)

    def offer(self, message: Message) -> bool:
        """Queue a message; False if the outbox is full (the caller then calls :meth:`overflow`).

        Once the socket is closing (or already overflowed), messages are discarded and True
        is returned: the socket is going away and a second overflow report adds nothing.
        """
        if self.closed or self.overflowed:
            return True
        if len(self._items) >= self.maxsize:
            return False
        self._items.append(message)
        self._wake.set()
        return True

    def overflow(self) -> None:
        """The socket fell behind: drop what is queued and let the writer close it."""
        if not self.overflowed and not self.closed:
            log.warning("socket_too_slow", socket=self.name, queued=len(self._items))
        self.overflowed = True
        self._items.clear()
        self._wake.set()

    # -- the socket's own side

    def put_front(self, message: Message) -> None:
        """Queue a message ahead of everything (``hello``), regardless of the bound."""
        if not (self.closed or self.overflowed):
            self._items.appendleft(message)
            self._wake.set()

    def send(self, message: Message) -> None:
        """Queue a reply of the socket's own (ack, error, pong); overflow if full."""
        if not self.offer(message):
            self.overflow()

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._wake.set()

    def evict(self, code: int, reason: bytes) -> None:
        """Have the writer close the socket with ``code`` and ``reason`` (nothing more is sent)."""
        if not (self.closed or self.overflowed):
            self.close_with = (code, reason)
        self.close()

    async def take(self) -> list[Message] | None:
        """Every message queued (at least one, oldest first), or None once the outbox is
        closed or overflowed."""
        while True:
            if self.overflowed or self.closed:
                return None
            if self._items:
                items = list(self._items)
                self._items.clear()
                return items
            self._wake.clear()
            await self._wake.wait()


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


async def pump(
    ws: web.WebSocketResponse,
    outbox: SocketOutbox,
    request: web.BaseRequest,
    *,
    send_timeout: float,
    close_timeout: float = 2.0,
) -> None:
    """Send what ``outbox`` holds until it closes; close the socket as too slow if it overflows
    or a send takes longer than ``send_timeout``. Never raises (but for cancellation).

    Each turn sends everything queued: on a connection without compression as one write of
    all its frames (aiohttp's own writer still sends the control frames: ping, pong, close,
    each whole); with compression (a browser may ask for it) frame by frame through
    aiohttp, which keeps the compressor's state.

    The writer never ends while the socket stays open: whatever stops it (the peer went
    away, a message that is not JSON, a bug) also closes or drops the connection, so the
    reader ends too and the socket is unregistered. A socket that is open but no longer
    sends (a "mute" desktop that still counts as connected) cannot happen."""
    try:
        while True:
            messages = await outbox.take()
            if messages is None:
                break
            broken = await _flush(ws, request, messages, send_timeout)
            # nothing of a sent batch stays referenced while the socket waits for the next
            # (an idle desktop would otherwise keep its last messages, e.g. a 4 KB hello)
            messages = None
            if broken is not None:
                message, error = broken
                # skipping it would leave the desktop's picture silently wrong: close (1011),
                # the client reconnects and gets a fresh hello
                log.error("socket_message_not_json", socket=outbox.name, type=message.get("type"), exc_info=error)
                outbox.close()
                await _close(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error", close_timeout)
                return
    except TimeoutError:
        log.warning("socket_send_timeout", socket=outbox.name, timeout_s=send_timeout)
        outbox.overflow()
        # a cancelled send may have left half a frame on the wire: no close frame after it
        _abort(request)
        return
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the peer went away while we were sending, or a bug: drop it
        log.debug("socket_send_failed", socket=outbox.name, error=repr(exc))
        outbox.close()
        _abort(request)
        return
    if outbox.overflowed and not ws.closed:
        await close_too_slow(ws, request, timeout=close_timeout)
    elif outbox.close_with is not None and not ws.closed:
        await _close(ws, request, *outbox.close_with, close_timeout)


async def _flush(
    ws: web.WebSocketResponse, request: web.BaseRequest, messages: list[Message], send_timeout: float
) -> tuple[Message, Exception] | None:
    """Encode and send ``messages`` in order; stops at the first that is not JSON and
    returns it with its error (after sending those before it)."""
    payloads: list[bytes] = []
    broken: tuple[Message, Exception] | None = None
    for message in messages:
        try:
            payloads.append(encode(message))
        except (TypeError, ValueError) as exc:
            broken = (message, exc)
            break
    if payloads:
        await _send(ws, request, payloads, send_timeout)
    return broken


async def _send(ws: web.WebSocketResponse, request: web.BaseRequest, payloads: list[bytes], timeout: float) -> None:
    """Send ``payloads`` as text frames, in order; TimeoutError when the connection does not
    take them within ``timeout``; ConnectionError when it is gone or closing."""
    transport = request.transport
    if ws.compress or transport is None:
        async with asyncio.timeout(timeout):
            for payload in payloads:
                await ws.send_frame(payload, WSMsgType.TEXT)
        return
    if ws.closed or transport.is_closing():
        raise ConnectionResetError("the connection is closing")
    transport.write(text_frames(payloads))
    if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
        # the peer does not read as fast as we write: wait (bounded) until it took enough
        async with asyncio.timeout(timeout):
            while transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                if transport.is_closing():
                    raise ConnectionResetError("the connection closed")
                await asyncio.sleep(DRAIN_POLL_S)


async def converse(
    ws: web.WebSocketResponse,
    request: web.Request,
    outbox: SocketOutbox,
    on_text: Callable[[str], Awaitable[Message]],
    *,
    open_sockets: MutableSet[web.WebSocketResponse],
    send_timeout: float,
    close_timeout: float,
) -> None:
    """Run one prepared-to-be WebSocket: handshake, a writer task draining ``outbox``, and a
    reader answering each text frame with ``on_text(text)`` (through the same outbox, so
    replies keep their order with pushed messages), until either side closes or the client
    falls behind. Always tidies up: the outbox closes, the writer ends, the socket closes."""
    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        open_sockets.add(ws)
        writer = asyncio.create_task(
            pump(ws, outbox, request, send_timeout=send_timeout, close_timeout=close_timeout),
            name=f"ws-writer-{outbox.name}",
        )
        async for msg in ws:
            if writer.done():  # the writer stopped (and closed the socket): stop reading
                break
            if msg.type is WSMsgType.TEXT:
                try:
                    reply = await on_text(msg.data)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in a handler: answer, never go quiet
                    log.exception("socket_message_failed", socket=outbox.name)
                    reply = {
                        "type": "error",
                        "ref": None,
                        "code": "internal_error",
                        "message": "the gateway failed to process the message",
                    }
            elif msg.type is WSMsgType.BINARY:
                reply = {
                    "type": "error",
                    "ref": None,
                    "code": "invalid_request",
                    "message": "binary frames are not supported: send JSON text",
                }
            else:  # ERROR: the reader failed (e.g. message too big); aiohttp closes
                break
            outbox.send(reply)
            if outbox.overflowed:
                break
    finally:
        outbox.close()
        if writer is not None:
            # the writer may be closing a too-slow socket: let it finish, briefly
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(writer, close_timeout + 1.0)
        with contextlib.suppress(BaseException):
            await ws.close()
        open_sockets.discard(ws)


async def close_too_slow(ws: web.WebSocketResponse, request: web.BaseRequest, *, timeout: float = 2.0) -> None:
    """Close with 4008 "too slow"; if the closing handshake does not finish in time, drop the connection."""
    await _close(ws, request, CLOSE_TOO_SLOW, b"too slow", timeout)


async def _close(ws: web.WebSocketResponse, request: web.BaseRequest, code: int, reason: bytes, timeout: float) -> None:
    """Close with ``code``; if the closing handshake does not finish in time, drop the connection."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), timeout)
    except asyncio.CancelledError:
        _abort(request)
        raise
    except Exception:
        _abort(request)


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
