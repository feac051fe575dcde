"""The agent desktop WebSocket: ``GET /v1/agents/{id}/ws`` (DESIGN section 6).

Who may open it: the agent itself (its token, as ``Authorization: Bearer`` or ``?token=``).
The supervisor may not: a socket here *is* the agent's desktop (it keeps the agent's
sessions from the disconnect grace period), so a watching supervisor would change what it
watches. Supervisors use ``GET /v1/events/ws``.

On open the socket is registered with the desktop hub and the agent's snapshot is taken in
the same engine step (the first socket of an agent marks its desktop connected, see
:meth:`Engine.desktop_connected`), so ``{"type": "hello", "agent": ...}`` is the first
message and every later message describes a change after it. A reconnect gets ``hello``
again. When the agent's last socket closes, :meth:`Engine.desktop_disconnected` starts
the grace period.

Client messages are JSON objects with ``type`` and an optional ``ref`` (string or integer),
answered in order by ``{"type": "ack", "ref"}`` or ``{"type": "error", "ref", "code",
"message"}``: ``presence``, ``accept``, ``decline``, ``end``, ``focus`` (``session_id`` may
be null: leave every session), ``new_session`` (ack carries the new ``session``),
``transfer`` (ack carries ``session`` and ``target``), ``note``, ``confirm_account``,
``reset_account``, ``send``, and ``ping`` (answered by ``pong``). Acks of session actions
carry the ``session`` after the action. A malformed message, an unknown type or an illegal
action gets an ``error``; the socket stays open. Messages above 64 KiB close it (1009).

Outgoing messages wait in a bounded outbox (:mod:`.sockets`); a desktop that does not read
them is closed with 4008 "too slow" and may reconnect for a fresh ``hello``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from gateway import commands
from gateway.commands import Command
from gateway.errors import GatewayError

from .auth import ApiError, Principal
from .context import ApiContext
from .models import WS_MESSAGES, BodyProblem, parse_json, validate
from .sockets import CLOSE_REPLACED, SocketOutbox, converse

__all__ = ["AgentSocket"]

log = structlog.get_logger("cti_gateway.api.agent_ws")

Message = dict[str, Any]


def _ref_of(data: Any) -> Any:
    if isinstance(data, dict):
        ref = data.get("ref")
        if isinstance(ref, (str, int)) and not isinstance(ref, bool):
            return ref
    return None


def error_message(ref: Any, code: str, message: str, **extra: Any) -> Message:
    return {"type": "error", "ref": ref, "code": code, "message": message, **extra}


def upgrade_required() -> ApiError:
    return ApiError(
        426,
        "upgrade_required",
        "this is a WebSocket endpoint: connect with a WebSocket client",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


class AgentSocket:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.runtime = ctx.runtime

    def desktop_principal(self, principal: Principal, agent_id: str) -> None:
        """403 unless ``principal`` is that agent (the supervisor may not open a desktop)."""
        if principal.is_supervisor:
            raise ApiError(
                403,
                "forbidden",
                "the agent WebSocket is the agent's desktop; supervisors watch GET /v1/events/ws",
            )
        principal.require_agent(agent_id)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A desktop on a connection aiohttp owns (e.g. a client that reused a keep-alive
        connection for its WebSocket), and every desktop request the gateway's own desktop
        connection (:mod:`.desktop_socket`) did not take: those it answers with the errors."""
        agent_id = request.match_info["id"]
        principal = self.ctx.authenticate(request)
        self.desktop_principal(principal, agent_id)
        settings = self.ctx.settings
        ws = web.WebSocketResponse(
            heartbeat=settings.ws_heartbeat_s,
            max_msg_size=settings.max_ws_message_bytes,
            # no permessage-deflate, although browsers ask for it: a desktop's messages are
            # small JSON, and each compressed socket keeps zlib's state (~95 KB more per
            # desktop: 10,000 browser desktops would take about 1 GB instead of ~150 MB)
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            raise upgrade_required()

        outbox = await self.join(agent_id)
        try:
            await converse(
                ws,
                request,
                outbox,
                lambda text: self.on_text(principal, agent_id, text),
                open_sockets=self.ctx.sockets,
                send_timeout=settings.ws_send_timeout_s,
                close_timeout=settings.ws_close_timeout_s,
            )
        finally:
            await self.leave(agent_id, outbox, ws.close_code)
        return ws

    async def join(self, agent_id: str) -> SocketOutbox:
        """Register a new desktop of ``agent_id`` (closing its oldest beyond the limit, 4009)
        and queue its ``hello``; returns its outbox (a writer is attached once the handshake
        is done). Shared by both ways a desktop connects."""
        settings = self.ctx.settings
        hub = self.runtime.hub
        outbox = SocketOutbox(settings.ws_queue_size, name=f"agent:{agent_id}")

        first = hub.add(agent_id, outbox)
        # one agent, a bounded number of desktops: the newest wins, the oldest are closed
        for old in hub.trim(agent_id, settings.max_desktops_per_agent):
            if isinstance(old, SocketOutbox):
                old.evict(CLOSE_REPLACED, b"replaced by a newer desktop")
            log.info("desktop_replaced", agent_id=agent_id, limit=settings.max_desktops_per_agent)
        try:
            # (no await before the runtime applies it: nothing interleaves with the hub change)
            snapshot = await self.runtime.act(commands.desktop_connected(agent_id, first, self.runtime.desktop_host))
        except BaseException:
            await self._leave(agent_id, outbox)
            raise

        outbox.put_front({"type": "hello", "agent": snapshot})
        del snapshot  # sent once and forgotten: an open socket keeps nothing of its hello (P4)
        log.info("desktop_connected", agent_id=agent_id, sockets=hub.connected(agent_id))
        return outbox

    async def leave(self, agent_id: str, outbox: SocketOutbox, code: int | None) -> None:
        """The desktop closed (``code``: how): unregister it and say so in the log."""
        await self._leave(agent_id, outbox)
        log.info("desktop_disconnected", agent_id=agent_id, code=code, sockets=self.runtime.hub.connected(agent_id))

    async def _leave(self, agent_id: str, outbox: SocketOutbox) -> None:
        """Unregister the socket; the agent's last one starts the disconnect grace period."""
        hub = self.runtime.hub

        try:
            if hub.remove(agent_id, outbox):
                await self.runtime.act(commands.desktop_disconnected(agent_id, self.runtime.desktop_host))
        except asyncio.CancelledError:
            hub.remove(agent_id, outbox)
            raise
        except Exception as exc:  # not taking requests (shutting down) or the journal is down
            hub.remove(agent_id, outbox)
            log.warning("desktop_disconnect_not_recorded", agent_id=agent_id, error=repr(exc))

    # ------------------------------------------------------------------ client messages

    async def on_text(self, principal: Principal, agent_id: str, text: str) -> Message:
        ref: Any = None
        try:
            data = parse_json(text)
            ref = _ref_of(data)
            if not isinstance(data, dict):
                raise BodyProblem("body", "a message is a JSON object with a type")
            if "ref" in data and data["ref"] is not None and ref is None:
                raise BodyProblem("ref", "must be a string or an integer")
            kind = data.get("type")
            if not isinstance(kind, str):
                raise BodyProblem("type", "required (a string)")
            model = WS_MESSAGES.get(kind)
            if model is None:
                return error_message(
                    ref,
                    "unknown_message_type",
                    f"unknown message type {kind[:64]!r}; known: {', '.join(sorted(WS_MESSAGES))}",
                    field="type",
                )
            fields = {k: v for k, v in data.items() if k not in ("type", "ref")}
            body = validate(model, fields)
        except BodyProblem as problem:
            return error_message(ref, "invalid_request", problem.message, field=problem.field)
        try:
            self.ctx.limiter.check(principal.key)
            extra = await self._act(kind, body, agent_id)
        except GatewayError as exc:
            details = exc.to_dict()
            code, message = str(details.pop("code")), str(details.pop("message"))
            return error_message(ref, code, message, **details)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("desktop_message_failed", agent_id=agent_id, type=kind)
            return error_message(ref, "internal_error", "the gateway failed to process the message")
        if kind == "ping":
            return {"type": "pong", "ref": ref}
        return {"type": "ack", "ref": ref, **extra}

    async def _act(self, kind: str, body: Any, agent_id: str) -> dict[str, Any]:
        """Run one client message as the agent; returns the extra fields of its ack."""
        act = self.runtime.act_on_session  # (a closed session that left memory: from the journal)
        actor = agent_id
        if kind == "ping":
            return {}
        if kind == "presence":
            await act(commands.presence(agent_id, body.state, body.reason, actor))
            return {}
        if kind == "transfer":
            result: dict[str, Any] = await act(
                commands.transfer(body.session_id, body.to_agent, body.to_queue, body.mode, actor)
            )
            return result
        if kind == "focus":
            focused = await act(commands.focus(agent_id, body.session_id, actor))
            return {"session": focused["session"]}
        command = _SESSION_COMMANDS.get(kind)
        if command is None:  # pragma: no cover - WS_MESSAGES is closed
            raise AssertionError(f"unhandled message type {kind}")
        # the ack carries the session after the action (None: no session)
        return {"session": await act(command(body, actor))}


#: The client messages whose ack carries a session: the command each one runs, made of the
#: validated message and the acting agent (one table, not one built per message).
_SESSION_COMMANDS: dict[str, Callable[[Any, str], Command]] = {
    "accept": lambda body, actor: commands.accept(body.session_id, actor),
    "decline": lambda body, actor: commands.decline(body.session_id, actor),
    "end": lambda body, actor: commands.end(body.session_id, actor),
    "new_session": lambda body, actor: commands.new_session(actor, body.label, actor),
    "note": lambda body, actor: commands.note(body.session_id, body.text, actor),
    "confirm_account": lambda body, actor: commands.confirm_account(body.session_id, body.account_id, actor),
    "reset_account": lambda body, actor: commands.reset_account(body.session_id, actor),
    "send": lambda body, actor: commands.send(body.session_id, body.text, actor),
}
