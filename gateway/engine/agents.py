"""Agents: presence, desktops connecting and going (grace periods), live reconfiguration
and agents retiring after a reload removed them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..capacity import Presence, Reason
from ..config import AgentConfig, GatewayConfig
from ..interactions import VendorCapabilities
from ..notices import PresenceChanged
from ..router import EligibilityIndex, agent_line
from ..sessions import Outcome, SessionState
from . import core, focus, offers, slots, timers
from .core import AgentEntry, EngineState, Timer


def set_presence(
    st: EngineState, agent_id: str, state: Presence | str, reason: str | None = None, *, actor: str | None = None
) -> dict[str, Any]:
    now = timers.fire_due(st)
    agent = core.find_agent(st, agent_id)
    core.authorize(agent_id, actor)
    change_presence(st, agent_id, Presence(state), reason, now)
    # (a removed agent whose last offer this withdrew is gone now: its last picture)
    return agent_body(st, agent, now)


def desktop_connected(st: EngineState, agent_id: str, host: str = "") -> dict[str, Any]:
    """A desktop socket opened (the first on ``host``): cancel the grace period, lift the
    flags, return ``hello``."""
    now = timers.fire_due(st)
    agent = core.find_agent(st, agent_id)
    agent.desktop_hosts = agent.desktop_hosts | {host}
    agent.desktop_connected = True
    agent.grace_deadline = None
    st.dirty_agents.add(agent_id)
    for session in agent.open_sessions.values():
        if session.flagged:
            session.flagged = False
            core.changed(st, session, "unflagged", now)
    focus.sync_focus(st, agent, now)
    return agent_body(st, agent, st.clock.now())


def desktop_disconnected(st: EngineState, agent_id: str, host: str = "") -> None:
    """The agent's last desktop socket on ``host`` closed: if no other instance holds one,
    sessions survive ``desktop_grace_s``, then the agent goes offline."""
    now = timers.fire_due(st)
    agent = core.find_agent(st, agent_id)
    agent.desktop_hosts = agent.desktop_hosts - {host}
    if agent.desktop_hosts:
        return  # still connected through another instance
    agent.desktop_connected = False
    agent.grace_deadline = now + st.grace_s
    st.dirty_agents.add(agent_id)
    timers.arm(st, agent.grace_deadline, Timer.GRACE, agent_id)
    focus.sync_focus(st, agent, now)


def desktops_gone(st: EngineState, host: str) -> list[str]:
    """The gateway instance ``host`` is gone (it died without saying so): its desktops count
    as disconnected. Returns the agents that lost their last desktop (grace periods start)."""
    timers.fire_due(st)
    lost: list[str] = []
    for agent_id, agent in list(st.agents.items()):
        if host in agent.desktop_hosts:
            desktop_disconnected(st, agent_id, host)
            if not agent.desktop_connected:
                lost.append(agent_id)
    return lost


def desktop_hosts(st: EngineState) -> set[str]:
    """Every instance holding a desktop of some agent."""
    hosts: set[str] = set()
    for agent in st.agents.values():
        hosts |= agent.desktop_hosts
    return hosts


def reconfigure(
    st: EngineState,
    config: GatewayConfig,
    *,
    vendor_capabilities: Mapping[str, VendorCapabilities] | None = None,
) -> dict[str, Any]:
    """Apply a new (validated) configuration's agents, profiles and queues in one step.

    * New agents appear offline. A removed agent with open sessions is *retiring*: its
      sessions finish normally, it takes no new work (``unknown_agent``), it leaves no
      queue line behind, and it is gone when its last session closes; one without
      sessions is gone at once. Interactions waiting for a removed agent are rejected
      (``unknown_agent``).
    * A profile change applies to the next allocation; no open session is cut, even
      above the new caps. Units in use are counted with the new weights.
    * Queue changes keep every waiting interaction's place; a changed ``max_wait_s``
      moves the deadline of those waiting (measured from when they began to wait); the
      waiters of a removed queue are rejected (``no_agent_available``).
    * The eligibility index is rebuilt, then every agent with room is offered what waits.
    * The open desktops of an agent whose name, queues or profile changed get a fresh
      ``hello`` (the agent object a reconnect would get).

    Vendors (``vendor_capabilities``: the new set, replacing the old) are the
    runtime's business otherwise. Returns what changed for the agents (for the log).
    """
    now = timers.fire_due(st)
    old_queues = st.queues
    new_agents = {a.id: a for a in config.agents}
    added: list[str] = []
    retiring: list[str] = []
    removed: list[str] = []
    reweighed: list[str] = []
    redescribed: list[str] = []  # name, profile, queues or the profile's rules changed
    st.config = config
    st.queues = {q.name: q for q in config.queues}
    st.grace_s = config.server.desktop_grace_s
    if vendor_capabilities is not None:
        st.caps = dict(vendor_capabilities)
    for agent_id, agent_config in new_agents.items():
        profile = config.capacity_profiles[agent_config.profile]
        agent = st.agents.get(agent_id)
        if agent is None:
            st.agents[agent_id] = AgentEntry(agent_config, profile)
            st.dirty_agents.add(agent_id)
            added.append(agent_id)
            continue
        if agent.retiring:
            agent.retiring = False
            st.retired.pop(agent_id, None)
            st.config_dirty = True
        if _described(agent.config) != _described(agent_config) or agent.profile != profile:
            redescribed.append(agent_id)
        agent.config = agent_config
        if agent.profile != profile:
            agent.profile = profile
            if _reweigh(st, agent, now):
                reweighed.append(agent_id)
    for agent_id in [a for a in st.agents if a not in new_agents]:
        agent = st.agents[agent_id]
        if not agent.retiring:
            agent.retiring = True
            st.retired[agent_id] = {
                "agent": agent.config.model_dump(mode="json"),
                "profile": agent.profile.model_dump(mode="json"),
            }
            st.config_dirty = True
        for waiter in [w for w in st.waiting.waiters() if w.queue == agent_line(agent_id)]:
            interaction = st.interactions[waiter.key]
            st.waiting.remove(waiter.key)
            interaction.wait_deadline = None
            offers.decide_reject(st, interaction, Reason.UNKNOWN_AGENT, now, late=True)
        if agent.open_sessions:
            retiring.append(agent_id)
        else:
            removed.append(agent_id)
    for waiter in st.waiting.waiters():
        interaction = st.interactions[waiter.key]
        if waiter.queue not in old_queues:
            continue  # an agent's own line
        queue = st.queues.get(waiter.queue)
        if queue is None:
            if offers.can_reject(st, interaction.vendor):
                st.waiting.remove(waiter.key)
                interaction.wait_deadline = None
                offers.decide_reject(st, interaction, Reason.NO_AGENT_AVAILABLE, now, late=True)
            # else: held for a vendor that cannot take a rejection; it stays held until
            # the vendor ends it (or the queue comes back)
            continue
        before = old_queues[waiter.queue]
        if interaction.wait_deadline is not None and queue.max_wait_s != before.max_wait_s:
            began = interaction.wait_deadline - before.max_wait_s
            interaction.wait_deadline = began + queue.max_wait_s
            st.dirty_interactions[interaction.key] = interaction
            timers.arm(st, interaction.wait_deadline, Timer.WAIT, interaction.key)
    st.index = EligibilityIndex({q.name: q.policy for q in config.queues})
    for agent_id in st.agents:
        slots.refresh(st, agent_id)
    for agent_id in removed:
        drop_if_retired(st, agent_id, now)
    for agent_id in list(st.agents):
        if agent_id in st.agents:
            offers.serve_waiting(st, agent_id, now)
    # an open desktop shows the agent as it is now: a fresh ``hello`` (the full snapshot a
    # reconnect would get), after anything the reload offered it
    for agent_id in redescribed:
        agent = st.agents.get(agent_id)
        if agent is not None and agent.desktop_connected and not agent.retiring:
            core.to_agent(st, agent_id, "hello", agent=agent_body(st, agent, now))
    st.generation += 1
    st.reloaded_at = now
    st.config_dirty = True
    return {
        "generation": st.generation,
        "agents_added": added,
        "agents_retiring": retiring,
        "agents_removed": removed,
        "agents_reweighed": reweighed,
    }


def _described(agent: AgentConfig) -> tuple[str, str, tuple[str, ...]]:
    """What an agent's desktop shows of its configuration (a token change closes it instead)."""
    return (agent.name, agent.profile, agent.queues)


