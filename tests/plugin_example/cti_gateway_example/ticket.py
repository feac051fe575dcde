"""``ticket_http``: a ticket system posts tickets; each is an e-mail offer.

``POST /v1/vendors/{vendor}/tickets`` with ``Authorization: Bearer <token>`` and
``{"ticket_id", "queue"? | "agent_id"?, "subject"?}`` answers the decision;
``POST .../tickets/{ticket_id}/close`` ends it. Only the adapter contract is used:
``adapters.base`` and the normalized event model, never the engine.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar

from aiohttp import web
from pydantic import SecretStr

from adapters.base import Adapter, AdapterConfig, Capabilities, Health, Route
from gateway.errors import GatewayError
from gateway.events import Channel, parse_event


class TicketConfig(AdapterConfig):
    token: SecretStr
    queue: str | None = None


class TicketAdapter(Adapter):
    name: ClassVar[str] = "ticket_http"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True)
    Config: ClassVar[type[AdapterConfig]] = TicketConfig

    def routes(self) -> list[Route]:
        return [Route("POST", "/tickets", self._ticket), Route("POST", "/tickets/{ticket_id}/close", self._close)]

    async def start(self) -> None:
        self._set_health(Health.UP)

    async def stop(self) -> None:
        self._set_health(Health.DOWN, "stopped")

    def _authorized(self, request: web.Request) -> bool:
        assert isinstance(self.config, TicketConfig)
        expected = f"Bearer {self.config.token.get_secret_value()}".encode()
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected)

    async def _submit(self, data: dict[str, Any]) -> web.Response:
        try:
            event = parse_event(data, vendor=self.vendor, received_at=self.host.clock.now())
            decision = await self.host.submit(event)
        except GatewayError as exc:
            return web.json_response({"error": exc.to_dict()}, status=400)
        return web.json_response(decision.as_dict())

    async def _ticket(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        body = await request.json()
        assert isinstance(self.config, TicketConfig)
        ticket = str(body["ticket_id"])
        data: dict[str, Any] = {"event_id": f"{ticket}:open", "type": "offer", "channel": "email"}
        data["interaction_id"] = ticket
        if body.get("agent_id"):
            data["agent_id"] = body["agent_id"]
        else:
            data["queue"] = body.get("queue") or self.config.queue
        if body.get("subject"):
            data["subject"] = body["subject"]
        return await self._submit(data)

    async def _close(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        ticket = request.match_info["ticket_id"]
        return await self._submit({"event_id": f"{ticket}:close", "type": "end", "interaction_id": ticket})
