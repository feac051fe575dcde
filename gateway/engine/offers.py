"""Offers: routing an inbound interaction to an agent, waiting lines, decisions, withdrawals.

An offer names an agent (*targeted*: allocate there or reject) or a queue (*untargeted*:
the best eligible agent by the queue's policy, see :mod:`gateway.router`; nobody: the
queue's ``on_full``). Every decision after the synchronous answer (a wait that ends, an
offer declined or expired and re-routed) goes to the vendor as a late ``decision``.
"""

from __future__ import annotations

from ..capacity import Presence, Reason, check
from ..config import OnFull
from ..errors import ActionError, InvalidEvent
from ..events import INBOUND_CHANNELS, Channel, Event
from ..interactions import Interaction, InteractionKey, Phase
from ..notices import Decision, DecisionKind, ToVendor, VendorAction
from ..router import agent_line
from ..sessions import Account, AccountState, Outcome, Session, SessionState, default_label
from . import agents, core, parallel, slots, timers
from .core import EngineState, Timer

#: rejected even to a vendor that cannot take a rejection: no waiting can ever serve them
_ALWAYS_REJECTED = frozenset({Reason.VENDOR_UNSUPPORTED, Reason.UNKNOWN_AGENT})


def offer(st: EngineState, event: Event, now: float) -> Decision:
    # (the event's fields read once: each read of a pydantic model's attribute costs several)
    channel = event.channel
    assert channel is not None  # the event model requires it on offers
    vendor = event.vendor
    interaction_id = event.interaction_id
    queue = event.queue
    key = (vendor, interaction_id)
    existing = st.interactions.get(key)
    if existing is not None and existing.phase is not Phase.DONE:
        raise ActionError(
            f"interaction {interaction_id!r} of {vendor!r} is already open ({existing.phase.value})",
            code="interaction_already_open",
        )
    if queue is not None and queue not in st.queues:
        raise InvalidEvent("queue", f"unknown queue {queue!r}")
    target_agent = event.agent_id
    interaction = Interaction(
        vendor=vendor,
        interaction_id=interaction_id,
        channel=channel,
        offer_event_id=event.event_id,
        queue=queue,
        target_agent=target_agent,
        priority=event.priority,
        customer=event.customer,
        subject=event.subject,
        created_at=now,
        account_id=core.account_id_of(event.attributes),
    )
    st.interactions[key] = interaction
    caps = st.caps.get(vendor)
    if caps is not None and channel not in caps.channels:
        return decide_reject(st, interaction, Reason.VENDOR_UNSUPPORTED, now)
    if target_agent is not None:
        if target_agent not in st.agents:
            return decide_reject(st, interaction, Reason.UNKNOWN_AGENT, now)
        reason = slots.allocate(st, target_agent, channel, vendor, offer_next=True)
        if reason is not None:
            return decide_reject(st, interaction, reason, now)
        session = open_offer(st, interaction, target_agent, now)
        return decide_assign(st, interaction, session, late=False)
    return route_to_queue(st, interaction, now, late=False)


def route_to_queue(st: EngineState, interaction: Interaction, now: float, *, late: bool) -> Decision:
    assert interaction.queue is not None
    count = parallel.width(st, interaction)
    if count is not None:
        chosen = parallel.select_many(st, interaction, count, set())
        if chosen:
            return parallel.offer_round(st, interaction, chosen, now, late=late)
    else:
        agent_id = select(st, interaction.queue, interaction.channel, interaction.vendor, interaction.excluded)
        if agent_id is not None:
            session = open_offer(st, interaction, agent_id, now)
            return decide_assign(st, interaction, session, late=late)
    if not can_reject(st, interaction.vendor):
        return _hold(st, interaction, now, late=late)
    queue = st.queues.get(interaction.queue)
    if queue is None:  # removed by a reload while the interaction was open
        return decide_reject(st, interaction, Reason.NO_AGENT_AVAILABLE, now, late=late)
    if queue.on_full is OnFull.WAIT and st.waiting.count(queue.name) < queue.max_waiting:
        interaction.phase = Phase.WAITING
        interaction.holder = None
        interaction.wait_deadline = now + queue.max_wait_s
        # an interaction back from a declined offer keeps its place in the line
        interaction.wait_seq = st.waiting.add(
            interaction.key, queue.name, interaction.channel, interaction.priority, interaction.wait_seq
        ).seq
        timers.arm(st, interaction.wait_deadline, Timer.WAIT, interaction.key)
        decision = Decision(DecisionKind.QUEUED)
        record_decision(st, interaction, decision, late=late)
        return decision
    return decide_reject(st, interaction, Reason.NO_AGENT_AVAILABLE, now, late=late)


