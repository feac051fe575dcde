"""Live configuration in the engine: :meth:`Engine.reconfigure` and :func:`gateway.reconfigure.diff`."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import Channel
from gateway.notices import DecisionKind, PresenceChanged, VendorAction
from gateway.reconfigure import diff
from gateway.records.memory import MemoryJournal
from gateway.sessions import OCCUPYING

from .conftest import (
    VENDOR,
    advance,
    agent_messages,
    agent_spec,
    clock_of,
    in_use,
    make_config,
    make_engine,
    offer,
    vendor_notices,
)

ASSIGNED, REJECTED, QUEUED = DecisionKind.ASSIGNED, DecisionKind.REJECTED, DecisionKind.QUEUED


def config_with(**changes: Any) -> GatewayConfig:
    return make_config(**changes)


def counters_exact(engine: Engine) -> None:
    """Counters equal the occupying sessions (caps may be exceeded after a lowering reload)."""
    for agent_id in engine.agent_ids():
        held = [s for s in engine.sessions.values() if s.agent_id == agent_id and s.state in OCCUPYING]
        profile = engine.profile_of(agent_id)
        assert in_use(engine, agent_id) == {
            "sessions": len(held),
            "units": sum(profile.weight(s.channel) for s in held),
            **{c.value: sum(1 for s in held if s.channel is c) for c in Channel},
        }, agent_id


async def restarted(engine: Engine, config: GatewayConfig) -> Engine:
    """The engine a restart on ``config`` builds from what ``engine`` journaled."""
    async with MemoryJournal() as journal:
        await journal.commit(engine.take_changes())
        snapshot = await journal.load(since=0)
    again = Engine(config, clock=engine.clock)
    again.restore(snapshot)
    again.drain()
    return again


def test_a_new_agent_appears_offline_and_takes_work_once_ready() -> None:
    engine = make_engine(agents=[agent_spec("a1")])
    engine.handle_event(offer("i1", agent="a1"))
    summary = engine.reconfigure(config_with(agents=[agent_spec("a1"), agent_spec("a9")]))
    assert summary["agents_added"] == ["a9"] and summary["generation"] == 1
    assert engine.agent("a9")["presence"]["state"] == "offline"
    assert engine.handle_event(offer("i2", agent="a9")).reason == "agent_offline"
    engine.set_presence("a9", "ready")
    assert engine.eligible("support", Channel.CHAT)[-1] == "a9"
    decision = engine.handle_event(offer("i3", agent="a9"))
    assert (decision.kind, decision.agent_id) == (ASSIGNED, "a9")
    counters_exact(engine)


def test_raising_max_sessions_admits_the_next_offer_to_a_full_agent() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 1}}, agents=[agent_spec("a1")])
    assert engine.handle_event(offer("i1", agent="a1")).kind is ASSIGNED
    assert engine.handle_event(offer("i2", agent="a1")).reason == "agent_at_capacity"
    engine.reconfigure(config_with(profiles={"std": {"max_sessions": 2}}, agents=[agent_spec("a1")]))
    assert engine.agent("a1")["in_use"]["sessions"] == 1
    assert engine.profile_of("a1").max_sessions == 2
    assert engine.handle_event(offer("i3", agent="a1")).kind is ASSIGNED
    counters_exact(engine)


def test_raising_max_sessions_serves_the_waiting_line_at_once() -> None:
    queues = [{"name": "support", "on_full": "wait", "max_wait_s": 60}]
    engine = make_engine(profiles={"std": {"max_sessions": 1}}, agents=[agent_spec("a1")], queues=queues)
    engine.handle_event(offer("i1"))
    assert engine.handle_event(offer("i2")).kind is QUEUED
    engine.drain()
    engine.reconfigure(config_with(profiles={"std": {"max_sessions": 2}}, agents=[agent_spec("a1")], queues=queues))
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (late.interaction_id, late.data["decision"]) == ("i2", "assigned")


def test_lowering_max_sessions_cuts_nothing_and_refuses_until_below_the_new_cap() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3}}, agents=[agent_spec("a1")])
    sessions = [engine.handle_event(offer(f"i{n}", agent="a1")).session_id for n in range(3)]
    for session_id in sessions:
        assert session_id is not None
        engine.accept(session_id)
    engine.reconfigure(config_with(profiles={"std": {"max_sessions": 1}}, agents=[agent_spec("a1")]))
    assert [s.state.value for s in engine.open_sessions("a1")] == ["active"] * 3
    assert engine.agent("a1")["in_use"]["sessions"] == 3
    assert engine.handle_event(offer("x1", agent="a1")).reason == "agent_at_capacity"
    assert engine.eligible("support", Channel.CHAT) == []
    engine.end(sessions[0])
    assert engine.handle_event(offer("x2", agent="a1")).reason == "agent_at_capacity"
    engine.end(sessions[1])
    assert engine.handle_event(offer("x3", agent="a1")).reason == "agent_at_capacity"  # 1 held, cap 1
    engine.end(sessions[2])
    assert engine.handle_event(offer("x4", agent="a1")).kind is ASSIGNED
    counters_exact(engine)


def test_a_changed_unit_weight_counts_the_open_sessions_with_the_new_weight() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 4}}, agents=[agent_spec("a1")])
    first = engine.handle_event(offer("i1", channel="voice", agent="a1")).session_id
    assert first is not None
    profiles = {"std": {"max_sessions": 4, "units": {"voice": 3}}}
    engine.reconfigure(config_with(profiles=profiles, agents=[agent_spec("a1")]))
    assert engine.agent("a1")["in_use"]["units"] == 3
    counters_exact(engine)
    engine.accept(first)
    engine.end(first)  # released with the weight it is counted with: no negative counter
    assert engine.agent("a1")["in_use"] == {"sessions": 0, "units": 0, "voice": 0, "chat": 0, "email": 0, "manual": 0}


def test_a_removed_agent_keeps_its_sessions_takes_no_work_and_goes_with_the_last() -> None:
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    held = engine.handle_event(offer("i1", agent="a1")).session_id
    assert held is not None
    engine.accept(held)
    summary = engine.reconfigure(config_with(agents=[agent_spec("a2")]))
    assert summary["agents_retiring"] == ["a1"]
    assert "a1" in engine.agent_ids() and engine.retiring_agents() == ["a1"]
    assert engine.session(held).state.value == "active"
    assert engine.handle_event(offer("i2", agent="a1")).reason == "unknown_agent"
    assert engine.eligible("support", Channel.CHAT) == ["a2"]
    assert engine.handle_event(offer("i3")).agent_id == "a2"
    engine.drain()
    engine.end(held)
    assert "a1" not in engine.agent_ids()
    assert engine.session(held).state.value == "closed"  # the record stays readable


def test_a_removed_agent_in_wrap_up_goes_when_the_wrap_up_ends() -> None:
    profiles = {"std": {"max_sessions": 2, "wrap_up_s": {"chat": 10}}}
    engine = make_engine(profiles=profiles, agents=[agent_spec("a1"), agent_spec("a2")])
    held = engine.handle_event(offer("i1", agent="a1")).session_id
    assert held is not None
    engine.accept(held)
    engine.end(held)
    engine.reconfigure(config_with(profiles=profiles, agents=[agent_spec("a2")]))
    assert "a1" in engine.agent_ids()
    advance(engine, 10)
    assert "a1" not in engine.agent_ids()


def test_a_removed_agent_without_sessions_goes_at_once_and_can_come_back_fresh() -> None:
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    summary = engine.reconfigure(config_with(agents=[agent_spec("a2")]))
    assert summary["agents_removed"] == ["a1"]
    assert "a1" not in engine.agent_ids()
    assert engine.availability("a1", Channel.CHAT) is not None
    changes = engine.take_changes()
    assert any(row["id"] == "a1" and row["presence"] == "offline" for row in changes.agents)
    engine.reconfigure(config_with(agents=[agent_spec("a1"), agent_spec("a2")]))
    assert engine.agent("a1")["presence"]["state"] == "offline"


def test_interactions_waiting_for_a_removed_agent_are_rejected() -> None:
    from gateway.interactions import VendorCapabilities

    engine = make_engine(
        profiles={"std": {"max_sessions": 1}},
        agents=[agent_spec("a1"), agent_spec("a2")],
        capabilities={VENDOR: VendorCapabilities(can_reject=False)},
    )
    held = engine.handle_event(offer("i1", agent="a1")).session_id
    assert engine.handle_event(offer("i2", agent="a1")).kind is QUEUED  # waits for a1
    engine.drain()
    engine.reconfigure(config_with(profiles={"std": {"max_sessions": 1}}, agents=[agent_spec("a2")]))
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (late.interaction_id, late.data["reason"]) == ("i2", "unknown_agent")
    assert engine.waiting() == []
    assert held is not None and engine.session(held).state.value == "offered"


def test_queue_membership_and_policy_changes_keep_the_waiting_order() -> None:
    queues = [{"name": "support", "on_full": "wait", "max_wait_s": 60}, {"name": "sales"}]
    agents = [agent_spec("a1", queues=["sales"])]
    engine = make_engine(profiles={"std": {"max_sessions": 2}}, agents=agents, queues=queues)
    for n in range(3):
        assert engine.handle_event(offer(f"w{n}")).kind is QUEUED
    engine.drain()
    new_queues = [{"name": "support", "on_full": "wait", "max_wait_s": 60, "policy": "least_busy"}, {"name": "sales"}]
    engine.reconfigure(
        config_with(
            profiles={"std": {"max_sessions": 2}},
            agents=[agent_spec("a1", queues=["sales", "support"])],
            queues=new_queues,
        )
    )
    late = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert [n.interaction_id for n in late] == ["w0", "w1"]  # first come, first served
    assert engine.waiting() == [(VENDOR, "w2")]


def test_a_changed_max_wait_moves_the_deadline_from_when_the_wait_began() -> None:
    engine = make_engine(
        agents=[agent_spec("a1")], queues=[{"name": "support", "on_full": "wait", "max_wait_s": 60}], ready=[]
    )
    engine.handle_event(offer("w1"))
    advance(engine, 20)
    engine.reconfigure(
        config_with(agents=[agent_spec("a1")], queues=[{"name": "support", "on_full": "wait", "max_wait_s": 30}])
    )
    engine.drain()
    advance(engine, 9)
    assert engine.waiting() == [(VENDOR, "w1")]
    advance(engine, 1)  # 30 s after it began to wait
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert late.data["reason"] == "queue_timeout"


def test_the_waiters_of_a_removed_queue_are_rejected_and_its_offers_not_rerouted_into_it() -> None:
    queues = [{"name": "support", "on_full": "wait"}, {"name": "sales"}]
    agents = [agent_spec("a1", queues=["support"]), agent_spec("a2", queues=["sales"])]
    engine = make_engine(agents=agents, queues=queues, ready=["a1"])
    offered = engine.handle_event(offer("o1")).session_id
    engine.set_presence("a1", "not_ready")
    engine.handle_event(offer("w1"))
    assert engine.waiting() == [(VENDOR, "w1")]
    engine.drain()
    moved = [agent_spec("a1", queues=["sales"]), agent_spec("a2", queues=["sales"])]
    engine.reconfigure(config_with(agents=moved, queues=[{"name": "sales"}]))
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (late.interaction_id, late.data["reason"]) == ("w1", "no_agent_available")
    assert offered is not None
    engine.decline(offered)  # its queue is gone: rejected, not routed into nothing
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert (late.interaction_id, late.data["reason"]) == ("o1", "no_agent_available")


def test_a_reload_and_a_removed_agent_survive_a_restart_on_the_new_file() -> None:
    async def run() -> None:
        engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
        held = engine.handle_event(offer("i1", agent="a1")).session_id
        assert held is not None
        engine.accept(held)
        new = config_with(agents=[agent_spec("a2")], profiles={"std": {"max_sessions": 5}})
        engine.reconfigure(new)
        again = await restarted(engine, new)
        assert again.generation == 1 and again.reloaded_at == engine.reloaded_at
        assert again.retiring_agents() == ["a1"]
        assert again.session(held).state.value == "active"
        assert again.handle_event(offer("i2", agent="a1")).reason == "unknown_agent"
        assert again.profile_of("a2").max_sessions == 5
        counters_exact(again)
        again.end(held)
        assert "a1" not in again.agent_ids()
        third = await restarted(again, new)
        assert "a1" not in third.agent_ids() and third.generation == 1

    asyncio.run(run())


def test_an_agent_added_back_before_its_sessions_closed_is_a_normal_agent_again() -> None:
    async def run() -> None:
        engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
        held = engine.handle_event(offer("i1", agent="a1")).session_id
        engine.reconfigure(config_with(agents=[agent_spec("a2")]))
        both = config_with(agents=[agent_spec("a1"), agent_spec("a2")])
        engine.reconfigure(both)
        assert engine.retiring_agents() == []
        assert engine.handle_event(offer("i2", agent="a1")).kind is ASSIGNED
        again = await restarted(engine, both)
        assert again.retiring_agents() == [] and held in {s.id for s in again.open_sessions("a1")}

    asyncio.run(run())


def test_a_retired_agent_gone_while_the_gateway_was_down_comes_back_afresh() -> None:
    """Its desktop's grace period and its wrap-up both ran out during the downtime: the
    wrap-up closes its last session, so it leaves (no grace period outlives it), and a reload
    that adds it back brings a new agent: offline, no desktop, nothing flagged, no timer."""

    async def run() -> None:
        profiles = {"std": {"max_sessions": 3, "wrap_up_s": {"chat": 1.5}}}
        both = config_with(profiles=profiles, agents=[agent_spec("a1"), agent_spec("a2")])
        without = config_with(profiles=profiles, agents=[agent_spec("a2")])
        async with MemoryJournal() as journal:

            async def restart(engine: Engine, config: GatewayConfig) -> Engine:
                await journal.commit(engine.take_changes())
                again = Engine(config, clock=engine.clock)
                again.restore(await journal.load(since=0))
                return again

            engine = make_engine(profiles=profiles, agents=[agent_spec("a1"), agent_spec("a2")], desktops=["a1"])
            held = engine.handle_event(offer("i1", agent="a1")).session_id
            assert held is not None
            engine.accept(held)
            engine.end(held)  # wrap-up until T0 + 1.5
            engine = await restart(engine, both)  # the desktop counts as gone: grace until T0 + 60
            assert engine.agent("a1")["desktop_connected"] is False
            engine.reconfigure(without)
            assert engine.retiring_agents() == ["a1"]
            engine.drain()
            clock_of(engine).advance(60.0)  # down past the wrap-up and the grace period
            engine = await restart(engine, without)
            engine.tick()
            notices = engine.drain()
            assert "a1" not in engine.agent_ids()
            assert engine.session(held).state.value == "closed"
            reasons = [n.reason for n in notices if isinstance(n, PresenceChanged) and n.agent_id == "a1"]
            assert reasons == ["removed"], reasons  # not desktop_disconnected: its grace period died with it
            engine.reconfigure(both)
            body = engine.agent("a1")
            assert body["presence"]["state"] == "offline" and body["desktop_connected"] is False
            assert body["sessions"] == [] and in_use(engine, "a1")["sessions"] == 0
            assert engine.next_deadline() is None
            assert engine.desktop_connected("a1")["sessions"] == []
            engine.set_presence("a1", "ready")
            assert engine.handle_event(offer("i2", agent="a1")).kind is ASSIGNED
            again = await restart(engine, both)  # and that is what the journal says too
            assert again.agent("a1")["presence"]["state"] == "ready"

    asyncio.run(run())


def test_diff_names_what_changed_and_what_needs_a_restart() -> None:
    old = make_config()
    raw = old.model_dump(mode="json")
    raw["server"]["port"] = 9999
    raw["server"]["desktop_grace_s"] = 5
    raw["agents"][0]["token_sha256"] = "a" * 64
    raw["agents"][1]["queues"] = []
    raw["agents"].pop(2)
    raw["queues"].append({"name": "sales"})
    raw["capacity_profiles"]["std"]["max_sessions"] = 4
    raw["retention"]["cached_events"] = 500
    got = diff(old, GatewayConfig.model_validate(raw))
    assert got.compact() == {
        "agents_removed": ["a3"],
        "agents_changed": ["a1", "a2"],
        "tokens_changed": ["a1"],
        "profiles_changed": ["std"],
        "queues_added": ["sales"],
        "server_changed": ["desktop_grace_s"],
        "needs_restart": ["server.port", "retention.cached_events"],
    }
    assert diff(old, old).empty


def test_a_reload_journals_the_generation() -> None:
    engine = make_engine(agents=[agent_spec("a1")])
    engine.take_changes()
    engine.reconfigure(config_with(agents=[agent_spec("a1")]))
    changes = engine.take_changes()
    assert changes.meta["config_generation"] == 1 and changes.meta["retired_agents"] == {}
    assert changes.meta["config_reloaded_at"] == engine.clock.now()


def test_a_removed_agent_going_offline_with_its_last_offer_is_answered_and_gone() -> None:
    """Found by the stateful test: going offline withdrew the removed agent's last offer, the
    agent left, and set_presence then failed (unknown_agent) after changing the state."""
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    offered = engine.handle_event(offer("i1", agent="a1")).session_id
    engine.reconfigure(config_with(agents=[agent_spec("a2")]))
    body = engine.set_presence("a1", "offline")
    assert body["id"] == "a1" and body["presence"]["state"] == "offline" and body["sessions"] == []
    assert "a1" not in engine.agent_ids()
    assert offered is not None and engine.session(offered).outcome is not None


def test_an_open_desktop_gets_a_fresh_hello_when_its_agent_is_redescribed() -> None:
    """Name, queues or profile changed: the open desktop sees the agent as a reconnect would;
    agents without a desktop, unchanged ones and token-only changes get nothing."""
    profiles = {"std": {"max_sessions": 3}, "big": {"max_sessions": 5}}
    agents = [agent_spec("a1"), agent_spec("a2"), agent_spec("a3"), agent_spec("a4")]
    engine = make_engine(profiles=profiles, agents=agents, desktops=["a1", "a3", "a4"])
    held = engine.handle_event(offer("i1", agent="a1")).session_id
    engine.drain()
    new = [
        {**agent_spec("a1", profile="big"), "name": "Ada"},
        {**agent_spec("a2"), "name": "Bob"},  # no desktop
        agent_spec("a3"),  # unchanged
        {**agent_spec("a4"), "token_sha256": "ab" * 32},  # its desktop is closed (4001) instead
    ]
    engine.reconfigure(config_with(profiles=profiles, agents=new))
    notices = engine.drain()
    [hello] = agent_messages(notices, "a1", "hello")
    assert hello["agent"]["name"] == "Ada" and hello["agent"]["profile"] == "big"
    assert [s["id"] for s in hello["agent"]["sessions"]] == [held]
    assert hello["agent"] == engine.desktop_connected("a1")
    for quiet in ("a2", "a3", "a4"):
        assert agent_messages(notices, quiet, "hello") == [], quiet


def test_agents_of_one_profile_share_its_limits_and_an_agent_without_desktop_holds_no_host_set() -> None:
    """Memory per configured agent (P4: 10,000 agents): the capacity numbers the index reads
    are one object per profile, not a copy per agent, and an agent without a desktop holds
    no set of its own; after a reload that changes the profile, its agents share the new
    numbers and routing follows them."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 3}, "solo": {"max_sessions": 1}},
        agents=[agent_spec("a1"), agent_spec("a2"), agent_spec("a3"), agent_spec("b1", profile="solo")],
        ready=["a1", "a2", "a3"],
    )
    st = engine._st
    std = {id(st.agents[a].limits) for a in ("a1", "a2", "a3")}
    assert len(std) == 1 and id(st.agents["b1"].limits) not in std
    assert all(agent.desktop_hosts is st.agents["a1"].desktop_hosts for agent in st.agents.values())
    engine.desktop_connected("a1")
    assert st.agents["a1"].desktop_hosts == {""} and st.agents["a2"].desktop_hosts == frozenset()
    engine.desktop_disconnected("a1")
    assert st.agents["a1"].desktop_hosts == frozenset()

    engine.reconfigure(
        make_config(
            profiles={"std": {"max_sessions": 1}, "solo": {"max_sessions": 1}},
            agents=[agent_spec("a1"), agent_spec("a2"), agent_spec("a3"), agent_spec("b1", profile="solo")],
        )
    )
    assert len({id(st.agents[a].limits) for a in ("a1", "a2", "a3")}) == 1
    assert st.agents["a1"].limits is not None and st.agents["a1"].limits.max_sessions == 1
    for n in range(3):
        assert engine.handle_event(offer(f"i{n}")).kind is ASSIGNED
    assert engine.handle_event(offer("i3")).kind is not ASSIGNED  # every std agent is full at its new cap of 1
