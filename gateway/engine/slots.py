"""Capacity slots: reserving (compare-and-set on the state store), releasing, and keeping
the eligibility index up to date with every agent's room."""

from __future__ import annotations

from ..capacity import Reason, check
from ..events import INBOUND_CHANNELS, Channel
from ..router import AgentView
from ..sessions import Session
from .core import AgentEntry, EngineState


def refresh(st: EngineState, agent_id: str) -> None:
    st.touched.add(agent_id)
    agent = st.agents[agent_id]
    state = st.store.get(agent_id)
    profile = agent.profile
    st.index.update(
        AgentView(
            agent_id=agent_id,
            queues=agent.queues,
            room={c: check(profile, state.load, state.presence, c) is None for c in INBOUND_CHANNELS},
            idle_since=agent.idle_since,
            busy_share=state.load.units / profile.unit_limit,
            sessions=state.load.sessions,
        )
    )


def allocate(st: EngineState, agent_id: str, channel: Channel, vendor: str | None) -> Reason | None:
    """Reserve one ``channel`` session on the agent (compare-and-set), or say why not."""
    agent = st.agents[agent_id]
    reason = refusal(st, agent_id, channel, vendor)
    if reason is None:
        reason, _ = st.store.reserve(agent_id, agent.profile, channel)
    refresh(st, agent_id)
    return reason


def refusal(st: EngineState, agent_id: str, channel: Channel, vendor: str | None) -> Reason | None:
    agent = st.agents[agent_id]
    if agent.retiring:
        return Reason.UNKNOWN_AGENT
    state = st.store.get(agent_id)
    reason = check(agent.profile, state.load, state.presence, channel)
    if reason is None and channel is Channel.VOICE and vendor is not None:
        caps = st.caps.get(vendor)
        if caps is not None and caps.max_voice_per_agent is not None:
            live = sum(1 for s in agent.open_sessions.values() if s.channel is Channel.VOICE and s.vendor == vendor)
            if live >= caps.max_voice_per_agent:
                reason = Reason.CHANNEL_AT_CAPACITY
    return reason


def release(st: EngineState, session: Session) -> None:
    agent = st.agents[session.agent_id]
    st.store.release(session.agent_id, agent.profile, session.channel)
    agent.open_sessions.pop(session.id, None)
    refresh(st, session.agent_id)


def touch_idle(st: EngineState, agent: AgentEntry, now: float) -> None:
    st.idle_seq += 1
    agent.idle_since = (now, st.idle_seq)
    st.dirty_agents.add(agent.config.id)
