"""From FreeSWITCH events to what they mean for the gateway (pure: no I/O, no clock).

mod_callcenter announces its work as ``CUSTOM`` events of subclass ``callcenter::info``
with a ``CC-Action`` header (``mod_callcenter.c``; PROTOCOLS.md section 2.3):

==========================  ==================================================================
``agent-offering``          it chose agent ``CC-Agent`` for the caller and starts ringing the
                            agent's contact -> a targeted voice **offer**
``bridge-agent-start``      the agent answered; caller and agent are bridged -> **accept**
``bridge-agent-fail``       the agent did not answer / refused / was cancelled -> **decline**
``bridge-agent-end``        the bridge ended (either side hung up) -> **end**
``member-queue-end``        the caller left the queue (after the agent, or abandoned) -> **end**
==========================  ==================================================================

and ``CHANNEL_HANGUP_COMPLETE`` of the caller's channel is an **end** too (it is what ends a
call the gateway transferred out of the queue with ``uuid_transfer``).

The interaction is the caller's channel: ``interaction_id`` = ``CC-Member-Session-UUID``
(the ``Unique-ID`` of the caller's leg, which ``uuid_transfer`` / ``uuid_kill`` act on).
Event ids are derived from the vendor's ids so that the same event seen twice is the same
id (a ``duplicate`` for the gateway): the action, the caller's uuid, the agent, and
FreeSWITCH's own ``Core-UUID`` + ``Event-Sequence`` (unique per event of a running switch);
without those, a digest of every header.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

from .framing import Event

CALLCENTER_SUBCLASS = "callcenter::info"
HANGUP_COMPLETE = "CHANNEL_HANGUP_COMPLETE"
#: FreeSWITCH's placeholder for an empty value
UNDEF = "_undef_"
MAX_EVENT_ID = 256


class Kind(StrEnum):
    OFFER = "offer"
    ACCEPT = "accept"
    DECLINE = "decline"
    END = "end"
    #: the caller's (or any) channel is gone: an end if it is a call the gateway holds
    HANGUP = "hangup"


#: CC-Action -> what it means
CC_ACTIONS: dict[str, Kind] = {
    "agent-offering": Kind.OFFER,
    "bridge-agent-start": Kind.ACCEPT,
    "bridge-agent-fail": Kind.DECLINE,
    "bridge-agent-end": Kind.END,
    "member-queue-end": Kind.END,
}


class MappingError(ValueError):
    """A callcenter event that lacks what its action needs (logged and skipped)."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    """What one FreeSWITCH event means, in FreeSWITCH's own ids."""

    kind: Kind
    #: the CC-Action (or the Event-Name for channel events)
    action: str
    event_id: str
    #: the caller's channel uuid (CC-Member-Session-UUID, or Unique-ID of a hung-up channel)
    interaction_id: str
    #: the mod_callcenter agent name (CC-Agent), e.g. ``1001@default``
    agent: str | None = None
    #: the mod_callcenter queue (CC-Queue), e.g. ``support@default``
    queue: str | None = None
    #: the member's entry in the queue (CC-Member-UUID): agent legs ringing for it carry it
    #: as ``cc_member_pre_answer_uuid``
    member_uuid: str | None = None
    #: the agent's channel (CC-Agent-UUID on bridge events)
    agent_leg: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    dnis: str | None = None
    #: why it failed / ended (CC-Hangup-Cause, CC-Cause, CC-Cancel-Reason, Hangup-Cause)
    cause: str | None = None
    occurred_at: datetime | None = None


def _value(event: Event, key: str) -> str | None:
    value = event.get(key).strip()
    return None if not value or value == UNDEF else value


def occurred_at(event: Event) -> datetime | None:
    """``Event-Date-Timestamp`` (microseconds since the epoch) as an aware datetime."""
    raw = event.get("Event-Date-Timestamp") or event.get("Event-Date-timestamp")
    if not raw.isdigit() or len(raw) > 19:
        return None
    try:
        return datetime.fromtimestamp(int(raw) / 1_000_000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def event_id(kind: str, interaction_id: str, agent: str | None, event: Event) -> str:
    """A deterministic id of this event (the same event seen twice gets the same id)."""
    core = event.get("Core-UUID")
    seq = event.get("Event-Sequence")
    if core and seq:
        tail = f"{core}/{seq}"
    else:
        digest = hashlib.sha256()
        for name in sorted(event.headers):
            digest.update(f"{name}\0{event.headers[name]}\0".encode())
        tail = digest.hexdigest()[:32]
    built = f"fs/{kind}/{interaction_id}/{agent or '-'}/{tail}"
    if len(built) > MAX_EVENT_ID:
        built = "fs/" + hashlib.sha256(built.encode()).hexdigest()
    return built


def interpret(event: Event) -> CallEvent | None:
    """What ``event`` means for the gateway, or None for events it does not act on.
    Raises :class:`MappingError` for a callcenter event that lacks its required headers."""
    if event.name == HANGUP_COMPLETE:
        uuid = _value(event, "Unique-ID")
        if uuid is None:
            raise MappingError("CHANNEL_HANGUP_COMPLETE without Unique-ID")
        return CallEvent(
            Kind.HANGUP,
            HANGUP_COMPLETE,
            event_id("hangup", uuid, None, event),
            uuid,
            cause=_value(event, "Hangup-Cause"),
            occurred_at=occurred_at(event),
        )
    if event.name != "CUSTOM" or event.subclass != CALLCENTER_SUBCLASS:
        return None
    action = event.get("CC-Action")
    kind = CC_ACTIONS.get(action)
    if kind is None:
        return None  # agent-status-change, members-count ... : nothing for the gateway
    member = _value(event, "CC-Member-Session-UUID")
    if member is None:
        raise MappingError(f"{action} without CC-Member-Session-UUID")
    agent = _value(event, "CC-Agent")
    if agent is None and kind is not Kind.END:
        raise MappingError(f"{action} without CC-Agent")
    cause = _value(event, "CC-Hangup-Cause") or _value(event, "CC-Cancel-Reason") or _value(event, "CC-Cause")
    return CallEvent(
        kind,
        action,
        event_id(action, member, agent, event),
        member,
        agent=agent,
        queue=_value(event, "CC-Queue"),
        member_uuid=_value(event, "CC-Member-UUID"),
        agent_leg=_value(event, "CC-Agent-UUID"),
        caller_number=_value(event, "CC-Member-CID-Number"),
        caller_name=_value(event, "CC-Member-CID-Name"),
        dnis=_value(event, "CC-Member-DNIS"),
        cause=cause,
        occurred_at=occurred_at(event),
    )
