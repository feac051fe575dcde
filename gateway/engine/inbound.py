"""Vendor events: offers (see :mod:`.offers`), ends, customer messages, updates, and the
vendor-side accept and decline; the event-id deduplication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InvalidState, NotFound
from ..events import Event, EventType
from ..interactions import Interaction, Phase
from ..notices import Decision, DecisionKind
from ..persistence import decision_from_state, interaction_from_state
from ..sessions import Account, AccountState, Outcome, Session, SessionState, customer_dict
from . import core, offers, sessions, timers
from .core import EngineState, Missing, Recalled

#: chat messages kept per interaction, for agents who get it later
MAX_TRANSCRIPT = 100


def missing(st: EngineState, event: Event) -> Missing:
    """What the engine does not hold in memory to decide ``event`` exactly: whether it saw
    the event id (only the most recent ids are kept) and, for events on an existing
    interaction, the interaction (finished ones leave memory). The runtime reads those from
    the journal and passes them to :func:`handle_event` as :class:`Recalled`."""
    return Missing(
        event=event.key not in st.dedup and _may_be_forgotten(st),
        interaction=event.type is not EventType.OFFER and event.interaction_key not in st.interactions,
    )


def _may_be_forgotten(st: EngineState) -> bool:
    """Whether the journal may hold an event id inside the window that memory does not
    (see :attr:`EngineState.dedup_forgotten_until`): only then is a new-looking id looked up."""
    until = st.dedup_forgotten_until
    return until is not None and until > st.clock.now() - st.dedup_window


def handle_event(st: EngineState, event: Event, recalled: Recalled | None = None) -> Decision:
    """Apply one normalized vendor event and return the decision for it.

    Offers get ``assigned``, ``rejected`` (with reason) or ``queued``; other events get
    ``accepted``. A repeated ``(vendor, event_id)`` inside the de-duplication window gets
    ``duplicate`` with the first answer, and changes nothing: the engine keeps the most
    recent event ids; ``recalled`` brings the journal's row for an older one (and a
    finished interaction that left memory), see :func:`missing`.
    """
    now = timers.fire_due(st)
    if recalled is not None:
        _recall(st, recalled, now)
    seen = st.dedup.get(event.key)
    if seen is not None and seen[0] <= now - st.dedup_window:
        seen = None  # outside the window (not pruned yet): a new event
    if seen is not None:
        decision = Decision(DecisionKind.DUPLICATE, original=seen[1])
        st.outbox.append(core.EventRecord(event, now, decision))
        return decision
    if event.type is EventType.OFFER:
        decision = offers.offer(st, event, now)
    elif event.type is EventType.END:
        decision = _vendor_end(st, event, now)
    elif event.type is EventType.MESSAGE:
        decision = _vendor_message(st, event, now)
    elif event.type is EventType.ACCEPT:
        decision = _vendor_accept(st, event, now)
    elif event.type is EventType.DECLINE:
        decision = _vendor_decline(st, event, now)
    else:
        decision = _vendor_update(st, event, now)
    st.dedup[event.key] = (now, decision)
    record = core.EventRecord(event, now, decision)
    st.new_events.append(record)
    st.outbox.append(record)
    return decision


def _recall(st: EngineState, recalled: Recalled, now: float) -> None:
    """Take back into memory what the journal holds and the engine forgot, if still inside
    the window (and not known otherwise meanwhile)."""
    horizon = now - st.dedup_window
    row = recalled.event
    if row is not None and float(row["at"]) > horizon:
        key = (str(row["vendor"]), str(row["event_id"]))
        if key not in st.dedup:
            st.dedup[key] = (float(row["at"]), decision_from_state(row["decision"]))
    state = recalled.interaction
    if state is not None and state.get("phase") == Phase.DONE.value:
        done_at = state.get("done_at")
        interaction = interaction_from_state(state)
        if done_at is not None and float(done_at) > horizon and interaction.key not in st.interactions:
            st.interactions[interaction.key] = interaction
            st.finished_interactions.append((float(done_at), interaction))


def _vendor_end(st: EngineState, event: Event, now: float) -> Decision:
    interaction = _interaction(st, event)
    if interaction.phase is Phase.WAITING:
        st.waiting.remove(interaction.key)
        sessions.finish(st, interaction, now)
    elif interaction.phase is not Phase.DONE:
        sessions.finish(st, interaction, now)  # first, so that withdrawn offers are not re-routed
        for session_id in (interaction.pending, interaction.holder, *interaction.parallel):
            session = st.sessions.get(session_id) if session_id else None
            if session is None:
                continue
            if session.state is SessionState.OFFERED:
                offers.withdraw(st, session, Outcome.ABANDONED, now)
            elif session.state is SessionState.ACTIVE:
                sessions.end_session(st, session, Outcome.COMPLETED, now)
        interaction.holder = interaction.pending = None
        interaction.parallel = []
    return Decision(DecisionKind.ACCEPTED)


def _vendor_message(st: EngineState, event: Event, now: float) -> Decision:
    """A customer's message: kept in the interaction's transcript (bounded) and shown on
    the desktop holding it; an agent offered the interaction later (re-route, transfer,
    a waiting queue) gets the transcript with the offer."""
    interaction = _interaction(st, event)
    message = {
        "text": event.text,
        "sender": "customer",
        "customer": customer_dict(event.customer) if event.customer else None,
        "at": event.occurred_at.isoformat().replace("+00:00", "Z"),
    }
    keep_in_transcript(st, interaction, message)
    for session in core.live_sessions(st, interaction):
        # the desktop alerts unless the agent is looking at that very session
        alert = st.agents[session.agent_id].focused != session.id
        core.to_agent(st, session.agent_id, "chat.message", session_id=session.id, alert=alert, **message)
    return Decision(DecisionKind.ACCEPTED)


def keep_in_transcript(st: EngineState, interaction: Interaction, message: dict[str, Any]) -> None:
    interaction.transcript.append(message)
    del interaction.transcript[:-MAX_TRANSCRIPT]
    st.dirty_interactions[interaction.key] = interaction


def _vendor_update(st: EngineState, event: Event, now: float) -> Decision:
    interaction = _interaction(st, event)
    if event.customer is not None:
        interaction.customer = event.customer
    if event.subject is not None:
        interaction.subject = event.subject
    account_id = core.account_id_of(event.attributes)
    if account_id is not None:
        interaction.account_id = account_id
    st.dirty_interactions[interaction.key] = interaction
    for session in core.live_sessions(st, interaction):
        if event.customer is not None:
            session.customer = event.customer
        if event.subject is not None:
            session.subject = event.subject
        if account_id is not None and session.account.state is not AccountState.CONFIRMED:
            session.account = Account(AccountState.IDENTIFIED, account_id)
        core.changed(st, session, "updated", now)
    return Decision(DecisionKind.ACCEPTED)


def _vendor_accept(st: EngineState, event: Event, now: float) -> Decision:
    """The vendor says the agent answered (a phone's 200 OK, AMI ``AgentConnect``): the
    offered session becomes active, as if the desktop had accepted it. Already active on
    that agent: nothing to do (the desktop was quicker)."""
    interaction = _interaction(st, event)
    session = _vendor_offered(st, interaction, event)
    if session is None:
        if any(s.state is SessionState.ACTIVE for s in _vendor_matching(st, interaction, event)):
            return Decision(DecisionKind.ACCEPTED)
        raise InvalidState(
            f"interaction {event.interaction_id!r} has no offered session to accept", code="session_not_offered"
        )
    sessions.activate(st, session, now, echo=False)
    return Decision(DecisionKind.ACCEPTED)


def _vendor_decline(st: EngineState, event: Event, now: float) -> Decision:
    """The vendor says the agent did not answer or refused: the offer is declined (an
    untargeted interaction is re-routed excluding that agent, a targeted one rejected)."""
    interaction = _interaction(st, event)
    session = _vendor_offered(st, interaction, event)
    if session is None:
        raise InvalidState(
            f"interaction {event.interaction_id!r} has no offered session to decline", code="session_not_offered"
        )
    offers.withdraw(st, session, Outcome.DECLINED, now)
    return Decision(DecisionKind.ACCEPTED)


def _vendor_matching(st: EngineState, interaction: Interaction, event: Event) -> Iterator[Session]:
    for session in core.live_sessions(st, interaction):
        if event.agent_id is None or session.agent_id == event.agent_id:
            yield session


def _vendor_offered(st: EngineState, interaction: Interaction, event: Event) -> Session | None:
    return next((s for s in _vendor_matching(st, interaction, event) if s.state is SessionState.OFFERED), None)


def _interaction(st: EngineState, event: Event) -> Interaction:
    interaction = st.interactions.get(event.interaction_key)
    if (
        interaction is not None
        and interaction.phase is Phase.DONE
        and interaction.done_at is not None
        and interaction.done_at <= st.clock.now() - st.dedup_window
    ):
        interaction = None  # finished before the window (still in memory until pruned)
    if interaction is None:
        raise NotFound(
            f"no interaction {event.interaction_id!r} of vendor {event.vendor!r}",
            code="interaction_not_found",
        )
    return interaction
