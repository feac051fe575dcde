"""What Kamailio's evapi messages mean to the gateway, and how decisions go back.

Pure functions and plain data, no I/O: :func:`parse_message` turns one evapi payload (the
JSON that ``config/examples/kamailio/kamailio.cfg`` sends) into a :class:`KamailioMessage`
or raises :class:`BadMessage`; :func:`offer_event` and friends build the normalized
events; :func:`route_command` and :func:`reply_for` build what goes back.

Event ids are derived from the Call-ID, so a message Kamailio repeats (or a resync that
reports the same thing again) is a ``duplicate`` for the gateway, never a second session:

=====================  ============================================================
``<call>:invite``      the held INVITE: an offer (queue or targeted, by R-URI user)
``<call>:answered:A``  agent A's phone answered (200 OK): ``accept``
``<call>:failed:A``    agent A's phone refused or did not answer: ``decline``
``<call>:end``         CANCEL, BYE, held too long, or gone after a resync: ``end``
=====================  ============================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gateway.events import Channel, Customer, Event, EventType

__all__ = [
    "EVENTS",
    "BadMessage",
    "KamailioMessage",
    "accept_event",
    "decline_event",
    "end_event",
    "interaction_id",
    "offer_event",
    "reply_for",
    "route_command",
]

#: the messages Kamailio sends (see the example kamailio.cfg)
EVENTS = frozenset({"invite", "failed", "answered", "cancel", "bye", "gone", "call", "sync_done", "pong"})
#: fields each message must carry (beyond ``event``)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "invite": ("call_id", "tindex", "tlabel", "ruri_user"),
    "failed": ("call_id", "tindex", "tlabel", "agent"),
    "answered": ("call_id", "agent"),
    "cancel": ("call_id",),
    "bye": ("call_id",),
    "gone": ("call_id",),
    "call": ("call_id", "state"),
    "sync_done": (),
    "pong": (),
}
_INTS = frozenset({"tindex", "tlabel", "code", "cseq"})
_MAX_FIELD = 2048

#: SIP answers for each rejection reason (DESIGN section 8); anything else is a 500
SIP_REPLIES: dict[str, tuple[int, str]] = {
    "agent_at_capacity": (486, "Busy Here"),
    "channel_at_capacity": (486, "Busy Here"),
    "no_agent_available": (486, "Busy Here"),
    "agent_not_ready": (480, "Temporarily Unavailable"),
    "agent_offline": (480, "Temporarily Unavailable"),
    "offer_timeout": (480, "Temporarily Unavailable"),
    "queue_timeout": (480, "Temporarily Unavailable"),
    "unknown_agent": (404, "Not Found"),
    "vendor_unsupported": (488, "Not Acceptable Here"),
}
#: the gateway cannot take the call now (journal down, shutting down)
NOT_READY_REPLY = (503, "Service Unavailable")


class BadMessage(ValueError):
    """A payload that is not a message this adapter understands (logged and skipped)."""


@dataclass(frozen=True, slots=True)
class KamailioMessage:
    event: str
    call_id: str = ""
    tindex: int = 0
    tlabel: int = 0
    cseq: int = 0
    agent: str = ""
    code: int = 0
    state: str = ""
    ruri_user: str = ""
    ruri: str = ""
    from_uri: str = ""
    from_user: str = ""
    from_name: str = ""
    to_uri: str = ""
    src: str = ""


def parse_message(payload: bytes) -> KamailioMessage:
    """One evapi payload as a message; :class:`BadMessage` says what is wrong with it."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object but {type(data).__name__}")
    event = data.get("event")
    if not isinstance(event, str) or event not in EVENTS:
        raise BadMessage(f"unknown event {event!r}")
    for key in _REQUIRED[event]:
        value = data.get(key)
        if value is None or value == "":
            raise BadMessage(f"{event}: {key} is missing")
    fields: dict[str, Any] = {"event": event}
    for key, attr in (
        ("call_id", "call_id"),
        ("agent", "agent"),
        ("state", "state"),
        ("ruri_user", "ruri_user"),
        ("ruri", "ruri"),
        ("from", "from_uri"),
        ("from_user", "from_user"),
        ("from_name", "from_name"),
        ("to", "to_uri"),
        ("src", "src"),
    ):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadMessage(f"{event}: {key} is not a string")
        if len(value) > _MAX_FIELD:
            raise BadMessage(f"{event}: {key} is longer than {_MAX_FIELD} characters")
        fields[attr] = value
    for key in _INTS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value.isdigit():  # jansson_get may hand back strings
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
            raise BadMessage(f"{event}: {key} is not an unsigned integer")
        fields[key] = value
    return KamailioMessage(**fields)


