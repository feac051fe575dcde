"""Session actions: accept, decline, end, wrap-up and close, manual sessions, notes,
accounts and chat replies (DESIGN section 5)."""

from __future__ import annotations

from ..errors import ActionError, CapacityRejected, InvalidState
from ..events import Channel
from ..interactions import Interaction, Phase
from ..notices import VendorAction
from ..sessions import Account, AccountState, Note, Outcome, Session, SessionState, iso
from . import agents, core, focus, inbound, offers, parallel, slots, timers
from .core import EngineState, Timer

MAX_NOTE_CHARS = 10_000
MAX_NOTES_PER_SESSION = 500


def accept(st: EngineState, session_id: str, *, actor: str | None = None) -> Session:
    now = timers.fire_due(st)
    session = core.own_session(st, session_id, actor)
    if session.outcome is Outcome.WITHDRAWN:
        raise InvalidState(
            f"session {session_id} was withdrawn: another agent accepted the interaction first",
            code="session_not_offered",
        )
    if session.state is not SessionState.OFFERED:
        raise InvalidState(f"session {session_id} is {session.state.value}, not offered", code="session_not_offered")
    activate(st, session, now, echo=True)
    return session


def activate(st: EngineState, session: Session, now: float, *, echo: bool) -> None:
    """An offered session becomes active; ``echo``: tell the vendor (not when it told us)."""
    session.state = SessionState.ACTIVE
    session.accepted_at = now
    session.deadline = None
    core.changed(st, session, "accepted", now, message="session.opened")
    interaction = st.interactions[(session.vendor, session.interaction_id)]  # type: ignore[index]
    if interaction.pending == session.id:
        source = st.sessions[interaction.holder]  # type: ignore[index]
        interaction.pending = None
        interaction.holder = session.id
        end_session(st, source, Outcome.TRANSFERRED, now, transferred_to=session.id)
        core.to_vendor(st, interaction, VendorAction.TRANSFERRED, mode="consult", session=session, source=source)
    else:
        if session.id in interaction.parallel:  # the first accept of a parallel offer wins
            parallel.settle(st, interaction, session, now)
        interaction.phase = Phase.ACTIVE
        if echo:
            core.to_vendor(st, interaction, VendorAction.ACCEPTED, session=session)


def decline(st: EngineState, session_id: str, *, actor: str | None = None) -> Session:
    now = timers.fire_due(st)
    session = core.own_session(st, session_id, actor)
    if session.state is not SessionState.OFFERED:
        raise InvalidState(f"session {session_id} is {session.state.value}, not offered", code="session_not_offered")
    offers.withdraw(st, session, Outcome.DECLINED, now)
    return session


def end(st: EngineState, session_id: str, *, actor: str | None = None) -> Session:
    now = timers.fire_due(st)
    session = core.own_session(st, session_id, actor)
    if session.state is not SessionState.ACTIVE:
        raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
    interaction = core.interaction_of(st, session)
    if interaction is not None and interaction.holder == session.id:
        finish(st, interaction, now)
        if interaction.pending is not None:
            offers.withdraw(st, st.sessions[interaction.pending], Outcome.ABANDONED, now)
            interaction.pending = None
        interaction.holder = None
        core.to_vendor(st, interaction, VendorAction.ENDED, session=session)
    end_session(st, session, Outcome.COMPLETED, now)
    return session


def new_session(st: EngineState, agent_id: str, *, label: str | None = None, actor: str | None = None) -> Session:
    """Start a manual (agent-started) session: created active and focused."""
    now = timers.fire_due(st)
    agent = core.find_agent(st, agent_id)
    core.authorize(agent_id, actor)
    reason = slots.allocate(st, agent_id, Channel.MANUAL, None)
    if reason is not None:
        raise CapacityRejected(reason.value, f"agent {agent_id} cannot start a manual session: {reason.value}")
    session = Session(
        id=st.new_id(),
        agent_id=agent_id,
        channel=Channel.MANUAL,
        vendor=None,
        interaction_id=None,
        offered_at=now,
        state=SessionState.ACTIVE,
        accepted_at=now,
        label=(label or "New session")[:120],
        profile=agent.profile.start_screen(Channel.MANUAL),
        units=agent.profile.weight(Channel.MANUAL),
    )
    st.sessions[session.id] = session
    agent.open_sessions[session.id] = session
    slots.refresh(st, agent_id)
    core.changed(st, session, "created", now, message="session.opened")
    focus.set_focus(st, agent, session, now)
    return session


