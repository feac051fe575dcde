"""Engine: what happens inside sessions: manual sessions, focus and focus time, notes and
accounts (one session only), customer messages and updates, chat replies (DESIGN 5, 6)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.engine import FOCUS_CHECKPOINT_S, Engine
from gateway.errors import ActionError, CapacityRejected
from gateway.events import Channel, Customer
from gateway.notices import VendorAction
from gateway.records.memory import MemoryJournal
from gateway.sessions import Outcome, SessionState

from .conftest import (
    T0,
    VENDOR,
    advance,
    agent_messages,
    agent_spec,
    assert_all_zero,
    assert_counters_exact,
    clock_of,
    event,
    in_use,
    make_engine,
    offer,
    routed,
    snapshot,
    transitions,
    vendor_notices,
)

# ============================================================================ manual sessions


def test_a_manual_session_is_created_active_and_focused() -> None:
    engine = make_engine()
    session = engine.new_session("a1", label="Callback Mrs. Smith")
    notices = engine.drain()

    assert (session.id, session.agent_id, session.channel) == ("s1", "a1", Channel.MANUAL)
    assert (session.state, session.vendor, session.interaction_id) == (SessionState.ACTIVE, None, None)
    assert session.offered_at == session.accepted_at == T0
    assert session.label == "Callback Mrs. Smith"
    assert session.profile == "manual"
    assert engine.focused_session("a1") == "s1"
    assert agent_messages(notices, "a1", "session.opened")[0]["session"]["state"] == "active"
    assert agent_messages(notices, "a1", "session.offered") == []
    assert vendor_notices(notices) == [] and routed(notices) == []
    assert in_use(engine, "a1") == {"sessions": 1, "units": 1, "voice": 0, "chat": 0, "email": 0, "manual": 1}


def test_a_new_manual_session_takes_the_focus_from_the_previous_one() -> None:
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    advance(engine, 2)
    engine.new_session("a1")
    assert engine.focused_session("a1") == "s2"
    assert engine.session("s1").focus_ms(engine.clock.now()) == 2000


def test_manual_sessions_are_allowed_while_not_ready() -> None:
    engine = make_engine()
    engine.set_presence("a1", "not_ready", "back office")
    assert engine.new_session("a1").state is SessionState.ACTIVE


def test_manual_sessions_are_refused_while_offline_and_nothing_changes() -> None:
    engine = make_engine(ready=[])
    before = snapshot(engine)
    with pytest.raises(CapacityRejected) as refused:
        engine.new_session("a1")
    assert refused.value.code == refused.value.reason == "agent_offline"
    assert refused.value.retryable is True
    assert snapshot(engine) == before


def test_manual_sessions_cannot_take_the_reserved_inbound_session_but_inbound_can() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "reserved_inbound": 1}})
    engine.new_session("a1")
    engine.new_session("a1")
    before = snapshot(engine)
    with pytest.raises(CapacityRejected) as refused:
        engine.new_session("a1")
    assert refused.value.code == "agent_at_capacity"
    assert snapshot(engine) == before
    assert engine.handle_event(offer("i1", channel="voice", agent="a1")).agent_id == "a1"
    assert in_use(engine, "a1")["sessions"] == 3
    assert_counters_exact(engine)


def test_a_manual_session_beyond_the_manual_cap_is_channel_at_capacity() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "channels": {"manual": 1}}})
    engine.new_session("a1")
    with pytest.raises(CapacityRejected) as refused:
        engine.new_session("a1")
    assert refused.value.code == "channel_at_capacity"


def test_a_manual_session_without_label_gets_a_default_title() -> None:
    engine = make_engine()
    assert engine.new_session("a1").label == "New session"


def test_ending_a_manual_session_frees_its_slot_and_its_focus() -> None:
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    advance(engine, 12.5)
    session = engine.end("s1")
    assert (session.state, session.outcome, session.handle_ms) == (SessionState.CLOSED, Outcome.COMPLETED, 12_500)
    assert session.focus_ms(engine.clock.now() + 100) == 12_500
    assert engine.focused_session("a1") is None
    assert vendor_notices(engine.drain()) == []
    assert_all_zero(engine)


def test_manual_sessions_cannot_be_transferred() -> None:
    engine = make_engine()
    engine.new_session("a1")
    with pytest.raises(ActionError) as refused:
        engine.transfer("s1", to_agent="a2")
    assert refused.value.code == "transfer_not_supported"


# ============================================================================ focus


def test_an_agent_has_at_most_one_focused_session() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s1")
    engine.accept("s2")
    engine.drain()
    engine.focus("a1", "s1")
    engine.focus("a1", "s2")
    notices = engine.drain()
    assert engine.focused_session("a1") == "s2"
    focused = [s.id for s in engine.open_sessions("a1") if s.as_dict(engine.clock.now())["focused"]]
    assert focused == ["s2"]
    assert transitions(notices) == ["focused", "unfocused", "focused"]


def test_focus_time_is_the_exact_sum_of_the_focused_intervals() -> None:
    engine = make_engine(desktops=["a1"])
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s1")
    engine.accept("s2")
    now = engine.clock.now
    engine.focus("a1", "s1")
    advance(engine, 2.5)
    engine.focus("a1", "s2")
    advance(engine, 1.0)
    engine.focus("a1", "s1")
    advance(engine, 0.75)
    engine.focus("a1", None)
    advance(engine, 100)  # nothing is focused: no time accrues
    assert engine.session("s1").focus_ms(now()) == 3250
    assert engine.session("s2").focus_ms(now()) == 1000
    engine.end("s1")
    assert engine.session("s1").as_dict(now())["focus_ms"] == 3250


def test_focus_none_leaves_every_session() -> None:
    engine = make_engine()
    engine.new_session("a1")
    engine.drain()
    assert engine.focus("a1", None) is None
    assert engine.focused_session("a1") is None
    assert engine.session("s1").as_dict(engine.clock.now())["focused"] is False
    assert transitions(engine.drain()) == ["unfocused"]


def test_focusing_the_focused_session_again_changes_nothing() -> None:
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    advance(engine, 3)
    engine.drain()
    engine.focus("a1", "s1")
    assert transitions(engine.drain()) == []
    advance(engine, 1)
    assert engine.session("s1").focus_ms(engine.clock.now()) == 4000


def test_a_focused_session_keeps_counting_in_wrap_up_and_stops_when_closed() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 10}}}, desktops=["a1"])
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.focus("a1", "s1")
    advance(engine, 5)
    engine.end("s1")
    advance(engine, 10)  # closed at +15
    advance(engine, 50)
    assert engine.focused_session("a1") is None
    assert engine.session("s1").as_dict(engine.clock.now())["focus_ms"] == 15_000


def test_inbound_offers_never_take_the_focus() -> None:
    engine = make_engine(ready=["a1"])
    engine.new_session("a1")
    engine.drain()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2"))  # untargeted, a1 is the only ready agent
    notices = engine.drain()
    assert engine.focused_session("a1") == "s1"
    offers = agent_messages(notices, "a1", "session.offered")
    assert len(offers) == 2
    assert all(m["alert"] is True and "focus" not in m for m in offers)
    engine.accept("s2")
    assert engine.focused_session("a1") == "s1"


def test_focus_is_per_agent() -> None:
    engine = make_engine()
    engine.new_session("a1")
    engine.new_session("a2")
    engine.focus("a1", None)
    assert engine.focused_session("a2") == "s2"


# ---------------------------------------------------------------------- focus time counts only while somebody looks
# (issue 6 item 8): a desktop of the agent is connected and the agent is not offline.


def focus_ms(engine: Engine, sid: str) -> int:
    return engine.session(sid).focus_ms(engine.clock.now())


def test_focus_time_stops_when_the_last_desktop_goes_and_resumes_when_one_is_back() -> None:
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    advance(engine, 3)
    assert focus_ms(engine, "s1") == 3000
    engine.desktop_disconnected("a1")  # the agent's last socket closed (the hub counts them)
    engine.drain()
    advance(engine, 30)  # within the grace period
    assert focus_ms(engine, "s1") == 3000
    # the focus itself stays: the desktop that comes back shows that session
    assert engine.focused_session("a1") == "s1"
    assert engine.session("s1").as_dict(engine.clock.now())["focused"] is True
    hello = engine.desktop_connected("a1")
    assert [s["focused"] for s in hello["sessions"]] == [True]
    advance(engine, 4)
    assert focus_ms(engine, "s1") == 7000


def test_focus_time_stops_past_the_grace_period_and_waits_for_presence() -> None:
    engine = make_engine(desktops=["a1"], desktop_grace_s=60)
    engine.new_session("a1")
    advance(engine, 2.3)
    engine.desktop_disconnected("a1")
    advance(engine, 600)  # the grace period ends: the agent goes offline
    assert engine.presence_of("a1").value == "offline"
    assert focus_ms(engine, "s1") == 2300
    engine.desktop_connected("a1")  # back, but offline: nobody works here yet
    advance(engine, 10)
    assert focus_ms(engine, "s1") == 2300
    engine.set_presence("a1", "not_ready")
    advance(engine, 1)
    assert focus_ms(engine, "s1") == 3300


def test_focus_time_stops_while_the_agent_is_offline() -> None:
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    advance(engine, 1)
    engine.set_presence("a1", "offline")
    advance(engine, 50)
    assert focus_ms(engine, "s1") == 1000
    engine.set_presence("a1", "ready")
    advance(engine, 0.5)
    assert focus_ms(engine, "s1") == 1500
    # focusing while offline is remembered, and counts from when the agent is back
    engine.handle_event(offer("i1", agent="a1"))
    engine.accept("s2")
    engine.set_presence("a1", "offline")
    engine.focus("a1", "s2")
    advance(engine, 7)
    assert (focus_ms(engine, "s1"), focus_ms(engine, "s2")) == (1500, 0)
    engine.set_presence("a1", "ready")
    advance(engine, 2)
    assert (focus_ms(engine, "s1"), focus_ms(engine, "s2")) == (1500, 2000)


def test_without_any_desktop_focus_is_kept_but_no_time_counts() -> None:
    engine = make_engine()  # driven over REST only: nobody looks
    engine.new_session("a1")
    advance(engine, 5)
    assert engine.focused_session("a1") == "s1" and focus_ms(engine, "s1") == 0
    engine.desktop_connected("a1")
    advance(engine, 5)
    assert focus_ms(engine, "s1") == 5000


def journal_of(engine: Engine, journal: MemoryJournal) -> None:
    """Write what changed (what the runtime does after every engine call)."""
    changes = engine.take_changes()
    if changes:
        asyncio.run(journal.commit(changes))


def restarted(engine: Engine, journal: MemoryJournal, at: float) -> Engine:
    """A fresh engine restored from ``journal`` at time ``at`` (the old one crashed)."""
    fresh = make_engine(ready=[])
    clock_of(fresh).set(at)
    fresh.restore(asyncio.run(journal.load(since=at - 86_400)))
    fresh.drain()
    return fresh


def test_no_focus_time_spans_a_restart() -> None:
    """The reporter's case: 2.3 s focused, a 2 s stop, and focus_ms was 6.9 s afterwards."""
    journal = MemoryJournal()
    asyncio.run(journal.open())
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    journal_of(engine, journal)
    advance(engine, 2.3)
    engine.note("s1", "still here")  # the last thing written before the crash
    journal_of(engine, journal)
    fresh = restarted(engine, journal, engine.clock.now() + 2)
    assert focus_ms(fresh, "s1") == 2300
    assert fresh.focused_session("a1") == "s1"  # the desktop that comes back shows it
    advance(fresh, 2.6)  # no desktop yet: nothing counts
    assert focus_ms(fresh, "s1") == 2300
    journal_of(fresh, journal)
    fresh.set_presence("a1", "ready")
    fresh.desktop_connected("a1")
    advance(fresh, 1)
    assert focus_ms(fresh, "s1") == 3300


