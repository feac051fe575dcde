"""The desktop WebSocket off aiohttp: the gateway's own connection for ``GET /v1/agents/{id}/ws``.

Why: aiohttp keeps, for each open WebSocket, the request with its headers, the
connection's request handler with its parser and two tasks, the ``WebSocketResponse``
with its reader, queue and heartbeat timer: ~17 KB per socket (docs/performance.md, P4),
so 10,000 desktops alone are beyond P4's 200 MB. A desktop served here costs its
transport, this connection object, the ``websockets`` protocol state and the outbox.

How connections get here. :class:`Door` is the protocol of every accepted connection
(:class:`DesktopSite` listens with it, see :func:`gateway.serve.start`). It reads the first
request head, bounded in size (:data:`MAX_HEAD_BYTES`) and time (``server.idle_timeout_s``):

* a connection whose first bytes are not ``GET /v1/agents/`` is handed to aiohttp at once,
  with what was read (``transport.set_protocol``): every other route behaves as before;
* a desktop request is taken only if it is a valid WebSocket upgrade (checked by
  ``websockets``' handshake code) for the agent whose token it presents, within its rate
  limit; anything else (no token, a wrong one, the supervisor's, plain HTTP, a head too
  large to parse) goes to aiohttp too, whose handler answers it as before (401, 403, 426,
  429, ...);
* a connection that sends no complete head within the idle timeout is closed, as aiohttp
  closes it.

What a taken desktop gets is what :class:`~.agent_ws.AgentSocket` gives one on aiohttp's
route (the same ``join``, ``on_text``, outbox, writer and ``leave``): only the frames and
the handshake are handled here, by the ``websockets`` library's sans-I/O protocol
(``ServerProtocol``: request parsing, the 101 answer, unmasking, control frames, ping →
pong, the closing handshake, the message size limit → 1009, protocol errors → 1002). Two
small pieces are the application's in that design and are written here: joining a
fragmented message's frames, and checking that a text message is UTF-8 (1007).

Heartbeat: one sweep for every desktop connection of the gateway, every half
``ws_heartbeat_s`` (:class:`Heartbeat`), no timer per socket: a connection that sent nothing
for a whole period gets a ping; one still silent half a period later is closed (1006, as
aiohttp's heartbeat does). Client messages are answered in order by a task that lives only
while some are waiting; an idle desktop runs no task.

Closing is graceful: a close frame (ours or the peer's), then, once the handshake is
complete or ``ws_close_timeout_s`` passed, a half-close (FIN) after everything written
went out, then the transport's close once the peer closed its side or after another
``ws_close_timeout_s``. A connection is reset only where data can no longer go out (a
send that timed out, a peer that reads nothing while we close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from yarl import URL

from gateway.errors import GatewayError

from .auth import ApiError
from .context import ApiContext
from .errors import status_for
from .sockets import BINARY_REPLY, SocketOutbox, _Writer, answering, encode

if TYPE_CHECKING:
    from gateway.serve import ConnectionLimiter

    from .agent_ws import AgentSocket
    from .auth import Principal

__all__ = ["DesktopConnection", "DesktopDoor", "DesktopSite", "Door", "Heartbeat"]

log = structlog.get_logger("cti_gateway.api.desktop_socket")

#: ``websockets`` logs "connection open" / "connection closed" at INFO for every connection:
#: not the operator's log (desktop_connected / desktop_disconnected say it); warnings stay.
_WS_LOG = logging.getLogger("cti_gateway.api.desktop_socket.websockets")
_WS_LOG.setLevel(logging.WARNING)

#: What a desktop request starts with; a connection whose first bytes differ goes to aiohttp.
DESKTOP_PREFIX = b"GET /v1/agents/"
#: The desktop path (decoded), as aiohttp's route ``/v1/agents/{id}/ws`` matches it.
DESKTOP_PATH = re.compile(r"/v1/agents/([^/]+)/ws")
#: A desktop request head larger than this goes to aiohttp (which answers or refuses it).
MAX_HEAD_BYTES = 16 * 1024
#: Client messages waiting for their answer beyond which the connection stops reading
#: (flow control: the client waits, nothing is dropped).
MAX_PENDING = 32

_CLOSE = Opcode.CLOSE
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT

#: a desktop's registration or unregistration under way (a task only while it opens or
#: closes; referenced until done)
_tasks: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


class _Head:
    """The request head as :func:`~.auth.token_from_request` reads it."""

    __slots__ = ("headers", "query")

    def __init__(self, request: Request, url: URL) -> None:
        self.headers = request.headers
        self.query = url.query


class Door(asyncio.Protocol):
    """The first protocol of every accepted connection: aiohttp's, or a desktop's (see the module)."""

    __slots__ = ("site", "transport", "buffer", "timer")

    def __init__(self, site: DesktopSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        limiter = self.site.limiter
        if limiter is not None and not limiter.admit(transport):
            return
        timeout = self.site.head_timeout
        if timeout > 0:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._too_slow)

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else bytes(data)
        self.buffer = buffer
        n = len(DESKTOP_PREFIX)
        if buffer[:n] != DESKTOP_PREFIX[: len(buffer)]:
            self._to_aiohttp()
            return
        end = buffer.find(b"\r\n\r\n", n - 4 if len(buffer) > n else 0)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._to_aiohttp()
            return
        if not self._take(end + 4):
            self._to_aiohttp()

    def eof_received(self) -> bool | None:
        return None  # the client gave up before its request was complete: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        limiter = self.site.limiter
        if limiter is not None and self.transport is not None:
            limiter.release(self.transport)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _to_aiohttp(self) -> None:
        """aiohttp's request handler takes the connection, with what was read of it."""
        self._stop_timer()
        transport = self.transport
        assert transport is not None
        data, self.buffer = self.buffer, b""
        if transport.is_closing():
            return
        server = self.site.runner.server
        assert server is not None
        handler = server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)

    def _take(self, head_end: int) -> bool:
        """The gateway's desktop connection takes it, if it is a desktop's valid upgrade."""
        door = self.site.desktops
        if door is None:
            return False
        buffer = self.buffer
        ws = ServerProtocol(max_size=door.ctx.settings.max_ws_message_bytes, logger=_WS_LOG)
        ws.receive_data(buffer[:head_end])
        events = ws.events_received()
        if len(events) != 1 or not isinstance(events[0], Request):
            return False  # not a request websockets can read: aiohttp answers it
        request = events[0]
        taken = door.admit(ws, request)
        if taken is None:
            return False
        principal, agent_id, response = taken
        self._stop_timer()
        transport = self.transport
        assert transport is not None
        self.buffer = b""
        connection = DesktopConnection(door, ws, transport, principal, agent_id)
        transport.set_protocol(connection)
        connection.start(response, buffer[head_end:])
        return True


