"""The ``freeswitch_esl`` adapter: FreeSWITCH mod_callcenter over the inbound event socket.

One :class:`~adapters.connection.Link` keeps a connection to FreeSWITCH's event socket
(``mod_event_socket``, port 8021). Each session of it:

1. connects, waits for ``auth/request``, sends ``auth <password>`` (a refusal is logged as
   ``authentication refused`` and retried with backoff like any outage);
2. subscribes: ``event plain CHANNEL_HANGUP_COMPLETE HEARTBEAT CUSTOM callcenter::info``
   (``event json ...`` with ``event_format: json``). mod_callcenter's events carry every
   step of a queue call; ``CHANNEL_HANGUP_COMPLETE`` ends calls the gateway transferred out
   of the queue; ``HEARTBEAT`` (every 20 s by default) keeps bytes flowing;
3. resynchronises (:meth:`FreeswitchEslAdapter._resync`): ``api show channels as json`` and
   mod_callcenter's member table tell which calls ended, which rings were answered or
   failed, and which calls were answered unseen while the link was down;
4. reports up, re-sends every mapped agent's status (``callcenter_config agent set status``)
   and serves: events are handled one at a time, in order; when nothing arrived for
   ``keepalive_s`` it sends ``api status`` and a missing answer (``command_timeout_s``)
   is a stall: the connection is dropped and the link reconnects.

What each mod_callcenter step becomes is in :mod:`.mapping`; what goes back:

* an ``agent-offering`` the gateway rejects (the agent filled up in between: a race the
  status mirror makes rare) hangs up the agent's ringing leg:
  ``api hupall ORIGINATOR_CANCEL cc_member_pre_answer_uuid <CC-Member-UUID>`` (the variable
  mod_callcenter sets on the legs it rings for that caller and clears once a leg answers,
  so an answered call is never hit); mod_callcenter then reports ``bridge-agent-fail`` and
  offers the caller to the next agent. ``on_reject: ring_out`` leaves the leg ringing
  until the agent's ``call-timeout`` instead. The same happens to an offer the gateway
  withdraws later (its offer timeout);
* capacity: ``api callcenter_config agent set status <agent> 'On Break'`` when
  :meth:`AdapterHost.availability` says the agent cannot take one more voice session (not
  ready, offline, at capacity, in wrap-up), ``'Available'`` when it can; sent only when it
  changes, and for every mapped agent after each (re)connect;
* a transfer: ``api uuid_transfer <caller uuid> <destination> <dialplan> <context>``
  (``transfer_destinations``, by default the user part of the target agent's
  mod_callcenter name); the end from the desktop: ``api uuid_kill <caller uuid>``.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

import structlog
from pydantic import ConfigDict, Field, SecretStr, field_validator

from adapters.base import Adapter, AdapterConfig, AdapterHost, Capabilities, DeliveryError
from adapters.connection import Backoff, Link
from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel, Customer, Event, EventType
from gateway.notices import Decision, DecisionKind, ToVendor, VendorAction

from .client import EslConnection, EslError
from .framing import Event as FsEvent
from .mapping import CALLCENTER_SUBCLASS, CallEvent, Kind, MappingError, interpret

log = structlog.get_logger(__name__)

AVAILABLE = "Available"
ON_BREAK = "On Break"
#: a mod_callcenter agent / queue name, a uuid_transfer destination, a dialplan or context:
#: one token, no quotes (they travel inside one ESL command line)
_TOKEN = r"^[^\s'\"\\]{1,256}$"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
#: interactions remembered for the reject / transfer paths (a bounded memory)
_MAX_REMEMBERED = 100_000


class FreeswitchEslConfig(AdapterConfig):
    """Settings of a ``freeswitch_esl`` vendor (the keys beside ``name`` and ``adapter``)."""

    # merged with AdapterConfig's: a refused password must not be echoed by ValidationError
    model_config = ConfigDict(hide_input_in_errors=True)

    #: the event socket's address (``event_socket.conf.xml`` ``listen-ip`` / ``listen-port``)
    host: str
    port: int = Field(default=8021, ge=1, le=65535)
    #: ``event_socket.conf.xml`` ``password``
    password: SecretStr
    #: mod_callcenter agent name (``CC-Agent``, e.g. ``1001@default``) -> gateway agent id;
    #: agents not listed are not the gateway's: their calls are left alone
    agent_map: dict[str, str] = Field(default_factory=dict)
    #: mod_callcenter queue (``CC-Queue``, e.g. ``support@default``) -> gateway queue (the
    #: session's ``queue``); unlisted: the same name if the gateway has that queue, else none
    queue_map: dict[str, str] = Field(default_factory=dict)
    #: gateway agent id -> ``uuid_transfer`` destination for transfers to that agent
    #: (default: the user part of the agent's mod_callcenter name, ``1001@default`` -> ``1001``)
    transfer_destinations: dict[str, str] = Field(default_factory=dict)
    transfer_dialplan: str = Field(default="XML", pattern=_TOKEN)
    transfer_context: str = Field(default="default", pattern=_TOKEN)
    #: what a rejected ``agent-offering`` does to the agent's ringing leg
    on_reject: Literal["hangup", "ring_out"] = "hangup"
    #: ``plain`` (text/event-plain) or ``json`` (text/event-json) events
    event_format: Literal["plain", "json"] = "plain"
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: how long a command (``auth``, ``api ...``) may take before the connection is dropped
    command_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: silence after which ``api status`` is sent to check the connection
    keepalive_s: float = Field(default=25.0, gt=0, le=3600)
    #: events received but not yet handled; more is an overload: reconnect and resync
    max_queued_events: int = Field(default=10_000, ge=10, le=1_000_000)
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip()
        try:
            ipaddress.ip_address(text.strip("[]"))
            return text.strip("[]")
        except ValueError:
            pass
        if not _HOSTNAME.fullmatch(text) or text.replace(".", "").isdigit():
            raise ValueError(f"{value!r} is not a host name or IP address")
        return text

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if not secret:
            raise ValueError("must not be empty")
        if any(c in secret for c in "\r\n\0") or secret != secret.strip():
            raise ValueError("must not contain line breaks or surrounding spaces (it travels as `auth <password>`)")
        return value

    @field_validator("agent_map", "queue_map", "transfer_destinations")
    @classmethod
    def _tokens(cls, value: dict[str, str]) -> dict[str, str]:
        pattern = re.compile(_TOKEN)
        for key, target in value.items():
            for text in (key, target):
                if not pattern.fullmatch(text):
                    raise ValueError(f"{text!r}: must be one word without quotes or backslashes (1..256 characters)")
        return value

    def references(self) -> Any:
        yield from super().references()
        for agent_id in self.transfer_destinations:
            yield ("transfer_destinations", agent_id), "agent", agent_id


class FreeswitchEslAdapter(Adapter):
    """FreeSWITCH mod_callcenter over the inbound event socket (see the module docs)."""

    name: ClassVar[str] = "freeswitch_esl"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=True)
    Config: ClassVar[type[AdapterConfig]] = FreeswitchEslConfig

    config: FreeswitchEslConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, FreeswitchEslConfig):
            raise TypeError(f"FreeswitchEslAdapter needs a FreeswitchEslConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._names_of: dict[str, list[str]] = {}
        for fs_agent, agent_id in config.agent_map.items():
            self._names_of.setdefault(agent_id, []).append(fs_agent)
        self._link = Link(
            self,
            self._session,
            backoff=Backoff(initial_s=config.reconnect_initial_s, max_s=config.reconnect_max_s),
            describe=f"{config.host}:{config.port}",
        )
        self._conn: EslConnection | None = None
        #: caller uuid -> CC-Member-UUID (to hang up legs ringing for a withdrawn offer)
        self._members: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: caller uuids the gateway transferred out of the queue: ended by their hangup only
        self._transferred: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: declines submitted whose late rejection is still to come (caller uuid -> count)
        self._declined: collections.Counter[str] = collections.Counter()
        #: caller uuids of open interactions (offered here, or found open at a resync)
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: mod_callcenter agents whose status must be checked, and what this connection sent
        self._dirty: set[str] = set()
        self._sent: dict[str, str] = {}
        self._mirror_wake = asyncio.Event()
        #: gateway queues that exist (learned from InvalidEvent answers: unknown ones)
        self._unknown_queues: set[str] = set()
        #: counters for describe() and tests
        self.stats: collections.Counter[str] = collections.Counter()

    # ---------------------------------------------------------------- lifecycle

    @property
    def link(self) -> Link:
        return self._link

    async def start(self) -> None:
        self._link.start()

    async def stop(self) -> None:
        await self._link.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.update(connects=self._link.connects, failures=self._link.failures)
        return described

    # ---------------------------------------------------------------- the session

    async def _session(self, link: Link) -> None:
        config = self.config
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                reader, writer = await asyncio.open_connection(config.host, config.port)
        except TimeoutError:
            raise EslError(
                f"no connection to {config.host}:{config.port} within {config.connect_timeout_s} s"
            ) from None
        conn = EslConnection(
            reader,
            writer,
            vendor=self.vendor,
            command_timeout_s=config.command_timeout_s,
            max_queued_events=config.max_queued_events,
        )
        try:
            await conn.login(config.password.get_secret_value(), config.command_timeout_s)
            events = ["CHANNEL_HANGUP_COMPLETE", "HEARTBEAT", "CUSTOM", CALLCENTER_SUBCLASS]
            reply = await conn.command("event", config.event_format, *events)
            if not reply.reply_text.startswith("+OK"):
                raise EslError(f"event subscription refused: {reply.reply_text}")
            await self._resync(conn)
            self._conn = conn
            self._sent = {}
            self._dirty = {name for names in self._names_of.values() for name in names}
            self._mirror_wake.set()
            link.up(f"{config.host}:{config.port}")
            await self._serve(conn)
        finally:
            if self._conn is conn:
                self._conn = None
            await conn.close()

    async def _serve(self, conn: EslConnection) -> None:
        tasks = {
            asyncio.create_task(self._consume(conn), name=f"esl-events-{self.vendor}"),
            asyncio.create_task(self._keepalive(conn), name=f"esl-keepalive-{self.vendor}"),
            asyncio.create_task(self._mirror(conn), name=f"esl-mirror-{self.vendor}"),
            asyncio.create_task(conn.closed.wait(), name=f"esl-closed-{self.vendor}"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # closed first: a task whose cancellation got lost (3.11's wait_for can swallow
            # one, e.g. in the journal's commit) still ends, as every loop ends with the line
            conn.shut("session ended")
            self._mirror_wake.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise EslError(conn.close_reason or "closed by FreeSWITCH")

    async def _keepalive(self, conn: EslConnection) -> None:
        """No bytes for ``keepalive_s``: ``api status`` must be answered, else a stall."""
        period = self.config.keepalive_s
        while not conn.closed.is_set():
            idle = time.monotonic() - conn.last_rx
            if idle < period:
                await asyncio.sleep(period - idle)
                continue
            await conn.api("status")  # EslTimeout ends the session: the link reconnects
            conn.last_rx = max(conn.last_rx, time.monotonic())

    # ---------------------------------------------------------------- resync

    async def _resync(self, conn: EslConnection) -> None:
        """Reconcile the gateway's open voice interactions with FreeSWITCH after a (re)connect.

        * ``show channels as json``: an interaction whose caller channel is gone ends (the
          call ended while the link or the gateway was down); one still up is kept;
        * mod_callcenter's members (``callcenter_config queue list members`` of every
          queue): an offer whose member is now ``Answered`` by that agent is accepted, one
          whose member went back to ``Waiting`` or to another agent is declined (the ring
          stopped meanwhile); a member ``Answered`` by a mapped agent that the gateway has
          no session for (offered and answered while the link was down) gets its session,
          active. Replayed ids make a second resync change nothing.
        """
        raw = await conn.api("show", "channels", "as", "json")
        live = _channel_uuids(raw)
        if live is None:
            raise EslError(f"resync: `show channels as json` gave no channel list: {raw.strip()[:120]!r}")
        open_rows = [
            row
            for row in self.host.open_interactions(self.vendor)
            if row.get("channel") in (None, Channel.VOICE.value, Channel.VOICE)
        ]
        counts: collections.Counter[str] = collections.Counter()
        still_open: dict[str, dict[str, Any]] = {}
        for row in open_rows:
            interaction_id = str(row["interaction_id"])
            if interaction_id in live:
                _remember(self._known, interaction_id)
                still_open[interaction_id] = row
                continue
            event = self._event(EventType.END, f"fs/resync-end/{interaction_id}", interaction_id)
            if await self._submit(event) is not None:
                counts["ended"] += 1
            self._forget(interaction_id)
        members = await self._members_now(conn)
        if members is not None:
            try:
                await self._reconcile_members(conn, members, still_open, live, counts)
            except (EslError, asyncio.CancelledError):
                raise
            except Exception:  # a surprise in the member table must not keep the link down
                log.exception("esl_resync_members_failed", vendor=self.vendor)
        log.info(
            "esl_resynced",
            vendor=self.vendor,
            channels=len(live),
            open=len(open_rows),
            kept=len(still_open),
            members=None if members is None else len(members),
            **counts,
        )

    async def _members_now(self, conn: EslConnection) -> dict[str, dict[str, str]] | None:
        """mod_callcenter's members of every queue by caller uuid (None without mod_callcenter)."""
        listing = await conn.api("callcenter_config", "queue", "list")
        queues = [row.get("name", "") for row in _table(listing)]
        if not listing.rstrip().endswith("+OK"):
            log.warning("esl_resync_no_callcenter", vendor=self.vendor, reply=listing.strip()[:120])
            return None
        members: dict[str, dict[str, str]] = {}
        for queue in queues:
            if not queue or not re.fullmatch(_TOKEN, queue):
                continue
            for row in _table(await conn.api("callcenter_config", "queue", "list", "members", queue)):
                session_uuid = row.get("session_uuid", "")
                if session_uuid:
                    members[session_uuid] = row
        return members

    async def _reconcile_members(
        self,
        conn: EslConnection,
        members: dict[str, dict[str, str]],
        still_open: dict[str, dict[str, Any]],
        live: set[str],
        counts: collections.Counter[str],
    ) -> None:
        for interaction_id, row in still_open.items():
            member = members.get(interaction_id)
            if member is None or row.get("state") != "offered" or not row.get("agent_id"):
                continue
            agent_id = str(row["agent_id"])
            serving = self.config.agent_map.get(member.get("serving_agent", ""))
            state = member.get("state", "")
            if member.get("uuid"):
                _remember(self._members, interaction_id, member["uuid"])
            if state == "Answered" and serving == agent_id:
                kind, counter = EventType.ACCEPT, "accepted"
            elif state == "Waiting" or (state in ("Trying", "Answered") and serving != agent_id):
                kind, counter = EventType.DECLINE, "declined"
                self._declined[interaction_id] += 1
            else:
                continue  # still ringing that agent
            event_id = f"fs/resync-{kind.value}/{interaction_id}/{row.get('session_id')}"
            decision = await self._submit(self._event(kind, event_id, interaction_id, agent_id=agent_id))
            if decision is not None:
                counts[counter] += 1
            elif kind is EventType.DECLINE:
                self._declined.pop(interaction_id, None)
        for session_uuid, member in members.items():
            serving_id = self.config.agent_map.get(member.get("serving_agent", ""))
            if (
                member.get("state") != "Answered"
                or serving_id is None
                or session_uuid in still_open
                or session_uuid not in live
            ):
                continue
            call = CallEvent(
                Kind.ACCEPT,
                "resync",
                f"fs/resync/{session_uuid}/{member.get('serving_agent')}/{member.get('bridge_epoch', '')}",
                session_uuid,
                agent=member.get("serving_agent"),
                queue=member.get("queue") or None,
                member_uuid=member.get("uuid") or None,
                caller_number=member.get("cid_number") or None,
                caller_name=member.get("cid_name") or None,
            )
            decision = await self._offer(conn, call, serving_id, event_id=f"{call.event_id}/adopt")
            if decision is not None and decision.kind is DecisionKind.ASSIGNED:
                await self._submit(
                    self._event(EventType.ACCEPT, f"{call.event_id}/adopted", session_uuid, call, serving_id)
                )
                counts["adopted"] += 1

    # ---------------------------------------------------------------- events

    async def _consume(self, conn: EslConnection) -> None:
        async for fs_event in conn.events():
            self.stats["events"] += 1
            try:
                await self._handle(conn, fs_event)
            except asyncio.CancelledError:
                raise
            except EslError:
                raise  # the connection broke while acting on it
            except Exception:  # a bug handling one event must not stop the others
                log.exception("esl_event_failed", vendor=self.vendor, event_name=fs_event.name)

    async def _handle(self, conn: EslConnection, fs_event: FsEvent) -> None:
        try:
            call = interpret(fs_event)
        except MappingError as exc:
            self.stats["malformed"] += 1
            log.warning("esl_event_skipped", vendor=self.vendor, reason=str(exc))
            return
        if call is None:
            return
        if call.kind is Kind.HANGUP:
            if call.interaction_id in self._known or call.interaction_id in self._transferred:
                await self._end(call)
            return
        if call.kind is Kind.END:
            if call.interaction_id in self._transferred:
                return  # the gateway moved the caller out of the queue: its hangup ends it
            await self._end(call)
            return
        agent_id = self.config.agent_map.get(call.agent or "")
        if agent_id is None:
            log.debug("esl_agent_not_mapped", vendor=self.vendor, agent=call.agent)
            return
        if call.kind is Kind.OFFER:
            await self._offer(conn, call, agent_id)
        elif call.kind is Kind.ACCEPT:
            await self._accept(conn, call, agent_id)
        elif call.kind is Kind.DECLINE:
            # the gateway answers a declined targeted offer with a late rejection: its leg
            # has failed already, and the member may be ringing another agent by the time
            # that rejection is delivered: it must hang up nothing
            self._declined[call.interaction_id] += 1
            decision = await self._submit(
                self._event(EventType.DECLINE, call.event_id, call.interaction_id, call, agent_id)
            )
            if decision is None:
                self._declined[call.interaction_id] -= 1
                if self._declined[call.interaction_id] <= 0:
                    del self._declined[call.interaction_id]

    async def _offer(
        self, conn: EslConnection, call: CallEvent, agent_id: str, event_id: str | None = None
    ) -> Decision | None:
        if call.member_uuid:
            _remember(self._members, call.interaction_id, call.member_uuid)
        _remember(self._known, call.interaction_id)
        self._transferred.pop(call.interaction_id, None)
        event = self._event(EventType.OFFER, event_id or call.event_id, call.interaction_id, call, agent_id)
        decision = await self._submit(event)
        if decision is None:
            return None
        first = decision.original if decision.kind is DecisionKind.DUPLICATE and decision.original else decision
        if first.kind is DecisionKind.REJECTED:
            log.info(
                "esl_offer_rejected",
                vendor=self.vendor,
                interaction_id=call.interaction_id,
                agent=call.agent,
                reason=first.reason,
            )
            await self._hangup_ringing(conn, call.interaction_id, call.member_uuid)
            for name in self._names_of.get(agent_id, ()):
                self._sent.pop(name, None)  # it should not have been offered: re-send its status
                self._dirty.add(name)
            self._mirror_wake.set()
        return first

    async def _accept(self, conn: EslConnection, call: CallEvent, agent_id: str) -> None:
        event = self._event(EventType.ACCEPT, call.event_id, call.interaction_id, call, agent_id)
        try:
            await self._submit(event, reraise=frozenset({"interaction_not_found", "session_not_offered"}))
        except GatewayError:
            # the offer was missed (link down) or refused while the agent answered anyway:
            # the call is live on that agent, so the gateway takes it from here if it can
            decision = await self._offer(conn, call, agent_id, event_id=f"{call.event_id}/adopt")
            if decision is not None and decision.kind is DecisionKind.ASSIGNED:
                await self._submit(
                    self._event(EventType.ACCEPT, f"{call.event_id}/adopted", call.interaction_id, call, agent_id)
                )
                log.info("esl_call_adopted", vendor=self.vendor, interaction_id=call.interaction_id, agent_id=agent_id)
            else:
                log.warning(
                    "esl_answered_without_session",
                    vendor=self.vendor,
                    interaction_id=call.interaction_id,
                    agent=call.agent,
                    reason=decision.reason if decision else None,
                )

    async def _end(self, call: CallEvent) -> None:
        self._forget(call.interaction_id)
        await self._submit(self._event(EventType.END, call.event_id, call.interaction_id, call))

    def _forget(self, interaction_id: str) -> None:
        self._declined.pop(interaction_id, None)
        self._known.pop(interaction_id, None)
        self._members.pop(interaction_id, None)
        self._transferred.pop(interaction_id, None)

    def _event(
        self,
        kind: EventType,
        event_id: str,
        interaction_id: str,
        call: CallEvent | None = None,
        agent_id: str | None = None,
    ) -> Event:
        fields: dict[str, Any] = {}
        if kind is EventType.OFFER and call is not None:
            fields["channel"] = Channel.VOICE
            queue = self._queue_of(call.queue)
            if queue is not None:
                fields["queue"] = queue
            if call.caller_number or call.caller_name:
                fields["customer"] = Customer(address=call.caller_number, name=call.caller_name)
            if call.dnis:
                fields["subject"] = call.dnis
            fields["attributes"] = {
                k: v
                for k, v in (("fs_agent", call.agent), ("fs_queue", call.queue), ("fs_member_uuid", call.member_uuid))
                if v
            }
        if call is not None and call.cause and kind is not EventType.OFFER:
            fields["attributes"] = {"cause": call.cause}
        occurred = (call.occurred_at if call else None) or datetime.fromtimestamp(
            self.host.clock.now(), tz=timezone.utc
        )
        return Event(
            vendor=self.vendor,
            event_id=event_id,
            type=kind,
            interaction_id=interaction_id,
            agent_id=agent_id,
            occurred_at=occurred,
            **fields,
        )

    def _queue_of(self, fs_queue: str | None) -> str | None:
        if fs_queue is None:
            return None
        mapped = self.config.queue_map.get(fs_queue)
        if mapped is not None:
            return mapped
        return None if fs_queue in self._unknown_queues else fs_queue

    async def _submit(self, event: Event, *, reraise: frozenset[str] = frozenset()) -> Decision | None:
        """Submit ``event``, waiting while the gateway is not ready (its journal is down).

        An event the gateway refuses is logged and skipped (None), unless its error code is
        in ``reraise``. Never loses an event to a journal outage: FreeSWITCH cannot resend.
        """
        delay = 0.1
        while True:
            try:
                # shielded: a session that ends (a dropped line, a stall) while an event is
                # being journaled lets that write finish rather than cut it in half; the
                # resync after the reconnect settles whatever the adapter did not see
                decision = await asyncio.shield(self.host.submit(event))
            except GatewayError as exc:
                if exc.code == "not_ready":
                    log.warning("esl_gateway_not_ready", vendor=self.vendor, event_id=event.event_id, retry_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if isinstance(exc, InvalidEvent) and exc.field == "queue" and event.queue:
                    # an unmapped mod_callcenter queue the gateway does not have: no queue
                    self._unknown_queues.add(event.queue)
                    log.info("esl_queue_not_mapped", vendor=self.vendor, queue=event.queue)
                    event = event.model_copy(update={"queue": None})
                    continue
                if exc.code in reraise:
                    raise
                level = log.debug if exc.code == "interaction_not_found" else log.info
                level(
                    "esl_event_refused",
                    vendor=self.vendor,
                    event_id=event.event_id,
                    event_type=event.type.value,
                    code=exc.code,
                    reason=exc.message,
                )
                return None
            self.stats[event.type.value] += 1
            return decision

    async def _hangup_ringing(self, conn: EslConnection | None, interaction_id: str, member_uuid: str | None) -> None:
        if self.config.on_reject == "ring_out" or conn is None:
            return
        if member_uuid is None:
            log.warning("esl_cannot_cancel_ringing", vendor=self.vendor, interaction_id=interaction_id)
            return
        reply = await conn.api("hupall", "ORIGINATOR_CANCEL", "cc_member_pre_answer_uuid", member_uuid)
        self.stats["hangups"] += 1
        log.info("esl_ringing_cancelled", vendor=self.vendor, interaction_id=interaction_id, reply=reply.strip()[:120])

    # ---------------------------------------------------------------- capacity mirror

    def agents_changed(self, agent_ids: set[str]) -> None:
        names = [name for agent_id in agent_ids for name in self._names_of.get(agent_id, ())]
        if names:
            self._dirty.update(names)
            self._mirror_wake.set()

    def wanted_status(self, fs_agent: str) -> str:
        agent_id = self.config.agent_map[fs_agent]
        return AVAILABLE if self.host.availability(agent_id, Channel.VOICE, self.vendor) is None else ON_BREAK

    async def _mirror(self, conn: EslConnection) -> None:
        while not conn.closed.is_set():
            await self._mirror_wake.wait()
            self._mirror_wake.clear()
            while self._dirty and not conn.closed.is_set():
                name = self._dirty.pop()
                status = self.wanted_status(name)
                if self._sent.get(name) == status:
                    continue
                reply = await conn.api("callcenter_config", "agent", "set", "status", name, f"'{status}'")
                self._sent[name] = status
                self.stats["status_sent"] += 1
                if reply.startswith("+OK"):
                    log.info("esl_agent_status", vendor=self.vendor, agent=name, status=status)
                else:
                    log.warning(
                        "esl_agent_status_refused",
                        vendor=self.vendor,
                        agent=name,
                        status=status,
                        reply=reply.strip()[:120],
                    )

    # ---------------------------------------------------------------- back to FreeSWITCH

    async def deliver(self, notice: ToVendor) -> None:
        """Late decisions and session actions (ACCEPTED needs nothing: mod_callcenter bridges
        when the agent's phone answers; there are no chat replies on a voice switch)."""
        uuid = notice.interaction_id
        if notice.action is VendorAction.DECISION:
            if self._declined.get(uuid, 0) > 0:
                self._declined[uuid] -= 1
                if self._declined[uuid] <= 0:
                    del self._declined[uuid]
                return  # the answer to FreeSWITCH's own bridge-agent-fail
            if notice.data.get("decision") == DecisionKind.REJECTED.value:
                member = self._members.get(uuid)
                await self._act(lambda conn: self._hangup_ringing(conn, uuid, member))
        elif notice.action is VendorAction.ENDED:
            await self._act(lambda conn: self._api_checked(conn, "uuid_kill", uuid))
        elif notice.action is VendorAction.TRANSFERRED:
            target = str(notice.data.get("agent_id") or "")
            destination = self._destination(target)
            if destination is None:
                raise DeliveryError(
                    f"no transfer destination for agent {target!r} (transfer_destinations)", retryable=False
                )
            _remember(self._transferred, uuid)
            dialplan, context = self.config.transfer_dialplan, self.config.transfer_context
            await self._act(lambda conn: self._api_checked(conn, "uuid_transfer", uuid, destination, dialplan, context))

    def _destination(self, agent_id: str) -> str | None:
        if agent_id in self.config.transfer_destinations:
            return self.config.transfer_destinations[agent_id]
        names = self._names_of.get(agent_id)
        return names[0].split("@", 1)[0] if names else None

    async def _act(self, call: Callable[[EslConnection], Awaitable[None]]) -> None:
        conn = self._conn
        if conn is None:
            raise DeliveryError(f"FreeSWITCH {self.vendor} is not connected", retryable=True)
        try:
            await call(conn)
        except EslError as exc:
            raise DeliveryError(f"FreeSWITCH {self.vendor}: {exc}", retryable=True) from None

    async def _api_checked(self, conn: EslConnection, *args: str) -> None:
        reply = await conn.api(*args)
        if reply.startswith("-ERR"):
            # the channel is gone already (the caller hung up meanwhile): nothing left to do
            log.warning("esl_command_refused", vendor=self.vendor, command=args[0], reply=reply.strip()[:120])
        else:
            log.info("esl_command", vendor=self.vendor, command=args[0], uuid=args[1] if len(args) > 1 else None)


def _remember(store: collections.OrderedDict[str, Any], key: str, value: Any = None) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _MAX_REMEMBERED:
        store.popitem(last=False)


def _table(raw: str) -> list[dict[str, str]]:
    """mod_callcenter's ``list`` output: a ``|``-separated header line, rows, ``+OK``."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines or "|" not in lines[0]:
        return []
    header = lines[0].split("|")
    rows: list[dict[str, str]] = []
    for line in lines[1:]:
        if line.startswith(("+OK", "-ERR")):
            break
        cells = line.split("|")
        if len(cells) == len(header):
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _channel_uuids(raw: str) -> set[str] | None:
    """The ``uuid`` of every row of ``show channels as json`` (None if it is not that)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or "row_count" not in data:
        return None
    rows = data.get("rows") or []
    if not isinstance(rows, list):
        return None
    found: set[str] = set()
    for row in rows:
        if isinstance(row, dict):
            for key in ("uuid", "call_uuid"):
                value = row.get(key)
                if isinstance(value, str) and value:
                    found.add(value)
    return found