def decide_assign(st: EngineState, interaction: Interaction, session: Session, *, late: bool) -> Decision:
    interaction.phase = Phase.OFFERED
    interaction.holder = session.id
    decision = assigned(session.agent_id, session.id)
    record_decision(st, interaction, decision, late=late)
    return decision


_new_object = object.__new__
_DECISION_SETTERS = tuple(
    Decision.__dict__[name].__set__ for name in ("kind", "agent_id", "session_id", "reason", "original")
)


def assigned(agent_id: str, session_id: str) -> Decision:
    """``Decision(DecisionKind.ASSIGNED, agent_id=..., session_id=...)``, the same frozen
    object, built at about half the cost (the dataclass's ``__init__`` sets each field
    through an ``object.__setattr__`` call; this sets the slots directly)."""
    decision = _new_object(Decision)
    set_kind, set_agent, set_session, set_reason, set_original = _DECISION_SETTERS
    set_kind(decision, DecisionKind.ASSIGNED)
    set_agent(decision, agent_id)
    set_session(decision, session_id)
    set_reason(decision, None)
    set_original(decision, None)
    return decision


def can_reject(st: EngineState, vendor: str) -> bool:
    caps = st.caps.get(vendor)
    return caps is None or caps.can_reject


def _hold(st: EngineState, interaction: Interaction, now: float, *, late: bool) -> Decision:
    """Keep an interaction of a vendor that cannot take a rejection until it can be served.

    As if its queue were ``on_full: wait``, but with no ``max_wait_s`` (a queue timeout
    would be a rejection too) and past ``max_waiting``; a targeted one waits for its
    agent (in the agent's own line) and is offered when that agent has room again, even
    after declining or missing it. It keeps its place in the line it had before.
    """
    interaction.phase = Phase.WAITING
    interaction.holder = None
    interaction.wait_deadline = None
    interaction.wait_seq = st.waiting.add(
        interaction.key, line(interaction), interaction.channel, interaction.priority, interaction.wait_seq
    ).seq
    decision = Decision(DecisionKind.QUEUED)
    record_decision(st, interaction, decision, late=late)
    return decision


def line(interaction: Interaction) -> str:
    """The waiting line of an interaction: its agent's (targeted, held) or its queue's."""
    if interaction.target_agent is not None:
        return agent_line(interaction.target_agent)
    assert interaction.queue is not None
    return interaction.queue


def decide_reject(
    st: EngineState, interaction: Interaction, reason: Reason, now: float, *, late: bool = False
) -> Decision:
    if reason not in _ALWAYS_REJECTED and not can_reject(st, interaction.vendor):
        # the vendor's CMS cannot take it back: the interaction waits instead
        return _hold(st, interaction, now, late=late)
    interaction.phase = Phase.DONE
    interaction.holder = None
    interaction.done_at = now
    st.finished_interactions.append((now, interaction))
    decision = Decision(DecisionKind.REJECTED, reason=reason.value)
    record_decision(st, interaction, decision, late=late)
    return decision


def record_decision(st: EngineState, interaction: Interaction, decision: Decision, *, late: bool) -> None:
    if late and decision.kind is DecisionKind.QUEUED and interaction.decisions:
        if interaction.decisions[-1].kind is DecisionKind.QUEUED:
            return  # the vendor knows it waits (a parallel offer's new round, or back in the line)
    interaction.decisions.append(decision)
    st.dirty_interactions[interaction.key] = interaction
    if late:
        st.outbox.append(
            ToVendor(
                interaction.vendor,
                interaction.interaction_id,
                VendorAction.DECISION,
                decision.as_dict(),
                event_id=interaction.offer_event_id,
            )
        )


def select(st: EngineState, queue: str, channel: Channel, vendor: str, exclude: set[str]) -> str | None:
    """Reserve a slot on the best eligible agent of ``queue`` (see :mod:`gateway.router`)."""
    skip = exclude  # copied at the first agent refused (exclude is the caller's)
    while True:
        agent_id = st.index.best(queue, channel, skip)
        if agent_id is None:
            return None
        if slots.allocate(st, agent_id, channel, vendor, offer_next=True) is None:
            return agent_id
        if skip is exclude:
            skip = set(exclude)
        skip.add(agent_id)