def test_after_a_crash_focus_counts_up_to_the_last_checkpoint_never_into_the_downtime() -> None:
    journal = MemoryJournal()
    asyncio.run(journal.open())
    engine = make_engine(desktops=["a1"])
    engine.new_session("a1")
    journal_of(engine, journal)
    for _ in range(12):  # 12 s of looking at it, nothing else happening
        advance(engine, 1)
        journal_of(engine, journal)
    assert focus_ms(engine, "s1") == 12_000
    fresh = restarted(engine, journal, engine.clock.now() + 30)
    # checkpoints every FOCUS_CHECKPOINT_S: at most that much focus time is lost
    assert 12_000 - FOCUS_CHECKPOINT_S * 1000 <= focus_ms(fresh, "s1") <= 12_000
    assert focus_ms(fresh, "s1") == 10_000
    # no checkpoints while nothing counts: the only timer is the desktop's grace period
    assert fresh.next_deadline() == fresh.clock.now() + 60
    advance(fresh, 60)
    assert fresh.next_deadline() is None


# ============================================================================ notes and account


def test_notes_belong_to_one_session_only() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s1")
    engine.accept("s2")
    advance(engine, 1)
    engine.note("s1", "customer wants a refund")
    assert [n.as_dict() for n in engine.session("s1").notes] == [
        {"text": "customer wants a refund", "at": "2023-11-14T22:13:21.000Z"}
    ]
    assert engine.session("s2").notes == []


