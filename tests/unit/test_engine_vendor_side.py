"""Engine: what a vendor reports about an offer (``accept`` / ``decline`` events: a phone that
answered or did not), and the reads adapters rely on to mirror capacity to their CMS and to
resynchronise after a reconnect (``availability``, ``take_touched_agents``,
``open_interactions``)."""

from __future__ import annotations

import pytest

from gateway.capacity import Reason
from gateway.errors import InvalidState
from gateway.events import Channel
from gateway.notices import DecisionKind, VendorAction
from gateway.sessions import Outcome, SessionState

from .conftest import (
    assert_all_zero,
    assert_counters_exact,
    event,
    in_use,
    make_engine,
    offer,
    transitions,
    vendor_notices,
)

VOICE_ONE = {"std": {"max_sessions": 3, "channels": {"voice": 1}}}


def test_a_vendor_accept_makes_the_offered_session_active_without_echoing_it_back() -> None:
    engine = make_engine(profiles=VOICE_ONE)
    assigned = engine.handle_event(offer("call-1", channel="voice", agent="a1"))
    engine.drain()

    decision = engine.handle_event(event("accept", "call-1", agent="a1"))
    notices = engine.drain()

    assert decision.kind is DecisionKind.ACCEPTED
    session = engine.sessions[assigned.session_id or ""]
    assert session.state is SessionState.ACTIVE
    assert transitions(notices, session.id) == ["accepted"]
    # the vendor told us: no ``accepted`` notice goes back to it
    assert vendor_notices(notices, VendorAction.ACCEPTED) == []
    assert_counters_exact(engine)


def test_a_vendor_accept_after_the_desktop_accepted_is_a_no_op() -> None:
    engine = make_engine()
    assigned = engine.handle_event(offer("chat-1", agent="a1"))
    engine.accept(assigned.session_id or "")
    engine.drain()

    assert engine.handle_event(event("accept", "chat-1")).kind is DecisionKind.ACCEPTED
    assert transitions(engine.drain()) == []


def test_a_vendor_accept_with_nothing_offered_is_refused_and_changes_nothing() -> None:
    engine = make_engine()
    engine.handle_event(offer("chat-1", agent="a1"))
    engine.drain()
    with pytest.raises(InvalidState) as raised:
        engine.handle_event(event("accept", "chat-1", agent="a2"))
    assert raised.value.code == "session_not_offered"


def test_a_vendor_decline_of_a_targeted_offer_closes_it_declined_and_rejects_the_interaction() -> None:
    engine = make_engine(profiles=VOICE_ONE)
    assigned = engine.handle_event(offer("call-1", channel="voice", agent="a1"))
    engine.drain()

    engine.handle_event(event("decline", "call-1", agent="a1"))
    notices = engine.drain()

    session = engine.sessions[assigned.session_id or ""]
    assert (session.state, session.outcome) == (SessionState.CLOSED, Outcome.DECLINED)
    late = vendor_notices(notices, VendorAction.DECISION)
    assert [n.data for n in late] == [{"decision": "rejected", "reason": Reason.OFFER_TIMEOUT.value}]
    assert_all_zero(engine)


def test_a_vendor_decline_of_a_queue_offer_re_routes_it_to_another_agent() -> None:
    engine = make_engine()
    first = engine.handle_event(offer("chat-1", queue="support"))
    engine.drain()

    engine.handle_event(event("decline", "chat-1"))
    notices = engine.drain()

    late = vendor_notices(notices, VendorAction.DECISION)
    assert len(late) == 1 and late[0].data["decision"] == "assigned"
    assert late[0].data["agent_id"] != first.agent_id
    assert_counters_exact(engine)


def test_availability_gives_the_reason_an_allocation_would_get_without_reserving() -> None:
    engine = make_engine(profiles=VOICE_ONE, ready=["a1"])
    assert engine.availability("a1", Channel.VOICE) is None
    assert engine.availability("a2", Channel.VOICE) is Reason.AGENT_OFFLINE
    assert engine.availability("nobody", Channel.VOICE) is Reason.UNKNOWN_AGENT
    engine.set_presence("a3", "not_ready")
    assert engine.availability("a3", Channel.VOICE) is Reason.AGENT_NOT_READY
    assert in_use(engine, "a1")["sessions"] == 0

    engine.handle_event(offer("call-1", channel="voice", agent="a1"))
    assert engine.availability("a1", Channel.VOICE) is Reason.CHANNEL_AT_CAPACITY
    assert engine.availability("a1", Channel.CHAT) is None


def test_touched_agents_name_every_agent_whose_presence_or_load_changed() -> None:
    engine = make_engine()
    engine.take_touched_agents()
    assert engine.take_touched_agents() == set()

    engine.handle_event(offer("chat-1", agent="a2"))
    assert engine.take_touched_agents() == {"a2"}
    engine.set_presence("a3", "not_ready")
    assert engine.take_touched_agents() == {"a3"}


def test_open_interactions_list_what_a_vendor_still_has_open() -> None:
    engine = make_engine(queues=[{"name": "support", "on_full": "wait", "max_wait_s": 60}], ready=["a1"])
    held = engine.handle_event(offer("chat-1", agent="a1"))
    engine.handle_event(offer("mail-1", channel="email", queue="support", vendor="other"))
    engine.handle_event(offer("gone", agent="a1"))
    engine.handle_event(event("end", "gone"))

    rows = {row["interaction_id"]: row for row in engine.open_interactions("crm")}
    assert set(rows) == {"chat-1"}
    assert rows["chat-1"]["session_id"] == held.session_id
    assert (rows["chat-1"]["agent_id"], rows["chat-1"]["state"], rows["chat-1"]["phase"]) == (
        "a1",
        "offered",
        "offered",
    )
    assert [r["interaction_id"] for r in engine.open_interactions("other")] == ["mail-1"]
