"""The ``chat_ws`` adapter: a chat platform bridged over WebSocket, the gateway as client.

The gateway connects to the platform's ``url`` (``Authorization: Bearer <token>``) through
a :class:`~adapters.connection.Link` (reconnects with backoff and jitter, WebSocket pings
detect a stalled peer, health up/down). Every frame is one JSON object with a ``type``.

Connecting: the gateway sends ``hello`` then ``sync``; the platform answers ``chat.list``
with every chat it has open. The gateway reconciles (chats it holds that the platform no
longer lists are ended; listed chats it does not hold are offered, or their first decision
sent again), resends its own frames the platform had not acknowledged, and only then counts
as up.

Platform -> gateway (``id`` is the platform's frame id, echoed in the answer):

============================  =================================================================
``chat.start``                ``id``, ``chat_id``, ``queue``? (else the vendor's ``queue``),
                              ``agent_id``? (targeted), ``customer``? ``{name, address}``,
                              ``subject``?, ``text``? (the first message), ``priority``?
                              -> offer; answered ``ack`` then ``chat.assigned`` /
                              ``chat.queued`` / ``chat.rejected``
``chat.message``              ``id``, ``chat_id``, ``message_id``, ``text``, ``customer``?
                              -> the agent's desktop gets ``chat.message`` (alert unless
                              focused); answered ``ack``
``chat.end``                  ``id``, ``chat_id`` -> end; answered ``ack``
``chat.list``                 ``chats``: ``[{chat_id, queue?, agent_id?, customer?, ...}]``
                              (the answer to ``sync``)
``ack``                       ``id`` of a gateway frame the platform has processed
============================  =================================================================

``ack`` (``id``, ``chat_id``, ``decision``) is sent only once the event is journaled: it
is the platform's signal that the gateway will not lose it. A frame not acknowledged
(the connection dropped) is sent again after reconnecting; event ids come from the
platform's ids (``<chat_id>:start``, ``<chat_id>:message:<message_id>``, ``<chat_id>:end``),
so a resent frame is a duplicate and changes nothing. A frame the gateway cannot take gets
``{"type": "error", "id", "code", "message"}`` (and a log line); the connection stays.

Gateway -> platform: ``hello``, ``sync``, ``ack``, ``error``, decisions (``chat.assigned``
``{chat_id, agent_id, session_id}``, ``chat.queued``, ``chat.rejected`` ``{reason}``) and
session actions (``chat.accepted``, ``agent.message`` ``{chat_id, agent_id, session_id,
text}``, ``chat.transferred``, ``chat.ended``). Decisions taken later and session actions
carry an ``id`` and stay in a bounded outbox until the platform acks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import OrderedDict
from typing import Any, ClassVar

import structlog
from pydantic import AnyUrl, ConfigDict, Field, SecretStr, field_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.errors import ActionError, GatewayError, InvalidEvent
from gateway.events import Channel, parse_event
from gateway.notices import Decision, DecisionKind, ToVendor, VendorAction

from .base import Adapter, AdapterConfig, AdapterHost, Capabilities, DeliveryError, Health
from .connection import Backoff, Link

__all__ = ["PROTOCOL", "ChatWsAdapter", "ChatWsConfig", "FrameError", "decision_frame", "event_for", "notice_frame"]

log = structlog.get_logger(__name__)

PROTOCOL = "cti-gateway.chat.v1"
MAX_FRAME_BYTES = 64 * 1024
_ID_MAX = 256


class ChatWsConfig(AdapterConfig):
    """Settings of a ``chat_ws`` vendor (the keys beside ``name`` and ``adapter``)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    #: the platform's WebSocket endpoint (``wss://`` in production)
    url: AnyUrl
    #: sent as ``Authorization: Bearer <token>``; never shown anywhere
    token: SecretStr
    #: queue of chats whose ``chat.start`` names none
    queue: str | None = None
    #: the platform's agent ids -> the gateway's (default: the same)
    agent_map: dict[str, str] = Field(default_factory=dict)
    #: WebSocket ping interval; a pong missing for ``ping_timeout_s`` drops and reconnects
    ping_interval_s: float = Field(default=20.0, gt=0, le=300)
    ping_timeout_s: float = Field(default=20.0, gt=0, le=300)
    #: connect + handshake timeout
    open_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: how long the platform has to answer ``sync`` with ``chat.list``
    sync_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: frames larger than this are answered with an error (the connection stays)
    max_frame_bytes: int = Field(default=MAX_FRAME_BYTES, ge=1024, le=MAX_FRAME_BYTES)
    #: gateway frames waiting to be sent or acknowledged; more are refused (retryable)
    outbox_size: int = Field(default=1000, ge=1, le=100_000)
    #: reconnect backoff: first wait, cap
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _websocket(cls, value: AnyUrl) -> AnyUrl:
        if value.scheme not in ("ws", "wss"):
            raise ValueError("must be a ws:// or wss:// URL")
        return value


