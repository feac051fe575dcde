"""Parallel offers (queue ``policy: offer_all``): one interaction offered to several agents at once.

A *round* offers the interaction to up to ``offer_to`` eligible agents of its queue (every
one with room if unset), longest idle first. Each offer holds its agent's slot like any
offer, so nobody is over capacity if they all accept at the same instant. The first accept
wins (:func:`settle`): the other offers are withdrawn at once (outcome ``withdrawn``, their
slots free immediately) and the vendor gets one late ``assigned`` naming the winner. A
declined or expired offer frees its slot and excludes its agent; when the last offer of a
round is gone, the interaction is routed again as any failed offer of its queue is: a new
round among the agents not yet excluded, else the queue's ``on_full`` (wait, or reject with
``no_agent_available``).

What the vendor hears: the synchronous answer to an offer that goes out in parallel is
``queued`` (no agent has it yet: the same answer as an offer that waits), followed by
exactly one late decision: ``assigned`` (the winner) or ``rejected`` (``queue_timeout``,
``no_agent_available``). A vendor is never told ``queued`` twice in a row (a new round, or
a failed round that waits in the line, changes nothing it needs to know).
"""

from __future__ import annotations

from ..config import QueuePolicy
from ..interactions import Interaction, Phase
from ..notices import Decision, DecisionKind
from ..sessions import Outcome, Session
from . import offers
from .core import EngineState


def width(st: EngineState, interaction: Interaction) -> int | None:
    """How many agents a round offers the interaction to at once (None: not a parallel queue)."""
    if interaction.target_agent is not None or interaction.queue is None:
        return None
    queue = st.queues.get(interaction.queue)
    if queue is None or queue.policy is not QueuePolicy.OFFER_ALL:
        return None
    return queue.offer_to if queue.offer_to is not None else len(st.agents)


def select_many(st: EngineState, interaction: Interaction, count: int, skip: set[str]) -> list[str]:
    """Reserve a slot on up to ``count`` agents of the interaction's queue, best first
    (not its excluded agents, nor ``skip``)."""
    assert interaction.queue is not None
    chosen: list[str] = []
    exclude = interaction.excluded | skip
    while len(chosen) < count:
        agent_id = offers.select(st, interaction.queue, interaction.channel, interaction.vendor, exclude)
        if agent_id is None:
            break
        chosen.append(agent_id)
        exclude.add(agent_id)
    return chosen


def offer_round(st: EngineState, interaction: Interaction, agent_ids: list[str], now: float, *, late: bool) -> Decision:
    """Offer the interaction to every agent of ``agent_ids`` (slots already reserved)."""
    interaction.phase = Phase.OFFERED
    interaction.holder = None
    interaction.parallel = [offers.open_offer(st, interaction, agent_id, now).id for agent_id in agent_ids]
    decision = Decision(DecisionKind.QUEUED)
    offers.record_decision(st, interaction, decision, late=late)
    return decision


def settle(st: EngineState, interaction: Interaction, winner: Session, now: float) -> None:
    """The first accept of a round: the winner holds the interaction, the others are withdrawn."""
    rivals = [session_id for session_id in interaction.parallel if session_id != winner.id]
    interaction.parallel = []
    interaction.holder = winner.id
    decision = Decision(DecisionKind.ASSIGNED, agent_id=winner.agent_id, session_id=winner.id)
    offers.record_decision(st, interaction, decision, late=True)
    for session_id in rivals:
        offers.withdraw(st, st.sessions[session_id], Outcome.WITHDRAWN, now)


def left(st: EngineState, interaction: Interaction, session: Session, now: float) -> None:
    """One offer of a round was declined or expired: its agent is excluded; the last one gone
    routes the interaction again."""
    interaction.parallel.remove(session.id)
    interaction.excluded.add(session.agent_id)
    if not interaction.parallel:
        offers.route_to_queue(st, interaction, now, late=True)
