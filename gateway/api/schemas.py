"""Pydantic models of what the API answers (DESIGN section 6), for the OpenAPI document.

The handlers build their answers as dicts (:meth:`gateway.sessions.Session.as_dict`,
:meth:`gateway.engine.Engine.agent`, :meth:`gateway.notices.Decision.as_dict`, the report
rows, ``/readyz``, the WebSocket messages); these models describe them. Every model is
closed (``extra="forbid"``; errors excepted: their extra keys add detail) and every key the
code always writes is required, so a key added to a dict without its model fails
``tests/api/test_response_models.py``, which validates real answers of a running gateway
against them. :mod:`.openapi` turns them into ``components/schemas``.

A key that is sometimes absent (never null) is ``AbsentStr`` / ``AbsentBool``: optional,
typed without null in the document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, WithJsonSchema, create_model

from gateway.capacity import Presence
from gateway.events import Channel, Customer, Event
from gateway.notices import DecisionKind, VendorAction
from gateway.records.report import REPORT_COLUMNS
from gateway.sessions import AccountState, Outcome, SessionState

from .admin import Reloaded

__all__ = [
    "RESPONSE_MODELS",
    "Agent",
    "AgentList",
    "Colleague",
    "Decision",
    "Error",
    "Health",
    "Ready",
    "Rejection",
    "Report",
    "ReportRow",
    "Session",
    "TransferResult",
    "WebhookEvent",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: an RFC 3339 UTC time, as the API writes it (``2024-05-01T08:00:00.000Z``)
Time = datetime
#: a duration in whole milliseconds
Ms = NonNegativeInt
#: a string key that is sometimes left out, never null
AbsentStr = Annotated[str | None, WithJsonSchema({"type": "string"})]


class Account(_Out):
    state: AccountState
    id: str | None


class Note(_Out):
    text: str
    at: Time


class Session(_Out):
    """One slot of one agent holding one interaction (:meth:`gateway.sessions.Session.as_dict`)."""

    id: str
    agent_id: str
    channel: Channel
    state: SessionState
    vendor: str | None = Field(description="null for manual sessions")
    interaction_id: str | None
    queue: str | None
    customer: Customer | None
    subject: str | None
    label: str = Field(description="tab title")
    profile: str = Field(description="desktop start screen for this channel")
    account: Account
    offered_at: Time
    accepted_at: Time | None
    ended_at: Time | None
    closed_at: Time | None
    handle_ms: Ms | None = Field(description="accepted -> ended")
    wrap_ms: Ms | None = Field(description="ended -> closed")
    focus_ms: Ms = Field(description="sum of the focused intervals")
    outcome: Outcome | None
    notes: list[Note]
    transferred_from: str | None = Field(description="the session this one was transferred from")
    transferred_to: str | None = Field(description="the session this one was transferred to")
    focused: bool
    flagged: bool = Field(description="active while the agent's desktop is gone past its grace period")


class AgentPresence(_Out):
    state: Presence
    reason: str | None


class InUse(_Out):
    """Occupying sessions and units, in total and per channel."""

    sessions: Ms
    units: Ms
    voice: Ms
    chat: Ms
    email: Ms
    manual: Ms


class FreeCapacity(_Out):
    """How many more sessions of each channel the agent could take now, presence aside."""

    voice: Ms
    chat: Ms
    email: Ms
    manual: Ms


class Agent(_Out):
    """The agent object (:meth:`gateway.engine.Engine.agent`)."""

    id: str
    name: str
    profile: str = Field(description="capacity profile name")
    queues: list[str]
    presence: AgentPresence
    in_use: InUse
    desktop_connected: bool
    sessions: list[Session] = Field(description="open sessions")


class Colleague(_Out):
    """What an agent token sees of every agent (for transfers)."""

    id: str
    name: str
    presence: AgentPresence
    free_capacity: FreeCapacity


class AgentList(_Out):
    agents: list[Agent | Colleague] = Field(
        description="supervisor token: Agent objects; agent token: Colleague objects"
    )


class TransferResult(_Out):
    """The source session after the transfer and the target's offered session."""

    session: Session
    target: Session


class ReportRow(_Out):
    """One session record of the report; the CSV has the same columns, in this order."""

    session_id: str
    interaction_id: str | None
    vendor: str | None
    channel: Channel
    agent_id: str
    queue: str | None
    offered_at: Time | None
    accepted_at: Time | None
    ended_at: Time | None
    closed_at: Time | None
    handle_ms: Ms | None
    wrap_ms: Ms | None
    focus_ms: Ms | None
    outcome: Outcome | None
    account_id: str | None
    transferred_from: str | None
    transferred_to: str | None


assert tuple(ReportRow.model_fields) == REPORT_COLUMNS, "ReportRow drifted from REPORT_COLUMNS"


class Report(_Out):
    sessions: list[ReportRow]


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
    ready: bool
    store: Literal["up", "down"]
    records: Literal["up", "down"] = Field(
        description="the session records (reports): the journal's own, or a records store of its own (PostgreSQL)"
    )
    adapters: dict[str, Literal["up", "down"]]
    accepting: bool
    vendors: dict[str, dict[str, Any]] = Field(
        description="per vendor: adapter, channels, health, can_reject, can_transfer and "
        "the adapter's own details (the webhook: callbacks, strict)"
    )
    warnings: list[str] = Field(description="what vendors' settings leave out, e.g. a webhook without callback_url")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    code: str = Field(description="stable, for programs (e.g. unauthorized, session_not_found)")
    message: str = Field(description="for humans")
    field: AbsentStr = Field(default=None, description="the field at fault, for invalid requests")


