"""Engine session lifecycle (DESIGN section 5): accept, decline, offer timeout, end, wrap-up,
vendor end, presence, desktop disconnects, illegal actions, pruning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.engine import Engine
from gateway.errors import ActionError, Forbidden, InvalidState, NotFound
from gateway.interactions import Phase
from gateway.notices import DecisionKind, VendorAction
from gateway.sessions import Outcome, SessionState

from .conftest import (
    T0,
    VENDOR,
    advance,
    agent_messages,
    agent_spec,
    assert_all_zero,
    assert_counters_exact,
    event,
    in_use,
    make_engine,
    offer,
    presence_notices,
    snapshot,
    transitions,
    vendor_notices,
)

TWO_AGENTS = [agent_spec("a1"), agent_spec("a2")]


# ============================================================================ accept


def test_accept_makes_the_offer_active_and_tells_desktop_and_vendor() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    advance(engine, 4)
    engine.drain()
    session = engine.accept("s1")
    notices = engine.drain()

    assert (session.state, session.accepted_at) == (SessionState.ACTIVE, T0 + 4)
    [opened] = agent_messages(notices, "a1", "session.opened")
    assert opened["session"]["state"] == "active"
    [accepted] = vendor_notices(notices, VendorAction.ACCEPTED)
    assert (accepted.interaction_id, accepted.data) == ("i1", {"agent_id": "a1", "session_id": "s1"})
    assert transitions(notices, "s1") == ["accepted"]
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.ACTIVE
    assert engine.focused_session("a1") is None  # accepting does not focus either
    assert in_use(engine, "a1")["sessions"] == 1


def test_an_accepted_session_no_longer_times_out() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 3600)
    assert engine.session("s1").state is SessionState.ACTIVE


# ============================================================================ decline


def test_declining_an_untargeted_offer_closes_it_and_reroutes_excluding_the_decliner() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", event_id="e1"))
    engine.drain()
    declined = engine.decline("s1")
    notices = engine.drain()

    assert (declined.state, declined.outcome, declined.closed_at) == (SessionState.CLOSED, Outcome.DECLINED, T0)
    assert agent_messages(notices, "a1", "session.closed")[0]["session"]["outcome"] == "declined"
    rerouted = engine.session("s2")
    assert (rerouted.agent_id, rerouted.state) == ("a2", SessionState.OFFERED)
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.event_id, late.data) == ("e1", {"decision": "assigned", "agent_id": "a2", "session_id": "s2"})
    assert in_use(engine, "a1")["sessions"] == 0
    assert "a1" in engine.interactions[(VENDOR, "i1")].excluded
    assert_counters_exact(engine)


def test_declining_a_targeted_offer_rejects_it_to_the_vendor_with_offer_timeout() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1", event_id="e1"))
    engine.drain()
    engine.decline("s1")
    notices = engine.drain()

    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.interaction_id, late.event_id) == ("i1", "e1")
    assert late.data == {"decision": "rejected", "reason": "offer_timeout"}
    assert len(engine.sessions) == 1  # not re-routed to anybody
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE
    assert_all_zero(engine)


# ============================================================================ offer timeout


def test_an_untargeted_offer_expires_after_the_channel_timeout_and_is_rerouted() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "offer_timeout_s": {"chat": 20}}})
    engine.handle_event(offer("i1"))
    advance(engine, 19.999)
    assert engine.session("s1").state is SessionState.OFFERED
    engine.drain()
    advance(engine, 0.001)
    notices = engine.drain()

    expired = engine.session("s1")
    assert (expired.state, expired.outcome, expired.closed_at) == (SessionState.CLOSED, Outcome.EXPIRED, T0 + 20)
    rerouted = engine.session("s2")
    assert (rerouted.agent_id, rerouted.offered_at) == ("a2", T0 + 20)
    assert vendor_notices(notices, VendorAction.DECISION)[0].data["agent_id"] == "a2"
    assert_counters_exact(engine)


def test_the_default_offer_timeout_is_thirty_seconds() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", channel="email"))
    advance(engine, 29.9)
    assert engine.session("s1").state is SessionState.OFFERED
    advance(engine, 0.1)
    assert engine.session("s1").outcome is Outcome.EXPIRED


def test_a_targeted_offer_that_times_out_is_rejected_late_with_offer_timeout() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1", event_id="e1"))
    engine.drain()
    advance(engine, 30)
    notices = engine.drain()
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.event_id, late.data) == ("e1", {"decision": "rejected", "reason": "offer_timeout"})
    assert engine.session("s1").outcome is Outcome.EXPIRED
    assert_all_zero(engine)


def test_timeouts_cascade_each_at_its_own_deadline_when_the_clock_jumps() -> None:
    """a1 misses at +30, a2 (offered at +30) misses at +60: then nobody is left."""
    engine = make_engine(agents=TWO_AGENTS)
    engine.handle_event(offer("i1"))
    engine.drain()
    advance(engine, 500)
    notices = engine.drain()
    first, second = engine.session("s1"), engine.session("s2")
    assert (first.agent_id, first.closed_at) == ("a1", T0 + 30)
    assert (second.agent_id, second.offered_at, second.closed_at) == ("a2", T0 + 30, T0 + 60)
    assert [n.data["decision"] for n in vendor_notices(notices, VendorAction.DECISION)] == ["assigned", "rejected"]
    assert vendor_notices(notices, VendorAction.DECISION)[-1].data["reason"] == "no_agent_available"
    assert_all_zero(engine)


def test_next_deadline_names_the_pending_offer_timeout() -> None:
    engine = make_engine()
    assert engine.next_deadline() is None
    engine.handle_event(offer("i1"))
    assert engine.next_deadline() == T0 + 30
    engine.accept("s1")
    assert engine.next_deadline() is None


# ============================================================================ end, wrap-up, close


def test_end_then_wrap_up_then_closed_with_exact_handle_and_wrap_times() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 10}}})
    engine.handle_event(offer("i1"))
    advance(engine, 1.234)
    engine.accept("s1")
    advance(engine, 2.266)
    engine.drain()
    session = engine.end("s1")
    notices = engine.drain()

    assert (session.state, session.outcome, session.ended_at) == (SessionState.WRAP_UP, Outcome.COMPLETED, T0 + 3.5)
    assert session.handle_ms == 2266
    assert session.wrap_ms is None
    assert in_use(engine, "a1")["sessions"] == 1  # the slot stays busy during wrap-up
    [ended] = vendor_notices(notices, VendorAction.ENDED)
    assert ended.data == {"agent_id": "a1", "session_id": "s1"}
    assert agent_messages(notices, "a1", "session.updated")[-1]["session"]["state"] == "wrap_up"
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE

    advance(engine, 9.999)
    assert engine.session("s1").state is SessionState.WRAP_UP
    engine.drain()
    advance(engine, 0.001)
    notices = engine.drain()
    closed = engine.session("s1")
    assert (closed.state, closed.closed_at, closed.wrap_ms, closed.handle_ms) == (
        SessionState.CLOSED,
        T0 + 13.5,
        10_000,
        2266,
    )
    assert closed.as_dict(engine.clock.now())["handle_ms"] == 2266
    assert agent_messages(notices, "a1", "session.closed")[0]["session"]["wrap_ms"] == 10_000
    assert_all_zero(engine)


def test_without_wrap_up_an_end_closes_the_session_at_once() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 61)
    engine.drain()
    session = engine.end("s1")
    assert (session.state, session.handle_ms, session.wrap_ms) == (SessionState.CLOSED, 61_000, 0)
    assert session.closed_at == session.ended_at == T0 + 61
    assert agent_messages(engine.drain(), "a1", "session.closed")[0]["session"]["outcome"] == "completed"
    assert_all_zero(engine)


def test_wrap_up_is_per_channel() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"voice": 30}}})
    engine.handle_event(offer("call", channel="voice", agent="a1"))
    engine.handle_event(offer("chat", channel="chat", agent="a1"))
    engine.accept("s1")
    engine.accept("s2")
    assert engine.end("s1").state is SessionState.WRAP_UP
    assert engine.end("s2").state is SessionState.CLOSED


# ============================================================================ vendor events


def test_a_vendor_end_before_accept_closes_the_offer_abandoned_without_rerouting() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.drain()
    decision = engine.handle_event(event("end", "i1"))
    notices = engine.drain()
    assert decision.kind is DecisionKind.ACCEPTED
    session = engine.session("s1")
    assert (session.state, session.outcome) == (SessionState.CLOSED, Outcome.ABANDONED)
    assert len(engine.sessions) == 1
    assert agent_messages(notices, "a1", "session.closed")[0]["session"]["outcome"] == "abandoned"
    assert vendor_notices(notices) == []
    assert_all_zero(engine)


def test_a_vendor_end_of_an_active_session_ends_it_into_wrap_up() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 5}}})
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 7)
    engine.drain()
    engine.handle_event(event("end", "i1"))
    session = engine.session("s1")
    assert (session.state, session.outcome, session.handle_ms) == (SessionState.WRAP_UP, Outcome.COMPLETED, 7000)
    assert vendor_notices(engine.drain()) == []  # the vendor told us: nothing to tell back
    advance(engine, 5)
    assert engine.session("s1").state is SessionState.CLOSED
    assert_all_zero(engine)


def test_a_vendor_end_of_a_finished_interaction_is_accepted_and_changes_nothing() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.end("s1")
    before = snapshot(engine)
    assert engine.handle_event(event("end", "i1")).kind is DecisionKind.ACCEPTED
    after = snapshot(engine)
    assert after["sessions"] == before["sessions"] and after["agents"] == before["agents"]


# ============================================================================ presence


def test_set_presence_stores_state_and_reason_and_tells_everyone() -> None:
    engine = make_engine()
    body = engine.set_presence("a1", "not_ready", "lunch")
    notices = engine.drain()
    assert body["presence"] == {"state": "not_ready", "reason": "lunch"}
    assert engine.agent("a1")["presence"] == {"state": "not_ready", "reason": "lunch"}
    [changed] = presence_notices(notices)
    assert (changed.agent_id, changed.state, changed.reason) == ("a1", "not_ready", "lunch")
    [message] = agent_messages(notices, "a1", "agent.presence")
    assert message["presence"] == {"state": "not_ready", "reason": "lunch"}


def test_agents_start_offline() -> None:
    engine = make_engine(ready=[])
    assert {engine.agent(a)["presence"]["state"] for a in engine.agent_ids()} == {"offline"}


def test_unknown_presence_states_and_agents_are_refused() -> None:
    engine = make_engine()
    with pytest.raises(ValueError):
        engine.set_presence("a1", "busy")
    with pytest.raises(NotFound) as missing:
        engine.set_presence("ghost", "ready")
    assert missing.value.code == "unknown_agent"


def test_going_offline_withdraws_offers_rerouting_them_and_keeps_active_sessions() -> None:
    engine = make_engine(agents=TWO_AGENTS)
    engine.handle_event(offer("i1"))  # a1, active below
    engine.accept("s1")
    engine.handle_event(offer("i2", agent="a2"))  # s2, a2 (a1 stays eligible)
    engine.handle_event(offer("i3", event_id="e3"))  # s3 on a1 (longest idle)
    assert engine.session("s3").agent_id == "a1"
    engine.drain()
    engine.set_presence("a1", "offline")
    notices = engine.drain()

    assert engine.session("s1").state is SessionState.ACTIVE
    assert (engine.session("s3").state, engine.session("s3").outcome) == (SessionState.CLOSED, Outcome.EXPIRED)
    assert engine.session("s4").agent_id == "a2"
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.event_id, late.data["agent_id"]) == ("e3", "a2")
    assert in_use(engine, "a1")["sessions"] == 1
    assert_counters_exact(engine)


def test_going_offline_rejects_targeted_offers_late() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.drain()
    engine.set_presence("a1", "offline")
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert late.data == {"decision": "rejected", "reason": "offer_timeout"}


def test_not_ready_keeps_pending_offers() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.set_presence("a1", "not_ready")
    assert engine.session("s1").state is SessionState.OFFERED
    engine.accept("s1")
    assert engine.session("s1").state is SessionState.ACTIVE


# ============================================================================ desktop disconnects


def test_a_desktop_connection_answers_hello_with_the_agent_snapshot() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    hello = engine.desktop_connected("a1")
    assert hello["desktop_connected"] is True
    assert [s["id"] for s in hello["sessions"]] == ["s1"]
    assert hello["in_use"]["chat"] == 1
    assert hello["presence"] == {"state": "ready", "reason": None}


def test_after_the_grace_period_the_agent_goes_offline_offers_move_and_active_sessions_stay_flagged() -> None:
    engine = make_engine(agents=TWO_AGENTS, desktop_grace_s=30)
    engine.desktop_connected("a1")
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.handle_event(offer("i2", agent="a2"))
    engine.handle_event(offer("i3"))  # s3 on a1
    engine.desktop_disconnected("a1")
    advance(engine, 29.999)
    assert engine.agent("a1")["presence"]["state"] == "ready"
    assert engine.session("s3").state is SessionState.OFFERED
    engine.drain()
    advance(engine, 0.001)
    notices = engine.drain()

    assert engine.agent("a1")["presence"] == {"state": "offline", "reason": "desktop_disconnected"}
    assert [(p.state, p.reason) for p in presence_notices(notices)] == [("offline", "desktop_disconnected")]
    assert engine.session("s3").outcome is Outcome.EXPIRED
    assert engine.session("s4").agent_id == "a2"
    active = engine.session("s1")
    assert (active.state, active.flagged) == (SessionState.ACTIVE, True)
    assert "flagged" in transitions(notices, "s1")
    assert_counters_exact(engine)


def test_reconnecting_within_the_grace_period_changes_nothing() -> None:
    engine = make_engine(desktop_grace_s=30, profiles={"std": {"max_sessions": 3, "offer_timeout_s": {"chat": 600}}})
    engine.desktop_connected("a1")
    engine.handle_event(offer("i1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s2")
    engine.desktop_disconnected("a1")
    advance(engine, 20)
    engine.desktop_connected("a1")
    advance(engine, 20)
    assert engine.agent("a1")["presence"]["state"] == "ready"
    assert engine.session("s1").state is SessionState.OFFERED
    assert engine.session("s2").flagged is False


def test_reconnecting_after_the_grace_period_clears_the_flags() -> None:
    engine = make_engine(desktop_grace_s=10)
    engine.desktop_connected("a1")
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.desktop_disconnected("a1")
    advance(engine, 10)
    assert engine.session("s1").flagged is True
    engine.drain()
    hello = engine.desktop_connected("a1")
    assert engine.session("s1").flagged is False
    assert hello["sessions"][0]["flagged"] is False
    assert transitions(engine.drain(), "s1") == ["unflagged"]


def test_desktops_on_two_instances_one_leaving_keeps_the_agent_connected() -> None:
    """A cluster: the agent's desktop moved from instance A to B (B connected first, then A's
    socket closed): no grace period starts; B's leaving starts it."""
    engine = make_engine(desktop_grace_s=30)
    engine.desktop_connected("a1", "A")
    engine.desktop_connected("a1", "B")
    engine.desktop_disconnected("a1", "A")
    assert engine.agent("a1")["desktop_connected"] is True
    assert engine.next_deadline() is None
    advance(engine, 60)
    assert engine.agent("a1")["presence"]["state"] == "ready"
    engine.desktop_disconnected("a1", "B")
    assert engine.agent("a1")["desktop_connected"] is False
    advance(engine, 30)
    assert engine.agent("a1")["presence"] == {"state": "offline", "reason": "desktop_disconnected"}