def interaction_id(call_id: str) -> str:
    """The gateway's interaction id of a call: its Call-ID (hashed if too long for an id)."""
    if len(call_id) <= 200:
        return call_id
    return "sha256:" + hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()


def _now(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=timezone.utc)


def offer_event(
    vendor: str, message: KamailioMessage, at: float, *, queue: str | None = None, agent_id: str | None = None
) -> Event:
    """The held INVITE as an offer: to ``queue`` (R-URI user in ``queue_map``) or targeted
    at ``agent_id`` (R-URI user that is an agent)."""
    iid = interaction_id(message.call_id)
    name = message.from_name.strip().strip('"') or None
    address = message.from_uri or None
    attributes: dict[str, Any] = {"call_id": message.call_id, "ruri_user": message.ruri_user}
    if message.ruri:
        attributes["ruri"] = message.ruri
    if message.src:
        attributes["source"] = message.src
    return Event(
        vendor=vendor,
        event_id=f"{iid}:invite",
        type=EventType.OFFER,
        interaction_id=iid,
        channel=Channel.VOICE,
        queue=queue,
        agent_id=agent_id,
        customer=Customer(address=address[:512] if address else None, name=name[:512] if name else None),
        occurred_at=_now(at),
        attributes=attributes,
    )


def accept_event(vendor: str, message: KamailioMessage, at: float) -> Event:
    iid = interaction_id(message.call_id)
    return Event(
        vendor=vendor,
        event_id=f"{iid}:answered:{message.agent}",
        type=EventType.ACCEPT,
        interaction_id=iid,
        agent_id=message.agent,
        occurred_at=_now(at),
    )


def decline_event(vendor: str, message: KamailioMessage, at: float) -> Event:
    iid = interaction_id(message.call_id)
    return Event(
        vendor=vendor,
        event_id=f"{iid}:failed:{message.agent}",
        type=EventType.DECLINE,
        interaction_id=iid,
        agent_id=message.agent,
        occurred_at=_now(at),
        attributes={"sip_code": message.code} if message.code else {},
    )


def end_event(vendor: str, iid: str, at: float, *, why: str) -> Event:
    """The call is over (``why``: cancel, bye, gone, resync)."""
    return Event(
        vendor=vendor,
        event_id=f"{iid}:end",
        type=EventType.END,
        interaction_id=iid,
        occurred_at=_now(at),
        attributes={"reason": why},
    )


def reply_for(reason: str | None) -> tuple[int, str]:
    """The SIP answer to the caller for a rejection ``reason``."""
    return SIP_REPLIES.get(reason or "", (500, "Server Internal Error"))


def route_command(
    tindex: int, tlabel: int, *, uri: str | None = None, agent: str | None = None, reply: tuple[int, str] | None = None
) -> dict[str, Any]:
    """The ``route`` message resuming a held INVITE: relay to ``uri`` or answer ``reply``."""
    body: dict[str, Any] = {"cmd": "route", "tindex": tindex, "tlabel": tlabel}
    if uri is not None:
        body.update(action="relay", uri=uri, agent=agent or "")
    else:
        code, text = reply or (500, "Server Internal Error")
        body.update(action="reply", code=str(code), reason=text)
    return body


def cancel_command(call_id: str, cseq: int) -> dict[str, Any]:
    """The ``cancel`` message: stop the agent's phone ringing (Kamailio then reports the
    branch as ``failed`` and holds the call for the gateway's next decision)."""
    return {"cmd": "cancel", "call_id": call_id, "cseq": cseq or 1}


def end_command(call_id: str) -> dict[str, Any]:
    """The ``end`` message: hang up an answered call (BYE to the caller and the phone)."""
    return {"cmd": "end", "call_id": call_id}


def dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
