"""What the engine hands to a journal, and gets back on start.

The engine tracks which sessions, interactions, agents and inbound events changed during a
call (:meth:`gateway.engine.Engine.take_changes`). The runtime writes those
:class:`Changes` to the journal and only then acknowledges anything (group commit: several
calls' changes may go in one transaction, in order). On start, the journal returns a
:class:`Snapshot` from which :meth:`gateway.engine.Engine.restore` rebuilds open sessions,
pending offers (timers re-armed), waiting interactions, presence, capacity counters
(recomputed from the open sessions, so they are exact by construction) and the event ids
still inside the de-duplication window.

Rows are plain JSON-able dicts ("state dicts"); a journal stores each whole, and indexes
the keys listed on each field below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

StateDict = dict[str, Any]


@dataclass(slots=True)
class Changes:
    #: session state dicts; indexed keys: ``id`` (unique), ``agent_id``, ``state``,
    #: ``offered_at`` (epoch s), ``closed_at`` (epoch s or None). The full session object
    #: of the API is under ``record``.
    sessions: list[StateDict] = field(default_factory=list)
    #: interaction state dicts; indexed keys: ``vendor`` + ``interaction_id`` (unique),
    #: ``phase``, ``done_at`` (epoch s or None).
    interactions: list[StateDict] = field(default_factory=list)
    #: agent state dicts; indexed key ``id`` (unique).
    agents: list[StateDict] = field(default_factory=list)
    #: inbound events with their decision; indexed keys ``vendor`` + ``event_id`` (unique),
    #: ``at`` (epoch s). Also holds ``type``, ``interaction_id``, ``event`` (the normalized
    #: event as JSON) and ``decision`` (the decision as JSON).
    events: list[StateDict] = field(default_factory=list)
    #: engine-wide counters (e.g. ordering sequences); one dict, merged key by key.
    meta: StateDict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.interactions or self.agents or self.events or self.meta)

    def extend(self, other: "Changes") -> None:
        self.sessions.extend(other.sessions)
        self.interactions.extend(other.interactions)
        self.agents.extend(other.agents)
        self.events.extend(other.events)
        self.meta.update(other.meta)


@dataclass(slots=True)
class Snapshot:
    #: sessions that were not closed (state offered, active or wrap_up)
    sessions: list[StateDict] = field(default_factory=list)
    #: interactions not done, and done ones with ``done_at`` inside the window
    interactions: list[StateDict] = field(default_factory=list)
    agents: list[StateDict] = field(default_factory=list)
    #: events with ``at`` inside the de-duplication window, oldest first
    events: list[StateDict] = field(default_factory=list)
    meta: StateDict = field(default_factory=dict)


class Journal(Protocol):
    """Durable storage for the engine's state and the session records."""

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Flush what is pending, then close."""
        ...

    async def commit(self, changes: Changes) -> None:
        """Return only once ``changes`` (and everything committed before) is durable.

        Later rows for the same key replace earlier ones (upsert by the unique keys).
        """
        ...

    async def load(self, *, since: float) -> Snapshot:
        """Open state, plus done interactions and events with time >= ``since``."""
        ...

    async def record(self, session_id: str) -> StateDict | None:
        """One session's state dict (open or closed), or None."""
        ...

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        """Session state dicts with ``offered_at`` in [start, end), oldest first."""
        ...

    async def ping(self) -> bool:
        """Whether the storage answers."""
        ...
