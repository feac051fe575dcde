"""Persistence: what changed since the last call (for the journal) and the rebuild of a
fresh engine from a journal snapshot."""

from __future__ import annotations

from ..capacity import Presence
from ..config import AgentConfig, CapacityProfile
from ..interactions import Interaction, Phase
from ..persistence import (
    Changes,
    Snapshot,
    StateDict,
    decision_from_state,
    interaction_from_state,
    interaction_to_state,
    session_from_state,
    session_to_state,
)
from ..sessions import SessionState
from . import agents, core, offers, slots, timers
from .core import AgentEntry, EngineState, Timer


def _config_meta(st: EngineState) -> StateDict:
    return {
        "config_generation": st.generation,
        "config_reloaded_at": st.reloaded_at,
        "retired_agents": dict(st.retired),
    }


def take_changes(st: EngineState) -> Changes:
    """Everything that changed since the last call, as state dicts for the journal."""
    now = st.clock.now()
    for session in st.dirty_sessions.values():
        interaction = core.interaction_of(st, session)
        if interaction is not None:
            st.dirty_interactions[interaction.key] = interaction
    meta: StateDict = (
        {"idle_seq": st.idle_seq, "wait_seq": st.waiting.last_seq} if st.dirty_agents or st.dirty_interactions else {}
    )
    if st.config_dirty:
        meta.update(_config_meta(st))
        st.config_dirty = False
    if meta or st.alive_due or st.dirty_sessions or st.new_events:
        # every write also says "alive at": restore ends open focus intervals there
        meta["alive_at"] = now
    st.alive_due = False
    changes = Changes(
        sessions=[session_to_state(s, now) for s in st.dirty_sessions.values()],
        interactions=[interaction_to_state(i) for i in st.dirty_interactions.values()],
        agents=[_agent_state(st, a) for a in sorted(st.dirty_agents)],
        events=[row if isinstance(row, dict) else row.row() for row in st.new_events],
        meta=meta,
    )
    st.dirty_sessions = {}
    st.dirty_interactions = {}
    st.dirty_agents = set()
    st.new_events = []
    return changes


def _agent_state(st: EngineState, agent_id: str) -> StateDict:
    agent = st.agents.get(agent_id)
    if agent is None:  # removed by a reload: a later return starts afresh, offline
        return {
            "id": agent_id,
            "presence": Presence.OFFLINE.value,
            "reason": "removed",
            "idle_since": [0.0, 0],
            "focused": None,
            "desktop_connected": False,
            "grace_deadline": None,
        }
    state = st.store.get(agent_id)
    return {
        "id": agent_id,
        "presence": state.presence.value,
        "reason": state.reason,
        "idle_since": list(agent.idle_since),
        "focused": agent.focused,
        "desktop_connected": agent.desktop_connected,
        "grace_deadline": agent.grace_deadline,
    }


