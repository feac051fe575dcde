"""The ``kamailio`` adapter: a client of Kamailio's ``evapi`` (netstring JSON over TCP).

Kamailio holds each new INVITE (``t_suspend``) and announces it; this adapter submits the
offer and answers on the same connection with a ``route`` command that resumes the held
transaction (``t_continue``): relay to the agent's phone (``agent_contacts``) or reply
486 / 480 / 404 (see :data:`.mapping.SIP_REPLIES`). The phone's 200 OK becomes ``accept``,
its refusal or silence ``decline`` (Kamailio holds the call again and the gateway's next
decision - a re-route or a rejection - resumes it), CANCEL / BYE ``end``.

The connection is kept by :class:`adapters.connection.Link` (backoff, jitter, health).
Each session: connect, ask for the calls Kamailio still has (``{"cmd":"sync"}``, answered
by one ``call`` message per call and ``sync_done``), reconcile the gateway's open voice
interactions with them (a call Kamailio no longer has ends its session; a call that was
answered while the link was down is accepted), then serve. A ``ping`` every
``keepalive_s`` detects a stalled peer: no byte for three intervals drops the connection.
Garbage on the wire is logged and skipped (:mod:`.framing`); a message that is not one of
Kamailio's is logged and skipped (:mod:`.mapping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import structlog
from pydantic import AfterValidator, Field, field_validator

from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel, Event
from gateway.notices import Decision, DecisionKind, ToVendor, VendorAction

from ..base import Adapter, AdapterConfig, AdapterHost, Capabilities
from ..connection import Link
from . import mapping
from .framing import NetstringDecoder, encode
from .mapping import BadMessage, KamailioMessage

__all__ = ["KamailioAdapter", "KamailioConfig"]

log = structlog.get_logger("cti_gateway.adapters.kamailio")

_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$")


def _sip_uri(value: str) -> str:
    if not _SIP_URI.match(value):
        raise ValueError(f"{value!r} is not a sip: or sips: URI")
    return value


SipUri = Annotated[str, AfterValidator(_sip_uri)]


class KamailioConfig(AdapterConfig):
    """Settings of a ``kamailio`` vendor (DESIGN section 8)."""

    #: evapi's address (``modparam("evapi", "bind_addr", ...)``)
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=8448, ge=1, le=65535)
    #: agent -> SIP URI of the agent's phone (where an assigned call is relayed)
    agent_contacts: dict[str, SipUri] = Field(default_factory=dict)
    #: Request-URI user -> gateway queue; any other Request-URI user is taken as an agent id
    queue_map: dict[str, str] = Field(default_factory=dict)
    #: seconds between keep-alive pings; no byte for three of them drops the connection
    keepalive_s: float = Field(default=10.0, gt=0, le=300)
    #: seconds to connect, and to get the answer to the resync request
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", value):
            raise ValueError("must be a host name or an IP address")
        return value


@dataclass
class _Call:
    """What the adapter knows of one call Kamailio announced."""

    iid: str
    #: the Call-ID and INVITE CSeq number (to cancel a ringing branch)
    call_id: str = ""
    cseq: int = 1
    #: the held transaction (None while the call rings a phone or talks)
    held: tuple[int, int] | None = None
    #: the agent whose phone rings / talks
    agent: str | None = None
    #: a decision that came while the call was not held (applied when it is held again)
    pending: dict[str, Any] | None = None
    answered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class KamailioAdapter(Adapter):
    name: ClassVar[str] = "kamailio"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=False)
    Config: ClassVar[type[AdapterConfig]] = KamailioConfig

    #: calls remembered at once (the oldest finished ones are forgotten first)
    max_calls: ClassVar[int] = 100_000

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        super().__init__(vendor, config, host)
        assert isinstance(config, KamailioConfig)
        self.settings: KamailioConfig = config
        self.link = Link(self, self._session, describe=f"evapi {config.host}:{config.port}")
        self._writer: asyncio.StreamWriter | None = None
        self._calls: dict[str, _Call] = {}
        self._sync: asyncio.Future[dict[str, str]] | None = None
        self._sync_calls: dict[str, str] = {}
        #: calls Kamailio told about on this connection (alive then, or their end was told too)
        self._mentioned: set[str] = set()
        self._resyncing = False
        #: messages skipped as malformed (for tests and metrics)
        self.bad_messages = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        await self.link.stop()
        self._close()

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    # ------------------------------------------------------------------ one connection

    async def _session(self, link: Link) -> None:
        cfg = self.settings
        reader, writer = await asyncio.wait_for(asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout_s)
        self._writer = writer
        decoder = NetstringDecoder()
        loop = asyncio.get_running_loop()
        self._sync = loop.create_future()
        self._sync_calls = {}
        self._mentioned = set()
        self._resyncing = True
        pinger = asyncio.create_task(self._keepalive(writer), name=f"evapi-ping-{self.vendor}")
        reconcile: asyncio.Task[None] | None = None
        try:
            self._send({"cmd": "sync"})
            reconcile = asyncio.create_task(self._resync(link), name=f"evapi-resync-{self.vendor}")
            # a failed resync (no answer in time) ends the connection at once
            reconcile.add_done_callback(lambda task: _close_on_failure(task, writer))
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), cfg.keepalive_s * 3)
                except TimeoutError:
                    raise TimeoutError(f"no data from evapi for {cfg.keepalive_s * 3:g} s") from None
                if not data:
                    if reconcile is not None and reconcile.done():
                        reconcile.result()  # raises why the resync failed
                    return  # closed by Kamailio
                frames = decoder.feed(data)  # FramingError: reconnect
                for problem in decoder.take_problems():
                    log.warning("evapi_garbage_skipped", vendor=self.vendor, problem=problem)
                for payload in frames:
                    await self._handle_payload(payload)
                if reconcile is not None and reconcile.done():
                    reconcile.result()  # a failed resync ends the session (and is retried)
                    reconcile = None
        finally:
            pinger.cancel()
            if reconcile is not None:
                reconcile.cancel()
            for task in (pinger, reconcile):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            if self._writer is writer:
                self._writer = None
            writer.close()
            # calls held on this connection are answered 503 by Kamailio when the last gateway goes
            for call in self._calls.values():
                call.held = None

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_s)
            if writer.is_closing():
                return
            self._send({"cmd": "ping"})

    async def _resync(self, link: Link) -> None:
        """Reconcile the gateway's open calls with the ones Kamailio reports, then go up."""
        assert self._sync is not None
        live = await asyncio.wait_for(self._sync, self.settings.connect_timeout_s)
        now = self.host.clock.now()
        ended = accepted = 0
        for row in self.host.open_interactions(self.vendor):
            if row.get("channel") not in (Channel.VOICE, Channel.VOICE.value):
                continue
            iid = str(row["interaction_id"])
            state = live.get(iid)
            if state is None and iid in self._mentioned:
                continue  # announced on this connection after Kamailio's list: it is handled
            if state is None:
                await self._submit_quietly(mapping.end_event(self.vendor, iid, now, why="resync"))
                self._calls.pop(iid, None)
                ended += 1
            elif state == "talking" and row.get("state") == "offered" and row.get("agent_id"):
                message = KamailioMessage(event="answered", call_id=iid, agent=str(row["agent_id"]))
                await self._submit_quietly(mapping.accept_event(self.vendor, message, now))
                accepted += 1
        self._resyncing = False
        self._mentioned.clear()
        log.info("evapi_resynced", vendor=self.vendor, kamailio_calls=len(live), ended=ended, accepted=accepted)
        link.up()

    # ------------------------------------------------------------------ inbound

    async def _handle_payload(self, payload: bytes) -> None:
        try:
            message = mapping.parse_message(payload)
        except BadMessage as exc:
            self.bad_messages += 1
            log.warning("evapi_message_skipped", vendor=self.vendor, error=str(exc), payload=payload[:200])
            return
        try:
            await self._handle(message)
        except ValueError as exc:  # an event the model refuses (e.g. an id too long): skip it
            self.bad_messages += 1
            log.warning(
                "evapi_message_skipped", vendor=self.vendor, error=str(exc).splitlines()[0], payload=payload[:200]
            )
        except GatewayError as exc:
            log.warning(
                "evapi_message_refused",
                vendor=self.vendor,
                evapi_event=message.event,
                call_id=message.call_id,
                code=exc.code,
                error=str(exc),
            )

    async def _handle(self, message: KamailioMessage) -> None:
        now = self.host.clock.now()
        iid = mapping.interaction_id(message.call_id) if message.call_id else ""
        if iid and self._resyncing and message.event != "call":
            self._mentioned.add(iid)
        match message.event:
            case "invite":
                await self._invite(message, iid, now)
            case "failed":
                await self._failed(message, iid, now)
            case "answered":
                call = self._calls.get(iid)
                if call is not None:
                    call.answered = True
                await self.host.submit(mapping.accept_event(self.vendor, message, now))
            case "cancel" | "bye" | "gone":
                self._calls.pop(iid, None)
                await self._submit_quietly(mapping.end_event(self.vendor, iid, now, why=message.event))
            case "call":
                self._sync_calls[iid] = message.state
            case "sync_done":
                if self._sync is not None and not self._sync.done():
                    self._sync.set_result(dict(self._sync_calls))
            case "pong":
                pass

    async def _invite(self, message: KamailioMessage, iid: str, now: float) -> None:
        held = (message.tindex, message.tlabel)
        self._remember(_Call(iid=iid, call_id=message.call_id, cseq=message.cseq or 1, held=held))
        user = message.ruri_user
        queue = self.settings.queue_map.get(user)
        agent_id = None
        if queue is None:
            agent_id = user
        try:
            event = mapping.offer_event(self.vendor, message, now, queue=queue, agent_id=agent_id)
            decision = await self.host.submit(event)
        except InvalidEvent as exc:
            log.warning("kamailio_call_refused", vendor=self.vendor, call_id=message.call_id, error=str(exc))
            self._reply(iid, (404, "Not Found") if exc.field in ("agent_id", "queue") else (400, "Bad Request"))
            return
        except GatewayError as exc:
            reply = mapping.NOT_READY_REPLY if exc.code == "not_ready" else (500, "Server Internal Error")
            log.warning(
                "kamailio_call_refused", vendor=self.vendor, call_id=message.call_id, code=exc.code, error=str(exc)
            )
            self._reply(iid, reply)
            return
        await self._apply(iid, _decision_dict(decision))

    async def _failed(self, message: KamailioMessage, iid: str, now: float) -> None:
        call = self._calls.get(iid)
        if call is None:
            call = self._remember(_Call(iid=iid, call_id=message.call_id))
        call.held = (message.tindex, message.tlabel)
        call.agent = None
        try:
            await self.host.submit(mapping.decline_event(self.vendor, message, now))
        except GatewayError as exc:
            log.info("kamailio_decline_not_applied", vendor=self.vendor, call_id=message.call_id, code=exc.code)
            if call.pending is None:
                # the gateway has no offer to withdraw: nothing will come, answer the caller
                call.pending = {"decision": "rejected", "reason": "offer_timeout"}
        if call.pending is not None:
            pending, call.pending = call.pending, None
            await self._apply(iid, pending)

    async def _submit_quietly(self, event: Event) -> None:
        try:
            await self.host.submit(event)
        except GatewayError as exc:
            log.debug("kamailio_event_not_applied", vendor=self.vendor, event_id=event.event_id, code=exc.code)

    # ------------------------------------------------------------------ decisions back

    async def deliver(self, notice: ToVendor) -> None:
        if notice.action is VendorAction.ENDED:
            self._hang_up(notice.interaction_id)
            return
        if notice.action is not VendorAction.DECISION:
            return  # accepted / transferred: nothing to do on the SIP side
        call = self._calls.get(notice.interaction_id)
        if call is None:
            log.info("kamailio_decision_for_unknown_call", vendor=self.vendor, interaction_id=notice.interaction_id)
            return
        await self._apply(notice.interaction_id, notice.data)

    async def _apply(self, iid: str, decision: dict[str, Any]) -> None:
        call = self._calls.get(iid)
        if call is None:
            return
        kind = decision.get("decision")
        if kind == DecisionKind.DUPLICATE.value:
            kind = decision.get("first_decision")
        if kind == DecisionKind.QUEUED.value:
            return  # stays held until a slot frees (or HOLD_MS)
        if call.held is None:
            if call.answered or call.agent is None:
                log.info("kamailio_decision_too_late", vendor=self.vendor, interaction_id=iid, decision=kind)
                return
            # the call rings a phone: stop it; Kamailio reports the branch "failed" and holds
            # the call again, then this decision is applied
            call.pending = dict(decision)
            self._send(mapping.cancel_command(call.call_id or iid, call.cseq))
            return
        if kind == DecisionKind.ASSIGNED.value:
            agent = str(decision.get("agent_id") or "")
            contact = self.settings.agent_contacts.get(agent)
            if contact is None:
                log.error("kamailio_agent_without_contact", vendor=self.vendor, agent_id=agent, interaction_id=iid)
                message = KamailioMessage(
                    event="failed", call_id=iid, agent=agent, tindex=call.held[0], tlabel=call.held[1]
                )
                await self._failed(message, iid, self.host.clock.now())
                return
            tindex, tlabel = call.held
            call.held, call.agent = None, agent
            self._send(mapping.route_command(tindex, tlabel, uri=contact, agent=agent))
        elif kind == DecisionKind.REJECTED.value:
            self._reply(iid, mapping.reply_for(decision.get("reason")))

    def _hang_up(self, iid: str) -> None:
        """The agent ended the call on the desktop: Kamailio sends BYE to both sides."""
        call = self._calls.pop(iid, None)
        call_id = call.call_id if call is not None and call.call_id else iid
        if call_id.startswith("sha256:"):
            log.warning("kamailio_cannot_hang_up", vendor=self.vendor, interaction_id=iid, why="Call-ID unknown")
            return
        self._send(mapping.end_command(call_id))

    def _reply(self, iid: str, reply: tuple[int, str]) -> None:
        call = self._calls.pop(iid, None)
        if call is None or call.held is None:
            return
        self._send(mapping.route_command(call.held[0], call.held[1], reply=reply))

    def _send(self, body: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            log.warning("evapi_not_connected", vendor=self.vendor, cmd=body.get("cmd"))
            return
        writer.write(encode(mapping.dumps(body)))

    def _remember(self, call: _Call) -> _Call:
        self._calls.pop(call.iid, None)
        self._calls[call.iid] = call
        while len(self._calls) > self.max_calls:
            del self._calls[next(iter(self._calls))]
        return call


def _decision_dict(decision: Decision) -> dict[str, Any]:
    return decision.as_dict()


def _close_on_failure(task: asyncio.Task[None], writer: asyncio.StreamWriter) -> None:
    if not task.cancelled() and task.exception() is not None:
        writer.close()
