"""Engine transfers (DESIGN section 5): blind and consult, to an agent and to a queue; a
failed transfer never loses the interaction nor leaks capacity, however many transfers chain."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine import Engine
from gateway.errors import ActionError, CapacityRejected, Forbidden, InvalidState, NotFound
from gateway.events import Channel
from gateway.interactions import Phase, VendorCapabilities
from gateway.notices import VendorAction
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
    make_engine,
    offer,
    snapshot,
    transitions,
    vendor_notices,
)


def active(engine: Engine, agent_id: str, interaction: str, channel: str = "chat", vendor: str = VENDOR) -> str:
    """A targeted offer, accepted: the id of the active session."""
    decision = engine.handle_event(offer(interaction, channel=channel, agent=agent_id, vendor=vendor))
    assert decision.session_id is not None, decision
    engine.accept(decision.session_id)
    return decision.session_id


def sessions_in_use(engine: Engine) -> dict[str, int]:
    return {a: in_use(engine, a)["sessions"] for a in engine.agent_ids()}


# ============================================================================ blind


def test_blind_transfer_to_an_agent_offers_the_target_then_ends_the_source() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.drain()
    target = engine.transfer("s1", to_agent="a2")
    notices = engine.drain()

    assert (target.id, target.agent_id, target.state, target.transferred_from) == (
        "s2",
        "a2",
        SessionState.OFFERED,
        "s1",
    )
    source = engine.session("s1")
    assert (source.state, source.outcome, source.transferred_to) == (SessionState.CLOSED, Outcome.TRANSFERRED, "s2")
    assert sessions_in_use(engine) == {"a1": 0, "a2": 1, "a3": 0}
    [moved] = vendor_notices(notices, VendorAction.TRANSFERRED)
    assert moved.data == {
        "agent_id": "a2",
        "session_id": "s2",
        "mode": "blind",
        "from_agent_id": "a1",
        "from_session_id": "s1",
    }
    [alert] = agent_messages(notices, "a2", "session.offered")
    assert alert["alert"] is True and alert["session"]["transferred_from"] == "s1"
    assert engine.interactions[(VENDOR, "i1")].holder == "s2"

    engine.accept("s2")
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.ACTIVE
    assert_counters_exact(engine)


def test_blind_transfer_to_a_queue_never_picks_the_source_agent() -> None:
    """a1 is the longest idle agent of the queue, yet the transfer goes to a2."""
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    engine.set_presence("a2", "not_ready")
    active(engine, "a1", "i1")
    advance(engine, 5)
    engine.set_presence("a2", "ready")
    assert engine.eligible("support", Channel.CHAT) == ["a1", "a2"]
    target = engine.transfer("s1", to_queue="support")
    assert (target.agent_id, target.queue) == ("a2", "support")
    assert engine.session("s1").outcome is Outcome.TRANSFERRED
    assert_counters_exact(engine)


def test_a_declined_blind_queue_transfer_is_rerouted_excluding_the_source_agent() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    assert engine.transfer("s1", to_queue="support").agent_id == "a2"
    engine.drain()
    engine.decline("s2")
    notices = engine.drain()
    assert engine.session("s3").agent_id == "a3"
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert late.data == {"decision": "assigned", "agent_id": "a3", "session_id": "s3"}
    assert_counters_exact(engine)


def test_a_declined_blind_queue_transfer_with_nobody_left_goes_back_to_the_vendor() -> None:
    """The source agent has room but is excluded: the vendor is told no_agent_available."""
    engine = make_engine(agents=[agent_spec("a1"), agent_spec("a2")])
    active(engine, "a1", "i1")
    engine.transfer("s1", to_queue="support")
    engine.drain()
    engine.decline("s2")
    notices = engine.drain()
    assert engine.open_sessions("a1") == []
    [late] = vendor_notices(notices, VendorAction.DECISION)
    assert late.data == {"decision": "rejected", "reason": "no_agent_available"}
    assert_all_zero(engine)


def test_a_declined_blind_agent_transfer_is_rejected_to_the_vendor_like_a_targeted_offer() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.transfer("s1", to_agent="a2")
    engine.drain()
    advance(engine, 30)  # a2 misses it
    [late] = vendor_notices(engine.drain(), VendorAction.DECISION)
    assert late.data == {"decision": "rejected", "reason": "offer_timeout"}
    assert engine.session("s2").outcome is Outcome.EXPIRED
    assert_all_zero(engine)


# ============================================================================ consult


def test_consult_transfer_keeps_the_source_active_while_the_target_is_offered() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.drain()
    target = engine.transfer("s1", to_agent="a2", mode="consult")
    notices = engine.drain()
    assert (target.agent_id, target.state, target.transferred_from) == ("a2", SessionState.OFFERED, "s1")
    assert engine.session("s1").state is SessionState.ACTIVE
    interaction = engine.interactions[(VENDOR, "i1")]
    assert (interaction.holder, interaction.pending) == ("s1", "s2")
    assert sessions_in_use(engine) == {"a1": 1, "a2": 1, "a3": 0}
    assert vendor_notices(notices) == []  # nothing moved yet
    assert_counters_exact(engine)


def test_an_accepted_consult_ends_the_source_as_transferred() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 5}}})
    active(engine, "a1", "i1")
    engine.transfer("s1", to_agent="a2", mode="consult")
    engine.drain()
    engine.accept("s2")
    notices = engine.drain()

    source, target = engine.session("s1"), engine.session("s2")
    assert (source.state, source.outcome, source.transferred_to) == (SessionState.WRAP_UP, Outcome.TRANSFERRED, "s2")
    assert (target.state, target.transferred_from) == (SessionState.ACTIVE, "s1")
    [moved] = vendor_notices(notices, VendorAction.TRANSFERRED)
    assert moved.data == {
        "agent_id": "a2",
        "session_id": "s2",
        "mode": "consult",
        "from_agent_id": "a1",
        "from_session_id": "s1",
    }
    assert vendor_notices(notices, VendorAction.ACCEPTED) == []
    interaction = engine.interactions[(VENDOR, "i1")]
    assert (interaction.holder, interaction.pending) == ("s2", None)
    advance(engine, 5)
    assert sessions_in_use(engine) == {"a1": 0, "a2": 1, "a3": 0}
    # the customer now talks to the target only
    engine.drain()
    engine.handle_event(event("message", "i1", text="still there?"))
    assert [m["session_id"] for m in agent_messages(engine.drain(), type_="chat.message")] == ["s2"]
    assert_counters_exact(engine)


@pytest.mark.parametrize("how", ["decline", "timeout", "target offline"])
def test_a_consult_the_target_does_not_take_leaves_the_interaction_with_the_source(how: str) -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.transfer("s1", to_agent="a2", mode="consult")
    engine.drain()
    if how == "decline":
        engine.decline("s2")
    elif how == "timeout":
        advance(engine, 30)
    else:
        engine.set_presence("a2", "offline")
    notices = engine.drain()

    assert engine.session("s2").state is SessionState.CLOSED
    assert engine.session("s1").state is SessionState.ACTIVE
    interaction = engine.interactions[(VENDOR, "i1")]
    assert (interaction.phase, interaction.holder, interaction.pending) == (Phase.ACTIVE, "s1", None)
    assert "transfer_failed" in transitions(notices, "s1")
    assert vendor_notices(notices) == []  # the vendor never heard of the consult
    assert sessions_in_use(engine) == {"a1": 1, "a2": 0, "a3": 0}
    assert len(engine.sessions) == 2  # not re-routed anywhere
    # and the source may try again
    assert engine.transfer("s1", to_agent="a3", mode="consult").agent_id == "a3"
    assert_counters_exact(engine)


def test_consult_transfer_to_a_queue_skips_the_source_agent() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    target = engine.transfer("s1", to_queue="support", mode="consult")
    assert target.agent_id == "a2"
    engine.accept(target.id)
    assert engine.session("s1").outcome is Outcome.TRANSFERRED
    assert_counters_exact(engine)


def test_ending_the_source_during_a_consult_withdraws_the_target_offer() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.transfer("s1", to_agent="a2", mode="consult")
    engine.end("s1")
    target = engine.session("s2")
    assert (target.state, target.outcome) == (SessionState.CLOSED, Outcome.ABANDONED)
    assert len(engine.sessions) == 2
    assert_all_zero(engine)


def test_a_vendor_end_during_a_consult_closes_both_sessions() -> None:
    engine = make_engine()
    active(engine, "a1", "i1")
    engine.transfer("s1", to_agent="a2", mode="consult")
    engine.handle_event(event("end", "i1"))
    assert (engine.session("s1").outcome, engine.session("s2").outcome) == (Outcome.COMPLETED, Outcome.ABANDONED)
    assert engine.interactions[(VENDOR, "i1")].phase is Phase.DONE
    assert_all_zero(engine)


# ============================================================================ failed transfers


def _transfer_scene() -> tuple[Engine, dict[str, str]]:
    """a1 holds chat i1 and call i2 (active) and chat i7 with a consult pending to a3;
    a2 is full (2 chats + 1 e-mail); a3 holds a call (voice cap 1) and a call of vendor
    ``nox`` that cannot transfer; a4 is offline, a5 not ready. Queue ``sales`` has only a1."""
    engine = make_engine(
        profiles={"std": {"max_sessions": 3, "channels": {"voice": 1}}},
        queues=[{"name": "support"}, {"name": "sales"}],
        agents=[agent_spec("a1", queues=["support", "sales"])] + [agent_spec(f"a{n}") for n in range(2, 6)],
        ready=["a1", "a2", "a3", "a5"],
        capabilities={"nox": VendorCapabilities(can_transfer=False)},
    )
    engine.set_presence("a5", "not_ready")
    ids = {
        "chat": active(engine, "a1", "i1"),
        "call": active(engine, "a1", "i2", channel="voice"),
        "consulting": active(engine, "a1", "i7"),
    }
    for n, channel in enumerate(["chat", "chat", "email"]):
        engine.handle_event(offer(f"full{n}", channel=channel, agent="a2"))
    active(engine, "a3", "call3", channel="voice")
    ids["nox"] = active(engine, "a3", "nox1", vendor="nox")
    ids["consult_target"] = engine.transfer(ids["consulting"], to_agent="a3", mode="consult").id
    engine.drain()
    return engine, ids


CAP, NF, BAD, STATE = CapacityRejected, NotFound, ActionError, InvalidState

#: (what, session of the scene (or a literal id), transfer arguments, error, code)
FAILED: list[tuple[str, str, dict[str, Any], type[ActionError], str]] = [
    ("target at capacity", "chat", {"to_agent": "a2"}, CAP, "agent_at_capacity"),
    ("target channel full", "call", {"to_agent": "a3"}, CAP, "channel_at_capacity"),
    ("target offline", "chat", {"to_agent": "a4"}, CAP, "agent_offline"),
    ("target not ready", "chat", {"to_agent": "a5", "mode": "consult"}, CAP, "agent_not_ready"),
    ("unknown target", "chat", {"to_agent": "ghost"}, NF, "unknown_agent"),
    ("nobody in the queue", "chat", {"to_queue": "sales"}, CAP, "no_agent_available"),
    ("unknown queue", "chat", {"to_queue": "nope"}, NF, "unknown_queue"),
    ("to itself", "chat", {"to_agent": "a1"}, BAD, "invalid_transfer_target"),
    ("consult pending", "consulting", {"to_agent": "a5"}, STATE, "transfer_in_progress"),
    ("offered session", "consult_target", {"to_agent": "a1"}, STATE, "session_not_active"),
    ("both targets", "chat", {"to_agent": "a3", "to_queue": "support"}, BAD, "invalid_transfer_target"),
    ("no target", "chat", {}, BAD, "invalid_transfer_target"),
    ("unknown mode", "chat", {"to_agent": "a3", "mode": "warm"}, BAD, "invalid_request"),
    ("vendor cannot transfer", "nox", {"to_agent": "a1"}, BAD, "vendor_unsupported"),
    ("another agent's session", "chat", {"to_agent": "a3", "actor": "a3"}, Forbidden, "forbidden"),
    ("unknown session", "nope", {"to_agent": "a3"}, NF, "session_not_found"),
]


@pytest.mark.parametrize(("what", "source", "arguments", "error", "code"), FAILED, ids=[case[0] for case in FAILED])
def test_a_failed_transfer_raises_its_code_and_changes_nothing(
    what: str, source: str, arguments: dict[str, Any], error: type[ActionError], code: str
) -> None:
    engine, ids = _transfer_scene()
    before = snapshot(engine)
    with pytest.raises(error) as raised:
        engine.transfer(ids.get(source, source), **arguments)
    assert raised.value.code == code
    assert snapshot(engine) == before
    assert_counters_exact(engine)


def test_the_transfer_scene_is_what_it_claims() -> None:
    engine, ids = _transfer_scene()
    assert sessions_in_use(engine) == {"a1": 3, "a2": 3, "a3": 3, "a4": 0, "a5": 0}
    assert engine.session(ids["consult_target"]).agent_id == "a3"
    assert engine.presence_of("a4").value == "offline" and engine.presence_of("a5").value == "not_ready"
    assert in_use(engine, "a3")["voice"] == 1
    # once a4 is ready, the same transfers work: the failures above are about their cause
    engine.set_presence("a4", "ready")
    assert engine.transfer(ids["chat"], to_queue="support").agent_id == "a4"
    assert engine.transfer(ids["call"], to_agent="a4", mode="consult").agent_id == "a4"


# ============================================================================ chains


def test_a_blind_chain_a_b_c_a_keeps_capacity_exact() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 3, "wrap_up_s": {"chat": 5}}})
    current = active(engine, "a1", "i1")
    for target_agent in ("a2", "a3", "a1"):
        target = engine.transfer(current, to_agent=target_agent)
        engine.accept(target.id)
        assert engine.session(current).transferred_to == target.id
        assert target.transferred_from == current
        current = target.id
        assert_counters_exact(engine)
    advance(engine, 5)
    assert sessions_in_use(engine) == {"a1": 1, "a2": 0, "a3": 0}
    assert engine.interactions[(VENDOR, "i1")].holder == current == "s4"
    engine.end(current)
    advance(engine, 5)
    assert_all_zero(engine)


def test_a_consult_chain_a_b_c_a_keeps_capacity_exact() -> None:
    engine = make_engine()
    current = active(engine, "a1", "i1")
    for target_agent in ("a2", "a3", "a1"):
        target = engine.transfer(current, to_agent=target_agent, mode="consult")
        assert_counters_exact(engine)
        engine.accept(target.id)
        assert engine.session(current).outcome is Outcome.TRANSFERRED
        current = target.id
    assert sessions_in_use(engine) == {"a1": 1, "a2": 0, "a3": 0}
    engine.end(current)
    assert_all_zero(engine)


def test_many_chained_transfers_with_failures_never_lose_the_interaction_nor_leak() -> None:
    engine = make_engine(profiles={"std": {"max_sessions": 2, "wrap_up_s": {"chat": 2}}})
    current = active(engine, "a1", "i1")
    agents = ["a1", "a2", "a3"]
    for step in range(60):
        holder = engine.session(current).agent_id
        target_agent = agents[(agents.index(holder) + 1) % 3]
        mode = "consult" if step % 2 else "blind"
        target = engine.transfer(current, to_agent=target_agent, mode=mode)
        if mode == "consult" and step % 4 == 1:
            engine.decline(target.id)  # failed consult: the source keeps it
            assert engine.session(current).state is SessionState.ACTIVE
        else:
            engine.accept(target.id)
            current = target.id
        advance(engine, 1)
        assert_counters_exact(engine)
        live = [s for s in engine.sessions.values() if s.interaction_id == "i1" and s.state is SessionState.ACTIVE]
        assert [s.id for s in live] == [current]
    engine.end(current)
    advance(engine, 2)
    assert_all_zero(engine)
