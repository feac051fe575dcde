"""Serving the application on a TCP port: the HTTP server's own limits, and the process loop.

aiohttp's ``web.run_app`` gives no hold on the connections it accepts, so the gateway runs its
application itself (:func:`run`, used by ``cti-gateway run``; :func:`start`, used by tests
that want the real server in-process) and adds what a server facing untrusted clients needs:

* **Idle / request-head timeout** (``server.idle_timeout_s``): a new connection first meets
  :class:`gateway.api.desktop_socket.Door`, which closes it if its first request head has
  not arrived in ``idle_timeout_s`` (it hands every connection that is not a desktop's
  WebSocket request to aiohttp as soon as its first bytes say so). aiohttp's keep-alive
  timer then runs from that moment and again after every answer, and closes the
  connection if no complete request head has arrived by then. So a client that trickles
  its headers (one byte every two seconds, "slowloris") or opens a connection and sends
  nothing is closed after ``idle_timeout_s``, like an idle keep-alive connection. A request
  being handled is not affected (bodies have their own timeout, WebSockets their heartbeat).
* **Desktop WebSockets off aiohttp**: a desktop's ``GET /v1/agents/{id}/ws`` upgrade on a
  fresh connection is served by the gateway's own connection (:mod:`gateway.api.desktop_socket`,
  ~17 KB less per desktop than aiohttp's WebSocket); everything else, refused desktop
  requests included, is aiohttp's as before.
* **Connections per client address** (``server.max_connections_per_address``, 0: off): a
  connection beyond it is answered ``503 too_many_connections`` at once and closed, before
  anything of it is read. Behind a reverse proxy every client has the proxy's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .api.context import API
from .api.desktop_socket import DesktopSite
from .config import ServerConfig
from .listen import bind

__all__ = ["ConnectionLimiter", "run", "start"]

log = structlog.get_logger("cti_gateway.serve")


def _refusal(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "too_many_connections",
                "message": f"this address has {limit} connections open to the gateway "
                "(server.max_connections_per_address)",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionLimiter:
    """Counts open connections per client address and refuses those beyond ``limit``.

    Every accepted connection is admitted first (:meth:`admit`, by the protocol that meets
    it, :class:`gateway.api.desktop_socket.Door`); it is released when it closes, whoever
    owns it by then: the gateway's desktop connection (:meth:`release`), or aiohttp's
    ``Server``, whose connection-lost callback is watched (:meth:`attach`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self._address: dict[asyncio.BaseTransport, str] = {}
        #: addresses refused since they last were under the limit (logged once each)
        self._refusing: set[str] = set()
        #: connections refused, in total
        self.refused = 0

    def attach(self, server: web.Server) -> None:
        lost: Callable[..., None] = server.connection_lost

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            if handler.transport is not None:
                self.release(handler.transport)
            lost(handler, exc)

        # Server has no hook for this; its callback is the one place every connection it owns passes
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection; if its address is at the limit, answer 503, close it and
        return False."""
        peer: Any = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else str(peer)
        if self.limit and self.open[address] >= self.limit:
            self.refused += 1
            if address not in self._refusing:
                self._refusing.add(address)
                log.warning("connection_limit_reached", address=address, limit=self.limit)
            with contextlib.suppress(Exception):
                transport.write(_refusal(self.limit))
            transport.close()
            return False
        self._address[transport] = address
        self.open[address] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        """The connection closed (once; a connection never admitted is ignored)."""
        address = self._address.pop(transport, None)
        if address is None:
            return
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]
        if self.open[address] < self.limit:
            self._refusing.discard(address)


async def start(
    app: web.Application,
    settings: ServerConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    shutdown_timeout: float = 30.0,
    **runner_kwargs: Any,
) -> tuple[web.AppRunner, ConnectionLimiter]:
    """Set up ``app`` and listen on ``host:port`` (default: ``settings``'), with the limits of
    ``settings``. The port is bound before the application starts (its journal opens): if it
    is taken, :class:`gateway.listen.PortInUse` says by whom and nothing was opened.
    Returns the runner (``await runner.cleanup()`` stops it) and the limiter."""
    # the port first: a gateway that cannot listen must not open (and lock) its journal
    sockets = bind(host if host is not None else settings.host, port if port is not None else settings.port)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=settings.idle_timeout_s,
        **runner_kwargs,
    )
    try:
        await runner.setup()
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    limiter = ConnectionLimiter(settings.max_connections_per_address)
    assert runner.server is not None
    limiter.attach(runner.server)
    # a desktop's WebSocket is served by the gateway's own connection, everything else by aiohttp
    ctx = app.get(API)
    door = ctx.desktop_door if ctx is not None else None
    if door is not None:
        door.limiter = limiter
    try:
        for sock in sockets:
            await DesktopSite(
                runner, sock, desktops=door, limiter=limiter, head_timeout=settings.idle_timeout_s
            ).start()
    except BaseException:
        await runner.cleanup()
        for sock in sockets:
            sock.close()
        raise
    return runner, limiter


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop of ``cti-gateway run``: uvloop's (a dependency: less CPU per message
    than asyncio's own loop, see docs/performance.md); asyncio's when uvloop cannot be
    imported or the environment says ``CTI_GATEWAY_LOOP=asyncio`` (to compare, or to rule
    the loop out when chasing a problem)."""
    if os.environ.get("CTI_GATEWAY_LOOP", "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(
    app: web.Application,
    settings: ServerConfig,
    *,
    host: str,
    port: int,
    on_listening: Callable[[], None],
    shutdown_timeout: float = 30.0,
    **runner_kwargs: Any,
) -> None:
    """Serve until a signal handler raises :class:`web.GracefulExit` (or Ctrl-C), then shut
    down gracefully: sockets closed, requests finished, the application's cleanup run."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def serve() -> None:
        runner, _limiter = await start(
            app, settings, host=host, port=port, shutdown_timeout=shutdown_timeout, **runner_kwargs
        )
        try:
            on_listening()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
            loop.run_until_complete(main)
        rest = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in rest:
            task.cancel()
        if rest:
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
