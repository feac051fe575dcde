"""Focus: at most one focused session per agent, and the focus time that counts while a
desktop looks at it (paused while no desktop is connected or the agent is offline)."""

from __future__ import annotations

from ..capacity import Presence
from ..errors import InvalidState
from ..sessions import Session, SessionState
from . import core, timers
from .core import AgentEntry, EngineState, Timer


def focus(st: EngineState, agent_id: str, session_id: str | None, *, actor: str | None = None) -> Session | None:
    """Focus one session of the agent (leaving the previous one), or none."""
    now = timers.fire_due(st)
    agent = core.find_agent(st, agent_id)
    core.authorize(agent_id, actor)
    if session_id is None:
        set_focus(st, agent, None, now)
        return None
    session = core.own_session(st, session_id, agent_id)
    if session.state not in (SessionState.ACTIVE, SessionState.WRAP_UP):
        raise InvalidState(
            f"session {session_id} is {session.state.value}: only active or wrap-up sessions take focus",
            code="session_not_active",
        )
    set_focus(st, agent, session, now)
    return session


def set_focus(st: EngineState, agent: AgentEntry, session: Session | None, now: float) -> None:
    st.dirty_agents.add(agent.config.id)
    if agent.focused is not None and (session is None or agent.focused != session.id):
        previous = st.sessions[agent.focused]
        previous.leave_focus(now)
        agent.focused = None
        core.changed(st, previous, "unfocused", now)
    if session is not None and agent.focused != session.id:
        counting = _counts_focus(st, agent)
        session.enter_focus(now, counting=counting)
        agent.focused = session.id
        core.changed(st, session, "focused", now)
        if counting:
            arm_checkpoint(st, now)


def _counts_focus(st: EngineState, agent: AgentEntry) -> bool:
    """Whether focus time counts for the agent now: a desktop of it is connected (somebody
    looks at the focused session) and it is not offline."""
    return agent.desktop_connected and st.store.get(agent.config.id).presence is not Presence.OFFLINE


def sync_focus(st: EngineState, agent: AgentEntry, now: float) -> None:
    """Start or stop the focused session's clock after the desktop or the presence changed.

    The focus itself stays (the desktop that comes back shows it, ``hello`` says so); only
    the time that counts toward ``focus_ms`` pauses and resumes."""
    if agent.focused is None:
        return
    session = st.sessions[agent.focused]
    if _counts_focus(st, agent):
        if session.focused_since is None:
            session.resume_focus(now)
            st.dirty_sessions[session.id] = session
            arm_checkpoint(st, now)
    elif session.focused_since is not None:
        session.pause_focus(now)
        st.dirty_sessions[session.id] = session


def arm_checkpoint(st: EngineState, now: float) -> None:
    if st.checkpoint_at is None:
        st.checkpoint_at = now + st.checkpoint_s
        timers.arm(st, st.checkpoint_at, Timer.CHECKPOINT, None)
