"""Engine routing: targeted and untargeted offers, vendor capabilities, waiting queues,
idempotency (DESIGN sections 3, 4 and 5)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ActionError, InvalidEvent
from gateway.events import Channel
from gateway.interactions import Phase, VendorCapabilities
from gateway.notices import DecisionKind, VendorAction
from gateway.records.memory import MemoryJournal
from gateway.sessions import SessionState

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
    routed,
    snapshot,
    vendor_notices,
)

ASSIGNED, REJECTED, QUEUED, DUPLICATE, ACCEPTED = (
    DecisionKind.ASSIGNED,
    DecisionKind.REJECTED,
    DecisionKind.QUEUED,
    DecisionKind.DUPLICATE,
    DecisionKind.ACCEPTED,
)


# ============================================================================ targeted


def test_targeted_offer_is_assigned_to_the_named_agent_as_an_offered_session() -> None:
    engine = make_engine()
    decision = engine.handle_event(offer("i1", channel="voice", agent="a2"))

    assert (decision.kind, decision.agent_id, decision.session_id) == (ASSIGNED, "a2", "s1")
    assert decision.as_dict() == {"decision": "assigned", "agent_id": "a2", "session_id": "s1"}
    session = engine.session("s1")
    assert (session.state, session.agent_id, session.channel) == (SessionState.OFFERED, "a2", Channel.VOICE)
    assert (session.vendor, session.interaction_id, session.offered_at) == (VENDOR, "i1", T0)
    assert in_use(engine, "a2") == {"sessions": 1, "units": 1, "voice": 1, "chat": 0, "email": 0, "manual": 0}
    assert in_use(engine, "a1")["sessions"] == 0
    assert_counters_exact(engine)


def test_assignment_notices_alert_the_agent_without_focus_and_answer_synchronously() -> None:
    """session.offered carries alert: true and never a focus order; the decision is the
    synchronous answer (Routed), not a late ToVendor notice."""
    engine = make_engine()
    engine.handle_event(offer("i1", agent="a1", event_id="e1"))
    notices = engine.drain()

    offered = agent_messages(notices, "a1", "session.offered")
    assert len(offered) == 1
    assert offered[0]["alert"] is True
    assert "focus" not in offered[0]
    assert offered[0]["session"]["id"] == "s1"
    assert offered[0]["session"]["state"] == "offered"
    assert offered[0]["session"]["focused"] is False
    assert engine.focused_session("a1") is None
    assert vendor_notices(notices) == []
    [r] = routed(notices)
    assert (r.vendor, r.event_id, r.event_type, r.interaction_id, r.channel) == (VENDOR, "e1", "offer", "i1", "chat")
    assert r.decision.kind is ASSIGNED


def test_targeted_offer_to_an_unknown_agent_is_rejected_unknown_agent() -> None:
    engine = make_engine()
    decision = engine.handle_event(offer(agent="nobody"))
    assert (decision.kind, decision.reason) == (REJECTED, "unknown_agent")
    assert decision.as_dict() == {"decision": "rejected", "reason": "unknown_agent"}
    assert engine.sessions == {}


def test_targeted_offer_to_an_offline_agent_is_rejected_agent_offline() -> None:
    engine = make_engine(ready=["a2"])
    decision = engine.handle_event(offer(agent="a1"))
    assert (decision.kind, decision.reason) == (REJECTED, "agent_offline")
    assert_all_zero(engine)


def test_targeted_offer_to_a_not_ready_agent_is_rejected_agent_not_ready() -> None:
    engine = make_engine()
    engine.set_presence("a1", "not_ready", "lunch")
    decision = engine.handle_event(offer(agent="a1"))
    assert (decision.kind, decision.reason) == (REJECTED, "agent_not_ready")
    assert_all_zero(engine)


def test_targeted_offer_beyond_the_channel_cap_is_rejected_channel_at_capacity() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "channels": {"voice": 1}}})
    assert engine.handle_event(offer("i1", channel="voice", agent="a1")).kind is ASSIGNED
    decision = engine.handle_event(offer("i2", channel="voice", agent="a1"))
    assert (decision.kind, decision.reason) == (REJECTED, "channel_at_capacity")
    assert engine.handle_event(offer("i3", channel="chat", agent="a1")).kind is ASSIGNED
    assert in_use(engine, "a1")["voice"] == 1
    assert_counters_exact(engine)


def test_targeted_offer_beyond_max_sessions_is_rejected_agent_at_capacity() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 2}})
    engine.handle_event(offer("i1", channel="chat", agent="a1"))
    engine.handle_event(offer("i2", channel="voice", agent="a1"))
    decision = engine.handle_event(offer("i3", channel="email", agent="a1"))
    assert (decision.kind, decision.reason) == (REJECTED, "agent_at_capacity")
    assert in_use(engine, "a1")["sessions"] == 2
    assert_counters_exact(engine)


def test_a_rejected_targeted_offer_holds_no_capacity_and_the_interaction_may_be_offered_again() -> None:
    """The CMS re-routes after a rejection; the same interaction id may come back later."""
    engine = make_engine(ready=[])
    assert engine.handle_event(offer("i1", agent="a1")).reason == "agent_offline"
    engine.set_presence("a1", "ready")
    decision = engine.handle_event(offer("i1", agent="a1"))
    assert decision.kind is ASSIGNED
    assert_counters_exact(engine)


def test_offline_is_reported_before_capacity_on_a_full_agent() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 1, "channels": {"chat": 1}}})
    engine.handle_event(offer("i1", agent="a1"))
    engine.accept("s1")
    engine.set_presence("a1", "offline")  # active sessions stay
    assert engine.handle_event(offer("i2", agent="a1")).reason == "agent_offline"
    engine.set_presence("a1", "not_ready")
    assert engine.handle_event(offer("i3", agent="a1")).reason == "agent_not_ready"
    engine.set_presence("a1", "ready")
    assert engine.handle_event(offer("i4", agent="a1")).reason == "channel_at_capacity"
    assert engine.handle_event(offer("i5", channel="email", agent="a1")).reason == "agent_at_capacity"


def test_engine_worked_example_blended_agent_with_six_sessions() -> None:
    """3 chats + 2 e-mails + 1 call fill a blended agent; then everything is refused, and
    before the call the reserved session went to the inbound call, not to a manual one."""
    engine = make_engine(
        profiles={
            "blended": {
                "max_sessions": 6,
                "reserved_inbound": 1,
                "channels": {"voice": 1, "chat": 6, "email": 3, "manual": 5},
            }
        },
        agents=[agent_spec("a1", "blended")],
    )
    for i, channel in enumerate(["chat", "chat", "chat", "email", "email"]):
        assert engine.handle_event(offer(f"i{i}", channel=channel, agent="a1")).kind is ASSIGNED
    with pytest.raises(ActionError) as refused:
        engine.new_session("a1")
    assert refused.value.code == "agent_at_capacity"
    assert engine.handle_event(offer("call", channel="voice", agent="a1")).kind is ASSIGNED
    assert in_use(engine, "a1") == {"sessions": 6, "units": 6, "voice": 1, "chat": 3, "email": 2, "manual": 0}
    assert engine.handle_event(offer("x1", channel="chat", agent="a1")).reason == "agent_at_capacity"
    assert engine.handle_event(offer("x2", channel="email", agent="a1")).reason == "agent_at_capacity"
    assert engine.handle_event(offer("x3", channel="voice", agent="a1")).reason == "channel_at_capacity"
    assert_counters_exact(engine)


def test_engine_exclusive_voice_a_call_blocks_everything_and_anything_blocks_a_call() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 6, "units": {"voice": 6}, "max_units": 6}})
    engine.handle_event(offer("call", channel="voice", agent="a1"))
    assert engine.handle_event(offer("c1", channel="chat", agent="a1")).reason == "agent_at_capacity"
    with pytest.raises(ActionError) as refused:
        engine.new_session("a1")
    assert refused.value.code == "agent_at_capacity"
    engine.handle_event(offer("c2", channel="email", agent="a2"))
    assert engine.handle_event(offer("call2", channel="voice", agent="a2")).reason == "agent_at_capacity"
    assert in_use(engine, "a1")["units"] == 6
    assert_counters_exact(engine)


# ============================================================================ vendor capabilities


def test_a_channel_the_vendor_does_not_support_is_rejected_vendor_unsupported() -> None:
    engine = make_engine(capabilities={VENDOR: VendorCapabilities(channels=frozenset({Channel.VOICE}))})
    assert engine.handle_event(offer("i1", channel="chat", agent="a1")).reason == "vendor_unsupported"
    assert engine.handle_event(offer("i2", channel="email")).reason == "vendor_unsupported"
    assert engine.handle_event(offer("i3", channel="voice", agent="a1")).kind is ASSIGNED
    # another vendor without declared capabilities is not restricted
    assert engine.handle_event(offer("i1", channel="chat", agent="a1", vendor="other")).kind is ASSIGNED
    assert in_use(engine, "a1")["sessions"] == 2


def test_vendor_capabilities_can_be_declared_at_runtime() -> None:
    engine = make_engine()
    engine.set_vendor_capabilities(VENDOR, VendorCapabilities(channels=frozenset({Channel.EMAIL})))
    assert engine.handle_event(offer("i1", channel="voice", agent="a1")).reason == "vendor_unsupported"


# ---------------------------------------------------------------------------- can_reject=False

NO_REJECT = {VENDOR: VendorCapabilities(can_reject=False)}


def test_a_vendor_that_cannot_reject_gets_queued_instead_of_no_agent_available() -> None:
    """Issue 6 item 11: ``can_reject=False`` is respected: a full ``on_full: reject`` queue
    keeps the interaction as if it were ``on_full: wait``, and offers it when a slot frees."""
    engine = make_engine(agents=[agent_spec("a1")], profiles={"std": {"max_sessions": 1}})
    engine.set_vendor_capabilities(VENDOR, VendorCapabilities(can_reject=False))
    assert engine.handle_event(offer("i1")).kind is ASSIGNED
    decision = engine.handle_event(offer("i2"))
    assert decision.kind is QUEUED
    assert engine.waiting() == [(VENDOR, "i2")]
    engine.drain()
    # no queue timeout either: that would be a rejection too
    advance(engine, 29)
    engine.accept("s1")
    advance(engine, 3_600)
    assert engine.waiting() == [(VENDOR, "i2")] and vendor_notices(engine.drain(), VendorAction.DECISION) == []
    engine.end("s1")
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert late.event_id is not None and late.data == {"decision": "assigned", "agent_id": "a1", "session_id": "s2"}
    assert_counters_exact(engine)


def test_a_vendor_that_cannot_reject_waits_past_max_waiting_and_max_wait_s() -> None:
    engine = make_engine(
        agents=[agent_spec("a1")],
        profiles={"std": {"max_sessions": 1}},
        queues=[{"name": "support", "on_full": "wait", "max_waiting": 1, "max_wait_s": 5}],
        capabilities={**NO_REJECT},
    )
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    assert [engine.handle_event(offer(f"w{n}")).kind for n in range(3)] == [QUEUED] * 3
    # a vendor that can reject still gets the queue's limits
    assert engine.handle_event(offer("x1", vendor="other")).reason == "no_agent_available"
    advance(engine, 60)
    assert len(engine.waiting()) == 3
    assert [n.data["decision"] for n in vendor_notices(engine.drain(), VendorAction.DECISION)] == []


@pytest.mark.parametrize("why", ["at capacity", "not ready", "offline"])
def test_a_targeted_offer_of_a_vendor_that_cannot_reject_waits_for_that_agent(why: str) -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 1}}, capabilities=NO_REJECT)
    if why == "at capacity":
        engine.handle_event(offer("i0", agent="a1"))
    else:
        engine.set_presence("a1", "not_ready" if why == "not ready" else "offline")
    decision = engine.handle_event(offer("i1", agent="a1"))
    assert decision.kind is QUEUED
    # a colleague with room does not get it: the vendor's ACD chose a1
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.WAITING
    engine.drain()
    if why == "at capacity":
        engine.decline("s1")  # frees a1's slot; i0 waits for a1 again, behind i1, which came first
        notices = engine.drain()
        offered = [m["session"] for m in agent_messages(notices, "a1", "session.offered")]
        assert [s["interaction_id"] for s in offered] == ["i1"]
        assert engine.waiting() == [(VENDOR, "i0")]
    else:
        engine.set_presence("a1", "ready")
        [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
        assert (late.data["decision"], late.data["agent_id"]) == ("assigned", "a1")
    assert_counters_exact(engine)


@pytest.mark.parametrize("how", ["decline", "timeout"])
def test_a_targeted_offer_of_a_vendor_that_cannot_reject_comes_back_to_its_agent(how: str) -> None:
    """Not ``offer_timeout``: the vendor cannot take it back, so the interaction waits for
    its agent again, who has room at once (the slot was just freed): it is offered again."""
    engine = make_engine(capabilities=NO_REJECT)
    engine.handle_event(offer("i1", agent="a1"))
    engine.drain()
    if how == "decline":
        engine.decline("s1")
    else:
        advance(engine, 30)
    notices = engine.drain()
    assert [n.data for n in vendor_notices(notices, VendorAction.DECISION)] == [
        {"decision": "queued"},
        {"decision": "assigned", "agent_id": "a1", "session_id": "s2"},
    ]
    assert engine.session("s2").agent_id == "a1" and engine.session("s2").state is SessionState.OFFERED
    # the agent can park it by going not ready: it waits for a1 again, nobody else gets it
    engine.set_presence("a1", "not_ready")
    engine.decline("s2")
    assert engine.waiting() == [(VENDOR, "i1")]
    assert vendor_notices(engine.drain(), VendorAction.DECISION)[-1].data == {"decision": "queued"}
    assert_counters_exact(engine)


def test_a_vendor_that_cannot_reject_is_still_refused_what_no_waiting_can_serve() -> None:
    engine = make_engine(
        capabilities={VENDOR: VendorCapabilities(can_reject=False, channels=frozenset({Channel.VOICE}))}
    )
    assert engine.handle_event(offer("i1", channel="chat")).reason == "vendor_unsupported"
    assert engine.handle_event(offer("i2", channel="voice", agent="ghost")).reason == "unknown_agent"
    assert engine.waiting() == []


def test_an_untargeted_interaction_that_cannot_be_rejected_is_rerouted_after_a_decline() -> None:
    engine = make_engine(capabilities=NO_REJECT, ready=["a1"])
    engine.handle_event(offer("i1"))
    engine.decline("s1")  # a1 is excluded; nobody else is ready: it waits in its queue
    assert engine.waiting() == [(VENDOR, "i1")]
    engine.drain()
    engine.set_presence("a2", "ready")
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (late.data["decision"], late.data["agent_id"]) == ("assigned", "a2")


def test_interactions_held_for_a_vendor_that_cannot_reject_survive_a_restart() -> None:
    async def restart() -> None:
        engine = make_engine(profiles={"std": {"max_sessions": 1}}, capabilities=NO_REJECT)
        engine._new_id = lambda: "before-restart"  # noqa: SLF001 - the one session made before the restart
        engine.set_presence("a2", "offline")
        engine.set_presence("a3", "offline")
        engine.handle_event(offer("i0", agent="a1"))
        engine.handle_event(offer("t1", agent="a1"))  # waits for a1
        engine.handle_event(offer("q1"))  # waits in support (a1 full, the others offline)
        async with MemoryJournal() as journal:
            await journal.commit(engine.take_changes())
            snapshot_ = await journal.load(since=0)
        again = make_engine(profiles={"std": {"max_sessions": 1}}, capabilities=NO_REJECT, ready=[])
        again.restore(snapshot_)
        assert again.waiting() == [(VENDOR, "t1"), (VENDOR, "q1")]
        assert again.next_deadline() == engine.next_deadline()  # only a1's offer timeout: no queue timeout
        again.set_presence("a2", "ready")
        [late] = vendor_notices(again.drain(), VendorAction.DECISION)
        assert late.data["agent_id"] == "a2" and late.interaction_id == "q1"  # t1 is a1's only
        held = again.interactions[(VENDOR, "i0")].holder
        assert held is not None and again.session(held).agent_id == "a1"
        again.accept(held)
        again.end(held)
        offered = agent_messages(again.drain(), "a1", "session.offered")
        assert [m["session"]["interaction_id"] for m in offered] == ["t1"]
        assert_counters_exact(again)

    asyncio.run(restart())


def test_the_vendors_voice_limit_per_agent_is_respected() -> None:
    """max_voice_per_agent: the CMS allows one live call per agent; the profile would allow 2.
    Reported as channel_at_capacity (the contract names no dedicated reason)."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 3, "channels": {"voice": 2}}},
        capabilities={VENDOR: VendorCapabilities(max_voice_per_agent=1)},
    )
    assert engine.handle_event(offer("c1", channel="voice", agent="a1")).kind is ASSIGNED
    decision = engine.handle_event(offer("c2", channel="voice", agent="a1"))
    assert (decision.kind, decision.reason) == (REJECTED, "channel_at_capacity")
    # a call of another vendor is not counted against this vendor's limit
    assert engine.handle_event(offer("c3", channel="voice", agent="a1", vendor="pbx2")).kind is ASSIGNED
    assert_counters_exact(engine)


