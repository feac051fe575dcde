"""Interactions: one customer contact as the vendor knows it, and what its CMS can do."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .events import INBOUND_CHANNELS, Channel, Customer
from .notices import Decision

InteractionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class VendorCapabilities:
    """What a vendor's CMS can do; the router respects it (declared by the adapter)."""

    channels: frozenset[Channel] = frozenset(INBOUND_CHANNELS)
    can_reject: bool = True
    can_transfer: bool = True
    #: how many live calls of this vendor one agent may hold (None: no vendor limit)
    max_voice_per_agent: int | None = None


class Phase(StrEnum):
    WAITING = "waiting"  # in a waiting list, no session
    OFFERED = "offered"  # its holder session is offered (or its parallel offers are out)
    ACTIVE = "active"  # its holder session is active (a consult target may be offered)
    DONE = "done"  # ended, rejected, or completed by the agent


@dataclass(eq=False, slots=True)
class Interaction:
    vendor: str
    interaction_id: str
    channel: Channel
    offer_event_id: str
    queue: str | None
    target_agent: str | None
    priority: int
    customer: Customer | None
    subject: str | None
    created_at: float
    phase: Phase = Phase.OFFERED
    #: agents who declined or missed it: never offered it again
    excluded: set[str] = field(default_factory=set)
    #: the session that holds it (offered or active)
    holder: str | None = None
    #: a consult transfer's target session, while it is offered
    pending: str | None = None
    #: a parallel offer's sessions (queue ``policy: offer_all``), all offered, while no agent
    #: has accepted it (``holder`` is None meanwhile); the first accept wins
    parallel: list[str] = field(default_factory=list)
    wait_deadline: float | None = None
    #: arrival order in its waiting list (kept so a restart restores the same order)
    wait_seq: int | None = None
    account_id: str | None = None
    done_at: float | None = None
    #: the customer's latest messages (chat), replayed to whoever is offered it next
    transcript: list[dict[str, Any]] = field(default_factory=list)
    #: every decision given to the vendor about its offer, in order
    decisions: list[Decision] = field(default_factory=list)

    @property
    def key(self) -> InteractionKey:
        return (self.vendor, self.interaction_id)