def test_notes_may_be_written_during_wrap_up() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 10}}})
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.end("s1")
    engine.note("s1", "after-call work")
    assert [n.text for n in engine.session("s1").notes] == ["after-call work"]


def test_confirm_and_reset_account_touch_one_session_only() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.accept("s1")
    engine.new_session("a1")  # s2
    engine.confirm_account("s1", "ACC-1")
    assert engine.session("s1").account.as_dict() == {"state": "confirmed", "id": "ACC-1"}
    assert engine.session("s2").account.as_dict() == {"state": "unidentified", "id": None}
    engine.confirm_account("s2", "ACC-2")
    engine.reset_account("s1")
    assert engine.session("s1").account.as_dict() == {"state": "unidentified", "id": None}
    assert engine.session("s2").account.as_dict() == {"state": "confirmed", "id": "ACC-2"}


def test_an_update_with_account_id_identifies_only_that_interactions_session() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s1")
    engine.drain()
    engine.handle_event(event("update", "i1", attributes={"account_id": "CUST-7"}))
    assert engine.session("s1").account.as_dict() == {"state": "identified", "id": "CUST-7"}
    assert engine.session("s2").account.as_dict() == {"state": "unidentified", "id": None}
    [updated] = agent_messages(engine.drain(), "a1", "session.updated")
    assert updated["session"]["account"] == {"state": "identified", "id": "CUST-7"}
    # the agent confirms the identified account without naming it again
    engine.confirm_account("s1")
    assert engine.session("s1").account.as_dict() == {"state": "confirmed", "id": "CUST-7"}