class FrameError(Exception):
    """A platform frame the gateway cannot take (answered with an ``error`` frame)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


# -- the mapping (pure) ------------------------------------------------------------------------


def _text(frame: dict[str, Any], key: str, *, required: bool = True, limit: int = _ID_MAX) -> str | None:
    value = frame.get(key)
    if value is None or value == "":
        if required:
            raise FrameError("invalid_frame", f"{key} is required", key)
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise FrameError("invalid_frame", f"{key} must be a string", key)
    if len(value) > limit:
        raise FrameError("invalid_frame", f"{key} is longer than {limit} characters", key)
    return value


def event_for(frame: dict[str, Any], *, default_queue: str | None, agent_map: dict[str, str]) -> dict[str, Any]:
    """A ``chat.start`` / ``chat.message`` / ``chat.end`` frame -> normalized event data.

    Raises :class:`FrameError` naming the field at fault.
    """
    kind = frame.get("type")
    if kind not in ("chat.start", "chat.message", "chat.end"):
        raise FrameError("unknown_type", f"unknown frame type {str(kind)[:64]!r}", "type")
    chat_id = _text(frame, "chat_id")
    assert chat_id is not None
    data: dict[str, Any] = {"interaction_id": chat_id}
    customer = frame.get("customer")
    if customer is not None:
        if not isinstance(customer, dict):
            raise FrameError("invalid_frame", "customer must be an object {name, address}", "customer")
        data["customer"] = {k: customer[k] for k in ("name", "address") if customer.get(k) is not None}
    if kind == "chat.start":
        data.update(event_id=f"{chat_id}:start", type="offer", channel="chat")
        agent = _text(frame, "agent_id", required=False)
        queue = _text(frame, "queue", required=False) or default_queue
        if agent is not None:
            data["agent_id"] = agent_map.get(agent, agent)
        elif queue is not None:
            data["queue"] = queue
        else:
            raise FrameError("invalid_frame", "queue is required (the vendor has no default queue)", "queue")
        for key in ("subject", "text", "priority"):
            if frame.get(key) is not None:
                data[key] = frame[key]
    elif kind == "chat.message":
        message_id = _text(frame, "message_id")
        data.update(event_id=f"{chat_id}:message:{message_id}", type="message", text=frame.get("text"))
        if not isinstance(data["text"], str) or not data["text"]:
            raise FrameError("invalid_frame", "text is required", "text")
    else:
        data.update(event_id=f"{chat_id}:end", type="end")
    data["event_id"] = data["event_id"][:_ID_MAX]
    return data


def decision_frame(chat_id: str, decision: Decision) -> dict[str, Any]:
    """``chat.assigned`` / ``chat.queued`` / ``chat.rejected`` for an offer's decision."""
    first = decision.original if decision.kind is DecisionKind.DUPLICATE and decision.original else decision
    if first.kind is DecisionKind.ASSIGNED:
        return {"type": "chat.assigned", "chat_id": chat_id, "agent_id": first.agent_id, "session_id": first.session_id}
    if first.kind is DecisionKind.QUEUED:
        return {"type": "chat.queued", "chat_id": chat_id}
    return {"type": "chat.rejected", "chat_id": chat_id, "reason": first.reason}


_ACTION_TYPES = {
    VendorAction.ACCEPTED: "chat.accepted",
    VendorAction.TRANSFERRED: "chat.transferred",
    VendorAction.ENDED: "chat.ended",
    VendorAction.REPLY: "agent.message",
}


def notice_frame(notice: ToVendor) -> dict[str, Any]:
    """The frame that tells the platform about a late decision or a session action."""
    if notice.action is VendorAction.DECISION:
        data = notice.data
        decision = Decision(
            DecisionKind(data.get("decision", "rejected")),
            agent_id=data.get("agent_id"),
            session_id=data.get("session_id"),
            reason=data.get("reason"),
        )
        return decision_frame(notice.interaction_id, decision)
    frame: dict[str, Any] = {"type": _ACTION_TYPES[notice.action], "chat_id": notice.interaction_id}
    for key in ("agent_id", "session_id", "text", "mode", "from_agent_id", "from_session_id"):
        if key in notice.data:
            frame[key] = notice.data[key]
    return frame


def _json(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, default=str)


# -- the adapter -----------------------------------------------------------------------------