def _reweigh(st: EngineState, agent: AgentEntry, now: float) -> bool:
    """Count the agent's open sessions with its (new) profile's unit weights."""
    changed = False
    for session in agent.open_sessions.values():
        weight = agent.profile.weight(session.channel)
        if session.units != weight:
            session.units = weight
            st.dirty_sessions[session.id] = session
            changed = True
    if not changed:
        return False
    agent_id = agent.config.id
    for _ in range(64):
        state = st.store.get(agent_id)
        units = sum(s.units for s in agent.open_sessions.values() if s.occupying)
        new = replace(state, load=replace(state.load, units=units))
        if st.store.compare_and_set(agent_id, state.version, new) is not None:
            return True
    raise RuntimeError(f"reweighing {agent_id} lost every compare-and-set")


def drop_if_retired(st: EngineState, agent_id: str, now: float) -> None:
    """A retiring agent whose last session closed leaves the gateway."""
    agent = st.agents.get(agent_id)
    if agent is None or not agent.retiring or agent.open_sessions:
        return
    if st.store.get(agent_id).presence is not Presence.OFFLINE:
        st.store.set_presence(agent_id, Presence.OFFLINE, "removed")
        st.outbox.append(PresenceChanged(agent_id, Presence.OFFLINE.value, "removed"))
    del st.agents[agent_id]
    st.retired.pop(agent_id, None)
    st.config_dirty = True
    st.dirty_agents.add(agent_id)
    st.touched.add(agent_id)