def test_an_offer_with_account_id_arrives_identified() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", attributes={"account_id": 4711}))
    assert engine.session("s1").account.as_dict() == {"state": "identified", "id": "4711"}


def test_a_vendor_update_does_not_override_a_confirmed_account() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.confirm_account("s1", "MINE")
    engine.handle_event(event("update", "i1", attributes={"account_id": "THEIRS"}))
    assert engine.session("s1").account.as_dict() == {"state": "confirmed", "id": "MINE"}


# ============================================================================ messages, updates, replies


def test_a_customer_message_reaches_the_holders_desktop_as_chat_message() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a2"))
    engine.accept("s1")
    engine.drain()
    customer = Customer(name="Bo", address="bo@example.org")
    engine.handle_event(event("message", "i1", text="Where is my parcel?", customer=customer))
    notices = engine.drain()
    [message] = agent_messages(notices, "a1", "chat.message")
    assert message["session_id"] == "s1"
    assert message["text"] == "Where is my parcel?"
    assert message["sender"] == "customer"
    assert message["customer"] == {"address": "bo@example.org", "name": "Bo"}
    assert agent_messages(notices, "a2") == []


def test_the_chat_transcript_follows_the_interaction_to_the_next_agent() -> None:
    """Messages are never dropped: one sent while nobody holds the chat (or before a
    re-route) is replayed, in order, to the desktop the chat is offered to next."""
    engine = make_engine(queues=[{"name": "support", "on_full": "wait"}], ready=[])
    engine.handle_event(offer("i1"))  # nobody ready: it waits
    engine.handle_event(event("message", "i1", text="hello?"))
    engine.handle_event(event("message", "i1", text="anyone there?"))
    engine.drain()
    engine.set_presence("a1", "ready")
    texts = [m["text"] for m in agent_messages(engine.drain(), "a1", "chat.message")]
    assert texts == ["hello?", "anyone there?"]
    engine.set_presence("a2", "ready")
    engine.decline("s1")  # re-routed to a2, with the same history
    replayed = agent_messages(engine.drain(), "a2", "chat.message")
    assert [(m["session_id"], m["text"]) for m in replayed] == [("s2", "hello?"), ("s2", "anyone there?")]


