"""The engine's shared state and the small helpers every concern uses.

:class:`EngineState` holds everything the engine knows: the agents (with their open
sessions), the sessions and interactions, the timers, the waiting lines and the eligibility
index, the notices for the edges (:attr:`EngineState.outbox`), what changed for the journal,
the injected clock and id factory. The concern modules (:mod:`.offers`, :mod:`.sessions`,
:mod:`.transfers`, :mod:`.focus`, :mod:`.agents`, :mod:`.timers`, :mod:`.restore`,
:mod:`.inbound`) are functions of this one object; :class:`~gateway.engine.Engine` is the
facade over them. Nothing here does I/O or reads a clock of its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..clock import Clock
from ..config import AgentConfig, CapacityProfile, GatewayConfig, QueueConfig
from ..errors import Forbidden, InvalidState, NotFound
from ..events import Channel, Event
from ..interactions import Interaction, InteractionKey, VendorCapabilities
from ..notices import Decision, Notice, Routed, SessionChanged, ToAgent, ToVendor, VendorAction
from ..persistence import StateDict, decision_to_state
from ..router import EligibilityIndex, WaitingLists
from ..sessions import Session, SessionSnapshot, SessionState, session_body
from ..state import StateStore


class Timer(StrEnum):
    OFFER = "offer"
    WRAP = "wrap"
    WAIT = "wait"
    GRACE = "grace"
    #: while focus time counts: note in the journal that the gateway is alive (see restore)
    CHECKPOINT = "checkpoint"


#: a pending timer: (deadline, sequence, kind, reference: session id, interaction key or agent id)
TimerEntry = tuple[float, int, Timer, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    """A capacity profile's numbers the hot path needs, read once (the profile is a pydantic
    model: each attribute read costs several plain ones). See :func:`limits`."""

    profile: CapacityProfile
    max_sessions: int
    unit_limit: int
    #: per inbound channel: the channel's cap (max_sessions when it has none) and weight
    voice_cap: int
    voice_weight: int
    chat_cap: int
    chat_weight: int
    email_cap: int
    email_weight: int
    #: per channel: ``profile.weight``, ``profile.start_screen``, ``profile.offer_timeout``
    weight: dict[Channel, int]
    start_screen: dict[Channel, str]
    offer_timeout: dict[Channel, float]

    @classmethod
    def of(cls, profile: CapacityProfile) -> Limits:
        return cls(
            profile,
            profile.max_sessions,
            profile.unit_limit,
            profile.channels.get(Channel.VOICE, profile.max_sessions),
            profile.weight(Channel.VOICE),
            profile.channels.get(Channel.CHAT, profile.max_sessions),
            profile.weight(Channel.CHAT),
            profile.channels.get(Channel.EMAIL, profile.max_sessions),
            profile.weight(Channel.EMAIL),
            {channel: profile.weight(channel) for channel in Channel},
            {channel: profile.start_screen(channel) for channel in Channel},
            {channel: profile.offer_timeout(channel) for channel in Channel},
        )


def limits(agent: AgentEntry) -> Limits:
    """The agent's profile's :class:`Limits` (computed again when the profile changed): one
    object per profile, shared by its agents (a copy per agent was ~0.5 KB each: 10,000
    agents of one profile held 10,000 equal copies)."""
    found = agent.limits
    if found is None or found.profile is not agent.profile:
        found = agent.limits = _shared_limits(agent.profile)
    return found


#: the :class:`Limits` of recent profile objects by their id (the entry holds the profile,
#: so its id is not reused while it is here); a pure cache: Limits.of(profile) is a function
#: of the (never mutated) profile. Emptied when it is full (each reload makes new profiles).
_LIMITS: dict[int, Limits] = {}
_LIMITS_MAX = 256


def _shared_limits(profile: CapacityProfile) -> Limits:
    found = _LIMITS.get(id(profile))
    if found is None or found.profile is not profile:
        if len(_LIMITS) >= _LIMITS_MAX:
            _LIMITS.clear()
        found = _LIMITS[id(profile)] = Limits.of(profile)
    return found


@dataclass(slots=True)
class AgentEntry:
    config: AgentConfig
    profile: CapacityProfile
    open_sessions: dict[str, Session] = field(default_factory=dict)
    focused: str | None = None
    #: (time, sequence) of becoming ready or of the last offer: longest_idle sorts on it
    idle_since: tuple[float, int] = (0.0, 0)
    desktop_connected: bool = False
    #: the gateway instances holding at least one of its desktops ("" for the embedded
    #: gateway): connected while any does; the last one's disconnect starts the grace period
    desktop_hosts: frozenset[str] = frozenset()
    grace_deadline: float | None = None
    #: removed from the configuration by a reload while it held sessions: they finish
    #: normally, it takes no new work, and it goes when the last one closes
    retiring: bool = False
    #: the profile's numbers for the eligibility index (see :func:`.slots.refresh`)
    limits: Limits | None = None

    @property
    def queues(self) -> tuple[str, ...]:
        return () if self.retiring else tuple(self.config.queues)


@dataclass(slots=True, eq=False)
class EngineState:
    """Everything one engine knows; every concern reads and changes it through this object."""

    config: GatewayConfig
    clock: Clock
    store: StateStore
    new_id: Callable[[], str]
    caps: dict[str, VendorCapabilities]
    dedup_window: float
    closed_retention: float
    #: event ids (with their first decision) kept in :attr:`dedup`, the most recent ones
    cached_events: int
    #: finished interactions and closed sessions kept in memory (each), the most recent ones
    cached_finished: int
    grace_s: float
    checkpoint_s: float
    queues: dict[str, QueueConfig]
    agents: dict[str, AgentEntry]
    index: EligibilityIndex
    waiting: WaitingLists = field(default_factory=WaitingLists)
    sessions: dict[str, Session] = field(default_factory=dict)
    interactions: dict[InteractionKey, Interaction] = field(default_factory=dict)
    #: recent event ids -> (first seen, first decision); older ones are in the journal only
    #: (the runtime looks them up and passes them in: :class:`Recalled`)
    dedup: OrderedDict[tuple[str, str], tuple[float, Decision]] = field(default_factory=OrderedDict)
    #: the latest first-seen time of an event id the journal may hold and :attr:`dedup` does
    #: not (evicted by count, or not loaded at restore); None: none, so an id missing from
    #: :attr:`dedup` is new and the journal is not asked; infinity until :func:`restore`
    #: says what was loaded (an engine that was never restored knows nothing of the journal)
    dedup_forgotten_until: float | None = math.inf
    # what ended, oldest first, for pruning (by age and by count): (at, object)
    finished_interactions: deque[tuple[float, Interaction]] = field(default_factory=deque)
    finished_sessions: deque[tuple[float, Session]] = field(default_factory=deque)
    timers: list[TimerEntry] = field(default_factory=list)
    timer_seq: int = 0
    idle_seq: int = 0
    checkpoint_at: float | None = None
    alive_due: bool = False
    #: notices for the edges, some still to be built (see :class:`Later`, :func:`expand`)
    outbox: list[Notice | Later] = field(default_factory=list)
    # what changed since the last take_changes(), for the journal
    dirty_sessions: dict[str, Session] = field(default_factory=dict)
    dirty_interactions: dict[InteractionKey, Interaction] = field(default_factory=dict)
    dirty_agents: set[str] = field(default_factory=set)
    new_events: list[StateDict | EventRecord] = field(default_factory=list)
    #: agents whose presence or load changed (for adapters that mirror it to their CMS)
    touched: set[str] = field(default_factory=set)
    #: reloads applied (journaled, so it survives restarts) and when the last one was
    generation: int = 0
    reloaded_at: float | None = None
    #: removed agents that still hold sessions: id -> {"agent": ..., "profile": ...}
    #: (journaled: a restart on the new file keeps them until their sessions close)
    retired: dict[str, StateDict] = field(default_factory=dict)
    config_dirty: bool = False


@dataclass(frozen=True, slots=True)
class Recalled:
    """What the journal holds about an event that the engine no longer keeps in memory,
    read by the runtime before the engine decides (the engine itself does no I/O).

    ``event``: the journaled row of the same ``(vendor, event_id)`` (with ``at`` and the
    first ``decision``), or None: never seen. ``interaction``: the journaled state dict of
    the event's interaction, or None. Rows outside the de-duplication window are ignored.
    """

    event: StateDict | None = None
    interaction: StateDict | None = None


@dataclass(frozen=True, slots=True)
class Missing:
    """What :class:`Recalled` should bring for one event (nothing: the engine knows all)."""

    event: bool
    interaction: bool

    def __bool__(self) -> bool:
        return self.event or self.interaction


def account_id_of(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get("account_id")
    return str(value)[:256] if value not in (None, "") else None


# ---------------------------------------------------------------------- lookups


def live_sessions(st: EngineState, interaction: Interaction) -> Iterator[Session]:
    for session_id in (interaction.holder, interaction.pending, *interaction.parallel):
        session = st.sessions.get(session_id) if session_id else None
        if session is not None and session.state in (SessionState.OFFERED, SessionState.ACTIVE):
            yield session


def find_agent(st: EngineState, agent_id: str) -> AgentEntry:
    agent = st.agents.get(agent_id)
    if agent is None:
        raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
    return agent


def authorize(agent_id: str, actor: str | None) -> None:
    if actor is not None and actor != agent_id:
        raise Forbidden(f"agent {actor} may not act for agent {agent_id}", code="forbidden")


def own_session(st: EngineState, session_id: str, actor: str | None) -> Session:
    session = st.sessions.get(session_id)
    if session is None:
        raise NotFound(f"no session {session_id!r}", code="session_not_found")
    if actor is not None and session.agent_id != actor:
        raise Forbidden(f"session {session_id} is not agent {actor}'s", code="forbidden")
    return session


def workable(st: EngineState, session_id: str, actor: str | None) -> Session:
    """A session the agent may still write on: active or in wrap-up."""
    session = own_session(st, session_id, actor)
    if session.state not in (SessionState.ACTIVE, SessionState.WRAP_UP):
        raise InvalidState(
            f"session {session_id} is {session.state.value}, not active or in wrap-up",
            code="session_not_active",
        )
    return session


def interaction_of(st: EngineState, session: Session) -> Interaction | None:
    if session.vendor is None or session.interaction_id is None:
        return None
    return st.interactions.get((session.vendor, session.interaction_id))


# ---------------------------------------------------------------------- notices


def forgotten(st: EngineState, at: float) -> None:
    """An event id first seen at ``at`` is in the journal only from now on."""
    until = st.dedup_forgotten_until
    if until is None or at > until:
        st.dedup_forgotten_until = at


class Later:
    """Notices in the outbox whose bodies are built when the outbox is read (:func:`expand`,
    by ``drain``), from data fixed when they were made: the decision does not pay for
    formatting what it says (session objects, event bodies), the delivery does."""

    __slots__ = ()

    def notices(self) -> list[Notice]:
        raise NotImplementedError


class SessionNotices(Later):
    """A session transition: :class:`SessionChanged` and the agent's desktop message, both
    with the session object as it was at the transition (from its snapshot). The object is
    built once (:meth:`body`), and shared with the ack of the action that made the
    transition (:func:`session_object`)."""

    __slots__ = ("transition", "agent_id", "message", "extra", "snapshot", "now", "_body")

    def __init__(
        self, transition: str, agent_id: str, message: str, extra: dict[str, Any], snapshot: SessionSnapshot, now: float
    ) -> None:
        self.transition = transition
        self.agent_id = agent_id
        self.message = message
        self.extra = extra
        self.snapshot = snapshot
        self.now = now
        self._body: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = session_body(self.snapshot, self.now)
        return self._body

    def notices(self) -> list[Notice]:
        body = self.body()
        return [
            SessionChanged(self.transition, body),
            ToAgent(self.agent_id, {"type": self.message, "session": body, **self.extra}),
        ]


def session_object(st: EngineState, session: Session, now: float) -> dict[str, Any]:
    """The session's public object now, for the answer to an action (a desktop's ack, the
    REST answer): when the last notice in the outbox about this session shows it as it is
    now (the transition the action made), that notice's object, built once for both (a
    copy: the answer's dict is its own); else one built for ``now``. (The shared object
    is as of the transition, a moment earlier in the same call: an open focus interval
    counts to then.)"""
    snapshot = session.snapshot()
    session_id = snapshot[0]
    for item in reversed(st.outbox):
        if type(item) is SessionNotices and item.snapshot[0] == session_id:
            if item.snapshot == snapshot:
                return dict(item.body())
            break
    return session_body(snapshot, now)


class EventRecord(Later):
    """An inbound event and its decision: the :class:`Routed` notice and, for a new event id,
    the journal's row; the event's JSON body is built once, when the first of them is."""

    __slots__ = ("event", "at", "decision", "_body")

    def __init__(self, event: Event, at: float, decision: Decision) -> None:
        self.event = event
        self.at = at
        self.decision = decision
        self._body: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = self.event.model_dump(mode="json")
        return self._body

    def notices(self) -> list[Notice]:
        event = self.event
        return [
            Routed(
                event.vendor,
                event.event_id,
                event.type.value,
                event.interaction_id,
                event.channel.value if event.channel else None,
                self.decision,
                self.body,
            )
        ]

    def row(self) -> StateDict:
        event = self.event
        return {
            "vendor": event.vendor,
            "event_id": event.event_id,
            "at": self.at,
            "type": event.type.value,
            "interaction_id": event.interaction_id,
            "event": self.body,
            "decision": decision_to_state(self.decision),
        }


def expand(outbox: list[Notice | Later]) -> list[Notice]:
    """The outbox with its :class:`Later` entries built, in order."""
    if not any(isinstance(item, Later) for item in outbox):
        return outbox  # type: ignore[return-value]
    out: list[Notice] = []
    for item in outbox:
        if isinstance(item, Later):
            out.extend(item.notices())
        else:
            out.append(item)
    return out


def changed(
    st: EngineState, session: Session, transition: str, now: float, *, message: str = "session.updated", **extra: Any
) -> None:
    st.dirty_sessions[session.id] = session
    st.outbox.append(SessionNotices(transition, session.agent_id, message, extra, session.snapshot(), now))


def to_agent(st: EngineState, agent_id: str, message_type: str, /, **fields: Any) -> None:
    st.outbox.append(ToAgent(agent_id, {"type": message_type, **fields}))


def to_vendor(
    st: EngineState,
    interaction: Interaction,
    action: VendorAction,
    *,
    session: Session,
    source: Session | None = None,
    **fields: Any,
) -> None:
    data: dict[str, Any] = {"agent_id": session.agent_id, "session_id": session.id, **fields}
    if source is not None:
        data.update(from_agent_id=source.agent_id, from_session_id=source.id)
    st.outbox.append(ToVendor(interaction.vendor, interaction.interaction_id, action, data))
