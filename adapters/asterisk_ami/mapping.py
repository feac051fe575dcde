"""From parsed AMI events to what the gateway needs: which call, which member, which ring.

Pure functions, no I/O. app_queue's events changed their header names in Asterisk 12; both
generations are read:

=================  ====================================  =====================================
 what              Asterisk 12+                          Asterisk <= 11
=================  ====================================  =====================================
 the caller        ``Channel`` / ``Uniqueid``             ``ChannelCalling`` (AgentCalled) /
                                                         ``Uniqueid``
 member interface  ``Interface``                         ``AgentCalled`` (AgentCalled),
                                                         ``Member`` (the others)
 member channel    ``DestChannel`` / ``DestUniqueid``     ``DestinationChannel`` (AgentCalled),
                                                         ``Channel`` (the others)
 caller joins      ``QueueCallerJoin``                   ``Join``
 caller leaves     ``QueueCallerLeave``                  ``Leave``
=================  ====================================  =====================================

In every Agent* event of Asterisk 12+ ``Channel`` is the queued caller and ``DestChannel``
the member's leg. The interaction id is the caller channel's ``Uniqueid``: it is the same
for every ring of one call (app_queue ringing the call again is a new session of the same
interaction) and ends with that channel's ``Hangup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .config import interface_of_channel
from .framing import Message

__all__ = ["CallEvent", "Kind", "parse_call_event"]


class Kind(StrEnum):
    CALLED = "called"  # AgentCalled: app_queue rings a member
    CONNECT = "connect"  # AgentConnect: the member answered
    RING_NO_ANSWER = "rna"  # AgentRingNoAnswer
    COMPLETE = "complete"  # AgentComplete: the member's call is over
    DUMP = "dump"  # AgentDump: the member hung up during its announcement (before the bridge)
    ABANDON = "abandon"  # QueueCallerAbandon: the caller hung up while waiting / ringing
    LEAVE = "leave"  # QueueCallerLeave: the caller left the queue (answered): not an end
    JOIN = "join"  # QueueCallerJoin
    HANGUP = "hangup"  # any channel's Hangup
    DIAL_END = "dialend"  # DialEnd: a dial attempt finished (ANSWER, NOANSWER, BUSY ...)


_NAMES = {
    "agentcalled": Kind.CALLED,
    "agentconnect": Kind.CONNECT,
    "agentringnoanswer": Kind.RING_NO_ANSWER,
    "agentcomplete": Kind.COMPLETE,
    "agentdump": Kind.DUMP,
    "queuecallerabandon": Kind.ABANDON,
    "queuecallerleave": Kind.LEAVE,
    "leave": Kind.LEAVE,
    "queuecallerjoin": Kind.JOIN,
    "join": Kind.JOIN,
    "hangup": Kind.HANGUP,
    "dialend": Kind.DIAL_END,
}

_AGENT_KINDS = frozenset({Kind.CALLED, Kind.CONNECT, Kind.RING_NO_ANSWER, Kind.COMPLETE, Kind.DUMP})


@dataclass(frozen=True, slots=True)
class CallEvent:
    kind: Kind
    #: the caller channel's Uniqueid (for a Hangup / DialEnd: the channel's own)
    uniqueid: str
    channel: str | None = None
    queue: str | None = None
    interface: str | None = None
    member_channel: str | None = None
    member_uniqueid: str | None = None
    caller_num: str | None = None
    caller_name: str | None = None
    #: AgentComplete ``Reason`` (caller, agent, transfer); DialEnd ``DialStatus``
    reason: str | None = None
    talk_time: str | None = None
    hold_time: str | None = None

    @property
    def ring_key(self) -> str | None:
        """What tells one ring of a call from another: the member leg's Uniqueid (12+) or
        its channel name (<= 11, where AgentCalled carries no member Uniqueid)."""
        return self.member_uniqueid or self.member_channel or None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if value and value != "<unknown>" else None


def parse_call_event(message: Message) -> CallEvent | None:
    """The call event ``message`` is, or None for events the adapter does not use.

    Raises :class:`ValueError` for an event of a used kind without the ids it needs (the
    adapter logs and skips it)."""
    if message.kind != "event":
        return None
    kind = _NAMES.get(message.name.strip().lower())
    if kind is None:
        return None
    get = message.get
    uniqueid = _clean(get("Uniqueid"))
    if uniqueid is None:
        raise ValueError(f"{message.name} without Uniqueid")
    if kind is Kind.HANGUP:
        return CallEvent(kind, uniqueid, channel=_clean(get("Channel")), reason=_clean(get("Cause")))
    if kind is Kind.DIAL_END:
        return CallEvent(
            kind,
            uniqueid,
            channel=_clean(get("Channel")),
            member_channel=_clean(get("DestChannel")),
            member_uniqueid=_clean(get("DestUniqueid")),
            reason=(_clean(get("DialStatus")) or "").upper() or None,
        )
    modern = "DestChannel" in message or "Interface" in message
    if kind in _AGENT_KINDS:
        if modern:
            caller_channel = _clean(get("Channel"))
            interface = _clean(get("Interface"))
            member_channel = _clean(get("DestChannel"))
            member_uniqueid = _clean(get("DestUniqueid"))
        elif kind is Kind.CALLED:
            caller_channel = _clean(get("ChannelCalling"))
            interface = _clean(get("AgentCalled"))
            member_channel = _clean(get("DestinationChannel"))
            member_uniqueid = None
        else:
            caller_channel = None
            interface = _clean(get("Member"))
            member_channel = _clean(get("Channel"))
            member_uniqueid = None
        if interface is None and member_channel is not None:
            interface = interface_of_channel(member_channel)
        if interface is None:
            raise ValueError(f"{message.name} names no member interface")
        if member_channel is None and member_uniqueid is None:
            raise ValueError(f"{message.name} names no member channel")
        return CallEvent(
            kind,
            uniqueid,
            channel=caller_channel,
            queue=_clean(get("Queue")),
            interface=interface,
            member_channel=member_channel,
            member_uniqueid=member_uniqueid,
            caller_num=_clean(get("CallerIDNum")),
            caller_name=_clean(get("CallerIDName")),
            reason=_clean(get("Reason")),
            talk_time=_clean(get("TalkTime")),
            hold_time=_clean(get("HoldTime") or get("Holdtime")),
        )
    return CallEvent(kind, uniqueid, channel=_clean(get("Channel")), queue=_clean(get("Queue")))