def test_a_customer_message_alerts_unless_its_session_is_focused() -> None:
    """Issue 6 item 12: ``alert: true`` when the agent is looking elsewhere (another session
    focused, or none), ``alert: false`` when that very session is focused."""
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.handle_event(offer("i2", agent="a1"))
    engine.accept("s1")
    engine.accept("s2")
    engine.drain()

    def alerts(text: str) -> list[tuple[str, bool]]:
        engine.handle_event(event("message", "i1", text=text))
        return [(m["session_id"], m["alert"]) for m in agent_messages(engine.drain(), "a1", "chat.message")]

    assert alerts("nothing focused") == [("s1", True)]
    engine.focus("a1", "s2")
    assert alerts("another session focused") == [("s1", True)]
    engine.focus("a1", "s1")
    assert alerts("this session focused") == [("s1", False)]
    engine.focus("a1", None)
    assert alerts("focus left") == [("s1", True)]


def test_the_agents_replies_are_in_the_transcript_a_transfer_target_receives() -> None:
    """Issue 6 item 12: a transfer target sees both sides of the chat, in order, the
    agent's replies with sender ``agent`` and the agent's id."""
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.accept("s1")
    engine.handle_event(event("message", "i1", text="my parcel is late"))
    clock_of(engine).advance(2)
    engine.send("s1", "let me check", actor="a1")
    engine.handle_event(event("message", "i1", text="thanks"))
    engine.drain()
    engine.transfer("s1", to_agent="a2", mode="blind")
    replayed = agent_messages(engine.drain(), "a2", "chat.message")
    assert [(m["session_id"], m["sender"], m["text"]) for m in replayed] == [
        ("s2", "customer", "my parcel is late"),
        ("s2", "agent", "let me check"),
        ("s2", "customer", "thanks"),
    ]
    reply = replayed[1]
    assert reply["agent_id"] == "a1" and reply["at"] == "2023-11-14T22:13:22.000Z"
    assert all(m["replay"] is True and m["alert"] is False for m in replayed)
    # kept with the interaction (journaled with it), bounded like the customer's messages
    assert engine.interactions[(VENDOR, "i1")].transcript[1]["sender"] == "agent"


def test_a_reply_reaches_a_consult_target_at_once() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1"))
    engine.accept("s1")
    engine.transfer("s1", to_agent="a2", mode="consult")
    engine.drain()
    engine.send("s1", "handing you over", actor="a1")
    notices = engine.drain()
    [seen] = agent_messages(notices, "a2", "chat.message")
    assert (seen["session_id"], seen["sender"], seen["agent_id"], seen["alert"]) == ("s2", "agent", "a1", False)
    assert agent_messages(notices, "a1", "chat.message") == []
    [reply] = vendor_notices(notices, VendorAction.REPLY)
    assert reply.data["text"] == "handing you over"


def test_an_update_changes_customer_and_subject_of_the_session() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", subject="Hello"))
    engine.drain()
    engine.handle_event(event("update", "i1", subject="Refund", customer=Customer(name="Ann")))
    session = engine.session("s1")
    assert (session.subject, session.customer) == ("Refund", Customer(name="Ann"))
    assert agent_messages(engine.drain(), "a1", "session.updated")[0]["session"]["subject"] == "Refund"


def test_an_update_before_rerouting_is_kept_for_the_next_agent() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.handle_event(event("update", "i1", subject="Refund", attributes={"account_id": "C1"}))
    engine.decline("s1")
    rerouted = engine.session("s2")
    assert (rerouted.agent_id, rerouted.subject, rerouted.account.id) == ("a2", "Refund", "C1")


def test_a_chat_reply_goes_to_the_vendor() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.drain()
    engine.send("s1", "It ships today.")
    [reply] = vendor_notices(engine.drain(), VendorAction.REPLY)
    assert (reply.vendor, reply.interaction_id) == (VENDOR, "i1")
    assert reply.data == {"agent_id": "a1", "session_id": "s1", "text": "It ships today."}