def agent_body(st: EngineState, agent: AgentEntry, now: float, *, with_sessions: bool = True) -> dict[str, Any]:
    agent_id = agent.config.id
    state = st.store.get(agent_id)
    body: dict[str, Any] = {
        "id": agent_id,
        "name": agent.config.name,
        "profile": agent.config.profile,
        "queues": list(agent.config.queues),
        "presence": {"state": state.presence.value, "reason": state.reason},
        "in_use": state.load.as_dict(),
        "desktop_connected": agent.desktop_connected,
    }
    if with_sessions:
        body["sessions"] = [s.as_dict(now) for s in agent.open_sessions.values()]
    return body


def change_presence(st: EngineState, agent_id: str, presence: Presence, reason: str | None, now: float) -> None:
    agent = st.agents[agent_id]
    before = st.store.get(agent_id).presence
    st.store.set_presence(agent_id, presence, reason)
    st.dirty_agents.add(agent_id)
    if presence is Presence.READY and before is not Presence.READY:
        slots.touch_idle(st, agent, now)
    slots.refresh(st, agent_id)
    focus.sync_focus(st, agent, now)
    st.outbox.append(PresenceChanged(agent_id, presence.value, reason))
    core.to_agent(st, agent_id, "agent.presence", presence={"state": presence.value, "reason": reason})
    if presence is Presence.OFFLINE:
        for session in [s for s in agent.open_sessions.values() if s.state is SessionState.OFFERED]:
            offers.withdraw(st, session, Outcome.EXPIRED, now)
    elif presence is Presence.READY:
        offers.serve_waiting(st, agent_id, now)