def test_untargeted_routing_skips_an_agent_at_the_vendors_voice_limit() -> None:
    """a1 heads the queue (idle longest, profile room for a second call), but the vendor
    allows one call per agent: the call goes to the next agent instead of being rejected."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 3, "channels": {"voice": 2}}},
        agents=[agent_spec("a1"), agent_spec("a2")],
        capabilities={VENDOR: VendorCapabilities(max_voice_per_agent=1)},
    )
    engine.handle_event(offer("c1", channel="voice", agent="a1"))
    advance(engine, 1)
    engine.set_presence("a2", "not_ready")
    engine.set_presence("a2", "ready")
    assert engine.eligible("support", Channel.VOICE) == ["a1", "a2"]
    decision = engine.handle_event(offer("c2", channel="voice"))
    assert (decision.kind, decision.agent_id) == (ASSIGNED, "a2")
    assert in_use(engine, "a1")["voice"] == 1
    assert_counters_exact(engine)


# ============================================================================ untargeted


def test_longest_idle_picks_the_agent_idle_longest_and_rotates() -> None:
    """Agents became ready in order a1, a2, a3; each offer sends its agent to the back."""
    engine = make_engine()
    picked = [engine.handle_event(offer(f"i{n}")).agent_id for n in range(6)]
    assert picked == ["a1", "a2", "a3", "a1", "a2", "a3"]
    assert_counters_exact(engine)


def test_longest_idle_counts_from_becoming_ready() -> None:
    engine = make_engine(ready=[])
    for agent_id in ("a3", "a1", "a2"):
        engine.set_presence(agent_id, "ready")
        advance(engine, 5)
    assert engine.eligible("support", Channel.CHAT) == ["a3", "a1", "a2"]
    assert engine.handle_event(offer("i1")).agent_id == "a3"
    # going not_ready and back makes an agent the most recently idle
    engine.set_presence("a1", "not_ready")
    engine.set_presence("a1", "ready")
    assert engine.handle_event(offer("i2")).agent_id == "a2"


def test_an_agent_that_stays_ready_keeps_its_place() -> None:
    """A repeated ready does not reset the idle time."""
    engine = make_engine()
    advance(engine, 10)
    engine.set_presence("a1", "ready")
    assert engine.handle_event(offer("i1")).agent_id == "a1"


def test_untargeted_offers_go_only_to_ready_agents_of_that_queue_with_room() -> None:
    engine = make_engine(
        profiles={"std": {"max_sessions": 3}, "one": {"max_sessions": 1}},
        queues=[{"name": "support"}, {"name": "sales"}],
        agents=[
            agent_spec("a1", "one"),
            agent_spec("a2"),
            agent_spec("a3", queues=["sales"]),
            agent_spec("a4"),
        ],
    )
    engine.set_presence("a2", "not_ready")
    engine.handle_event(offer("busy", agent="a1"))  # a1 full
    for n in range(3):
        assert engine.handle_event(offer(f"i{n}")).agent_id == "a4"
    assert engine.handle_event(offer("i3")).reason == "no_agent_available"
    assert engine.handle_event(offer("i4", queue="sales")).agent_id == "a3"


def test_least_busy_picks_the_least_loaded_agent() -> None:
    engine = make_engine(queues=[{"name": "support", "policy": "least_busy"}])
    engine.handle_event(offer("t1", agent="a1"))
    engine.handle_event(offer("t2", agent="a1"))
    engine.handle_event(offer("t3", agent="a2"))
    assert engine.handle_event(offer("u1")).agent_id == "a3"  # 0 of 3
    # a2 and a3 both hold one: a2 has been idle longer (offered earlier)
    assert engine.handle_event(offer("u2")).agent_id == "a2"
    assert engine.handle_event(offer("u3")).agent_id == "a3"
    assert engine.handle_event(offer("u4")).agent_id == "a1"  # all at 2: a1 idle longest


def test_least_busy_compares_the_share_of_capacity_not_the_session_count() -> None:
    """a1 may hold 6 and holds 2 (1/3 busy); a2 may hold 2 and holds 1 (1/2 busy): a1 wins."""
    engine = make_engine(
        profiles={"big": {"max_sessions": 6}, "small": {"max_sessions": 2}},
        queues=[{"name": "support", "policy": "least_busy"}],
        agents=[agent_spec("a1", "big"), agent_spec("a2", "small")],
    )
    engine.handle_event(offer("t1", agent="a1"))
    engine.handle_event(offer("t2", agent="a1"))
    engine.handle_event(offer("t3", agent="a2"))
    assert engine.handle_event(offer("u1")).agent_id == "a1"


def test_least_busy_counts_units_not_sessions() -> None:
    """An e-mail weighs 3 units: its holder is busier than the holder of two chats."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 6, "units": {"email": 3}}},
        queues=[{"name": "support", "policy": "least_busy"}],
        agents=[agent_spec("a1"), agent_spec("a2")],
    )
    engine.handle_event(offer("t1", channel="email", agent="a1"))
    engine.handle_event(offer("t2", agent="a2"))
    engine.handle_event(offer("t3", agent="a2"))
    assert engine.handle_event(offer("u1")).agent_id == "a2"