class DesktopDoor:
    """What :class:`Door` asks about a desktop request, and what serves the connections it takes."""

    __slots__ = ("ctx", "agent_socket", "heartbeat", "limiter")

    def __init__(self, ctx: ApiContext, agent_socket: AgentSocket, limiter: ConnectionLimiter | None) -> None:
        self.ctx = ctx
        self.agent_socket = agent_socket
        self.heartbeat = Heartbeat(ctx)
        #: counts the connections per client address (a desktop's too)
        self.limiter = limiter

    def admit(self, ws: ServerProtocol, request: Request) -> tuple[Principal, str, Response] | None:
        """(principal, agent id, the 101 answer) if this is a desktop's valid upgrade within
        its rate limit (charged one request), else None (aiohttp's handler answers it)."""
        try:
            url = URL(request.path)
        except ValueError:
            return None
        match = DESKTOP_PATH.fullmatch(url.path)
        if match is None or "Upgrade" not in request.headers:
            return None
        agent_id = match.group(1)
        principal = self.ctx.identify(_Head(request, url))
        if principal is None or principal.is_supervisor or principal.agent_id != agent_id:
            return None
        response = ws.accept(request)
        if response.status_code != 101:
            return None
        if not self.ctx.charge(principal):
            return None
        return principal, agent_id, response


