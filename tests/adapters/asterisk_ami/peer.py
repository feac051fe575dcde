"""A scripted Asterisk for the AMI adapter's tests: :class:`FakeAsterisk` plays the manager
interface on a :class:`~tests.adapters.scripted.ScriptedServer` (real TCP, random splits).

It answers what the adapter sends the way Asterisk does (the banner, ``Challenge`` /
``Login`` plain or MD5, ``Ping``, ``CoreShowChannels`` from its own table of live channels,
``QueuePause`` recorded per interface, ``Hangup`` / ``Redirect`` / ``Atxfer`` recorded and
acknowledged) and lets the test play app_queue's events of a queued call in the Asterisk
12+ field layout (PROTOCOLS.md 1.2): ``Channel`` is the caller, ``DestChannel`` the member.

The parsing here is deliberately independent of the adapter's framing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from dataclasses import dataclass, field

from tests.adapters.scripted import Connection, ScriptedServer

CRLF = "\r\n"


def block(*pairs: tuple[str, str], eol: str = CRLF) -> str:
    return "".join(f"{k}: {v}{eol}" for k, v in pairs) + eol


def parse_action(raw: bytes) -> dict[str, str]:
    """A client's action block as a dict with lower-cased keys (last value wins)."""
    out: dict[str, str] = {}
    for line in raw.decode().replace("\r\n", "\n").split("\n"):
        if ":" in line:
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.strip()
    return out


@dataclass
class LiveChannel:
    name: str
    uniqueid: str
    linkedid: str
    state: int = 4  # Ring
    num: str = ""


@dataclass
class Call:
    """One caller in a queue, as the test drives it."""

    ref: str
    uniqueid: str
    channel: str
    queue: str = "support"
    num: str = "+15551230000"
    rings: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    member: LiveChannel | None = None


