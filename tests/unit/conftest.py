"""Builders shared by the unit tests of the core: configs, engines, events, notice filters.

Engines are built on a :class:`~gateway.clock.ManualClock` starting at :data:`T0`, with a
deterministic session id counter (``s1``, ``s2`` ...). Unless told otherwise every agent is
made ``ready`` in config order at ``T0`` (so for ``longest_idle`` the first agent is the one
idle longest), and the outbox is drained, so a test sees only the notices of its own steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import INBOUND_CHANNELS, Channel, Customer, Event, EventType
from gateway.interactions import VendorCapabilities
from gateway.notices import Notice, PresenceChanged, Routed, SessionChanged, ToAgent, ToVendor, VendorAction
from gateway.sessions import OCCUPYING, SessionState

T0 = 1_700_000_000.0
VENDOR = "crm"

_event_ids = itertools.count(1)


# ---------------------------------------------------------------------------- configs


def agent_spec(agent_id: str, profile: str = "std", queues: Sequence[str] = ("support",)) -> dict[str, Any]:
    return {"id": agent_id, "name": agent_id.upper(), "profile": profile, "queues": list(queues)}


def make_config(
    *,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    queues: Sequence[Mapping[str, Any]] | None = None,
    agents: Sequence[Mapping[str, Any]] | None = None,
    desktop_grace_s: float = 60.0,
) -> GatewayConfig:
    """A valid config; default: profile ``std`` (3 sessions), queue ``support``, agents a1..a3."""
    config = GatewayConfig.model_validate(
        {
            "server": {"desktop_grace_s": desktop_grace_s},
            "store": {"url": "memory://"},
            "capacity_profiles": dict(profiles) if profiles is not None else {"std": {"max_sessions": 3}},
            "queues": list(queues) if queues is not None else [{"name": "support"}],
            "agents": list(agents) if agents is not None else [agent_spec(a) for a in ("a1", "a2", "a3")],
        }
    )
    assert config.reference_problems() == [], "the test config itself is inconsistent"
    return config


def make_engine(
    *,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    queues: Sequence[Mapping[str, Any]] | None = None,
    agents: Sequence[Mapping[str, Any]] | None = None,
    ready: Iterable[str] | None = None,
    desktop_grace_s: float = 60.0,
    capabilities: Mapping[str, VendorCapabilities] | None = None,
    dedup_window_s: float = 86_400.0,
    closed_retention_s: float = 3_600.0,
    desktops: Iterable[str] = (),
    cached_events: int | None = None,
    cached_finished: int | None = None,
) -> Engine:
    """An engine on a ManualClock at T0; ``ready`` agents (default: all, in order) made ready;
    the ``desktops`` agents have a desktop connected (focus time counts only then)."""
    config = make_config(profiles=profiles, queues=queues, agents=agents, desktop_grace_s=desktop_grace_s)
    ids = itertools.count(1)
    engine = Engine(
        config,
        clock=ManualClock(T0),
        new_id=lambda: f"s{next(ids)}",
        vendor_capabilities=capabilities,
        dedup_window_s=dedup_window_s,
        closed_retention_s=closed_retention_s,
        cached_events=cached_events,
        cached_finished=cached_finished,
    )
    for agent_id in engine.agent_ids() if ready is None else ready:
        engine.set_presence(agent_id, "ready")
    for agent_id in desktops:
        engine.desktop_connected(agent_id)
    engine.drain()
    return engine


def clock_of(engine: Engine) -> ManualClock:
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    return clock


def advance(engine: Engine, seconds: float) -> None:
    """Move the clock and let the engine fire what is due (as the server's timer would)."""
    clock_of(engine).advance(seconds)
    engine.tick()


def elapsed(engine: Engine) -> float:
    return engine.clock.now() - T0


# ---------------------------------------------------------------------------- events


def offer(
    interaction: str = "i1",
    *,
    channel: str = "chat",
    agent: str | None = None,
    queue: str | None = None,
    vendor: str = VENDOR,
    event_id: str | None = None,
    priority: int = 0,
    customer: Customer | None = None,
    subject: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Event:
    """An offer event; with neither ``agent`` nor ``queue`` it goes to queue ``support``."""
    if agent is None and queue is None:
        queue = "support"
    return Event(
        vendor=vendor,
        event_id=event_id or f"ev{next(_event_ids)}",
        type=EventType.OFFER,
        interaction_id=interaction,
        channel=Channel(channel),
        agent_id=agent,
        queue=queue,
        priority=priority,
        customer=customer,
        subject=subject,
        occurred_at=datetime.fromtimestamp(T0, tz=timezone.utc),
        attributes=dict(attributes or {}),
    )


def event(
    type_: str,
    interaction: str = "i1",
    *,
    vendor: str = VENDOR,
    event_id: str | None = None,
    text: str | None = None,
    customer: Customer | None = None,
    subject: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> Event:
    """A non-offer event (``message``, ``update``, ``end``, ``accept``, ``decline``) about an interaction."""
    return Event(
        vendor=vendor,
        event_id=event_id or f"ev{next(_event_ids)}",
        type=EventType(type_),
        interaction_id=interaction,
        agent_id=agent,
        text=text,
        customer=customer,
        subject=subject,
        occurred_at=datetime.fromtimestamp(T0, tz=timezone.utc),
        attributes=dict(attributes or {}),
    )


# ---------------------------------------------------------------------------- notices


def agent_messages(
    notices: Iterable[Notice], agent_id: str | None = None, type_: str | None = None
) -> list[dict[str, Any]]:
    """Desktop messages (ToAgent), optionally of one agent and/or one message type."""
    return [
        n.message
        for n in notices
        if isinstance(n, ToAgent)
        and (agent_id is None or n.agent_id == agent_id)
        and (type_ is None or n.message["type"] == type_)
    ]


def vendor_notices(notices: Iterable[Notice], action: VendorAction | None = None) -> list[ToVendor]:
    return [n for n in notices if isinstance(n, ToVendor) and (action is None or n.action is action)]


def transitions(notices: Iterable[Notice], session_id: str | None = None) -> list[str]:
    return [
        n.transition
        for n in notices
        if isinstance(n, SessionChanged) and (session_id is None or n.session["id"] == session_id)
    ]


def presence_notices(notices: Iterable[Notice]) -> list[PresenceChanged]:
    return [n for n in notices if isinstance(n, PresenceChanged)]


def routed(notices: Iterable[Notice]) -> list[Routed]:
    return [n for n in notices if isinstance(n, Routed)]


# ---------------------------------------------------------------------------- state checks


def in_use(engine: Engine, agent_id: str) -> dict[str, int]:
    return engine.agent(agent_id)["in_use"]


def assert_counters_exact(engine: Engine) -> None:
    """DESIGN section 4 invariants: counters equal the occupying sessions, no cap exceeded,
    at most one active session per interaction (two only while a consult is pending)."""
    for agent_id in engine.agent_ids():
        held = [s for s in engine.sessions.values() if s.agent_id == agent_id and s.state in OCCUPYING]
        profile = engine.profile_of(agent_id)
        expected = {
            "sessions": len(held),
            "units": sum(profile.weight(s.channel) for s in held),
            **{c.value: sum(1 for s in held if s.channel is c) for c in Channel},
        }
        assert in_use(engine, agent_id) == expected, f"counters of {agent_id} drifted"
        assert expected["sessions"] <= profile.max_sessions
        assert expected["units"] <= profile.unit_limit
        for c in Channel:
            assert expected[c.value] <= profile.cap(c)
        assert {s.id for s in engine.open_sessions(agent_id)} == {s.id for s in held}
    for key, interaction in engine.interactions.items():
        active = [
            s
            for s in engine.sessions.values()
            if (s.vendor, s.interaction_id) == key and s.state is SessionState.ACTIVE
        ]
        assert len(active) <= (2 if interaction.pending is not None else 1), f"{key} has {len(active)} active sessions"


def assert_all_zero(engine: Engine) -> None:
    for agent_id in engine.agent_ids():
        assert set(in_use(engine, agent_id).values()) == {0}, f"{agent_id} still holds capacity"


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything an illegal action must leave as it was."""
    now = engine.clock.now()
    return {
        "agents": {a: engine.agent(a) for a in engine.agent_ids()},
        "sessions": {sid: s.as_dict(now) for sid, s in engine.sessions.items()},
        "interactions": {
            key: (i.phase, i.holder, i.pending, sorted(i.excluded), i.target_agent, i.queue, list(i.decisions))
            for key, i in engine.interactions.items()
        },
        "waiting": engine.waiting(),
        "eligible": {(q, c): engine.eligible(q, c) for q in engine.queues for c in INBOUND_CHANNELS},
        "focus": {a: engine.focused_session(a) for a in engine.agent_ids()},
        "next_deadline": engine.next_deadline(),
        "outbox": list(engine.outbox),
    }