def test_an_instance_gone_counts_as_its_desktops_disconnecting() -> None:
    engine = make_engine(desktop_grace_s=30)
    engine.desktop_connected("a1", "A")
    engine.desktop_connected("a2", "A")
    engine.desktop_connected("a2", "B")
    engine.desktop_connected("a3", "B")
    assert engine.desktop_hosts() == {"A", "B"}
    assert engine.desktops_gone("A") == ["a1"]  # a2 still has B's
    assert engine.desktop_hosts() == {"B"}
    assert engine.desktops_gone("A") == []  # told twice (two instances noticed): nothing more
    assert engine.desktops_gone("nobody") == []
    advance(engine, 30)
    presence = {a: engine.agent(a)["presence"]["state"] for a in ("a1", "a2", "a3")}
    assert presence == {"a1": "offline", "a2": "ready", "a3": "ready"}
    engine.desktop_connected("a1", "B")  # its desktop reconnected elsewhere
    assert engine.agent("a1")["desktop_connected"] is True and engine.desktop_hosts() == {"B"}


def test_a_second_disconnect_restarts_the_grace_period() -> None:
    engine = make_engine(desktop_grace_s=30)
    engine.desktop_connected("a1")
    engine.desktop_disconnected("a1")
    advance(engine, 20)
    engine.desktop_connected("a1")
    engine.desktop_disconnected("a1")
    advance(engine, 20)  # 40 s after the first disconnect, 20 after the second
    assert engine.agent("a1")["presence"]["state"] == "ready"
    advance(engine, 10)
    assert engine.agent("a1")["presence"]["state"] == "offline"