def test_labels_name_the_customer_or_the_subject() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", channel="voice", customer=Customer(address="+4930123456")))
    engine.handle_event(offer("i2", channel="email", subject="Invoice 42"))
    assert engine.session("s1").label == "Voice: +4930123456"
    assert engine.session("s2").label == "Email: Invoice 42"


def test_sessions_of_many_agents_keep_counters_exact_through_a_busy_day() -> None:
    """A deterministic mix of offers, accepts, declines, ends, timeouts and presence changes."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 3, "channels": {"voice": 1}, "wrap_up_s": {"voice": 7}}},
        agents=[agent_spec(f"a{n}") for n in range(1, 5)],
    )
    channels = ["chat", "voice", "email"]
    for step in range(120):
        engine.handle_event(offer(f"i{step}", channel=channels[step % 3]))
        offered = [s for s in engine.sessions.values() if s.state is SessionState.OFFERED]
        active = [s for s in engine.sessions.values() if s.state is SessionState.ACTIVE]
        if offered and step % 4 == 0:
            engine.decline(offered[0].id)
        elif offered:
            engine.accept(offered[-1].id)
        if active and step % 3 == 0:
            engine.end(active[0].id)
        if step % 17 == 0:
            engine.set_presence(f"a{step % 4 + 1}", "not_ready")
        if step % 17 == 5:
            engine.set_presence(f"a{step % 4 + 1}", "ready")
        advance(engine, 3)
        assert_counters_exact(engine)
    for agent_id in engine.agent_ids():
        engine.set_presence(agent_id, "ready")
    for session in list(engine.sessions.values()):
        if session.state is SessionState.ACTIVE:
            engine.end(session.id)
    advance(engine, 3600)
    assert_counters_exact(engine)
    assert_all_zero(engine)


# ============================================================================ public objects


def test_the_session_object_has_every_contract_field() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", customer=Customer(name="Ann"), subject="Hi"))
    body = engine.session("s1").as_dict(engine.clock.now())
    contract = {
        "id",
        "agent_id",
        "channel",
        "state",
        "vendor",
        "interaction_id",
        "queue",
        "customer",
        "subject",
        "label",
        "profile",
        "account",
        "offered_at",
        "accepted_at",
        "ended_at",
        "closed_at",
        "handle_ms",
        "wrap_ms",
        "focus_ms",
        "outcome",
        "notes",
        "transferred_from",
        "transferred_to",
    }
    assert contract <= set(body)
    assert body["offered_at"] == "2023-11-14T22:13:20.000Z"
    assert (body["state"], body["queue"], body["profile"], body["outcome"]) == ("offered", "support", "chat", None)
    assert body["customer"] == {"address": None, "name": "Ann"}
    assert body["account"] == {"state": "unidentified", "id": None}


def test_the_agent_object_has_every_contract_field() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", channel="email"))
    body = engine.agent("a1")
    assert {"id", "name", "profile", "queues", "presence", "sessions", "in_use", "desktop_connected"} <= set(body)
    assert (body["id"], body["name"], body["profile"], body["queues"]) == ("a1", "A1", "std", ["support"])
    assert body["in_use"] == {"sessions": 1, "units": 1, "voice": 0, "chat": 0, "email": 1, "manual": 0}
    assert [s["id"] for s in body["sessions"]] == ["s1"]
    assert "sessions" not in engine.agent("a1", with_sessions=False)


def test_free_capacity_counts_what_the_rules_would_still_admit() -> None:
    engine = make_engine(
        profiles={"std": {"max_sessions": 4, "reserved_inbound": 1, "channels": {"voice": 1}, "units": {"email": 2}}}
    )
    assert engine.free_capacity("a1") == {"voice": 1, "chat": 4, "email": 2, "manual": 3}
    engine.handle_event(offer("i1", channel="email", agent="a1"))
    assert engine.free_capacity("a1") == {"voice": 1, "chat": 2, "email": 1, "manual": 2}
    engine.set_presence("a1", "not_ready")  # presence aside
    assert engine.free_capacity("a1")["chat"] == 2
