"""The ``asterisk_ami`` adapter: app_queue's calls become voice sessions; the gateway's
capacity goes back as queue member pause state (DESIGN section 8; README "Asterisk AMI").

* ``AgentCalled`` on a mapped member -> a targeted voice offer on its agent; a refusal (the
  agent filled up in between: a race with the pause) hangs up the ringing member leg, so
  app_queue tries the next member. Only one member may ring per call: with
  ``strategy=ringall`` the extra legs are hung up.
* ``AgentConnect`` -> ``accept``; ``AgentRingNoAnswer``, ``AgentDump`` (or a failed
  ``DialEnd`` of the ringing leg) -> ``decline`` (outcome ``declined``; a new ring is a new session of the same
  interaction); ``AgentComplete``, ``QueueCallerAbandon``, the caller's ``Hangup`` -> ``end``.
  ``QueueCallerLeave`` is not an end.
* Event ids: ``<caller uniqueid>/<kind>/<member leg>`` (``/end`` for the end), so a replay
  after a reconnect is a duplicate and each ring is its own offer.
* Each mapped member is kept paused (``QueuePause``, ``Reason`` = the rejection reason)
  while its agent cannot take one more voice session, unpaused when it can again; only
  changes are sent, and all of them after each login.
* After each (re)connect: ``CoreShowChannels``, then the open voice interactions are
  reconciled: a call gone ends its session, a ring answered or over while the link was
  down is accepted or declined.
* ``deliver``: a late rejection hangs up the ringing leg; ``transferred`` -> ``Redirect``
  of the caller (blind) or ``Atxfer`` on the agent's leg (consult) to the target agent's
  extension in ``transfer_context``; ``ended`` -> ``Hangup`` of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

import structlog

from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel, Customer, Event, EventType
from gateway.notices import DecisionKind, ToVendor, VendorAction

from ..base import Adapter, AdapterConfig, AdapterHost, Capabilities, DeliveryError
from ..connection import Link
from .client import ActionFailed, AmiConnection, AmiError, Stalled
from .config import AmiConfig, interface_of_channel
from .framing import Message
from .mapping import CallEvent, Kind, parse_call_event

__all__ = ["AsteriskAmiAdapter"]

log = structlog.get_logger("cti_gateway.adapters.asterisk_ami")

#: calls tracked at most (the oldest are forgotten first; a call normally leaves on its Hangup)
MAX_CALLS = 50_000
#: Q.850 "normal call clearing", given with the Hangup actions
_NORMAL_CLEARING = "16"
#: waits between tries of an event the gateway cannot take now (journal down); after the
#: last one the connection is made again, and the resync after it puts things right
NOT_READY_RETRIES_S = (0.1, 0.3, 1.0, 2.0)


class ResyncNeeded(AmiError):
    """An event could not be applied for a while: reconnect, then resynchronise."""


@dataclass(slots=True)
class _Ring:
    key: str
    agent_id: str
    member_channel: str | None
    offer_event_id: str
    #: ringing | rejected (the gateway hung it up) | answered | over
    state: str = "ringing"


@dataclass(slots=True)
class _Call:
    uniqueid: str
    channel: str | None = None
    linkedid: str | None = None
    rings: dict[str, _Ring] = field(default_factory=dict)
    #: the connected member's leg (for Atxfer)
    agent_channel: str | None = None
    #: the gateway moved the call (Redirect / Atxfer) to this agent
    transfer_agent: str | None = None


class AsteriskAmiAdapter(Adapter):
    """Asterisk Manager Interface (see the module documentation)."""

    name: ClassVar[str] = "asterisk_ami"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=True)
    Config: ClassVar[type[AdapterConfig]] = AmiConfig

    config: AmiConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, AmiConfig):
            raise TypeError(f"AsteriskAmiAdapter needs an AmiConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._by_interface = {interface.lower(): agent for interface, agent in config.agent_map.items()}
        self._agents = frozenset(config.agent_map.values())
        self.link = Link(self, self._session, describe=f"{config.host}:{config.port}")
        self._conn: AmiConnection | None = None
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        #: offer event id -> (caller uniqueid, ring key), for late decisions
        self._offers: dict[str, tuple[str, str]] = {}
        #: interface -> the pause reason Asterisk was last told (None: unpaused)
        self._told: dict[str, str | None] = {}
        self._dirty: set[str] = set()
        self._pause_wanted = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        await self.link.stop()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.update(calls=len(self._calls), ami_version=self._conn.version if self._conn else None)
        return described

    # -- the connection --------------------------------------------------------------------

    async def _session(self, link: Link) -> None:
        config = self.config
        conn = await AmiConnection.open(
            config.host,
            config.port,
            vendor=self.vendor,
            connect_timeout_s=config.connect_timeout_s,
            action_timeout_s=config.action_timeout_s,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            await conn.login(config.username, config.secret.get_secret_value(), md5=config.auth == "md5")
            log.info("ami_logged_in", vendor=self.vendor, ami_version=conn.version, auth=config.auth)
            self._conn = conn
            await self._resync(conn)
            self._told.clear()
            self._dirty = set(self._agents)
            self._pause_wanted.set()
            link.up(f"{config.host}:{config.port} AMI {conn.version}")
            tasks = [
                asyncio.create_task(self._consume(conn), name=f"ami-events-{self.vendor}"),
                asyncio.create_task(self._keepalive(conn), name=f"ami-ping-{self.vendor}"),
                asyncio.create_task(self._pause_loop(conn), name=f"ami-pause-{self.vendor}"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended the session
        finally:
            self._conn = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await conn.close()

    async def _keepalive(self, conn: AmiConnection) -> None:
        config = self.config
        while True:
            await asyncio.sleep(config.ping_interval_s)
            try:
                await conn.ping(timeout=config.stall_timeout_s)
            except Stalled:
                silent = time.monotonic() - conn.last_received
                if silent >= config.stall_timeout_s:
                    raise Stalled(f"no byte from Asterisk for {silent:.1f} s, no answer to Ping") from None

    async def _consume(self, conn: AmiConnection) -> None:
        async for message in conn.events():
            try:
                await self._on_event(message)
            except (asyncio.CancelledError, ResyncNeeded):
                raise
            except Exception:  # one bad event never ends the connection
                log.exception("ami_event_failed", vendor=self.vendor, ami_event=message.name)

    # -- inbound events --------------------------------------------------------------------

    async def _on_event(self, message: Message) -> None:
        try:
            event = parse_call_event(message)
        except ValueError as exc:
            log.warning("ami_event_skipped", vendor=self.vendor, ami_event=message.name, reason=str(exc))
            return
        if event is None:
            return
        if event.kind is Kind.HANGUP:
            await self._on_hangup(event)
        elif event.kind is Kind.ABANDON:
            if event.uniqueid in self._calls:
                await self._end(event.uniqueid, "caller abandoned")
        elif event.kind is Kind.DIAL_END:
            await self._on_dial_end(event)
        elif event.kind in (Kind.LEAVE, Kind.JOIN):
            call = self._calls.get(event.uniqueid)
            if call is not None and event.channel:
                call.channel = event.channel
        else:
            await self._on_agent_event(event)

    def _agent_of(self, interface: str | None) -> str | None:
        if interface is None:
            return None
        return self._by_interface.get(interface.lower())

    def _call(self, uniqueid: str) -> _Call:
        call = self._calls.get(uniqueid)
        if call is None:
            call = self._calls[uniqueid] = _Call(uniqueid)
            while len(self._calls) > MAX_CALLS:
                _, old = self._calls.popitem(last=False)
                for ring in old.rings.values():
                    self._offers.pop(ring.offer_event_id, None)
                log.warning("ami_call_forgotten", vendor=self.vendor, interaction_id=old.uniqueid)
        return call

    async def _on_agent_event(self, event: CallEvent) -> None:
        agent_id = self._agent_of(event.interface)
        if agent_id is None:
            log.debug("ami_unmapped_member", vendor=self.vendor, interface=event.interface)
            return
        key = event.ring_key
        assert key is not None  # parse_call_event guarantees a member leg
        uid = event.uniqueid
        if event.kind is Kind.CALLED:
            await self._offer(event, agent_id, key)
            return
        call = self._calls.get(uid)
        ring = call.rings.get(key) if call else None
        if event.kind is Kind.CONNECT:
            if ring is None:  # its AgentCalled was missed: offer first, so nothing is lost
                ring = await self._offer(event, agent_id, key)
                call = self._calls.get(uid)
                if ring is None or call is None or ring.state != "ringing":
                    return
            call = self._call(uid)
            if ring.state == "rejected":
                return
            ring.state = "answered"
            call.agent_channel = event.member_channel or call.agent_channel
            await self._submit_other(EventType.ACCEPT, uid, f"{uid}/connect/{key}", agent_id)
        elif event.kind in (Kind.RING_NO_ANSWER, Kind.DUMP):
            # AgentDump: the member hung up during its announcement, before the bridge; the
            # caller stays in the queue (rung again: a new session of the same interaction)
            if ring is not None and ring.state != "ringing":
                return  # hung up by the gateway, or already declined
            if ring is not None:
                ring.state = "over"
            await self._submit_other(EventType.DECLINE, uid, f"{uid}/rna/{key}", agent_id)
        elif event.kind is Kind.COMPLETE:
            if call is not None and call.transfer_agent is not None:
                log.info("ami_transferred_member_left", vendor=self.vendor, interaction_id=uid, agent_id=agent_id)
                return
            if ring is not None and ring.state == "rejected":
                return
            await self._end(uid, f"{event.kind.value} ({event.reason or 'no reason'})")

    async def _offer(self, event: CallEvent, agent_id: str, key: str) -> _Ring | None:
        uid = event.uniqueid
        call = self._call(uid)
        call.channel = event.channel or call.channel
        if key in call.rings:
            return call.rings[key]  # the same ring again (a replay): already offered
        event_id = f"{uid}/called/{key}"
        ring = call.rings[key] = _Ring(key, agent_id, event.member_channel, event_id)
        self._offers[event_id] = (uid, key)
        others = [r for r in call.rings.values() if r is not ring and r.state in ("ringing", "answered")]
        if others:
            log.warning(
                "ami_second_member_rung",
                vendor=self.vendor,
                interaction_id=uid,
                agent_id=agent_id,
                detail="one member rings per call (queue strategy ringall is not supported): leg hung up",
            )
            self._reject_ring(uid, ring)
            return ring
        gateway_queue = self.config.queue_map.get(event.queue or "", event.queue)
        customer = None
        if event.caller_num or event.caller_name:
            customer = Customer(address=event.caller_num, name=event.caller_name)
        attributes = {
            name: value
            for name, value in (
                ("asterisk_queue", event.queue),
                ("interface", event.interface),
                ("member_channel", event.member_channel),
                ("caller_channel", event.channel),
            )
            if value
        }
        fields: dict[str, Any] = dict(
            vendor=self.vendor,
            event_id=event_id,
            type=EventType.OFFER,
            interaction_id=uid,
            channel=Channel.VOICE,
            agent_id=agent_id,
            queue=gateway_queue,
            customer=customer,
            occurred_at=self._now(),
            attributes=attributes,
        )
        try:
            try:
                decision = await self.host.submit(Event(**fields))
            except InvalidEvent as exc:
                if exc.field != "queue":
                    raise
                fields["queue"] = None  # a vendor queue the gateway does not have: still the agent's call
                decision = await self.host.submit(Event(**fields))
        except GatewayError as exc:
            log.warning("ami_offer_failed", vendor=self.vendor, interaction_id=uid, agent_id=agent_id, error=str(exc))
            self._reject_ring(uid, ring)
            return ring
        if decision.kind is DecisionKind.DUPLICATE and decision.original is not None:
            decision = decision.original
        if decision.kind is not DecisionKind.ASSIGNED:
            log.info(
                "ami_offer_refused",
                vendor=self.vendor,
                interaction_id=uid,
                agent_id=agent_id,
                reason=decision.reason,
            )
            self._reject_ring(uid, ring)
        return ring

    def _reject_ring(self, uid: str, ring: _Ring) -> None:
        """Hang up a ringing member leg (app_queue rings the next member) and make sure the
        member's pause state is right."""
        ring.state = "rejected"
        self._dirty.add(ring.agent_id)
        self._pause_wanted.set()
        if ring.member_channel:
            self._spawn(self._hangup(ring.member_channel, uid, "rejected ring"))

    async def _on_hangup(self, event: CallEvent) -> None:
        if event.uniqueid in self._calls:
            await self._end(event.uniqueid, f"caller hung up (cause {event.reason})")
            return

    async def _on_dial_end(self, event: CallEvent) -> None:
        call = self._calls.get(event.uniqueid)
        if call is None or event.reason is None:
            return
        key = event.member_uniqueid or event.member_channel
        ring = call.rings.get(key) if key else None
        if ring is None and event.member_channel:
            ring = next((r for r in call.rings.values() if r.member_channel == event.member_channel), None)
        if ring is not None:
            if event.reason != "ANSWER" and ring.state == "ringing":
                ring.state = "over"
                await self._submit_other(
                    EventType.DECLINE, call.uniqueid, f"{call.uniqueid}/rna/{ring.key}", ring.agent_id
                )
            return
        # the target of a gateway transfer answering (or not) its phone
        if call.transfer_agent is None or event.member_channel is None:
            return
        if self._agent_of(interface_of_channel(event.member_channel)) != call.transfer_agent:
            return
        leg = event.member_uniqueid or event.member_channel
        kind = EventType.ACCEPT if event.reason == "ANSWER" else EventType.DECLINE
        if kind is EventType.ACCEPT:
            call.agent_channel = event.member_channel
        await self._submit_other(
            kind, call.uniqueid, f"{call.uniqueid}/transfer-{kind.value}/{leg}", call.transfer_agent
        )

    async def _submit_other(self, kind: EventType, uid: str, event_id: str, agent_id: str | None) -> None:
        event = Event(
            vendor=self.vendor,
            event_id=event_id,
            type=kind,
            interaction_id=uid,
            agent_id=agent_id,
            occurred_at=self._now(),
        )
        for delay in (*NOT_READY_RETRIES_S, None):
            try:
                decision = await self.host.submit(event)
                break
            except GatewayError as exc:
                if not exc.retryable:  # e.g. no such session any more: nothing to redo
                    log.info(
                        "ami_event_not_applied", vendor=self.vendor, interaction_id=uid, type=kind.value, error=str(exc)
                    )
                    return
                if delay is None:
                    log.warning(
                        "ami_event_deferred", vendor=self.vendor, interaction_id=uid, type=kind.value, error=str(exc)
                    )
                    raise ResyncNeeded(f"the gateway could not take {kind.value} of {uid}: {exc}") from None
                await asyncio.sleep(delay)
        log.debug("ami_event_applied", vendor=self.vendor, interaction_id=uid, type=kind.value, decision=decision.kind)

    async def _end(self, uid: str, why: str) -> None:
        call = self._calls.pop(uid, None)
        if call is not None:
            for ring in call.rings.values():
                self._offers.pop(ring.offer_event_id, None)
        log.info("ami_call_ended", vendor=self.vendor, interaction_id=uid, why=why)
        await self._submit_other(EventType.END, uid, f"{uid}/end", None)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.host.clock.now(), tz=timezone.utc)

    # -- resynchronisation -----------------------------------------------------------------

    async def _resync(self, conn: AmiConnection) -> None:
        """Reconcile the gateway's open voice interactions with the channels Asterisk has."""
        timeout = max(self.config.action_timeout_s, 10.0)
        try:
            _, listed = await conn.list_action("CoreShowChannels", timeout=timeout)
        except ActionFailed as exc:
            # a manager user not allowed CoreShowChannels (its write classes): try Status
            log.warning("ami_coreshowchannels_refused", vendor=self.vendor, error=exc.message, fallback="Status")
            _, listed = await conn.list_action("Status", timeout=timeout)
        live: dict[str, Message] = {}
        by_name: dict[str, Message] = {}
        for channel in listed:
            if channel.name.lower() not in ("coreshowchannel", "status"):
                continue
            uid = channel.get("Uniqueid")
            if uid:
                live[uid] = channel
            name = channel.get("Channel")
            if name:
                by_name[name] = channel
        rows = [row for row in self.host.open_interactions(self.vendor) if row.get("channel") == Channel.VOICE.value]
        ended = kept = 0
        for row in rows:
            uid = str(row["interaction_id"])
            caller = live.get(uid)
            if caller is None:
                ended += 1
                await self._end(uid, "the call ended while the link was down")
                continue
            kept += 1
            call = self._call(uid)
            call.channel = caller.get("Channel") or call.channel
            call.linkedid = caller.get("Linkedid") or call.linkedid
            agent_id = row.get("agent_id")
            legs = self._member_legs(uid, call, live, agent_id)
            if row.get("state") == "offered" and agent_id:
                await self._resync_offer(call, str(agent_id), legs, live, by_name)
            elif row.get("state") == "active" and legs:
                call.agent_channel = legs[0].get("Channel") or call.agent_channel
        # calls the adapter tracked that the gateway no longer has open, or Asterisk not
        open_ids = {str(row["interaction_id"]) for row in rows}
        for uid in [uid for uid in self._calls if uid not in open_ids and uid not in live]:
            self._calls.pop(uid, None)
        log.info("ami_resynced", vendor=self.vendor, channels=len(live), open_calls=len(rows), ended=ended, kept=kept)

    def _member_legs(self, uid: str, call: _Call, live: dict[str, Message], agent_id: Any) -> list[Message]:
        """Live channels of the agent's member interfaces that belong to the caller's call."""
        if not agent_id:
            return []
        linked = {uid, call.linkedid}
        legs = []
        for channel in live.values():
            name = channel.get("Channel") or ""
            if channel.get("Uniqueid") == uid or self._agent_of(interface_of_channel(name)) != agent_id:
                continue
            if channel.get("Linkedid") in linked or channel.get("BridgedUniqueid") == uid:
                legs.append(channel)
        return legs

    async def _resync_offer(
        self, call: _Call, agent_id: str, legs: list[Message], live: dict[str, Message], by_name: dict[str, Message]
    ) -> None:
        uid = call.uniqueid
        ring = next((r for r in call.rings.values() if r.state == "ringing" and r.agent_id == agent_id), None)
        if ring is not None:
            leg = live.get(ring.key) or (by_name.get(ring.member_channel) if ring.member_channel else None)
        else:
            leg = legs[0] if legs else None
            if leg is not None:
                key = leg.get("Uniqueid") or leg.get("Channel") or "resync"
                ring = call.rings[key] = _Ring(key, agent_id, leg.get("Channel"), f"{uid}/called/{key}")
        if leg is None:
            key = ring.key if ring is not None else "resync"
            if ring is not None:
                ring.state = "over"
            await self._submit_other(EventType.DECLINE, uid, f"{uid}/rna/{key}", agent_id)
            return
        assert ring is not None
        if (leg.get("ChannelState") or "").strip() == "6":  # Up: the member answered meanwhile
            ring.state = "answered"
            call.agent_channel = leg.get("Channel")
            await self._submit_other(EventType.ACCEPT, uid, f"{uid}/connect/{ring.key}", agent_id)

    # -- capacity mirrored as member pause state -------------------------------------------

    def agents_changed(self, agent_ids: set[str]) -> None:
        mine = agent_ids & self._agents
        if mine:
            self._dirty |= mine
            self._pause_wanted.set()

    async def _pause_loop(self, conn: AmiConnection) -> None:
        while True:
            await self._pause_wanted.wait()
            self._pause_wanted.clear()
            dirty, self._dirty = self._dirty, set()
            for agent_id in sorted(dirty):
                reason = self.host.availability(agent_id, Channel.VOICE, self.vendor)
                for interface in self.config.interfaces_of(agent_id):
                    if interface in self._told and self._told[interface] == reason:
                        continue
                    await self._pause(conn, interface, agent_id, reason)

    async def _pause(self, conn: AmiConnection, interface: str, agent_id: str, reason: str | None) -> None:
        headers = [("Interface", interface), ("Paused", "true" if reason else "false")]
        if reason:
            headers.append(("Reason", reason))
        try:
            await conn.action("QueuePause", headers)
        except ActionFailed as exc:
            log.warning(
                "ami_pause_failed", vendor=self.vendor, interface=interface, agent_id=agent_id, error=exc.message
            )
        else:
            log.info(
                "ami_member_paused" if reason else "ami_member_unpaused",
                vendor=self.vendor,
                interface=interface,
                agent_id=agent_id,
                reason=reason,
            )
        # told even when refused (e.g. not a member of any queue yet): no storm of retries;
        # every member is told again after the next login
        self._told[interface] = reason

    # -- decisions and session actions -----------------------------------------------------

    async def deliver(self, notice: ToVendor) -> None:
        action = notice.action
        uid = notice.interaction_id
        if action is VendorAction.DECISION:
            if notice.data.get("decision") != DecisionKind.REJECTED.value or notice.event_id is None:
                return
            found = self._offers.get(notice.event_id)
            call = self._calls.get(found[0]) if found else None
            ring = call.rings.get(found[1]) if call and found else None
            if call is not None and ring is not None and ring.state == "ringing":
                self._reject_ring(call.uniqueid, ring)
            return
        if action is VendorAction.ENDED:
            call = self._calls.get(uid)
            if call is None or call.channel is None:
                raise DeliveryError(f"call {uid} is not known to the {self.vendor} link", retryable=False)
            await self._action("Hangup", [("Channel", call.channel), ("Cause", _NORMAL_CLEARING)], uid)
            return
        if action is VendorAction.TRANSFERRED:
            await self._transfer(notice)
            return
        # ACCEPTED (the desktop accepted: the phone still has to be answered), REPLY: nothing to do

    async def _transfer(self, notice: ToVendor) -> None:
        uid = notice.interaction_id
        target = str(notice.data.get("agent_id") or "")
        mode = notice.data.get("mode")
        call = self._calls.get(uid)
        if call is None:
            raise DeliveryError(f"call {uid} is not known to the {self.vendor} link", retryable=False)
        exten = self.config.extension_of(target)
        if exten is None:
            raise DeliveryError(f"no extension for agent {target!r}: set agent_extensions", retryable=False)
        context = self.config.transfer_context
        call.transfer_agent = target
        if mode == "consult":
            if call.agent_channel is None:
                raise DeliveryError(f"call {uid}: the agent's leg is not known, cannot Atxfer", retryable=False)
            headers = [("Channel", call.agent_channel), ("Exten", exten), ("Context", context)]
            await self._action("Atxfer", headers, uid)
        else:
            if call.channel is None:
                raise DeliveryError(f"call {uid}: the caller's channel is not known", retryable=False)
            headers = [("Channel", call.channel), ("Exten", exten), ("Context", context), ("Priority", "1")]
            await self._action("Redirect", headers, uid)

    async def _action(self, name: str, headers: list[tuple[str, str]], uid: str) -> Message:
        conn = self._conn
        if conn is None or conn.closed:
            raise DeliveryError(f"{self.vendor}: not connected to Asterisk", retryable=True)
        try:
            response = await conn.action(name, headers)
        except ActionFailed as exc:
            raise DeliveryError(f"{name} refused by Asterisk: {exc.message}", retryable=False) from None
        except AmiError as exc:
            raise DeliveryError(f"{name}: {exc}", retryable=True) from None
        log.info("ami_action_done", vendor=self.vendor, action=name, interaction_id=uid)
        return response

    async def _hangup(self, channel: str, uid: str, why: str) -> None:
        try:
            await self._action("Hangup", [("Channel", channel), ("Cause", _NORMAL_CLEARING)], uid)
        except DeliveryError as exc:
            log.warning(
                "ami_hangup_failed", vendor=self.vendor, interaction_id=uid, channel=channel, why=why, error=str(exc)
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
