"""Parallel offers (issue 13 part 2): a queue with ``policy: offer_all`` offers an interaction to
up to ``offer_to`` agents at once; the first accept wins, the others are withdrawn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.errors import InvalidState
from gateway.interactions import Phase, VendorCapabilities
from gateway.notices import DecisionKind, VendorAction
from gateway.records.memory import MemoryJournal
from gateway.sessions import Outcome, SessionState

from .conftest import (
    VENDOR,
    advance,
    agent_messages,
    agent_spec,
    assert_all_zero,
    assert_counters_exact,
    event,
    in_use,
    make_config,
    make_engine,
    offer,
    transitions,
    vendor_notices,
)

RUSH = {"name": "support", "policy": "offer_all", "offer_to": 2}
AGENTS4 = [agent_spec(a) for a in ("a1", "a2", "a3", "a4")]
STD = {"std": {"max_sessions": 2, "offer_timeout_s": {"chat": 10}}}


def parallel_engine(queue: dict[str, Any] | None = None, **kwargs: Any) -> Engine:
    return make_engine(profiles=STD, queues=[queue or RUSH], agents=AGENTS4, **kwargs)


def offered(engine: Engine, interaction: str = "i1") -> dict[str, str]:
    """agent -> session id of the interaction's parallel offers that are out."""
    parallel = engine.interactions[(VENDOR, interaction)].parallel
    return {engine.sessions[s].agent_id: s for s in parallel}


def test_offered_to_the_n_longest_idle_agents_at_once_with_a_slot_held_on_each() -> None:
    engine = parallel_engine()
    decision = engine.handle_event(offer("i1"))
    assert decision.kind is DecisionKind.QUEUED  # nobody has it yet: the vendor hears of the winner later
    assert sorted(offered(engine)) == ["a1", "a2"]  # offer_to: 2, longest idle first
    notices = engine.drain()
    for agent in ("a1", "a2"):
        [message] = agent_messages(notices, agent, "session.offered")
        assert message["alert"] is True
        assert in_use(engine, agent)["chat"] == 1
    assert agent_messages(notices, "a3") == [] and in_use(engine, "a3")["sessions"] == 0
    assert vendor_notices(notices) == []  # nothing late yet
    interaction = engine.interactions[(VENDOR, "i1")]
    assert interaction.phase is Phase.OFFERED and interaction.holder is None
    assert_counters_exact(engine)


def test_without_offer_to_every_eligible_agent_with_room_is_offered() -> None:
    engine = parallel_engine({"name": "support", "policy": "offer_all"})
    engine.set_presence("a4", "not_ready")
    engine.handle_event(offer("i1"))
    assert sorted(offered(engine)) == ["a1", "a2", "a3"]


def test_first_accept_wins_the_others_are_withdrawn_at_once_and_the_vendor_hears_one_decision() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    sessions = offered(engine)
    engine.drain()
    winner = engine.accept(sessions["a2"], actor="a2")
    assert winner.state is SessionState.ACTIVE
    notices = engine.drain()
    loser = engine.session(sessions["a1"])
    assert loser.state is SessionState.CLOSED and loser.outcome is Outcome.WITHDRAWN
    [closed] = agent_messages(notices, "a1", "session.closed")
    assert closed["session"]["outcome"] == "withdrawn"
    assert in_use(engine, "a1")["sessions"] == 0 and in_use(engine, "a2")["sessions"] == 1
    [decision] = vendor_notices(notices, VendorAction.DECISION)
    assert decision.data == {"decision": "assigned", "agent_id": "a2", "session_id": sessions["a2"]}
    assert [n.action for n in vendor_notices(notices)] == [VendorAction.DECISION, VendorAction.ACCEPTED]
    interaction = engine.interactions[(VENDOR, "i1")]
    assert interaction.holder == sessions["a2"] and interaction.parallel == []
    assert [d.kind for d in interaction.decisions] == [DecisionKind.QUEUED, DecisionKind.ASSIGNED]
    # the loser's accept, a moment later, is refused and changes nothing
    with pytest.raises(InvalidState, match="withdrawn: another agent accepted") as refused:
        engine.accept(sessions["a1"], actor="a1")
    assert refused.value.code == "session_not_offered"
    assert engine.drain() == []
    assert_counters_exact(engine)


def test_a_withdrawn_slot_takes_waiting_work_at_once() -> None:
    profiles = {"std": {"max_sessions": 1}}
    queues = [RUSH, {"name": "mail", "on_full": "wait"}]
    agents = [agent_spec("a1", queues=["support", "mail"]), agent_spec("a2")]
    engine = make_engine(profiles=profiles, queues=queues, agents=agents)
    engine.handle_event(offer("i1"))
    assert engine.handle_event(offer("m1", queue="mail")).kind is DecisionKind.QUEUED  # a1 is held by i1
    sessions = offered(engine)
    engine.accept(sessions["a2"])
    [late] = [n for n in vendor_notices(engine.drain(), VendorAction.DECISION) if n.interaction_id == "m1"]
    assert (late.data["decision"], late.data["agent_id"]) == ("assigned", "a1")