class FakeAsterisk:
    def __init__(
        self,
        *,
        username: str = "gateway",
        secret: str = "ami-secret-0123",
        version: str = "13.0.0",
        md5_only: bool = False,
        seed: int | None = 7,
    ) -> None:
        self.username = username
        self.secret = secret
        self.version = version
        self.md5_only = md5_only
        self.server = ScriptedServer(on_connect=self._on_connect, reply=self._reply, seed=seed)
        self.channels: dict[str, LiveChannel] = {}
        #: interface -> (paused, reason) as last set by QueuePause
        self.paused: dict[str, tuple[bool, str]] = {}
        #: every QueuePause / Hangup / Redirect / Atxfer / Login ... received, in order
        self.actions: list[dict[str, str]] = []
        self.challenges: dict[int, str] = {}
        self.logins = 0
        self.login_failures = 0
        self.answer_pings = True
        #: actions answered "Permission denied" (lower-case names)
        self.refuse: set[str] = set()
        self.calls: dict[str, Call] = {}
        self._uids = itertools.count(1)
        self._lock = asyncio.Lock()

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    async def _on_connect(self, server: ScriptedServer, conn: Connection) -> None:
        await self._write(f"Asterisk Call Manager/{self.version}\r\n", conn=conn)

    async def _reply(self, server: ScriptedServer, conn: Connection, raw: bytes) -> None:
        action = parse_action(raw)
        self.actions.append(action)
        name = action.get("action", "").lower()
        aid = action.get("actionid", "")
        ok = ("Response", "Success"), ("ActionID", aid)
        if name in self.refuse:
            await self._write(
                block(("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")), conn=conn
            )
            return
        if name == "challenge":
            challenge = str(100000000 + len(self.actions))
            self.challenges[id(conn)] = challenge
            await self._write(block(("Response", "Success"), ("Challenge", challenge), ("ActionID", aid)), conn=conn)
        elif name == "login":
            expected_key = hashlib.md5((self.challenges.get(id(conn), "") + self.secret).encode()).hexdigest()
            good = action.get("username") == self.username and (
                (action.get("authtype", "").lower() == "md5" and action.get("key") == expected_key)
                or (not self.md5_only and action.get("secret") == self.secret)
            )
            if good:
                self.logins += 1
                await self._write(block(*ok, ("Message", "Authentication accepted")), conn=conn)
                await self._write(
                    block(("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")), conn=conn
                )
            else:
                self.login_failures += 1
                await self._write(
                    block(("Response", "Error"), ("ActionID", aid), ("Message", "Authentication failed")), conn=conn
                )
        elif name == "ping":
            if self.answer_pings:
                await self._write(block(*ok, ("Ping", "Pong"), ("Timestamp", "1409169929.412068")), conn=conn)
        elif name == "coreshowchannels":
            out = block(*ok, ("EventList", "start"), ("Message", "Channels will follow"))
            for ch in self.channels.values():
                out += block(
                    ("Event", "CoreShowChannel"),
                    ("ActionID", aid),
                    ("Channel", ch.name),
                    ("ChannelState", str(ch.state)),
                    ("ChannelStateDesc", {4: "Ring", 5: "Ringing", 6: "Up"}.get(ch.state, "Down")),
                    ("CallerIDNum", ch.num),
                    ("Uniqueid", ch.uniqueid),
                    ("Linkedid", ch.linkedid),
                    ("Application", "Queue"),
                )
            out += block(
                ("Event", "CoreShowChannelsComplete"),
                ("EventList", "Complete"),
                ("ListItems", str(len(self.channels))),
                ("ActionID", aid),
            )
            await self._write(out, conn=conn)
        elif name == "status":  # Asterisk 11's layout: StatusComplete carries no EventList
            out = block(*ok, ("Message", "Channel status will follow"))
            for ch in self.channels.values():
                out += block(
                    ("Event", "Status"),
                    ("Privilege", "Call"),
                    ("Channel", ch.name),
                    ("CallerIDNum", ch.num),
                    ("ChannelState", str(ch.state)),
                    ("Uniqueid", ch.uniqueid),
                    ("Linkedid", ch.linkedid),
                    ("ActionID", aid),
                )
            out += block(("Event", "StatusComplete"), ("ActionID", aid), ("Items", str(len(self.channels))))
            await self._write(out, conn=conn)
        elif name == "queuepause":
            paused = action.get("paused", "").lower() in ("true", "1", "yes")
            self.paused[action.get("interface", "")] = (paused, action.get("reason", ""))
            await self._write(block(*ok, ("Message", "Interface paused successfully")), conn=conn)
        elif name in ("hangup", "redirect", "atxfer"):
            target = action.get("channel", "")
            found = [c for c in self.channels.values() if c.name == target]
            if not found:
                await self._write(
                    block(("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")), conn=conn
                )
                return
            await self._write(block(*ok, ("Message", f"{action['action']} accepted")), conn=conn)
        else:
            await self._write(
                block(("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")), conn=conn
            )

    # -- what the test asks ----------------------------------------------------------------

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("action", "").lower() == name.lower()]

    async def send(self, text: str | bytes) -> None:
        await self._write(text)

    async def _write(self, data: str | bytes, conn: Connection | None = None) -> None:
        # one message at a time, as Asterisk writes them: random splits, never interleaved
        async with self._lock:
            await self.server.send(data, conn=conn)

    # -- app_queue's events ----------------------------------------------------------------

    def new_call(self, ref: str, *, queue: str = "support") -> Call:
        n = next(self._uids)
        uid = f"1700000{n:03d}.{n}"
        call = Call(ref, uid, f"PJSIP/trunk-{n:08x}", queue=queue)
        self.calls[ref] = call
        self.channels[uid] = LiveChannel(call.channel, uid, uid, state=6, num=call.num)
        return call

    def _snapshot(self, call: Call) -> list[tuple[str, str]]:
        return [
            ("Channel", call.channel),
            ("ChannelState", "6"),
            ("ChannelStateDesc", "Up"),
            ("CallerIDNum", call.num),
            ("CallerIDName", "Ada Caller"),
            ("ConnectedLineNum", "<unknown>"),
            ("ConnectedLineName", "<unknown>"),
            ("Language", "en"),
            ("AccountCode", ""),
            ("Context", "from-trunk"),
            ("Exten", "500"),
            ("Priority", "3"),
            ("Uniqueid", call.uniqueid),
            ("Linkedid", call.uniqueid),
        ]

    def _dest(self, member: LiveChannel) -> list[tuple[str, str]]:
        return [
            ("DestChannel", member.name),
            ("DestChannelState", str(member.state)),
            ("DestChannelStateDesc", {5: "Ringing", 6: "Up"}.get(member.state, "Down")),
            ("DestCallerIDNum", member.name.split("/")[1].split("-")[0]),
            ("DestCallerIDName", "<unknown>"),
            ("DestUniqueid", member.uniqueid),
            ("DestLinkedid", member.linkedid),
        ]

    async def join(self, call: Call) -> None:
        await self.send(
            block(
                ("Event", "QueueCallerJoin"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                ("Queue", call.queue),
                ("Position", "1"),
                ("Count", "1"),
            )
        )

    async def agent_called(self, call: Call, interface: str) -> LiveChannel:
        ring = next(call.rings)
        n = next(self._uids)
        member = LiveChannel(f"{interface}-{n:08x}", f"1700000{n:03d}.{n}", call.uniqueid, state=5)
        self.channels[member.uniqueid] = member
        call.member = member
        await self.send(
            block(
                ("Event", "AgentCalled"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                *self._dest(member),
                ("Queue", call.queue),
                ("MemberName", f"Agent {interface} ring {ring}"),
                ("Interface", interface),
            )
        )
        return member

    async def agent_connect(self, call: Call, interface: str) -> None:
        assert call.member is not None
        call.member.state = 6
        await self.send(
            block(
                ("Event", "AgentConnect"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                *self._dest(call.member),
                ("Queue", call.queue),
                ("MemberName", interface),
                ("Interface", interface),
                ("RingTime", "3"),
                ("HoldTime", "9"),
            )
        )

    async def queue_leave(self, call: Call) -> None:
        await self.send(
            block(
                ("Event", "QueueCallerLeave"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                ("Queue", call.queue),
                ("Count", "0"),
                ("Position", "1"),
            )
        )

    async def ring_no_answer(self, call: Call, interface: str) -> None:
        assert call.member is not None
        member = call.member
        await self.send(
            block(
                ("Event", "AgentRingNoAnswer"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                *self._dest(member),
                ("Queue", call.queue),
                ("MemberName", interface),
                ("Interface", interface),
                ("RingTime", "15000"),
            )
        )
        await self.hangup_member(call)

    async def hangup_member(self, call: Call) -> None:
        member = call.member
        if member is None:
            return
        self.channels.pop(member.uniqueid, None)
        call.member = None
        await self.send(
            block(
                ("Event", "Hangup"),
                ("Privilege", "call,all"),
                ("Channel", member.name),
                ("ChannelState", "6"),
                ("Uniqueid", member.uniqueid),
                ("Linkedid", member.linkedid),
                ("Cause", "16"),
                ("Cause-txt", "Normal Clearing"),
            )
        )

    async def agent_complete(self, call: Call, interface: str, *, reason: str = "caller", talk: int = 42) -> None:
        assert call.member is not None
        await self.send(
            block(
                ("Event", "AgentComplete"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                *self._dest(call.member),
                ("Queue", call.queue),
                ("MemberName", interface),
                ("Interface", interface),
                ("HoldTime", "9"),
                ("TalkTime", str(talk)),
                ("Reason", reason),
            )
        )

    async def abandon(self, call: Call) -> None:
        await self.send(
            block(
                ("Event", "QueueCallerAbandon"),
                ("Privilege", "agent,all"),
                *self._snapshot(call),
                ("Queue", call.queue),
                ("Position", "1"),
                ("OriginalPosition", "1"),
                ("HoldTime", "20"),
            )
        )

    async def caller_hangup(self, call: Call) -> None:
        self.channels.pop(call.uniqueid, None)
        await self.send(
            block(
                ("Event", "Hangup"),
                ("Privilege", "call,all"),
                *self._snapshot(call),
                ("Cause", "16"),
                ("Cause-txt", "Normal Clearing"),
            )
        )

    async def agent_called_leg(self, call: Call, interface: str) -> LiveChannel:
        """A leg the dialplan dials (after a Redirect): DialBegin, no app_queue event."""
        n = next(self._uids)
        leg = LiveChannel(f"{interface}-{n:08x}", f"1700000{n:03d}.{n}", call.uniqueid, state=5)
        self.channels[leg.uniqueid] = leg
        await self.send(
            block(
                ("Event", "DialBegin"),
                ("Privilege", "call,all"),
                *self._snapshot(call),
                *self._dest(leg),
                ("DialString", interface.split("/", 1)[1]),
            )
        )
        return leg

    async def dial_end(self, call: Call, leg: LiveChannel, status: str) -> None:
        if status == "ANSWER":
            leg.state = 6
        await self.send(
            block(
                ("Event", "DialEnd"),
                ("Privilege", "call,all"),
                *self._snapshot(call),
                *self._dest(leg),
                ("DialStatus", status),
            )
        )

    def vanish(self, call: Call) -> None:
        """The call ends while nobody listens (no event goes out)."""
        self.channels.pop(call.uniqueid, None)
        if call.member is not None:
            self.channels.pop(call.member.uniqueid, None)
            call.member = None