class ChatWsAdapter(Adapter):
    """A chat platform over WebSocket (see the module documentation)."""

    name: ClassVar[str] = "chat_ws"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.CHAT})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=True)
    Config: ClassVar[type[AdapterConfig]] = ChatWsConfig

    config: ChatWsConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, ChatWsConfig):
            raise TypeError(f"ChatWsAdapter needs a ChatWsConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self.link = Link(
            self,
            self._session,
            backoff=Backoff(initial_s=config.reconnect_initial_s, max_s=config.reconnect_max_s),
            describe=_redacted(str(config.url)),
        )
        #: gateway frames not yet acknowledged by the platform, by id, in order
        self._unacked: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._ws: ClientConnection | None = None
        #: gateway agent id -> the platform's (``agent_map`` reversed)
        self._agent_ids = {agent: platform_id for platform_id, agent in config.agent_map.items()}
        #: frames answered with an error, by code (for tests and /readyz curiosity)
        self.errors: dict[str, int] = {}

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        await self.link.stop()
        self._set_health(Health.DOWN, "stopped")
        if self._unacked:
            log.warning("chat_frames_unacknowledged", vendor=self.vendor, count=len(self._unacked))

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["outbox"] = len(self._unacked)
        return described

    # -- outbound ------------------------------------------------------------------------

    async def deliver(self, notice: ToVendor) -> None:
        """Queue the notice's frame until the platform acks it (sent now if connected)."""
        if notice.action not in _ACTION_TYPES and notice.action is not VendorAction.DECISION:
            return
        if len(self._unacked) >= self.config.outbox_size:
            log.warning("chat_outbox_full", vendor=self.vendor, size=self.config.outbox_size)
            raise DeliveryError(
                f"chat_ws {self.vendor}: {self.config.outbox_size} frames already wait for the platform", retryable=True
            )
        frame = {"id": f"gw-{uuid.uuid4().hex}", **self._platform_ids(notice_frame(notice))}
        self._unacked[frame["id"]] = frame
        self._wakeup.set()

    async def _sender(self, ws: ClientConnection) -> None:
        """Send each unacknowledged frame once per connection, in order."""
        sent: set[str] = set()
        while True:
            self._wakeup.clear()
            for frame_id, frame in list(self._unacked.items()):
                if frame_id not in sent:
                    await ws.send(_json(frame))
                    sent.add(frame_id)
            sent &= set(self._unacked)
            await self._wakeup.wait()

    # -- the connection ------------------------------------------------------------------

    async def _session(self, link: Link) -> None:
        config = self.config
        async with connect(
            str(config.url),
            additional_headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
            open_timeout=config.open_timeout_s,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=2.0,
            max_size=4 * config.max_frame_bytes,  # larger: answered with an error, not a close
            proxy=None,
        ) as ws:
            self._ws = ws
            sender: asyncio.Task[None] | None = None
            try:
                await ws.send(_json({"type": "hello", "protocol": PROTOCOL, "vendor": self.vendor}))
                await ws.send(_json({"type": "sync"}))
                await self._await_sync(ws)
                link.up()
                sender = asyncio.create_task(self._sender(ws), name=f"chat-ws-sender-{self.vendor}")
                async for raw in ws:
                    await self._receive(ws, raw)
                    if sender.done():
                        sender.result()  # a send failed: raise it (the link reconnects)
            finally:
                self._ws = None
                if sender is not None:
                    sender.cancel()
                    await asyncio.wait([sender])

    async def _await_sync(self, ws: ClientConnection) -> None:
        """Serve frames until the platform's ``chat.list`` arrived and was reconciled."""
        try:
            async with asyncio.timeout(self.config.sync_timeout_s):
                while True:
                    raw = await ws.recv()
                    if await self._receive(ws, raw):
                        return
        except TimeoutError:
            raise TimeoutError(f"no chat.list within {self.config.sync_timeout_s} s of sync") from None

    async def _receive(self, ws: ClientConnection, raw: str | bytes) -> bool:
        """Handle one platform frame; True when it was ``chat.list``. Never raises for the
        frame's fault: it is answered with an ``error`` frame and logged."""
        frame_id: Any = None
        try:
            frame = self._parse(raw)
            frame_id = frame.get("id")
            if frame_id is not None and not isinstance(frame_id, str | int):
                frame_id = None
                raise FrameError("invalid_frame", "id must be a string or a number", "id")
            kind = frame.get("type")
            if kind == "ack":
                self._unacked.pop(str(frame_id), None)
                return False
            if kind == "chat.list":
                await self._reconcile(ws, frame)
                return True
            await self._inbound(ws, frame, frame_id)
        except FrameError as exc:
            await self._error(ws, frame_id, exc.code, exc.message, exc.field)
        except InvalidEvent as exc:
            await self._error(ws, frame_id, exc.code, exc.message, exc.field)
        except GatewayError as exc:  # refused by the gateway (not_ready, interaction_already_open ...)
            await self._error(ws, frame_id, exc.code, exc.message)
        except ConnectionClosed:
            raise
        except Exception:  # a gateway bug: the frame is refused, the connection stays
            log.exception("chat_frame_failed", vendor=self.vendor)
            await self._error(ws, frame_id, "internal_error", "the gateway failed to process the frame")
        return False

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise FrameError("invalid_frame", "binary frames are not part of the protocol")
        if len(raw.encode("utf-8", "surrogatepass")) > self.config.max_frame_bytes:
            raise FrameError("frame_too_large", f"a frame is at most {self.config.max_frame_bytes} bytes")
        try:
            frame = json.loads(raw)
        except (ValueError, RecursionError):
            raise FrameError("invalid_frame", "not JSON") from None
        if not isinstance(frame, dict):
            raise FrameError("invalid_frame", "a frame is a JSON object with a type")
        return frame

    async def _inbound(self, ws: ClientConnection, frame: dict[str, Any], frame_id: Any) -> None:
        data = event_for(frame, default_queue=self.config.queue, agent_map=self.config.agent_map)
        decision = await self._submit(data)
        await self._send(ws, {"type": "ack", "id": frame_id, "chat_id": data["interaction_id"], **_brief(decision)})
        if data["type"] == "offer":
            await self._send(ws, self._platform_ids(decision_frame(data["interaction_id"], decision)))

    async def _submit(self, data: dict[str, Any]) -> Decision:
        event = parse_event(data, vendor=self.vendor, received_at=self.host.clock.now())
        with structlog.contextvars.bound_contextvars(
            vendor=self.vendor, interaction_id=event.interaction_id, event_id=event.event_id
        ):
            if not self.host.ready:
                raise GatewayError("the gateway takes no events now; send again later", code="not_ready")
            try:
                decision = await self.host.submit(event)
            except ActionError as exc:
                if event.type.value != "end" or exc.code != "interaction_not_found":
                    raise
                decision = Decision(DecisionKind.ACCEPTED)  # the end of a chat the gateway never had
            log.info("chat_event", event_type=event.type.value, decision=decision.kind.value)
            return decision

    async def _reconcile(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        """``chat.list``: end what the platform no longer has, offer what the gateway lacks."""
        chats = frame.get("chats")
        if not isinstance(chats, list) or not all(isinstance(c, dict) for c in chats):
            raise FrameError("invalid_frame", "chats must be a list of objects", "chats")
        listed: dict[str, dict[str, Any]] = {}
        for chat in chats:
            chat_id = _text(chat, "chat_id")
            assert chat_id is not None
            listed[chat_id] = chat
        held = {row["interaction_id"] for row in self.host.open_interactions(self.vendor)}
        ended = started = 0
        for chat_id in sorted(held - set(listed)):
            await self._submit({"event_id": f"{chat_id}:end", "type": "end", "interaction_id": chat_id})
            ended += 1
        for chat_id, chat in listed.items():
            if chat_id in held:
                continue
            try:
                data = event_for(
                    {**chat, "type": "chat.start"}, default_queue=self.config.queue, agent_map=self.config.agent_map
                )
                decision = await self._submit(data)
            except (FrameError, GatewayError) as exc:
                code = getattr(exc, "code", "invalid_frame")
                await self._error(ws, None, code, f"chat {chat_id}: {getattr(exc, 'message', exc)}")
                continue
            started += 1
            await self._send(ws, self._platform_ids(decision_frame(chat_id, decision)))
        log.info("chat_resync", vendor=self.vendor, listed=len(listed), ended=ended, offered=started)

    def _platform_ids(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The frame with the gateway's agent ids as the platform knows them (``agent_map`` reversed)."""
        for key in ("agent_id", "from_agent_id"):
            if frame.get(key) in self._agent_ids:
                frame[key] = self._agent_ids[frame[key]]
        return frame

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        await ws.send(_json(frame))

    async def _error(
        self, ws: ClientConnection, frame_id: Any, code: str, message: str, field: str | None = None
    ) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        log.warning("chat_frame_refused", vendor=self.vendor, code=code, reason=message, field=field)
        frame: dict[str, Any] = {"type": "error", "id": frame_id, "code": code, "message": message}
        if field is not None:
            frame["field"] = field
        with contextlib.suppress(ConnectionClosed):
            await ws.send(_json(frame))


def _brief(decision: Decision) -> dict[str, Any]:
    return {"decision": decision.kind.value}


def _redacted(url: str) -> str:
    """The URL without credentials or query string (for logs)."""
    head, _, _ = url.partition("?")
    scheme, sep, rest = head.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