def restore(st: EngineState, snapshot: Snapshot) -> None:
    """Rebuild state from a journal snapshot, on a fresh engine, before any other call.

    Open sessions, pending offers and wrap-ups (timers re-armed at their original
    deadlines, so one that passed while the gateway was down fires at once), waiting
    interactions in their original order, presence, focus and the recent event ids.
    Capacity counters are recomputed from the open sessions: exact by construction.
    A desktop that was connected counts as disconnected now: its grace period starts.
    Rows for agents no longer in the configuration are ignored (their sessions too).
    """
    if st.sessions or st.interactions or st.dedup:
        raise RuntimeError("restore() needs a fresh engine")
    now = st.clock.now()
    st.idle_seq = int(snapshot.meta.get("idle_seq", 0))
    st.waiting.last_seq = int(snapshot.meta.get("wait_seq", 0))
    st.generation = int(snapshot.meta.get("config_generation", 0))
    reloaded_at = snapshot.meta.get("config_reloaded_at")
    st.reloaded_at = None if reloaded_at is None else float(reloaded_at)
    # agents a reload removed while they held sessions: back (retiring) if the file
    # still leaves them out, until their last session closes
    for agent_id, entry in dict(snapshot.meta.get("retired_agents") or {}).items():
        if agent_id in st.agents:
            st.config_dirty = True  # the file has it again: no longer retired
            continue
        st.agents[agent_id] = AgentEntry(
            AgentConfig.model_validate(entry["agent"]),
            CapacityProfile.model_validate(entry["profile"]),
            retiring=True,
        )
        st.retired[agent_id] = entry
    for row in snapshot.agents:
        agent = st.agents.get(row["id"])
        if agent is None:
            continue
        presence = Presence(row["presence"])
        st.store.set_presence(row["id"], presence, row.get("reason"))
        agent.idle_since = (float(row["idle_since"][0]), int(row["idle_since"][1]))
        agent.focused = row.get("focused")
        if row.get("desktop_connected") or row.get("grace_deadline") is not None:
            agent.grace_deadline = row.get("grace_deadline") or now + st.grace_s
            timers.arm(st, agent.grace_deadline, Timer.GRACE, row["id"])
            # journal the grace period that starts now: a second restart must not restart it
            st.dirty_agents.add(row["id"])
    for row in snapshot.sessions:
        session = session_from_state(row)
        agent = st.agents.get(session.agent_id)
        if agent is None or not session.occupying:
            continue
        st.store.occupy(session.agent_id, agent.profile, session.channel)
        st.sessions[session.id] = session
        agent.open_sessions[session.id] = session
        if session.state is SessionState.OFFERED and session.deadline is not None:
            timers.arm(st, session.deadline, Timer.OFFER, session.id)
        elif session.state is SessionState.WRAP_UP and session.deadline is not None:
            timers.arm(st, session.deadline, Timer.WRAP, session.id)
    # No desktop survives a restart, so no focus time counts now; and none counts for the
    # downtime: an interval that was open ends when the gateway was last known alive
    # (its last journal write, at least every FOCUS_CHECKPOINT_S while focus counted).
    alive_at = snapshot.meta.get("alive_at")
    for agent in st.agents.values():
        if agent.focused is not None and agent.focused not in agent.open_sessions:
            agent.focused = None
        for session in agent.open_sessions.values():
            if session.focused_since is not None:
                end = session.focused_since if alive_at is None else min(float(alive_at), now)
                session.pause_focus(max(end, session.focused_since))
                st.dirty_sessions[session.id] = session
            session.focused = agent.focused == session.id
    waiting: list[Interaction] = []
    for row in snapshot.interactions:
        interaction = interaction_from_state(row)
        st.interactions[interaction.key] = interaction
        # a parallel offer's sessions are back with their slots (those of agents gone are not)
        interaction.parallel = [s for s in interaction.parallel if s in st.sessions]
        if interaction.phase is Phase.DONE:
            st.finished_interactions.append((interaction.done_at or now, interaction))
        elif interaction.phase is Phase.WAITING:
            waiting.append(interaction)
    for interaction in waiting:
        st.waiting.add(
            interaction.key,
            offers.line(interaction),
            interaction.channel,
            interaction.priority,
            interaction.wait_seq,
        )
        if interaction.wait_deadline is not None:  # None: held for a vendor that cannot reject
            timers.arm(st, interaction.wait_deadline, Timer.WAIT, interaction.key)
    for row in sorted(snapshot.events, key=lambda r: r["at"]):
        st.dedup[(row["vendor"], row["event_id"])] = (row["at"], decision_from_state(row["decision"]))
    # Fewer rows than the cache holds: the journal gave every id of the window (it is asked
    # for the most recent cached_events), so an id missing from memory is new. Else it may
    # hold older ones, none seen later than the oldest loaded.
    st.dedup_forgotten_until = None
    if snapshot.events and len(snapshot.events) >= st.cached_events:
        st.dedup_forgotten_until = min(float(row["at"]) for row in snapshot.events)
    # no more than the caches hold (a journal may give more): the rest stays in the journal
    timers.prune(st, now)
    for agent_id in [a for a, agent in st.agents.items() if agent.retiring and not agent.open_sessions]:
        agents.drop_if_retired(st, agent_id, now)
    for agent_id in st.agents:
        slots.refresh(st, agent_id)
