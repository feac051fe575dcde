"""The normalized event model: what every adapter turns its vendor's traffic into.

Events are frozen pydantic models with no framework or vendor types in them. Use
:func:`parse_event` for untrusted input: it raises :class:`~gateway.errors.InvalidEvent`
naming the field at fault.
"""

from __future__ import annotations

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
        return value.astimezone(timezone.utc)

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
    known = Event.model_fields
    kept = {key: value for key, value in data.items() if key in known}
    dropped = [str(key) for key in data if key not in known]
    customer = kept.get("customer")
    if isinstance(customer, dict):
        customer_fields = Customer.model_fields
        kept["customer"] = {key: value for key, value in customer.items() if key in customer_fields}
        dropped += [f"customer.{key}" for key in customer if key not in customer_fields]
    return kept, dropped


def parse_event(data: Any, *, vendor: str, received_at: float) -> Event:
    """Validate untrusted event data (e.g. a webhook body) into an :class:`Event`.

    ``vendor`` comes from the transport (the URL or the adapter), never from the body.
    ``occurred_at`` defaults to ``received_at`` (epoch seconds).
    """
    if not isinstance(data, dict):
        raise InvalidEvent("body", "must be a JSON object")
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