class Error(_Out):
    """Every error: ``{"error": {"code", "message", ...}}``; more keys add detail."""

    error: ErrorDetail


class Decision(_Out):
    """assigned: agent_id and session_id; duplicate: the first answer repeated, with first_decision."""

    decision: Literal[DecisionKind.ASSIGNED, DecisionKind.QUEUED, DecisionKind.ACCEPTED, DecisionKind.DUPLICATE]
    agent_id: AbsentStr = None
    session_id: AbsentStr = None
    reason: AbsentStr = Field(default=None, description="a duplicate of a rejection")
    first_decision: Annotated[
        DecisionKind | None,
        WithJsonSchema({"type": "string", "enum": [k.value for k in DecisionKind if k is not DecisionKind.DUPLICATE]}),
    ] = None


class Rejection(_Out):
    decision: Literal[DecisionKind.REJECTED]
    reason: str


_EVENT_FIELDS: dict[str, Any] = {
    name: (info.annotation, info) for name, info in Event.model_fields.items() if name not in ("vendor", "occurred_at")
}
_EVENT_FIELDS["occurred_at"] = (datetime | None, Field(default=None, description="default: the time of receipt"))

#: the generic webhook's body: :class:`gateway.events.Event` without ``vendor`` (the URL
#: names it) and with ``occurred_at`` optional
WebhookEvent: type[BaseModel] = create_model(
    "WebhookEvent",
    __config__=ConfigDict(
        extra="forbid",
        json_schema_extra={"description": "an offer names an agent_id (targeted) or a queue (untargeted)"},
    ),
    **_EVENT_FIELDS,
)


# --------------------------------------------------------------------------- WebSocket messages
# what the gateway sends on the desktop socket (/v1/agents/{id}/ws) and the supervisor stream
# (/v1/events/ws); the client messages are :data:`gateway.api.models.WS_MESSAGES`

#: a boolean key that is sometimes left out
AbsentBool = Annotated[bool | None, WithJsonSchema({"type": "boolean"})]
#: the ``ref`` of the client message answered (null when it had none)
Ref = str | int | None


class WsHello(_Out):
    """The first message: the agent's full snapshot (again after a reconnect)."""

    type: Literal["hello"]
    agent: Agent


class WsSessionMessage(_Out):
    """A session of the agent was offered (``alert: true``, never a focus order), opened, changed or closed."""

    type: Literal["session.offered", "session.opened", "session.updated", "session.closed"]
    session: Session
    alert: AbsentBool = None


class WsChatMessage(_Out):
    """A chat line of one of the agent's sessions: the customer's (with ``customer``) or an agent's."""

    type: Literal["chat.message"]
    session_id: str
    text: str | None
    sender: Literal["customer", "agent"]
    customer: Annotated[Customer | None, Field(description="sender customer")] = None
    agent_id: AbsentStr = Field(default=None, description="sender agent")
    at: Time
    alert: bool = Field(description="true unless that session is focused")
    replay: AbsentBool = Field(default=None, description="history sent with an offer")


class WsAgentPresence(_Out):
    type: Literal["agent.presence"]
    presence: AgentPresence


class WsAck(_Out):
    """A client message done: session actions carry the session after it (transfer: and the target)."""

    type: Literal["ack"]
    ref: Ref
    session: Session | None = None
    target: Session | None = None


class WsError(BaseModel):
    """A client message refused (the socket stays open); more keys add detail, like ``field``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["error"]
    ref: Ref
    code: str
    message: str
    field: AbsentStr = None


class WsPong(_Out):
    type: Literal["pong"]
    ref: Ref


class StreamEventRouted(_Out):
    """An inbound event and the answer it got."""

    type: Literal["event.routed"]
    vendor: str
    event_id: str
    event_type: str
    interaction_id: str
    channel: Channel | None
    event: dict[str, Any] = Field(description="the whole normalized event")
    decision: Decision | Rejection


class StreamSessionChanged(_Out):
    type: Literal["session.changed"]
    transition: str
    session: Session


class StreamAgentPresence(_Out):
    type: Literal["agent.presence"]
    agent_id: str
    state: Presence
    reason: str | None


class StreamVendorNotice(_Out):
    """What goes back to a vendor (a late decision, accepted, transferred, ended, a reply)."""

    type: Literal["vendor.notice"]
    vendor: str
    interaction_id: str
    action: VendorAction
    event_id: str | None
    data: dict[str, Any]


class StreamConfigReloaded(Reloaded):
    """A reload of the configuration was applied (the same fields as ``POST /v1/admin/reload`` answers)."""

    type: Literal["config.reloaded"]


#: message type -> model, of what the desktop socket sends
DESK_MESSAGES: dict[str, type[BaseModel]] = {
    "hello": WsHello,
    **dict.fromkeys(("session.offered", "session.opened", "session.updated", "session.closed"), WsSessionMessage),
    "chat.message": WsChatMessage,
    "agent.presence": WsAgentPresence,
    "ack": WsAck,
    "error": WsError,
    "pong": WsPong,
}
#: message type -> model, of what the supervisor stream sends
STREAM_MESSAGES: dict[str, type[BaseModel]] = {
    "event.routed": StreamEventRouted,
    "session.changed": StreamSessionChanged,
    "agent.presence": StreamAgentPresence,
    "vendor.notice": StreamVendorNotice,
    "config.reloaded": StreamConfigReloaded,
    "pong": WsPong,
}


#: every response model, in document order
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Session,
    Agent,
    Colleague,
    AgentList,
    TransferResult,
    Report,
    Health,
    Ready,
    Decision,
    Rejection,
    *dict.fromkeys((*DESK_MESSAGES.values(), *STREAM_MESSAGES.values())),
)
