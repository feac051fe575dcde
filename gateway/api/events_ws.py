"""The supervisor / integrator stream: ``GET /v1/events/ws`` (supervisor token only).

Every message the runtime publishes on its :class:`~gateway.hub.EventBus` is sent as one
JSON text frame: ``event.routed`` (an inbound event and its decision: ``event`` holds the
whole normalized event, queue, agent, customer, subject, text, occurred_at and attributes
included, beside the summary fields ``vendor``, ``event_id``, ``event_type``,
``interaction_id``, ``channel``), ``session.changed``
(a session transition with the session object), ``agent.presence`` and ``vendor.notice``
(what goes back to a vendor). The stream is read-only: a client may send
``{"type": "ping", "ref"?}`` (answered by ``pong``); anything else gets an ``error``
message. A subscriber that does not keep up is closed with 4008 "too slow" (see
:mod:`.sockets`); nothing is replayed on reconnect.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from .agent_ws import _ref_of, error_message, upgrade_required
from .context import ApiContext
from .models import BodyProblem, parse_json
from .sockets import SocketOutbox, converse

__all__ = ["EventStream"]

log = structlog.get_logger("cti_gateway.api.events_ws")


class EventStream:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def handle(self, request: web.Request) -> web.StreamResponse:
        principal = self.ctx.authenticate(request)
        principal.require_supervisor()
        settings = self.ctx.settings
        ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s, max_msg_size=settings.max_ws_message_bytes)
        if not ws.can_prepare(request).ok:
            raise upgrade_required()
        outbox = SocketOutbox(settings.ws_queue_size, name="events")
        # subscribed before the handshake completes: nothing published after the client
        # sees the socket open is missed
        unsubscribe = self.ctx.runtime.bus.subscribe(outbox)
        log.info("event_stream_opened", subscribers=len(self.ctx.runtime.bus))

        async def on_text(text: str) -> dict[str, Any]:
            return self._on_text(principal.key, text)

        try:
            await converse(
                ws,
                request,
                outbox,
                on_text,
                open_sockets=self.ctx.sockets,
                send_timeout=settings.ws_send_timeout_s,
                close_timeout=settings.ws_close_timeout_s,
            )
        finally:
            unsubscribe()
            log.info("event_stream_closed", code=ws.close_code)
        return ws

    def _on_text(self, key: str, text: str) -> dict[str, Any]:
        ref: Any = None
        try:
            data = parse_json(text)
            ref = _ref_of(data)
            if not isinstance(data, dict):
                raise BodyProblem("body", "a message is a JSON object with a type")
        except BodyProblem as problem:
            return error_message(ref, "invalid_request", problem.message, field=problem.field)
        if data.get("type") != "ping":
            return error_message(ref, "read_only", "the event stream is read-only; the only client message is ping")
        if self.ctx.limiter.take(key) > 0:
            return error_message(ref, "rate_limited", "too many messages")
        return {"type": "pong", "ref": ref}
