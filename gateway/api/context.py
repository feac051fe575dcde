"""What every handler of the API shares: the runtime, the settings, auth, open sockets."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import WSCloseCode, web

from gateway.runtime import Runtime

if TYPE_CHECKING:
    from .desktop_socket import DesktopDoor

from .auth import ApiError, Principal, RateLimiter, RequestHead, TokenAuthority, authenticate, token_from_request

__all__ = ["API", "ApiContext", "ApiSettings"]

log = structlog.get_logger("cti_gateway.api")


@dataclass
class ApiSettings:
    """Tunables of the HTTP/WebSocket layer (mutable until a connection reads them)."""

    #: request bodies above this are refused with 413 ``body_too_large``
    max_body_bytes: int = 64 * 1024
    #: WebSocket messages above this close the socket (1009 message too big)
    max_ws_message_bytes: int = 64 * 1024
    #: outgoing messages one socket may have waiting; beyond, it is closed as too slow
    ws_queue_size: int = 256
    #: longest one WebSocket send may take before the socket is dropped as too slow
    ws_send_timeout_s: float = 10.0
    #: how long the closing handshake of a too-slow socket may take before the connection is dropped
    ws_close_timeout_s: float = 2.0
    #: WebSocket ping interval (a missing pong closes the socket)
    ws_heartbeat_s: float = 20.0
    #: desktop sockets one agent may have open; a new one beyond it closes the oldest (4009)
    max_desktops_per_agent: int = 4
    #: per principal: requests (and WebSocket messages) per second, and burst; rate 0 disables
    rate_per_s: float = 50.0
    rate_burst: float = 100.0


class ApiContext:
    def __init__(self, runtime: Runtime, settings: ApiSettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or ApiSettings()
        self.authority = TokenAuthority.from_config(runtime.engine.config)
        self.limiter = RateLimiter(self.settings.rate_per_s, self.settings.rate_burst)
        #: every open WebSocket (aiohttp's, and the gateway's own desktop connections):
        #: closed going away at shutdown
        self.sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        #: where the listening sockets send a desktop's WebSocket request (set by setup_api:
        #: a :class:`~.desktop_socket.DesktopDoor`; None: every connection goes to aiohttp)
        self.desktop_door: DesktopDoor | None = None

    def authenticate(self, request: RequestHead) -> Principal:
        """The caller (401 ``unauthorized``), charged one request of its rate limit (429)."""
        self.limiter.rate = self.settings.rate_per_s
        self.limiter.burst = self.settings.rate_burst
        return authenticate(request, self.authority, self.limiter)

    def identify(self, request: RequestHead) -> Principal | None:
        """The caller, or None (no token, a wrong one): what :meth:`authenticate` finds,
        without charging the rate limit or raising (the desktop connection's door asks it
        before it takes a connection; whatever it does not take, aiohttp's handler answers)."""
        try:
            token = token_from_request(request)
        except ApiError:
            return None
        return self.authority.authenticate(token)

    def charge(self, principal: Principal) -> bool:
        """Take one request of the caller's rate limit; False if it is spent (no token taken)."""
        self.limiter.rate = self.settings.rate_per_s
        self.limiter.burst = self.settings.rate_burst
        try:
            self.limiter.check(principal.key)
        except ApiError:
            return False
        return True

    def close_desktops(self, agent_id: str, code: int, reason: bytes) -> int:
        """Close every desktop socket of one agent (e.g. its token changed); returns how many."""
        from .sockets import SocketOutbox

        closed = 0
        for subscriber in self.runtime.hub.subscribers(agent_id):
            if isinstance(subscriber, SocketOutbox):
                subscriber.evict(code, reason)
                closed += 1
        return closed

    async def close_sockets(self, _app: web.Application | None = None) -> None:
        """Close every open WebSocket (1001 going away): registered as ``on_shutdown``."""
        sockets = list(self.sockets)
        if not sockets:
            return
        log.info("closing_sockets", count=len(sockets))

        async def close(ws: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"), 2.0)

        await asyncio.gather(*(close(ws) for ws in sockets))


#: The API's context in the application (tests may tune ``app[API].settings`` before connecting).
API = web.AppKey("cti_gateway_api", ApiContext)
