"""What the core tells the edges: decisions and notices, plain frozen data.

The engine never does I/O. Each call leaves notices in its outbox; the server drains them
and delivers: :class:`ToAgent` to the agent's desktop socket, :class:`ToVendor` through the
vendor's adapter, :class:`SessionChanged` / :class:`PresenceChanged` to the journal and the
supervisor stream, :class:`Routed` to the supervisor stream and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DecisionKind(StrEnum):
    ASSIGNED = "assigned"
    REJECTED = "rejected"
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    #: a non-offer event (message, update, end) was applied
    ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    agent_id: str | None = None
    session_id: str | None = None
    reason: str | None = None
    #: for ``duplicate``: the first answer, repeated
    original: Decision | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.kind is DecisionKind.DUPLICATE and self.original is not None:
            first = self.original.as_dict()
            first["first_decision"] = first["decision"]
            first["decision"] = DecisionKind.DUPLICATE.value
            return first
        body: dict[str, Any] = {"decision": self.kind.value}
        if self.kind is DecisionKind.ASSIGNED:
            body.update(agent_id=self.agent_id, session_id=self.session_id)
        elif self.kind is DecisionKind.REJECTED:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class ToAgent:
    """A desktop message (DESIGN section 6: ``session.offered``, ``chat.message`` ...)."""

    agent_id: str
    message: dict[str, Any]


class VendorAction(StrEnum):
    #: a decision made after the synchronous answer: from a waiting list, a re-route, a rejection
    DECISION = "decision"
    #: the agent accepted the offer (the CMS may bridge the call)
    ACCEPTED = "accepted"
    #: the interaction moved to another agent (blind, or a consult the target accepted)
    TRANSFERRED = "transferred"
    #: the agent ended the interaction
    ENDED = "ended"
    #: a chat reply typed by the agent
    REPLY = "reply"


@dataclass(frozen=True, slots=True)
class ToVendor:
    vendor: str
    interaction_id: str
    action: VendorAction
    data: dict[str, Any] = field(default_factory=dict)
    #: the offer event this relates to (for decisions)
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A session transition; ``session`` is the session object after it."""

    transition: str
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    agent_id: str
    state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class Routed:
    """An inbound event and the answer it got; ``event`` is the whole normalized event (JSON)."""

    vendor: str
    event_id: str
    event_type: str
    interaction_id: str
    channel: str | None
    decision: Decision
    event: dict[str, Any] = field(default_factory=dict)


Notice = ToAgent | ToVendor | SessionChanged | PresenceChanged | Routed
