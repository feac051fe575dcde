"""Blind and consult transfers of an active session to an agent or a queue."""

from __future__ import annotations

from ..capacity import Reason
from ..errors import ActionError, CapacityRejected, InvalidState, NotFound
from ..interactions import Phase
from ..notices import VendorAction
from ..sessions import Outcome, Session, SessionState
from . import core, offers, sessions, slots, timers
from .core import EngineState


def transfer(
    st: EngineState,
    session_id: str,
    *,
    to_agent: str | None = None,
    to_queue: str | None = None,
    mode: str = "blind",
    actor: str | None = None,
) -> Session:
    """Transfer an active session to an agent or a queue; returns the target's offered session.

    ``blind``: the target is allocated, then the source session ends.
    ``consult``: the source stays until the target accepts; if the target declines or
    times out, the source keeps the interaction. A transfer that cannot be allocated
    raises and leaves everything as it was.
    """
    now = timers.fire_due(st)
    session = core.own_session(st, session_id, actor)
    if mode not in ("blind", "consult"):
        raise ActionError("mode is blind or consult", code="invalid_request")
    if (to_agent is None) == (to_queue is None):
        raise ActionError("a transfer names exactly one of to_agent and to_queue", code="invalid_transfer_target")
    if session.state is not SessionState.ACTIVE:
        raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
    interaction = core.interaction_of(st, session)
    if interaction is None:
        raise InvalidState("manual sessions cannot be transferred", code="transfer_not_supported")
    caps = st.caps.get(session.vendor or "")
    if caps is not None and not caps.can_transfer:
        raise InvalidState(f"vendor {session.vendor} cannot transfer", code=Reason.VENDOR_UNSUPPORTED.value)
    if interaction.pending is not None:
        raise InvalidState(f"session {session_id} already has a consult transfer pending", code="transfer_in_progress")
    if to_agent is not None:
        if to_agent == session.agent_id:
            raise ActionError("cannot transfer a session to its own agent", code="invalid_transfer_target")
        core.find_agent(st, to_agent)
        reason = slots.allocate(st, to_agent, session.channel, interaction.vendor)
        if reason is not None:
            raise CapacityRejected(reason.value, f"transfer to {to_agent} refused: {reason.value}")
        target_agent = to_agent
    else:
        assert to_queue is not None
        if to_queue not in st.queues:
            raise NotFound(f"no queue {to_queue!r}", code="unknown_queue")
        found = offers.select(st, to_queue, session.channel, interaction.vendor, {session.agent_id})
        if found is None:
            raise CapacityRejected(Reason.NO_AGENT_AVAILABLE.value, f"nobody in {to_queue} can take it")
        target_agent = found
    target = offers.open_offer(st, interaction, target_agent, now, transferred_from=session.id)
    if to_queue is not None:
        target.queue = to_queue
    if mode == "consult":
        interaction.pending = target.id
        return target
    # blind: the interaction now belongs to the target's offer, routed like a fresh one
    interaction.holder = target.id
    interaction.phase = Phase.OFFERED
    interaction.target_agent = to_agent
    if to_queue is not None:
        interaction.queue = to_queue
        interaction.excluded = {session.agent_id}
    sessions.end_session(st, session, Outcome.TRANSFERRED, now, transferred_to=target.id)
    core.to_vendor(st, interaction, VendorAction.TRANSFERRED, mode="blind", session=target, source=session)
    return target