def test_declines_free_each_slot_and_the_last_one_routes_again_excluding_them() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    first = offered(engine)
    engine.decline(first["a1"])
    assert in_use(engine, "a1")["sessions"] == 0
    assert offered(engine) == {"a2": first["a2"]}  # still out: no new round yet
    engine.drain()
    engine.decline(first["a2"])
    notices = engine.drain()
    assert sorted(offered(engine)) == ["a3", "a4"]  # a new round among those not excluded
    assert engine.interactions[(VENDOR, "i1")].excluded == {"a1", "a2"}
    assert vendor_notices(notices) == []  # the vendor knows it is queued: not told again
    engine.decline(offered(engine)["a3"])
    engine.drain()
    advance(engine, 10)  # a4's offer expires
    notices = engine.drain()
    assert transitions(notices) == ["expired"]
    [rejected] = vendor_notices(notices, VendorAction.DECISION)
    assert rejected.data == {"decision": "rejected", "reason": "no_agent_available"}  # the queue's on_full: reject
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE
    assert_all_zero(engine)


def test_a_failed_round_waits_in_a_wait_queue_and_times_out_with_one_decision() -> None:
    engine = parallel_engine({**RUSH, "on_full": "wait", "max_wait_s": 30})
    engine.set_presence("a3", "offline")
    engine.set_presence("a4", "offline")
    engine.handle_event(offer("i1"))
    for session in offered(engine).values():
        engine.decline(session)
    assert engine.waiting() == [(VENDOR, "i1")]
    assert vendor_notices(engine.drain()) == []  # still queued, as the vendor was told
    advance(engine, 30)
    [timeout] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert timeout.data == {"decision": "rejected", "reason": "queue_timeout"}
    assert [d.kind for d in engine.interactions[(VENDOR, "i1")].decisions] == [
        DecisionKind.QUEUED,
        DecisionKind.REJECTED,
    ]


def test_a_waiting_interaction_is_offered_when_a_slot_frees_then_answered_once() -> None:
    engine = parallel_engine({**RUSH, "on_full": "wait"}, ready=["a1"])
    engine.handle_event(offer("x1"))
    engine.handle_event(offer("x2"))
    engine.accept(offered(engine, "x1")["a1"])
    engine.accept(offered(engine, "x2")["a1"])
    assert engine.handle_event(offer("i1")).kind is DecisionKind.QUEUED
    assert engine.waiting() == [(VENDOR, "i1")]
    engine.drain()
    engine.set_presence("a2", "ready")  # room appears on a2 (nobody else has any): a round of one
    assert list(offered(engine)) == ["a2"]
    assert engine.waiting() == []
    assert vendor_notices(engine.drain()) == []  # still queued for the vendor
    engine.accept(offered(engine)["a2"])
    [decision] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (decision.data["decision"], decision.data["agent_id"]) == ("assigned", "a2")


def test_nobody_with_room_is_rejected_at_once_by_a_reject_queue() -> None:
    engine = parallel_engine(ready=[])
    decision = engine.handle_event(offer("i1"))
    assert (decision.kind, decision.reason) == (DecisionKind.REJECTED, "no_agent_available")


def test_offline_and_desktop_drop_withdraw_only_that_agents_offer() -> None:
    engine = parallel_engine(desktop_grace_s=5)
    engine.desktop_connected("a2")
    engine.handle_event(offer("i1"))
    sessions = offered(engine)
    engine.set_presence("a1", "offline")
    assert engine.session(sessions["a1"]).outcome is Outcome.EXPIRED
    assert offered(engine) == {"a2": sessions["a2"]}
    engine.desktop_disconnected("a2")
    advance(engine, 5)  # the grace period ends: a2 goes offline, its offer too; a new round
    assert engine.session(sessions["a2"]).outcome is Outcome.EXPIRED
    assert sorted(offered(engine)) == ["a3", "a4"]
    assert in_use(engine, "a1")["sessions"] == in_use(engine, "a2")["sessions"] == 0
    assert_counters_exact(engine)


def test_the_vendor_ending_it_abandons_every_offer() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    sessions = offered(engine)
    engine.drain()
    engine.handle_event(event("end", "i1"))
    notices = engine.drain()
    assert sorted(transitions(notices)) == ["abandoned", "abandoned"]
    assert vendor_notices(notices) == []
    assert all(engine.session(s).outcome is Outcome.ABANDONED for s in sessions.values())
    assert engine.interactions[(VENDOR, "i1")].parallel == []
    assert_all_zero(engine)