def test_untargeted_offer_with_nobody_ready_is_rejected_no_agent_available() -> None:
    engine = make_engine(ready=[])
    decision = engine.handle_event(offer("i1"))
    assert (decision.kind, decision.reason) == (REJECTED, "no_agent_available")
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE
    assert_all_zero(engine)


def test_untargeted_offer_to_an_unknown_queue_is_an_invalid_event() -> None:
    engine = make_engine()
    before = snapshot(engine)
    with pytest.raises(InvalidEvent) as invalid:
        engine.handle_event(offer("i1", queue="nope"))
    assert invalid.value.field == "queue"
    assert snapshot(engine) == before


def test_a_decliner_is_never_offered_the_same_interaction_again() -> None:
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    assert engine.handle_event(offer("i1")).agent_id == "a1"
    engine.decline("s1")
    assert engine.session("s2").agent_id == "a2"
    engine.drain()
    engine.decline("s2")  # a1 has room but declined it before
    notices = engine.drain()
    assert [s.id for s in engine.open_sessions("a1")] == []
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert late.data == {"decision": "rejected", "reason": "no_agent_available"}
    assert_all_zero(engine)


# ============================================================================ on_full: wait

WAIT_QUEUE = {"name": "support", "on_full": "wait", "max_wait_s": 30, "max_waiting": 5}
ONE_SLOT = {"std": {"max_sessions": 1}}