class Heartbeat:
    """One timer for every desktop connection: every half ``ws_heartbeat_s``, each is
    asked whether it heard from its peer (:meth:`DesktopConnection.tick`)."""

    __slots__ = ("ctx", "members", "_timer")

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.members: set[DesktopConnection] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: DesktopConnection) -> None:
        self.members.add(connection)
        if self._timer is None:
            self._schedule()

    def discard(self, connection: DesktopConnection) -> None:
        self.members.discard(connection)

    def _schedule(self) -> None:
        period = self.ctx.settings.ws_heartbeat_s
        if period and period > 0:
            self._timer = asyncio.get_running_loop().call_later(period / 2, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        for connection in list(self.members):
            connection.tick()
        if self.members:
            self._schedule()


# connection phases
_JOINING, _OPEN, _ENDED = 0, 1, 2


class DesktopConnection(asyncio.Protocol):
    """One desktop's WebSocket after its handshake request was read (see the module).

    It is the :class:`~.sockets.Link` of the socket's writer: the writer sends data frames
    on the transport; this object keeps the frames coming in, the control frames and the
    closing handshake."""

    __slots__ = (
        "door",
        "ws",
        "transport",
        "principal",
        "agent_id",
        "phase",
        "outbox",
        "writer",
        "quiet",
        "close_code",
        "_lost",
        "_early",
        "_fragments",
        "_pending",
        "_task",
        "_paused",
        "_timer",
        "_waiters",
        "_leaving",
        "_shut",
        "__weakref__",
    )

    #: a desktop socket is never compressed (see agent_ws: zlib's state per socket)
    compress = 0
    #: the closing handshake is bounded here (sockets._close does not reset it)
    bounded_close = True

    def __init__(
        self,
        door: DesktopDoor,
        ws: ServerProtocol,
        transport: asyncio.Transport,
        principal: Principal,
        agent_id: str,
    ) -> None:
        self.door = door
        self.ws = ws
        self.transport = transport
        self.principal = principal
        self.agent_id = agent_id
        self.phase = _JOINING
        self.outbox: SocketOutbox | None = None
        self.writer: _Writer | None = None
        #: sweeps of the heartbeat since the peer last sent anything
        self.quiet = 0
        #: the close code to log (ours, the peer's, or 1006 when the connection just ended)
        self.close_code: int | None = None
        self._lost = False
        #: bytes that came before the socket was open (kept until it is)
        self._early = b""
        #: the frames of a fragmented message so far: (is text, payloads)
        self._fragments: tuple[bool, list[bytes]] | None = None
        #: client messages waiting for their answer (None: a binary message), oldest first
        self._pending: list[str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        #: the unregistration, once the socket ended (awaited by close(): a shutdown
        #: journals every desktop's disconnect before the runtime stops)
        self._leaving: asyncio.Task[None] | None = None
        #: the connection is half-closed or closed (the closing handshake is over)
        self._shut = False

    # ------------------------------------------------------------------ opening

    def start(self, response: Response, rest: bytes) -> None:
        """Register the desktop (a task only while it joins), then answer 101 and serve it."""
        self.transport.pause_reading()
        self._early = rest
        _spawn(self._open(response))

    async def _open(self, response: Response) -> None:
        door = self.door
        try:
            outbox = await door.agent_socket.join(self.agent_id)
        except BaseException as exc:
            # as aiohttp's route answers a failing join (the error middleware's JSON error)
            if not self._lost:
                with contextlib.suppress(Exception):
                    self.transport.write(_http_error(exc, self.agent_id))
                self._half_close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.outbox = outbox
        if self._lost:  # the peer went away while it joined
            self._end(1006)
            return
        ws = self.ws
        ws.send_response(response)
        self.phase = _OPEN
        self._flush()
        settings = door.ctx.settings
        self.writer = _Writer(
            self,
            outbox,
            self.transport,
            send_timeout=settings.ws_send_timeout_s,
            close_timeout=settings.ws_close_timeout_s,
        )
        door.ctx.sockets.add(self)
        door.heartbeat.add(self)
        early, self._early = self._early, b""
        self.transport.resume_reading()
        if early:
            self.data_received(early)

    # ------------------------------------------------------------------ Link (for the writer)

    @property
    def closed(self) -> bool:
        return self.phase != _OPEN or self.ws.state is not State.OPEN

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        raise RuntimeError("a desktop connection is never compressed: the writer sends its frames")

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        """Close with ``code``: the socket ends at once (the desktop is unregistered, as on
        aiohttp's route, where the handler ends when the close starts), and this returns once
        that is journaled and the closing handshake is over (the peer answered, or
        ``ws_close_timeout_s`` passed: the connection is then half-closed)."""
        if self.phase == _OPEN and self.ws.state is State.OPEN:
            self.ws.send_close(code, message.decode("utf-8", "replace"))
            self.close_code = code
            self._flush()
            self._arm(self.door.ctx.settings.ws_close_timeout_s, self._close_timed_out)
            self._end(code)
        if self._leaving is not None:
            await asyncio.shield(self._leaving)
        if not self._shut:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter
        return True

    def _handshake_over(self) -> None:
        self._shut = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _left(self, _task: asyncio.Task[None]) -> None:
        self._leaving = None  # (nothing of a closed desktop stays referenced by it)

    # ------------------------------------------------------------------ incoming

    def data_received(self, data: bytes) -> None:
        if self.phase == _JOINING:
            self._early += data
            return
        ws = self.ws
        try:
            ws.receive_data(data)
        except EOFError:  # (after the end of the stream: nothing more is read)
            return
        is_open = self.phase == _OPEN
        self.quiet = 0
        for frame in ws.events_received():
            if not is_open or not isinstance(frame, Frame):
                continue  # the socket ended: only the closing handshake goes on
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    self._message(opcode is _TEXT, bytes(frame.data))
                else:
                    self._fragments = (opcode is _TEXT, [bytes(frame.data)])
            elif opcode is _CONT:
                fragments = self._fragments
                assert fragments is not None  # (websockets checked the sequence)
                fragments[1].append(bytes(frame.data))
                if frame.fin:
                    self._fragments = None
                    self._message(fragments[0], b"".join(fragments[1]))
            elif opcode is _CLOSE and self.close_code is None:
                rcvd = ws.close_rcvd
                self.close_code = rcvd.code if rcvd is not None else WSCloseCode.ABNORMAL_CLOSURE
            if ws.state is not State.OPEN and ws.close_sent is not None and ws.close_rcvd is None:
                break  # we failed the connection (e.g. invalid UTF-8): nothing more is read
        self._flush()

    def _message(self, text: bool, payload: bytes) -> None:
        if self.ws.state is not State.OPEN:
            return
        if not text:
            self._queue(None)
            return
        try:
            decoded = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.close_code = WSCloseCode.INVALID_TEXT
            self.ws.fail(WSCloseCode.INVALID_TEXT, f"invalid UTF-8: {exc.reason} at position {exc.start}")
            return
        self._queue(decoded)

    def eof_received(self) -> bool | None:
        if self.close_code is None:
            self.close_code = WSCloseCode.ABNORMAL_CLOSURE
        self.ws.receive_eof()
        self._flush()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._handshake_over()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        limiter = self.door.limiter
        if limiter is not None:
            limiter.release(self.transport)
        if self.phase != _JOINING:
            self._end(self.close_code if self.close_code is not None else WSCloseCode.ABNORMAL_CLOSURE)

    def pause_writing(self) -> None:  # the writer watches the buffer size itself
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------------ answering, in order

    def _queue(self, text: str | None) -> None:
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        pending.append(text)
        if len(pending) >= MAX_PENDING and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        agent_socket = self.door.agent_socket
        try:
            while self._pending:
                text = self._pending.pop(0)
                outbox = self.outbox
                writer = self.writer
                if outbox is None or outbox.closed or outbox.overflowed or (writer is not None and writer.done):
                    break
                if text is None:
                    reply = BINARY_REPLY
                else:
                    reply = await answering(agent_socket.on_text(self.principal, self.agent_id, text), outbox.name)
                outbox.send(reply)
                if self._paused and len(self._pending) < MAX_PENDING // 2 and self.phase == _OPEN:
                    self._paused = False
                    self.transport.resume_reading()
        finally:
            self._task = None
            self._pending = None

    # ------------------------------------------------------------------ heartbeat

    def tick(self) -> None:
        """A heartbeat sweep: ping a peer silent for a period; close one that stayed silent."""
        if self.phase != _OPEN or self.ws.state is not State.OPEN:
            return
        self.quiet += 1
        if self.quiet == 3:  # silent for at least a whole period (sweeps every half period)
            self.ws.send_ping(b"")
            self._flush()
        elif self.quiet > 3:
            # no pong (nor anything) half a period after the ping: gone (aiohttp's code for it)
            self.close_code = WSCloseCode.ABNORMAL_CLOSURE
            self._end(WSCloseCode.ABNORMAL_CLOSURE)
            self._finally_close()

    # ------------------------------------------------------------------ closing

    def _flush(self) -> None:
        """Write what the protocol has to send; its end-of-stream mark half-closes."""
        transport = self.transport
        for data in self.ws.data_to_send():
            if data:
                if not transport.is_closing():
                    transport.write(data)
            else:
                self._half_close()

    def _half_close(self) -> None:
        """The closing handshake is over (or failed): send FIN once everything written went
        out, and wait (bounded) for the peer to close its side."""
        self._handshake_over()
        if self.phase == _OPEN:
            if self.close_code is None:  # websockets failed the connection (1002, 1009, ...)
                sent = self.ws.close_sent
                self.close_code = sent.code if sent is not None else WSCloseCode.ABNORMAL_CLOSURE
            self._end(self.close_code)
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self._arm(self.door.ctx.settings.ws_close_timeout_s, self._finally_close)
        else:  # pragma: no cover - TCP transports can
            transport.close()

    def _close_timed_out(self) -> None:
        """Our close frame got no answer in time: the connection half-closes."""
        self._timer = None
        self._half_close()

    def _finally_close(self) -> None:
        self._timer = None
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.abort()  # the peer reads nothing: what is left can never go out
        else:
            transport.close()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _end(self, code: int) -> None:
        """The socket is over (the connection may still be closing): unregister it (once)."""
        if self.phase == _ENDED:
            return
        self.phase = _ENDED
        door = self.door
        door.heartbeat.discard(self)
        door.ctx.sockets.discard(self)
        if self.writer is not None:
            self.writer.halt()
        outbox = self.outbox
        if outbox is not None:
            outbox.close()
            self._leaving = _spawn(door.agent_socket.leave(self.agent_id, outbox, code))
            self._leaving.add_done_callback(self._left)


def _http_error(exc: BaseException, agent_id: str) -> bytes:
    """The HTTP answer of a desktop whose registration failed, as aiohttp's route answers
    it (its error middleware: the error's JSON body and status)."""
    headers: dict[str, str] = {}
    if isinstance(exc, GatewayError):
        details = exc.to_dict()
        code, message = str(details.pop("code")), str(details.pop("message"))
        status = status_for(exc)
        if isinstance(exc, ApiError):
            status, headers = exc.status, dict(exc.headers)
        error: dict[str, Any] = {"code": code, "message": message, **details}
    else:
        if not isinstance(exc, asyncio.CancelledError):
            log.error("request_failed", method="GET", path=f"/v1/agents/{agent_id}/ws", exc_info=exc)
        status = 500
        error = {"code": "internal_error", "message": "the gateway failed to process the request"}
    body = encode({"error": error})
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class DesktopSite(web.SockSite):
    """A listening socket whose connections meet a :class:`Door` first (see the module)."""

    __slots__ = ("limiter", "desktops", "head_timeout")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: Any,
        *,
        desktops: DesktopDoor | None,
        limiter: Any,
        head_timeout: float,
    ) -> None:
        super().__init__(runner, sock)
        self.desktops = desktops
        self.limiter = limiter
        self.head_timeout = head_timeout

    @property
    def runner(self) -> web.BaseRunner:
        return self._runner

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Door(self), sock=self._sock, backlog=self._backlog)