def note(st: EngineState, session_id: str, text: str, *, actor: str | None = None) -> Session:
    now = timers.fire_due(st)
    session = core.workable(st, session_id, actor)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
        raise ActionError(f"a note is 1 to {MAX_NOTE_CHARS} characters", code="invalid_request")
    if len(session.notes) >= MAX_NOTES_PER_SESSION:
        raise InvalidState(f"a session holds at most {MAX_NOTES_PER_SESSION} notes", code="too_many_notes")
    session.notes.append(Note(text, now))
    core.changed(st, session, "note", now)
    return session


def confirm_account(
    st: EngineState, session_id: str, account_id: str | None = None, *, actor: str | None = None
) -> Session:
    now = timers.fire_due(st)
    session = core.workable(st, session_id, actor)
    chosen = account_id if account_id is not None else session.account.id
    if not chosen:
        raise InvalidState(
            f"session {session_id} has no identified account to confirm; give account_id",
            code="account_not_identified",
        )
    session.account = Account(AccountState.CONFIRMED, str(chosen)[:256])
    core.changed(st, session, "account", now)
    return session


def reset_account(st: EngineState, session_id: str, *, actor: str | None = None) -> Session:
    now = timers.fire_due(st)
    session = core.workable(st, session_id, actor)
    session.account = Account()
    core.changed(st, session, "account", now)
    return session


def send(st: EngineState, session_id: str, text: str, *, actor: str | None = None) -> Session:
    """A chat reply from the agent, sent to the customer through the vendor.

    The reply joins the interaction's transcript (sender ``agent``), so an agent who
    gets the chat later (a transfer, a re-route) sees both sides; a consult target
    that is offered the chat meanwhile sees it at once."""
    now = timers.fire_due(st)
    session = core.own_session(st, session_id, actor)
    if session.channel is not Channel.CHAT:
        raise InvalidState(
            f"session {session_id} is a {session.channel.value} session, not chat", code="channel_unsupported"
        )
    if session.state is not SessionState.ACTIVE:
        raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
    if not isinstance(text, str) or not text or len(text) > 65_536:
        raise ActionError("a reply is 1 to 65536 characters", code="invalid_request")
    interaction = core.interaction_of(st, session)
    assert interaction is not None
    message = {"text": text, "sender": "agent", "agent_id": session.agent_id, "at": iso(now)}
    inbound.keep_in_transcript(st, interaction, message)
    for other in core.live_sessions(st, interaction):
        if other.id != session.id:
            core.to_agent(st, other.agent_id, "chat.message", session_id=other.id, alert=False, **message)
    core.to_vendor(st, interaction, VendorAction.REPLY, session=session, text=text)
    return session


def end_session(
    st: EngineState, session: Session, outcome: Outcome, now: float, *, transferred_to: str | None = None
) -> None:
    """An active session ends: into wrap-up for the channel's ``wrap_up_s`` (or closed)."""
    session.state = SessionState.WRAP_UP
    session.ended_at = now
    session.outcome = outcome
    if transferred_to is not None:
        session.transferred_to = transferred_to
    wrap = st.agents[session.agent_id].profile.wrap_up(session.channel)
    if wrap > 0:
        session.deadline = now + wrap
        timers.arm(st, session.deadline, Timer.WRAP, session.id)
        core.changed(st, session, "ended", now, message="session.updated")
    else:
        close(st, session, now)


def close(st: EngineState, session: Session, now: float) -> None:
    agent = st.agents[session.agent_id]
    if agent.focused == session.id:
        session.leave_focus(now)
        agent.focused = None
    session.state = SessionState.CLOSED
    session.closed_at = now
    session.deadline = None
    slots.release(st, session)
    st.finished_sessions.append((now, session))
    core.changed(st, session, "closed", now, message="session.closed")
    offers.serve_waiting(st, session.agent_id, now)
    agents.drop_if_retired(st, session.agent_id, now)


def finish(st: EngineState, interaction: Interaction, now: float) -> None:
    interaction.phase = Phase.DONE
    interaction.done_at = now
    interaction.wait_deadline = None
    st.dirty_interactions[interaction.key] = interaction
    st.finished_interactions.append((now, interaction))