def test_a_full_wait_queue_queues_the_interaction_without_a_session() -> None:
    engine = make_engine(profiles=ONE_SLOT, queues=[WAIT_QUEUE], agents=[agent_spec("a1")])
    engine.handle_event(offer("i1"))
    decision = engine.handle_event(offer("i2"))
    assert decision.kind is QUEUED
    assert decision.as_dict() == {"decision": "queued"}
    assert engine.waiting() == [(VENDOR, "i2")]
    assert engine.interactions[(VENDOR, "i2")].phase is Phase.WAITING
    assert [s.interaction_id for s in engine.sessions.values()] == ["i1"]


def test_a_waiting_interaction_is_offered_as_soon_as_an_end_frees_the_slot() -> None:
    engine = make_engine(profiles=ONE_SLOT, queues=[WAIT_QUEUE], agents=[agent_spec("a1")])
    engine.handle_event(offer("i1"))
    engine.handle_event(offer("i2", event_id="offer-i2"))
    engine.accept("s1")
    engine.drain()
    engine.end("s1")
    notices = engine.drain()

    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.vendor, late.interaction_id, late.event_id) == (VENDOR, "i2", "offer-i2")
    assert late.data == {"decision": "assigned", "agent_id": "a1", "session_id": "s2"}
    assert engine.session("s2").state is SessionState.OFFERED
    assert engine.waiting() == []
    assert agent_messages(notices, "a1", "session.offered")[0]["session"]["interaction_id"] == "i2"
    assert_counters_exact(engine)