# ============================================================================ illegal actions

Action = Callable[[Engine], Any]


def _engine_with_every_state() -> Engine:
    """s1 offered (a1), s2 active (a1), s3 closed/declined (a2), s4 expired (a3),
    s5 offered on a1 for i5 after s4 expired; s6 in wrap-up (a2)."""
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"email": 60}}})
    engine.handle_event(offer("i1", agent="a1"))  # s1
    engine.handle_event(offer("i2", agent="a1"))  # s2
    engine.accept("s2")
    engine.handle_event(offer("i3", agent="a2"))  # s3
    engine.decline("s3")
    engine.handle_event(offer("i4", agent="a3", channel="voice"))  # s4
    advance(engine, 30)  # s1 and s4 expire
    engine.handle_event(offer("i5", agent="a1"))  # s5
    engine.handle_event(offer("i6", agent="a2", channel="email"))  # s6
    engine.accept("s6")
    engine.end("s6")
    engine.drain()
    return engine


ILLEGAL: list[tuple[str, Action, type[ActionError], str]] = [
    ("accept an expired session", lambda e: e.accept("s1"), InvalidState, "session_not_offered"),
    ("accept a declined session", lambda e: e.accept("s3"), InvalidState, "session_not_offered"),
    ("accept an active session", lambda e: e.accept("s2"), InvalidState, "session_not_offered"),
    ("accept a wrap-up session", lambda e: e.accept("s6"), InvalidState, "session_not_offered"),
    ("decline an active session", lambda e: e.decline("s2"), InvalidState, "session_not_offered"),
    ("decline a closed session", lambda e: e.decline("s4"), InvalidState, "session_not_offered"),
    ("accept an unknown session", lambda e: e.accept("nope"), NotFound, "session_not_found"),
    ("end an unknown session", lambda e: e.end("nope"), NotFound, "session_not_found"),
    ("end an offered session", lambda e: e.end("s5"), InvalidState, "session_not_active"),
    ("end a closed session", lambda e: e.end("s3"), InvalidState, "session_not_active"),
    ("end a session in wrap-up", lambda e: e.end("s6"), InvalidState, "session_not_active"),
    ("focus an offered session", lambda e: e.focus("a1", "s5"), InvalidState, "session_not_active"),
    ("focus a closed session", lambda e: e.focus("a1", "s1"), InvalidState, "session_not_active"),
    ("focus another agent's session", lambda e: e.focus("a1", "s6"), Forbidden, "forbidden"),
    ("focus for an unknown agent", lambda e: e.focus("ghost", None), NotFound, "unknown_agent"),
    ("accept by another agent", lambda e: e.accept("s5", actor="a2"), Forbidden, "forbidden"),
    ("decline by another agent", lambda e: e.decline("s5", actor="a2"), Forbidden, "forbidden"),
    ("end by another agent", lambda e: e.end("s2", actor="a2"), Forbidden, "forbidden"),
    ("note by another agent", lambda e: e.note("s2", "x", actor="a3"), Forbidden, "forbidden"),
    ("confirm by another agent", lambda e: e.confirm_account("s2", "A", actor="a3"), Forbidden, "forbidden"),
    ("reset by another agent", lambda e: e.reset_account("s2", actor="a3"), Forbidden, "forbidden"),
    ("send by another agent", lambda e: e.send("s2", "hello", actor="a3"), Forbidden, "forbidden"),
    ("transfer by another agent", lambda e: e.transfer("s2", to_agent="a3", actor="a3"), Forbidden, "forbidden"),
    ("focus by another agent", lambda e: e.focus("a1", "s2", actor="a2"), Forbidden, "forbidden"),
    ("focus none by another agent", lambda e: e.focus("a1", None, actor="a2"), Forbidden, "forbidden"),
    ("presence by another agent", lambda e: e.set_presence("a1", "offline", actor="a2"), Forbidden, "forbidden"),
    ("manual session for another agent", lambda e: e.new_session("a1", actor="a2"), Forbidden, "forbidden"),
    ("read another agent's session", lambda e: e.session("s2", actor="a2"), Forbidden, "forbidden"),
    ("note on an offered session", lambda e: e.note("s5", "x"), InvalidState, "session_not_active"),
    ("empty note", lambda e: e.note("s2", "   "), ActionError, "invalid_request"),
    ("reply on an e-mail session", lambda e: e.send("s6", "x"), ActionError, "channel_unsupported"),
    ("reply on an offered chat", lambda e: e.send("s5", "x"), InvalidState, "session_not_active"),
    ("manual session for an unknown agent", lambda e: e.new_session("ghost"), NotFound, "unknown_agent"),
    ("confirm without any account", lambda e: e.confirm_account("s2"), ActionError, "account_not_identified"),
]


