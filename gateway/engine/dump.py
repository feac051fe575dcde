"""The engine's complete state as JSON, and back: what a snapshot of the shared log holds.

:func:`dump` writes everything an engine decides from (agents with their idle order,
presence and counters, the eligibility index, the waiting lines with their arrival
numbers, sessions, interactions, parallel offers and transfers, the de-duplication cache
in its eviction order, the finished work kept in memory in its pruning order, the timer
heap as it is laid out, the id and ordering counters), between two calls (nothing pending
in the outbox or the journal's changes). :func:`load` puts it on a fresh engine built from
the same configuration, which then decides exactly as the engine that was dumped: same
answers, same ids, same order, same timers (the property test replays a random log both
ways and compares every decision and every dump).

The dump is versioned (:data:`FORMAT`) and carries a fingerprint of what the engine is
built from (agents, profiles, queues, vendors' capabilities, grace period, retention):
:func:`load` refuses (:class:`DumpRefused`, with the reason) a dump of another format or
of another configuration rather than decide on a state it does not fit.

Pure: no I/O, no clock, no framework; the values are plain JSON (``inf`` as ``"inf"``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from dataclasses import asdict
from typing import Any

from ..capacity import Load, Presence
from ..config import AgentConfig, CapacityProfile
from ..interactions import Interaction
from ..persistence import (
    StateDict,
    decision_from_state,
    decision_to_state,
    interaction_from_state,
    interaction_to_state,
    session_from_state,
    session_to_state,
)
from ..router import EligibilityIndex
from ..sessions import Session
from ..state.base import AgentState
from .core import AgentEntry, EngineState, Timer, TimerEntry

__all__ = ["FORMAT", "DumpRefused", "dump", "fingerprint", "load"]

#: The dump's format; a change of what it holds or means takes a new number.
FORMAT = 1


class DumpRefused(ValueError):
    """A dump this engine must not load (another format or configuration, or not quiescent)."""


def fingerprint(st: EngineState) -> str:
    """What the engine is built from, as a hash: two engines that may share a dump agree on it."""
    config = st.config
    body = {
        "capacity_profiles": {k: v.model_dump(mode="json") for k, v in sorted(config.capacity_profiles.items())},
        "queues": [q.model_dump(mode="json") for q in st.queues.values()],
        "agents": [a.model_dump(mode="json") for a in config.agents],
        "caps": {name: asdict(c) for name, c in sorted(st.caps.items())},
        "grace_s": st.grace_s,
        "dedup_window": st.dedup_window,
        "closed_retention": st.closed_retention,
        "cached_events": st.cached_events,
        "cached_finished": st.cached_finished,
        "checkpoint_s": st.checkpoint_s,
    }
    text = json.dumps(body, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))
    return hashlib.sha256(text.encode()).hexdigest()


def _float(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _unfloat(value: Any) -> float | None:
    return math.inf if value == "inf" else (None if value is None else float(value))


def _session(session: Session) -> StateDict:
    body = session_to_state(session, 0.0)
    # what the public object is shown as of: the journal's, not state
    body.pop("as_of", None)
    body.pop("record", None)
    return body


def dump(st: EngineState) -> dict[str, Any]:
    """The engine's whole state (see the module docstring); it must be between calls."""
    if st.outbox or st.dirty_sessions or st.dirty_interactions or st.dirty_agents or st.new_events:
        raise DumpRefused("the engine is mid-call: drain() and take_changes() first")
    agents = []
    for agent_id, agent in st.agents.items():
        for sid, session in agent.open_sessions.items():
            if st.sessions.get(sid) is not session:
                raise DumpRefused(f"agent {agent_id}'s open session {sid} is not the engine's")
        agents.append(
            {
                "id": agent_id,
                "open": list(agent.open_sessions),
                "focused": agent.focused,
                "idle_since": list(agent.idle_since),
                "desktop_connected": agent.desktop_connected,
                "desktop_hosts": sorted(agent.desktop_hosts),
                "grace_deadline": agent.grace_deadline,
                "retiring": agent.retiring,
            }
        )
    store = []
    for agent_id in st.store.agent_ids():
        state = st.store.get(agent_id)
        store.append([agent_id, state.presence.value, state.reason, state.load.as_dict(), state.version])
    finished_interactions = [
        [at, i.vendor, i.interaction_id, None if st.interactions.get(i.key) is i else interaction_to_state(i)]
        for at, i in st.finished_interactions
    ]
    finished_sessions = [
        [at, s.id, None if st.sessions.get(s.id) is s else _session(s)] for at, s in st.finished_sessions
    ]
    return {
        "format": FORMAT,
        "fingerprint": fingerprint(st),
        "agents": agents,
        "retired": json.loads(json.dumps(st.retired)),
        "store": store,
        "index": st.index.dump(),
        "waiting": st.waiting.dump(),
        "sessions": [_session(s) for s in st.sessions.values()],
        "interactions": [interaction_to_state(i) for i in st.interactions.values()],
        "dedup": [[vendor, event_id, at, decision_to_state(d)] for (vendor, event_id), (at, d) in st.dedup.items()],
        "dedup_forgotten_until": _float(st.dedup_forgotten_until),
        "finished_interactions": finished_interactions,
        "finished_sessions": finished_sessions,
        "timers": [
            [deadline, seq, kind.value, list(ref) if kind is Timer.WAIT else ref]
            for deadline, seq, kind, ref in st.timers
        ],
        "timer_seq": st.timer_seq,
        "idle_seq": st.idle_seq,
        "checkpoint_at": st.checkpoint_at,
        "alive_due": st.alive_due,
        "generation": st.generation,
        "reloaded_at": st.reloaded_at,
    }