def test_a_waiting_interaction_waits_for_the_end_of_wrap_up() -> None:
    engine = make_engine(
        profiles={"std": {"max_sessions": 1, "wrap_up_s": {"chat": 10}}},
        queues=[WAIT_QUEUE],
        agents=[agent_spec("a1")],
    )
    engine.handle_event(offer("i1"))
    engine.handle_event(offer("i2"))
    engine.accept("s1")
    engine.end("s1")
    assert engine.waiting() == [(VENDOR, "i2")]
    advance(engine, 9.999)
    assert engine.waiting() == [(VENDOR, "i2")]
    advance(engine, 0.001)
    assert engine.waiting() == []
    assert (engine.session("s2").interaction_id, engine.session("s2").offered_at) == ("i2", T0 + 10)


def test_waiting_interactions_are_served_by_priority_then_arrival() -> None:
    engine = make_engine(profiles=ONE_SLOT, queues=[WAIT_QUEUE], agents=[agent_spec("a1")])
    engine.handle_event(offer("busy"))
    for name, priority in [("p0-first", 0), ("p5", 5), ("p0-second", 0), ("p-1", -1), ("p5-later", 5)]:
        assert engine.handle_event(offer(name, priority=priority)).kind is QUEUED
    served = []
    current = "s1"
    for _ in range(5):
        engine.accept(current)
        engine.end(current)
        [session] = engine.open_sessions("a1")
        served.append(session.interaction_id)
        current = session.id
    assert served == ["p5", "p5-later", "p0-first", "p0-second", "p-1"]