def open_offer(
    st: EngineState, interaction: Interaction, agent_id: str, now: float, *, transferred_from: str | None = None
) -> Session:
    """Create an offered session on an agent whose slot is already reserved."""
    agent = st.agents[agent_id]
    lim = core.limits(agent)
    channel = interaction.channel
    session = Session(
        id=st.new_id(),
        agent_id=agent_id,
        channel=channel,
        vendor=interaction.vendor,
        interaction_id=interaction.interaction_id,
        offered_at=now,
        queue=interaction.queue,
        customer=interaction.customer,
        subject=interaction.subject,
        label=default_label(channel, interaction.customer, interaction.subject, interaction.interaction_id),
        profile=lim.start_screen[channel],
        units=lim.weight[channel],
        transferred_from=transferred_from,
        deadline=now + lim.offer_timeout[channel],
    )
    if interaction.account_id is not None:
        session.account = Account(AccountState.IDENTIFIED, interaction.account_id)
    st.sessions[session.id] = session
    agent.open_sessions[session.id] = session
    slots.touch_idle(st, agent, now)
    slots.refresh(st, agent_id)
    timers.arm(st, session.deadline, Timer.OFFER, session.id)  # type: ignore[arg-type]
    core.changed(st, session, "offered", now, message="session.offered", alert=True)
    for message in interaction.transcript:
        # history, not news: the offer itself alerts
        core.to_agent(st, agent_id, "chat.message", session_id=session.id, alert=False, replay=True, **message)
    return session


def withdraw(st: EngineState, session: Session, outcome: Outcome, now: float) -> None:
    """An offer ends unaccepted (declined, expired, abandoned, withdrawn): free the slot, then re-route."""
    session.state = SessionState.CLOSED
    session.closed_at = now
    session.outcome = outcome
    session.deadline = None
    slots.release(st, session)
    st.finished_sessions.append((now, session))
    core.changed(st, session, outcome.value, now, message="session.closed")
    interaction = core.interaction_of(st, session)
    if interaction is not None and interaction.phase is not Phase.DONE:
        if interaction.pending == session.id:
            # a consult target said no: the source keeps the interaction
            interaction.pending = None
            if interaction.holder is not None:
                core.changed(st, st.sessions[interaction.holder], "transfer_failed", now)
        elif interaction.holder == session.id:
            interaction.holder = None
            interaction.excluded.add(session.agent_id)
            if interaction.target_agent is not None:
                decide_reject(st, interaction, Reason.OFFER_TIMEOUT, now, late=True)
            else:
                route_to_queue(st, interaction, now, late=True)
        elif session.id in interaction.parallel:
            parallel.left(st, interaction, session, now)
    serve_waiting(st, session.agent_id, now)
    agents.drop_if_retired(st, session.agent_id, now)


def serve_waiting(st: EngineState, agent_id: str, now: float) -> None:
    """Offer waiting interactions to an agent that may have room, best first."""
    if not len(st.waiting):
        return
    agent = st.agents[agent_id]
    if agent.retiring:
        return

    def refuses(key: InteractionKey) -> bool:
        # an interaction waiting for this very agent is offered to it again, declined or not
        interaction = st.interactions[key]
        return interaction.target_agent is None and agent_id in interaction.excluded

    lines = [*agent.queues, agent_line(agent_id)]

    while True:
        state = st.store.get(agent_id)
        if state.presence is not Presence.READY:
            return
        room = {c: check(agent.profile, state.load, state.presence, c) is None for c in INBOUND_CHANNELS}
        waiter = st.waiting.best_for(lines, has_room=room.__getitem__, refuses=refuses)
        if waiter is None:
            return
        interaction = st.interactions[waiter.key]
        if slots.allocate(st, agent_id, interaction.channel, interaction.vendor) is not None:
            return
        st.waiting.remove(waiter.key)
        interaction.wait_deadline = None
        count = parallel.width(st, interaction)
        if count is not None:  # this agent and up to count - 1 more at once
            others = parallel.select_many(st, interaction, count - 1, {agent_id})
            parallel.offer_round(st, interaction, [agent_id, *others], now, late=True)
        else:
            session = open_offer(st, interaction, agent_id, now)
            decide_assign(st, interaction, session, late=True)
