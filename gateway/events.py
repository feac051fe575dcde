"""The normalized event model: what every adapter turns its vendor's traffic into.

Events are frozen pydantic models with no framework or vendor types in them. Use
:func:`parse_event` for untrusted input: it raises :class:`~gateway.errors.InvalidEvent`
naming the field at fault.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidEvent


class Channel(StrEnum):
    VOICE = "voice"
    CHAT = "chat"
    EMAIL = "email"
    MANUAL = "manual"


#: Channels a vendor can offer (manual sessions are started by agents, not vendors).
INBOUND_CHANNELS: tuple[Channel, ...] = (Channel.VOICE, Channel.CHAT, Channel.EMAIL)
ALL_CHANNELS: tuple[Channel, ...] = (Channel.VOICE, Channel.CHAT, Channel.EMAIL, Channel.MANUAL)


class EventType(StrEnum):
    OFFER = "offer"
    MESSAGE = "message"
    UPDATE = "update"
    END = "end"
    #: the vendor reports that the agent answered (a phone's 200 OK, AMI ``AgentConnect``)
    ACCEPT = "accept"
    #: the vendor reports that the agent did not answer or refused (ring-no-answer, 486 from the phone)
    DECLINE = "decline"


_ID = Field(min_length=1, max_length=256)

#: Deepest nesting of objects/arrays inside ``attributes`` (``{"a": {"b": 1}}`` is 2).
MAX_ATTRIBUTES_DEPTH = 16
#: Most keys plus values inside ``attributes``, all levels counted.
MAX_ATTRIBUTES_ITEMS = 2_000
_SURROGATE = re.compile("[\ud800-\udfff]")


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(default=None, max_length=512)
    name: str | None = Field(default=None, max_length=512)


class Event(BaseModel):
    """One normalized vendor event.

    ``agent_id`` set: the vendor's ACD already chose the agent (targeted).
    ``queue`` set: the gateway picks an agent of that queue (untargeted).
    ``priority``: higher is served first among interactions waiting in a queue.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    vendor: str = _ID
    event_id: str = _ID
    type: EventType
    interaction_id: str = _ID
    channel: Channel | None = None
    agent_id: str | None = Field(default=None, min_length=1, max_length=256)
    queue: str | None = Field(default=None, min_length=1, max_length=256)
    priority: int = Field(default=0, ge=-1000, le=1000)
    customer: Customer | None = None
    subject: str | None = Field(default=None, max_length=4096)
    text: str | None = Field(default=None, max_length=65536)
    occurred_at: datetime
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone offset (RFC 3339)")
        try:
            utc = value.astimezone(timezone.utc)
            utc.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError("is out of range once converted to UTC") from None
        return utc

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = free_form_problem(value, max_depth=MAX_ATTRIBUTES_DEPTH, max_items=MAX_ATTRIBUTES_ITEMS)
        if problem is not None:
            where, message = problem
            raise _FieldProblem(("attributes" + where)[:200], message)
        return value

    @model_validator(mode="after")
    def _offer_rules(self) -> Event:
        if self.type is EventType.OFFER:
            if self.channel is None:
                raise _FieldProblem("channel", "required on an offer")
            if self.channel is Channel.MANUAL:
                raise _FieldProblem("channel", "a vendor cannot offer a manual session")
            if self.agent_id is None and self.queue is None:
                raise _FieldProblem("queue", "an offer names an agent_id or a queue")
        return self

    @property
    def targeted(self) -> bool:
        return self.agent_id is not None

    @property
    def key(self) -> tuple[str, str]:
        """Idempotency key: the same vendor event id is the same event."""
        return (self.vendor, self.event_id)

    @property
    def interaction_key(self) -> tuple[str, str]:
        return (self.vendor, self.interaction_id)


