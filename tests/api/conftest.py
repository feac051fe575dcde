"""A real gateway on a free loopback port, and real aiohttp HTTP / WebSocket clients.

The app is :func:`gateway.app.build_app` with a :class:`MemoryJournal` and a
:class:`ManualClock` (time moves only when a test says so; :meth:`Gateway.advance` also
fires what fell due). Offers are made through the engine (``runtime.act``) unless a test
goes through the signed webhook on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest_asyncio
from aiohttp import web

from adapters.webhook import signed_headers
from gateway import serve
from gateway.api.context import API, ApiContext
from gateway.app import RUNTIME, build_app
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.events import Channel, Event, EventType
from gateway.notices import Decision
from gateway.records.memory import MemoryJournal
from gateway.runtime import Runtime

T0 = 1_700_000_000.0
VENDOR = "crm"
WEBHOOK_SECRET = "crm-webhook-secret-0123456789"

TOKENS = {
    "supervisor": "sup-token-0123456789",
    "a1": "a1-token-0123456789",
    "a2": "a2-token-0123456789",
    "a3": "a3-token-0123456789",
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_config(**server: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": 60, **server},
            "store": {"url": "memory://"},
            "capacity_profiles": {
                # three sessions, the last one kept for inbound work: at most two manual sessions
                "std": {
                    "max_sessions": 3,
                    "reserved_inbound": 1,
                    "wrap_up_s": {"voice": 30},
                    "offer_timeout_s": {"voice": 20, "chat": 30, "email": 120},
                },
            },
            "queues": [{"name": "support"}],
            "agents": [
                {"id": a, "name": a.upper(), "profile": "std", "queues": ["support"], "token_sha256": sha(TOKENS[a])}
                for a in ("a1", "a2", "a3")
            ]
            # an agent without a token: nobody can log in as it
            + [{"id": "a4", "name": "A4", "profile": "std", "queues": ["support"]}],
            "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": WEBHOOK_SECRET}],
        }
    )


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@dataclass
class Gateway:
    app: web.Application
    base: str
    http: aiohttp.ClientSession
    clock: ManualClock
    limiter: serve.ConnectionLimiter | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    @property
    def api(self) -> ApiContext:
        return self.app[API]

    def url(self, path: str) -> str:
        return self.base + path

    def ws_url(self, path: str) -> str:
        return "ws" + self.base[len("http") :] + path

    async def request(self, method: str, path: str, who: str | None = None, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers.update(auth(who))
        async with self.http.request(method, self.url(path), headers=headers, **kwargs) as response:
            await response.read()
            return response

    async def json(self, method: str, path: str, who: str | None = None, status: int = 200, **kwargs: Any) -> Any:
        response = await self.request(method, path, who, **kwargs)
        body = await response.json()
        assert response.status == status, (response.status, body)
        return body

    async def ws(self, agent_id: str, who: str | None = None, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        headers = auth(who or agent_id)
        return await self.http.ws_connect(self.url(f"/v1/agents/{agent_id}/ws"), headers=headers, **kwargs)

    # ---------------------------------------------------------------- engine helpers

    def event(
        self, type_: str = "offer", *, interaction: str | None = None, vendor: str = VENDOR, **fields: Any
    ) -> Event:
        """An event; vendor ``crm`` is the configured webhook (it cannot transfer), any other
        name is a vendor the engine knows no capabilities of (anything goes)."""
        return Event(
            vendor=vendor,
            event_id=f"ev-{next(self._ids)}",
            type=EventType(type_),
            interaction_id=interaction or f"i-{next(self._ids)}",
            occurred_at=datetime.fromtimestamp(self.clock.now(), tz=timezone.utc),
            **fields,
        )

    async def offer(
        self, agent: str | None = None, *, channel: str = "chat", queue: str | None = None, **fields: Any
    ) -> str:
        """Offer an interaction (to ``agent``, else to ``queue``/support); returns the session id."""
        if agent is None and queue is None:
            queue = "support"
        event = self.event("offer", channel=Channel(channel), agent_id=agent, queue=queue, **fields)
        decision: Decision = await self.runtime.act(lambda e: e.handle_event(event))
        assert decision.session_id is not None, decision
        return decision.session_id

    async def ready(self, *agents: str) -> None:
        for agent_id in agents:
            await self.runtime.act(lambda e, a=agent_id: e.set_presence(a, "ready"))

    async def advance(self, seconds: float) -> None:
        """Move the clock and let the engine fire what fell due."""
        self.clock.advance(seconds)
        await self.runtime.act(lambda e: e.tick())

    async def webhook(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        raw = json.dumps(body).encode()
        headers = signed_headers(WEBHOOK_SECRET, int(self.clock.now()), raw)
        async with self.http.post(self.url(f"/v1/vendors/{VENDOR}/events"), data=raw, headers=headers) as response:
            await response.read()
            return response


@contextlib.asynccontextmanager
async def running_gateway(**server: Any) -> AsyncIterator[Gateway]:
    """A gateway served the way ``cti-gateway run`` serves it (:func:`gateway.serve.start`:
    its idle timeout and connection limits), with ``server`` settings on top of the defaults."""
    clock = ManualClock(T0)
    config = make_config(**server)
    app = build_app(config, clock=clock, journal=MemoryJournal())
    runner, limiter = await serve.start(app, config.server, host="127.0.0.1", port=0, shutdown_timeout=5.0)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(app=app, base=f"http://{host}:{port}", http=http, clock=clock, limiter=limiter)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with running_gateway() as gateway:
        yield gateway


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, type_: str, timeout: float = 3.0, **match: Any
) -> dict[str, Any]:
    """Skip messages until one of ``type_`` (whose keys equal ``match``) arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await receive_json(ws, max(0.01, deadline - loop.time()))
        if message.get("type") == type_ and all(message.get(k) == v for k, v in match.items()):
            return message


async def request_ws(
    ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any], timeout: float = 3.0
) -> dict[str, Any]:
    """Send a client message with a ref; return its ack / error / pong (skipping notices)."""
    await ws.send_json(message)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await receive_json(ws, max(0.01, deadline - loop.time()))
        if reply.get("type") in ("ack", "error", "pong") and reply.get("ref") == message.get("ref"):
            return reply


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it holds (fail after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def host_port(gw: Gateway) -> tuple[str, int]:
    """The gateway's listening address, for raw connections."""
    address = urlsplit(gw.base)
    assert address.hostname is not None and address.port is not None
    return address.hostname, address.port