def test_a_decline_frees_the_slot_for_the_next_waiting_interaction() -> None:
    engine = make_engine(profiles=ONE_SLOT, queues=[WAIT_QUEUE], agents=[agent_spec("a1")])
    engine.handle_event(offer("i1", agent="a1"))  # targeted
    engine.handle_event(offer("i2"))
    engine.decline("s1")
    assert [s.interaction_id for s in engine.open_sessions("a1")] == ["i2"]
    assert engine.waiting() == []


def test_a_declined_interaction_waits_but_is_never_offered_to_its_decliner_again() -> None:
    """a1 declines i1 and nobody else is ready: i1 waits; a1's free slot does not get it back,
    a colleague becoming ready does."""
    engine = make_engine(queues=[WAIT_QUEUE], ready=["a1"])
    engine.handle_event(offer("i1"))
    engine.drain()
    engine.decline("s1")
    notices = engine.drain()
    assert [n.data for n in vendor_notices(notices, VendorAction.DECISION)] == [{"decision": "queued"}]
    assert engine.waiting() == [(VENDOR, "i1")]
    assert engine.open_sessions("a1") == []
    engine.set_presence("a1", "not_ready")
    engine.set_presence("a1", "ready")
    assert engine.open_sessions("a1") == []
    engine.set_presence("a2", "ready")
    assert [s.interaction_id for s in engine.open_sessions("a2")] == ["i1"]