def test_a_vendor_side_accept_picks_the_winner_too() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    sessions = offered(engine)
    engine.drain()
    engine.handle_event(event("accept", "i1", agent="a2"))
    notices = engine.drain()
    [decision] = vendor_notices(notices, VendorAction.DECISION)
    assert decision.data["agent_id"] == "a2"
    assert vendor_notices(notices, VendorAction.ACCEPTED) == []  # the vendor told us
    assert engine.session(sessions["a1"]).outcome is Outcome.WITHDRAWN


def test_customer_messages_reach_every_offered_desktop() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    engine.drain()
    engine.handle_event(event("message", "i1", text="hello?"))
    notices = engine.drain()
    assert len(agent_messages(notices, "a1", "chat.message")) == len(agent_messages(notices, "a2", "chat.message")) == 1


def test_a_vendor_that_cannot_reject_keeps_it_queued_after_a_failed_round() -> None:
    engine = parallel_engine(capabilities={VENDOR: VendorCapabilities(can_reject=False)})
    engine.set_presence("a3", "offline")
    engine.set_presence("a4", "offline")
    engine.handle_event(offer("i1"))
    for session in offered(engine).values():
        engine.decline(session)
    assert engine.waiting() == [(VENDOR, "i1")]
    assert vendor_notices(engine.drain()) == []
    engine.set_presence("a3", "ready")
    assert sorted(offered(engine)) == ["a3"]


def test_parallel_offers_survive_a_restart_with_exact_counts() -> None:
    async def run() -> None:
        engine = parallel_engine()
        engine.handle_event(offer("i1"))
        sessions = offered(engine)
        engine.decline(sessions["a1"])
        async with MemoryJournal() as journal:
            await journal.commit(engine.take_changes())
            snapshot = await journal.load(since=0)
        again = parallel_engine(ready=[])
        again.restore(snapshot)
        again.drain()
        assert offered(again) == {"a2": sessions["a2"]}
        assert in_use(again, "a2")["sessions"] == 1 and in_use(again, "a1")["sessions"] == 0
        assert_counters_exact(again)
        again.accept(sessions["a2"])
        [decision] = vendor_notices(again.drain(), VendorAction.DECISION)
        assert decision.data["agent_id"] == "a2"

    asyncio.run(run())


def test_a_reload_to_another_policy_applies_to_new_interactions_offers_out_finish_normally() -> None:
    engine = parallel_engine()
    engine.handle_event(offer("i1"))
    sessions = offered(engine)
    config = make_config(profiles=STD, queues=[{"name": "support"}], agents=AGENTS4)
    engine.reconfigure(config)
    assert offered(engine) == sessions  # still out
    decision = engine.handle_event(offer("i2"))
    assert decision.kind is DecisionKind.ASSIGNED  # longest_idle now: one agent, answered at once
    engine.accept(sessions["a1"])
    assert engine.session(sessions["a2"]).outcome is Outcome.WITHDRAWN
    assert_counters_exact(engine)


def test_offer_to_needs_policy_offer_all() -> None:
    data = {
        "capacity_profiles": {"std": {"max_sessions": 1}},
        "queues": [{"name": "q", "policy": "least_busy", "offer_to": 2}],
    }
    assert GatewayConfig.model_validate(data).reference_problems() == [
        (("queues", 0, "offer_to"), "offer_to applies to policy: offer_all only (this queue's is least_busy)")
    ]


def test_a_reload_to_offer_all_lets_a_single_offer_out_finish_then_routes_in_parallel() -> None:
    engine = make_engine(profiles=STD, queues=[{"name": "support"}], agents=AGENTS4)
    decision = engine.handle_event(offer("i1"))
    assert (decision.kind, decision.agent_id) == (DecisionKind.ASSIGNED, "a1")
    engine.reconfigure(make_config(profiles=STD, queues=[RUSH], agents=AGENTS4))
    assert engine.session(decision.session_id or "").state is SessionState.OFFERED  # still out, alone
    engine.drain()
    engine.decline(decision.session_id or "")  # the failed offer is routed by the new policy
    notices = engine.drain()
    assert sorted(offered(engine)) == ["a2", "a3"]
    [queued] = vendor_notices(notices, VendorAction.DECISION)  # it was told "assigned a1": now it waits
    assert queued.data == {"decision": "queued"}
    engine.accept(offered(engine)["a3"])
    [assigned] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (assigned.data["decision"], assigned.data["agent_id"]) == ("assigned", "a3")
    assert_counters_exact(engine)