class _FieldProblem(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


#: the field names of Event and Customer (``Model.model_fields`` is a property that builds
#: its answer on every read: 1.3% of the gateway's CPU under load, read per webhook event)
_EVENT_FIELDS = frozenset(Event.model_fields)
_CUSTOMER_FIELDS = frozenset(Customer.model_fields)


def drop_unknown_fields(data: Any) -> tuple[Any, list[str]]:
    """``data`` without the fields :class:`Event` does not know, and their names.

    Vendors add fields over time; a lenient adapter ignores them instead of refusing the
    event. Unknown top-level keys and unknown keys inside ``customer`` (when it is an
    object) are dropped and named (``"foo"``, ``"customer.bar"``, in the body's order);
    everything else is left for :func:`parse_event` to judge. ``data`` itself is not
    changed; anything but a JSON object is returned as it is.
    """
    if not isinstance(data, dict):
        return data, []
    known = _EVENT_FIELDS
    kept = {key: value for key, value in data.items() if key in known}
    dropped = [_shown_name(key) for key in data if key not in known]
    customer = kept.get("customer")
    if isinstance(customer, dict):
        customer_fields = _CUSTOMER_FIELDS
        kept["customer"] = {key: value for key, value in customer.items() if key in customer_fields}
        dropped += [f"customer.{_shown_name(key)}" for key in customer if key not in customer_fields]
    return kept, dropped


def free_form_problem(value: Any, *, max_depth: int, max_items: int, depth: int = 0) -> tuple[str, str] | None:
    """What makes untrusted JSON data unfit to store and forward, or None.

    Returns ``(where, message)``, ``where`` being a path such as ``.a.0.b`` (empty: the
    value itself): a string or key holding a lone surrogate (JSON allows ``"\\ud800"``, UTF-8
    does not), a key that is not a string, a float that is not finite, a value that is not
    JSON, nesting deeper than ``max_depth`` or more than ``max_items`` keys and values
    (``depth``: the level of ``value`` itself, -1 for an object whose fields are checked
    as free-form values). Iterative, so any depth is checked without recursion.
    """
    items = 0
    stack: list[tuple[Any, str, int]] = [(value, "", depth)]
    while stack:
        item, where, depth = stack.pop()
        items += 1
        if items > max_items:
            return "", f"holds more than {max_items} keys and values"
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where, "holds a lone surrogate (not valid Unicode)"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return where, f"is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return where, "keys must be strings"
                    items += 1
                    if _SURROGATE.search(key):
                        return f"{where}.{_shown(key)}", "the key holds a lone surrogate (not valid Unicode)"
                    stack.append((child, f"{where}.{key}", depth + 1))
            else:
                stack.extend((child, f"{where}.{index}", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, "numbers must be finite"
        elif item is not None and not isinstance(item, bool | int):
            return where, f"{type(item).__name__} is not a JSON value"
    return None


def _shown(key: str) -> str:
    return key.encode("ascii", "backslashreplace").decode("ascii")[:64]


def check_body(data: Any) -> None:
    """Refuse (:class:`InvalidEvent`) a decoded event body that no event may carry.

    Checked on the whole body, unknown fields included (call it before
    :func:`drop_unknown_fields`), so that no field can smuggle text that cannot be stored
    or sent on (see :func:`free_form_problem`); ``attributes`` gets its own, tighter limits
    in :class:`Event`. :func:`parse_event` calls it too.
    """
    problem = free_form_problem(data, max_depth=MAX_ATTRIBUTES_DEPTH, max_items=4 * MAX_ATTRIBUTES_ITEMS, depth=-1)
    if problem is not None:
        where, message = problem
        raise InvalidEvent(where.lstrip(".")[:200] or "body", message)


#: longest unknown field name shown (in logs) as it is
_NAME_CHARS = 64


def _shown_name(key: Any) -> str:
    """A field name safe to log: printable ASCII (other characters escaped, a lone surrogate
    included), at most :data:`_NAME_CHARS` characters (then ``…``)."""
    name = str(key)
    if not (name.isascii() and name.isprintable()):
        name = ascii(name)[1:-1]
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "…"


def parse_event(data: Any, *, vendor: str, received_at: float, checked: bool = False) -> Event:
    """Validate untrusted event data (e.g. a webhook body) into an :class:`Event`.

    ``vendor`` comes from the transport (the URL or the adapter), never from the body.
    ``occurred_at`` defaults to ``received_at`` (epoch seconds). ``checked``: the caller
    passed ``data`` (or a body it was taken from by :func:`drop_unknown_fields`) through
    :func:`check_body` already: it is not walked a second time.
    """
    if not isinstance(data, dict):
        raise InvalidEvent("body", "must be a JSON object")
    if not checked:
        check_body(data)
    if "vendor" in data:
        raise InvalidEvent("vendor", "is given by the vendor's URL or connection, not the body")
    payload = dict(data)
    payload["vendor"] = vendor
    if payload.get("occurred_at") is None:
        payload["occurred_at"] = datetime.fromtimestamp(received_at, tz=timezone.utc)
    try:
        return Event.model_validate(payload)
    except ValidationError as exc:
        raise _invalid_from(exc) from None
    except _FieldProblem as exc:  # pragma: no cover - pydantic wraps it, kept for safety
        raise InvalidEvent(exc.field, exc.message) from None


def _invalid_from(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    ctx = err.get("ctx") or {}
    original = ctx.get("error")
    if isinstance(original, _FieldProblem):
        return InvalidEvent(original.field, original.message)
    loc = ".".join(str(part) for part in err.get("loc", ())) or "body"
    message = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
    elif err.get("type") == "missing":
        message = "required"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return InvalidEvent(loc, message)
