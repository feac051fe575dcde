"""Capacity slots: reserving (compare-and-set on the state store), releasing, and keeping
the eligibility index up to date with every agent's room."""

from __future__ import annotations

from ..capacity import Presence, Reason, check
from ..events import Channel
from ..router import CHANNEL_BIT
from ..sessions import Session
from .core import AgentEntry, EngineState, limits

VOICE_BIT = CHANNEL_BIT[Channel.VOICE]
CHAT_BIT = CHANNEL_BIT[Channel.CHAT]
EMAIL_BIT = CHANNEL_BIT[Channel.EMAIL]


def refresh(st: EngineState, agent_id: str) -> None:
    st.touched.add(agent_id)
    agent = st.agents[agent_id]
    state = st.store.get(agent_id)
    load = state.load
    lim = limits(agent)
    room = 0  # the channels it has room for, as a mask (see router.CHANNEL_BIT)
    if state.presence is Presence.READY and load.sessions < lim.max_sessions:
        # check() for each inbound channel of a ready agent (rules 1-3), without the lookups
        free_units = lim.unit_limit - load.units
        if load.voice < lim.voice_cap and lim.voice_weight <= free_units:
            room = VOICE_BIT
        if load.chat < lim.chat_cap and lim.chat_weight <= free_units:
            room |= CHAT_BIT
        if load.email < lim.email_cap and lim.email_weight <= free_units:
            room |= EMAIL_BIT
    st.index.put(agent_id, agent.queues, room, agent.idle_since, load.units / lim.unit_limit, load.sessions)


def allocate(
    st: EngineState, agent_id: str, channel: Channel, vendor: str | None, *, offer_next: bool = False
) -> Reason | None:
    """Reserve one ``channel`` session on the agent (compare-and-set), or say why not.

    ``offer_next``: the caller opens an offer on the agent right after a reservation
    (:func:`.offers.open_offer`, which refreshes the agent's index entries with its new idle
    time): the index is not refreshed twice (a reserved agent is in the caller's skip set
    until then)."""
    agent = st.agents[agent_id]
    if agent.retiring:
        reason: Reason | None = Reason.UNKNOWN_AGENT
    elif channel is Channel.VOICE and vendor is not None and voice_limited(st, vendor):
        reason = refusal(st, agent_id, channel, vendor)
        if reason is None:
            reason, _ = st.store.reserve(agent_id, agent.profile, channel)
    else:
        # refusal() would be the capacity rules only, which reserve() checks itself
        reason, _ = st.store.reserve(agent_id, agent.profile, channel)
    if offer_next and reason is None:
        return None
    refresh(st, agent_id)
    return reason


def voice_limited(st: EngineState, vendor: str) -> bool:
    """Whether the vendor limits the voice sessions per agent (``max_voice_per_agent``)."""
    caps = st.caps.get(vendor)
    return caps is not None and caps.max_voice_per_agent is not None


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