def test_an_interaction_back_from_a_declined_offer_keeps_its_place_in_the_line() -> None:
    """i2 waited before i3 and i1; offered to a1 and declined, it goes back to the queue at
    its old place, so the next free agent gets i2, not the later i1."""
    engine = make_engine(profiles={"std": {"max_sessions": 1}}, queues=[WAIT_QUEUE], ready=["a1"])
    engine.handle_event(offer("i1"))  # s1 on a1
    engine.handle_event(offer("i2"))  # waits (1st)
    engine.handle_event(offer("i3"))  # waits (2nd)
    engine.decline("s1")  # i1 waits (3rd); a1 is offered i2
    assert engine.waiting() == [(VENDOR, "i3"), (VENDOR, "i1")]
    [declined] = engine.open_sessions("a1")
    engine.decline(declined.id)  # i2 back in line, ahead of i3 and i1; a1 is offered i3
    assert engine.waiting() == [(VENDOR, "i2"), (VENDOR, "i1")]
    engine.set_presence("a2", "ready")
    assert [s.interaction_id for s in engine.open_sessions("a2")] == ["i2"]


def test_a_waiting_interaction_is_offered_when_an_agent_becomes_ready() -> None:
    engine = make_engine(queues=[WAIT_QUEUE], ready=[])
    assert engine.handle_event(offer("i1")).kind is QUEUED
    engine.set_presence("a1", "not_ready")
    assert engine.waiting() == [(VENDOR, "i1")]
    engine.drain()
    engine.set_presence("a2", "ready")
    notices = engine.drain()
    assert engine.waiting() == []
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert late.data == {"decision": "assigned", "agent_id": "a2", "session_id": "s1"}


def test_one_freed_agent_is_offered_as_many_waiters_as_it_has_room_for() -> None:
    engine = make_engine(queues=[WAIT_QUEUE], ready=[])
    for n in range(4):
        engine.handle_event(offer(f"i{n}"))
    engine.set_presence("a1", "ready")  # 3 sessions of room
    assert sorted(s.interaction_id for s in engine.open_sessions("a1")) == ["i0", "i1", "i2"]
    assert engine.waiting() == [(VENDOR, "i3")]
    assert_counters_exact(engine)


def test_a_waiting_interaction_gets_queue_timeout_after_max_wait_s() -> None:
    engine = make_engine(queues=[WAIT_QUEUE], ready=[])
    engine.handle_event(offer("i1", event_id="offer-i1"))
    advance(engine, 29.999)
    assert engine.waiting() == [(VENDOR, "i1")]
    engine.drain()
    advance(engine, 0.001)
    notices = engine.drain()
    assert engine.waiting() == []
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert (late.interaction_id, late.event_id) == ("i1", "offer-i1")
    assert late.data == {"decision": "rejected", "reason": "queue_timeout"}
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE
    engine.set_presence("a1", "ready")
    assert engine.open_sessions("a1") == []


def test_a_wait_queue_holds_at_most_max_waiting_interactions() -> None:
    engine = make_engine(queues=[{**WAIT_QUEUE, "max_waiting": 2}], ready=[])
    assert engine.handle_event(offer("i1")).kind is QUEUED
    assert engine.handle_event(offer("i2")).kind is QUEUED
    decision = engine.handle_event(offer("i3"))
    assert (decision.kind, decision.reason) == (REJECTED, "no_agent_available")
    assert engine.waiting() == [(VENDOR, "i1"), (VENDOR, "i2")]


def test_a_reject_queue_does_not_wait() -> None:
    engine = make_engine(queues=[{"name": "support", "on_full": "reject"}], ready=[])
    assert engine.handle_event(offer("i1")).reason == "no_agent_available"
    assert engine.waiting() == []


def test_a_vendor_end_removes_a_waiting_interaction() -> None:
    engine = make_engine(queues=[WAIT_QUEUE], ready=[])
    engine.handle_event(offer("i1"))
    assert engine.handle_event(event("end", "i1")).kind is ACCEPTED
    assert engine.waiting() == []
    engine.drain()
    engine.set_presence("a1", "ready")
    advance(engine, 60)
    assert engine.open_sessions("a1") == []
    assert vendor_notices(engine.drain()) == []  # no late queue_timeout either


# ============================================================================ idempotency


def test_a_repeated_offer_is_a_duplicate_with_the_first_answer_and_changes_nothing() -> None:
    engine = make_engine()
    first = engine.handle_event(offer("i1", event_id="e1"))
    before = snapshot(engine)
    engine.drain()
    again = engine.handle_event(offer("i1", event_id="e1"))

    assert again.kind is DUPLICATE
    assert again.original == first
    assert again.as_dict() == {
        "decision": "duplicate",
        "first_decision": "assigned",
        "agent_id": "a1",
        "session_id": "s1",
    }
    notices = engine.drain()
    assert [r.decision for r in routed(notices)] == [again]
    assert agent_messages(notices) == []
    assert {k: v for k, v in snapshot(engine).items() if k != "outbox"} == {
        k: v for k, v in before.items() if k != "outbox"
    }