@pytest.mark.parametrize(("what", "action", "error", "code"), ILLEGAL, ids=[case[0] for case in ILLEGAL])
def test_illegal_actions_raise_a_stable_code_and_change_nothing(
    what: str, action: Action, error: type[ActionError], code: str
) -> None:
    engine = _engine_with_every_state()
    before = snapshot(engine)
    with pytest.raises(error) as raised:
        action(engine)
    assert raised.value.code == code
    assert snapshot(engine) == before
    assert_counters_exact(engine)


def test_the_every_state_fixture_has_the_states_it_claims() -> None:
    engine = _engine_with_every_state()
    states = {sid: (s.state, s.outcome) for sid, s in engine.sessions.items()}
    assert states == {
        "s1": (SessionState.CLOSED, Outcome.EXPIRED),
        "s2": (SessionState.ACTIVE, None),
        "s3": (SessionState.CLOSED, Outcome.DECLINED),
        "s4": (SessionState.CLOSED, Outcome.EXPIRED),
        "s5": (SessionState.OFFERED, None),
        "s6": (SessionState.WRAP_UP, Outcome.COMPLETED),
    }


def test_the_own_agent_may_act_as_actor() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    assert engine.accept("s1", actor="a1").state is SessionState.ACTIVE
    assert engine.end("s1", actor="a1").state is SessionState.CLOSED