def load(st: EngineState, body: dict[str, Any]) -> None:
    """Put a :func:`dump` on a fresh engine of the same configuration (else :class:`DumpRefused`)."""
    if st.sessions or st.interactions or st.dedup or st.timers or len(st.waiting):
        raise DumpRefused("load() needs a fresh engine")
    if body.get("format") != FORMAT:
        raise DumpRefused(f"state format {body.get('format')!r}, this gateway reads {FORMAT}")
    own = fingerprint(st)
    if body.get("fingerprint") != own:
        raise DumpRefused(
            f"state of another configuration (engine sha256 {str(body.get('fingerprint'))[:12]}, this one {own[:12]})"
        )
    # the fresh engine indexed its agents as they start (offline): rebuilt from the dump
    st.index = EligibilityIndex({q.name: q.policy for q in st.queues.values()})
    st.store = type(st.store)()
    # agents a reload removed while they held sessions (the embedded gateway's reloads)
    st.retired = dict(body["retired"])
    for agent_id, entry in st.retired.items():
        st.agents[agent_id] = AgentEntry(
            AgentConfig.model_validate(entry["agent"]),
            CapacityProfile.model_validate(entry["profile"]),
            retiring=True,
        )
    st.sessions = {row["id"]: session_from_state(row) for row in body["sessions"]}
    order = {row["id"]: n for n, row in enumerate(body["agents"])}
    if set(order) != set(st.agents):
        raise DumpRefused("state of other agents than this configuration's")
    st.agents = {agent_id: st.agents[agent_id] for agent_id in sorted(st.agents, key=order.__getitem__)}
    for row in body["agents"]:
        agent = st.agents[row["id"]]
        agent.open_sessions = {sid: st.sessions[sid] for sid in row["open"]}
        agent.focused = row["focused"]
        agent.idle_since = (float(row["idle_since"][0]), int(row["idle_since"][1]))
        agent.desktop_connected = bool(row["desktop_connected"])
        agent.desktop_hosts = frozenset(row["desktop_hosts"])
        agent.grace_deadline = row["grace_deadline"]
        agent.retiring = bool(row["retiring"])
    for agent_id, presence, reason, load_, version in body["store"]:
        st.store.put(agent_id, AgentState(Presence(presence), reason, Load(**load_), int(version)))
    st.index.load(body["index"])
    st.waiting.load(body["waiting"])
    st.interactions = {}
    for row in body["interactions"]:
        interaction = interaction_from_state(row)
        st.interactions[interaction.key] = interaction
    st.dedup.clear()
    for vendor, event_id, at, decision in body["dedup"]:
        st.dedup[(vendor, event_id)] = (at, decision_from_state(decision))
    st.dedup_forgotten_until = _unfloat(body["dedup_forgotten_until"])
    st.finished_interactions.clear()
    for at, vendor, interaction_id, detached in body["finished_interactions"]:
        found: Interaction = (
            st.interactions[(vendor, interaction_id)] if detached is None else interaction_from_state(detached)
        )
        st.finished_interactions.append((at, found))
    st.finished_sessions.clear()
    for at, sid, detached_session in body["finished_sessions"]:
        st.finished_sessions.append(
            (at, st.sessions[sid] if detached_session is None else session_from_state(detached_session))
        )
    timers: list[TimerEntry] = []
    for deadline, seq, kind_name, ref in body["timers"]:
        kind = Timer(kind_name)
        timers.append((deadline, seq, kind, tuple(ref) if kind is Timer.WAIT else ref))
    # the heap exactly as it was laid out (an equal heap pops equal timers alike)
    if any(timers[(n - 1) // 2] > timers[n] for n in range(1, len(timers))):
        heapq.heapify(timers)  # (never: a dump is a heap; kept a heap whatever comes in)
    st.timers = timers
    st.timer_seq = int(body["timer_seq"])
    st.idle_seq = int(body["idle_seq"])
    st.checkpoint_at = body["checkpoint_at"]
    st.alive_due = bool(body["alive_due"])
    st.generation = int(body["generation"])
    st.reloaded_at = body["reloaded_at"]
    st.config_dirty = False
    st.touched = set()
