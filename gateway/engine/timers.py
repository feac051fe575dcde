"""Timers: offer timeouts, wrap-up ends, queue timeouts, desktop grace periods and focus
checkpoints, armed on one heap and fired in deadline order (each at its own deadline) before
every action; pruning of what is old enough to forget (bounded memory)."""

from __future__ import annotations

import heapq
from typing import Any

from ..capacity import Presence, Reason
from ..interactions import Phase
from ..sessions import Outcome, SessionState
from . import agents, core, focus, offers, sessions
from .core import EngineState, Timer, TimerEntry


def next_deadline(st: EngineState) -> float | None:
    """When :meth:`Engine.tick` next has work (None: no timer pending)."""
    while st.timers and not _timer_live(st, st.timers[0]):
        heapq.heappop(st.timers)
    return st.timers[0][0] if st.timers else None


def arm(st: EngineState, deadline: float, kind: Timer, ref: Any) -> None:
    st.timer_seq += 1
    heapq.heappush(st.timers, (deadline, st.timer_seq, kind, ref))


def _timer_live(st: EngineState, timer: TimerEntry) -> bool:
    deadline, _seq, kind, ref = timer
    if kind is Timer.OFFER or kind is Timer.WRAP:
        session = st.sessions.get(ref)
        wanted = SessionState.OFFERED if kind is Timer.OFFER else SessionState.WRAP_UP
        return session is not None and session.state is wanted and session.deadline == deadline
    if kind is Timer.WAIT:
        interaction = st.interactions.get(ref)
        return interaction is not None and interaction.phase is Phase.WAITING and interaction.wait_deadline == deadline
    if kind is Timer.CHECKPOINT:
        return deadline == st.checkpoint_at
    agent = st.agents.get(ref)
    return agent is not None and not agent.desktop_connected and agent.grace_deadline == deadline


def fire_due(st: EngineState) -> float:
    """Fire due timers in deadline order (each at its own deadline), prune, return now."""
    now = st.clock.now()
    while st.timers and st.timers[0][0] <= now:
        timer = heapq.heappop(st.timers)
        if _timer_live(st, timer):
            _fire(st, timer)
    prune(st, now)
    return now


def _fire(st: EngineState, timer: TimerEntry) -> None:
    at, _seq, kind, ref = timer
    if kind is Timer.OFFER:
        offers.withdraw(st, st.sessions[ref], Outcome.EXPIRED, at)
    elif kind is Timer.WRAP:
        sessions.close(st, st.sessions[ref], at)
    elif kind is Timer.WAIT:
        interaction = st.interactions[ref]
        st.waiting.remove(ref)
        interaction.wait_deadline = None
        offers.decide_reject(st, interaction, Reason.QUEUE_TIMEOUT, at, late=True)
    elif kind is Timer.CHECKPOINT:
        st.checkpoint_at = None
        st.alive_due = True
        if any(a.focused is not None and st.sessions[a.focused].focused_since is not None for a in st.agents.values()):
            focus.arm_checkpoint(st, st.clock.now())
    else:
        agent = st.agents[ref]
        agent.grace_deadline = None
        agents.change_presence(st, ref, Presence.OFFLINE, "desktop_disconnected", at)
        for session in agent.open_sessions.values():
            if session.state is SessionState.ACTIVE and not session.flagged:
                session.flagged = True
                core.changed(st, session, "flagged", at)


def prune(st: EngineState, now: float) -> None:
    """Forget old event ids, finished interactions and closed sessions: those older than
    their window, and beyond the cache sizes the oldest (bounded memory; every one of them
    is in the journal, where the runtime reads it again when a request names it)."""
    horizon = now - st.dedup_window
    while st.dedup:
        key, (at, _decision) = next(iter(st.dedup.items()))
        if at > horizon:
            break
        del st.dedup[key]
    while len(st.dedup) > st.cached_events:  # the oldest leave memory; the journal has them
        _key, (at, _decision) = st.dedup.popitem(last=False)
        core.forgotten(st, at)
    if st.dedup_forgotten_until is not None and st.dedup_forgotten_until <= horizon:
        st.dedup_forgotten_until = None  # every id that left memory is outside the window now
    finished = st.finished_interactions
    while finished and (finished[0][0] <= horizon or len(finished) > st.cached_finished):
        _at, interaction = finished.popleft()
        if st.interactions.get(interaction.key) is interaction and interaction.phase is Phase.DONE:
            del st.interactions[interaction.key]
    closed_horizon = now - st.closed_retention
    closed = st.finished_sessions
    while closed and (closed[0][0] <= closed_horizon or len(closed) > st.cached_finished):
        _at, session = closed.popleft()
        if session.state is SessionState.CLOSED and st.sessions.get(session.id) is session:
            del st.sessions[session.id]