def test_every_repeat_repeats_the_first_answer_not_a_duplicate_of_a_duplicate() -> None:
    engine = make_engine(ready=[])
    first = engine.handle_event(offer("i1", agent="a1", event_id="e1"))
    engine.set_presence("a1", "ready")  # would now be assigned: the answer stays the first one
    for _ in range(3):
        again = engine.handle_event(offer("i1", agent="a1", event_id="e1"))
        assert again.original == first
        assert again.as_dict() == {"decision": "duplicate", "first_decision": "rejected", "reason": "agent_offline"}
    assert engine.sessions == {}


def test_a_duplicate_offer_with_changed_content_is_still_the_same_event() -> None:
    engine = make_engine()
    first = engine.handle_event(offer("i1", event_id="e1"))
    again = engine.handle_event(offer("other-interaction", channel="voice", agent="a3", event_id="e1"))
    assert again.original == first
    assert len(engine.sessions) == 1


def test_event_ids_are_scoped_per_vendor() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", event_id="e1"))
    decision = engine.handle_event(offer("i1", event_id="e1", vendor="other"))
    assert decision.kind is ASSIGNED
    assert len(engine.sessions) == 2


def test_a_repeated_message_event_reaches_the_desktop_once() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.drain()
    assert engine.handle_event(event("message", "i1", event_id="m1", text="hi")).kind is ACCEPTED
    again = engine.handle_event(event("message", "i1", event_id="m1", text="hi"))
    assert again.kind is DUPLICATE and again.original is not None and again.original.kind is ACCEPTED
    assert len(agent_messages(engine.drain(), "a1", "chat.message")) == 1


def test_a_repeated_end_event_is_a_duplicate_and_changes_nothing() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.handle_event(event("end", "i1", event_id="end1"))
    before = snapshot(engine)
    again = engine.handle_event(event("end", "i1", event_id="end1"))
    assert again.kind is DUPLICATE
    assert {k: v for k, v in snapshot(engine).items() if k != "outbox"} == {
        k: v for k, v in before.items() if k != "outbox"
    }


def test_a_repeated_update_event_is_a_duplicate_and_applies_once() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.drain()
    engine.handle_event(event("update", "i1", event_id="u1", subject="Refund"))
    engine.handle_event(event("update", "i1", event_id="u1", subject="Refund"))
    assert len(agent_messages(engine.drain(), "a1", "session.updated")) == 1


def test_a_second_offer_for_an_open_interaction_is_refused_interaction_already_open() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1", event_id="e1"))
    before = snapshot(engine)
    with pytest.raises(ActionError) as refused:
        engine.handle_event(offer("i1", event_id="e2"))
    assert refused.value.code == "interaction_already_open"
    assert snapshot(engine) == before


def test_an_interaction_waiting_in_a_queue_is_also_already_open() -> None:
    engine = make_engine(queues=[WAIT_QUEUE], ready=[])
    engine.handle_event(offer("i1"))
    with pytest.raises(ActionError) as refused:
        engine.handle_event(offer("i1", agent="a1"))
    assert refused.value.code == "interaction_already_open"
    assert engine.waiting() == [(VENDOR, "i1")]


def test_an_ended_interaction_may_be_offered_again_under_the_same_id() -> None:
    engine = make_engine()
    engine.handle_event(offer("i1"))
    engine.accept("s1")
    engine.end("s1")
    assert engine.handle_event(offer("i1")).kind is ASSIGNED


def test_non_offer_events_about_unknown_interactions_are_interaction_not_found() -> None:
    engine = make_engine()
    for type_ in ("message", "update", "end"):
        with pytest.raises(ActionError) as missing:
            engine.handle_event(event(type_, "ghost", text="x"))
        assert missing.value.code == "interaction_not_found"
    assert engine.drain() == []


def test_the_assigned_decision_is_the_same_frozen_object_as_the_dataclass_builds() -> None:
    """offers.assigned(), the decision's fast constructor: equal, same hash, repr and
    answer body, still frozen."""
    from dataclasses import FrozenInstanceError

    from gateway.engine.offers import assigned
    from gateway.notices import Decision

    fast, slow = assigned("a1", "s1"), Decision(DecisionKind.ASSIGNED, agent_id="a1", session_id="s1")
    assert type(fast) is Decision
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.as_dict() == {"decision": "assigned", "agent_id": "a1", "session_id": "s1"}
    assert (fast.reason, fast.original) == (None, None)
    with pytest.raises(FrozenInstanceError):
        fast.agent_id = "a2"  # type: ignore[misc]