# ============================================================================ pruning


def test_event_ids_are_forgotten_after_the_dedup_window() -> None:
    engine = make_engine(ready=[], dedup_window_s=100)
    assert engine.handle_event(offer("i1", agent="a1", event_id="e1")).reason == "agent_offline"
    engine.set_presence("a1", "ready")
    advance(engine, 99.999)
    assert engine.handle_event(offer("i1", agent="a1", event_id="e1")).kind is DecisionKind.DUPLICATE
    advance(engine, 0.001)
    assert engine.handle_event(offer("i1", agent="a1", event_id="e1")).kind is DecisionKind.ASSIGNED


def test_finished_interactions_are_forgotten_after_the_dedup_window() -> None:
    engine = make_engine(dedup_window_s=100)
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 50)
    engine.end("s1")
    advance(engine, 99.999)
    assert (VENDOR, "i1") in engine.interactions
    advance(engine, 0.001)
    assert (VENDOR, "i1") not in engine.interactions


def test_open_interactions_are_never_pruned() -> None:
    engine = make_engine(dedup_window_s=10, closed_retention_s=10)
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 1000)
    assert (VENDOR, "i1") in engine.interactions
    assert engine.session("s1").state is SessionState.ACTIVE


def test_closed_sessions_are_forgotten_after_closed_retention_s() -> None:
    engine = make_engine(closed_retention_s=600)
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    advance(engine, 10)
    engine.end("s1")
    advance(engine, 599.999)
    assert engine.session("s1").state is SessionState.CLOSED
    advance(engine, 0.001)
    with pytest.raises(NotFound) as gone:
        engine.session("s1")
    assert gone.value.code == "session_not_found"


def test_sessions_in_wrap_up_are_kept_until_closed_plus_retention() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 100}}}, closed_retention_s=50)
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.end("s1")
    advance(engine, 99)
    assert engine.session("s1").state is SessionState.WRAP_UP
    advance(engine, 1 + 49.999)
    assert engine.session("s1").state is SessionState.CLOSED
    advance(engine, 0.001)
    assert "s1" not in engine.sessions
    assert_all_zero(engine)
