"""Queue-call scenarios end to end: a scripted Asterisk (real TCP, random splits) plays
app_queue's events against a real gateway (SQLite journal) with the ``asterisk_ami``
adapter, and the test checks the sessions, the journal's records and what the gateway sent
back to Asterisk (QueuePause, Hangup, Redirect, Atxfer)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import RELOADER
from gateway.config_loader import load_config
from gateway.events import Channel, Event, EventType
from gateway.persistence import session_record
from gateway.sessions import SessionState
from tests.adapters.contract.harness import VENDOR, ContractGateway
from tests.adapters.scripted import fixture_bytes

from .conftest import INTERFACES, scenario_config
from .peer import FakeAsterisk

pytestmark = pytest.mark.asyncio

A1, A2 = INTERFACES["a1"], INTERFACES["a2"]


async def until(gw: ContractGateway, condition: Any, what: str, timeout: float = 10.0) -> Any:
    return await gw.until(condition, timeout=timeout, what=what)


def states(gw: ContractGateway, uid: str) -> list[tuple[str, str, str | None]]:
    return [(s.agent_id, s.state.value, s.outcome.value if s.outcome else None) for s in gw.sessions_of(uid)]


async def records(gw: ContractGateway, uid: str) -> list[dict[str, Any]]:
    rows = await gw.runtime.journal.records(start=None, end=None)
    out = []
    for row in rows:
        data = row if isinstance(row, dict) else json.loads(row[0])
        if data.get("interaction_id") == uid:
            out.append(data)
    return out


def pause_of(ast: FakeAsterisk, interface: str) -> tuple[bool, str] | None:
    return ast.paused.get(interface)


async def test_a_call_offered_answered_and_completed(ast: FakeAsterisk, gw: ContractGateway) -> None:
    await gw.ready()
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 unpaused once ready")
    call = ast.new_call("c1", queue="sales-q")
    await ast.join(call)
    await ast.agent_called(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "offered", None)], "the offer")
    [session] = gw.sessions_of(call.uniqueid)
    assert session.queue == "support"  # queue_map: sales-q -> support
    assert session.customer is not None and session.customer.address == call.num
    # a ringing agent holds its voice slot: app_queue must not ring it for another call
    await until(gw, lambda: pause_of(ast, A1) == (True, "channel_at_capacity"), "a1 paused while ringing")

    await ast.agent_connect(call, A1)
    await until(gw, lambda: session.state is SessionState.ACTIVE, "accepted")
    await ast.queue_leave(call)  # the caller left the queue because a1 answered: not an end
    await asyncio.sleep(0.4)
    assert session.state is SessionState.ACTIVE

    await ast.agent_complete(call, A1)
    await ast.caller_hangup(call)
    await until(gw, lambda: session.state is not SessionState.ACTIVE, "the end")
    assert session.outcome is not None and session.outcome.value == "completed"
    # paused through the wrap-up (0.5 s), unpaused after it
    assert pause_of(ast, A1) == (True, "channel_at_capacity")
    await until(gw, lambda: session.state is SessionState.CLOSED, "wrap-up over")
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 unpaused after its wrap-up")

    rows = await records(gw, call.uniqueid)
    assert [(r["agent_id"], r["outcome"]) for r in rows] == [("a1", "completed")]
    record = session_record(rows[0])
    assert (record["outcome"], record["queue"], record["wrap_ms"]) == ("completed", "support", 500)
    assert 400 <= record["handle_ms"] < 3000, record  # connect -> complete took 0.4 s (+ scheduling)
    # no Hangup of anything: the gateway let app_queue do its job
    assert ast.actions_named("Hangup") == []


async def test_a_ring_no_answer_then_a_re_ring(ast: FakeAsterisk, gw: ContractGateway) -> None:
    """app_queue rings a1, nobody answers, then rings a2 for the same call: two sessions of
    one interaction, the first declined; the gateway hangs nothing up."""
    await gw.ready()
    call = ast.new_call("c2")
    await ast.join(call)
    await ast.agent_called(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "offered", None)], "the first offer")
    await ast.ring_no_answer(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "closed", "declined")], "declined")
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 free again")

    await ast.agent_called(call, A2)
    await until(gw, lambda: len(gw.sessions_of(call.uniqueid)) == 2, "the second offer")
    first, second = gw.sessions_of(call.uniqueid)
    assert first.id != second.id and second.agent_id == "a2" and second.state is SessionState.OFFERED
    # and a1 again after a2 did not answer either: a third session, same interaction
    await ast.ring_no_answer(call, A2)
    await ast.agent_called(call, A1)
    await until(gw, lambda: len(gw.sessions_of(call.uniqueid)) == 3, "the third offer")
    await ast.agent_connect(call, A1)
    await ast.agent_complete(call, A1)
    await ast.caller_hangup(call)
    await until(gw, lambda: gw.sessions_of(call.uniqueid)[-1].outcome is not None, "the end")
    assert states(gw, call.uniqueid) == [
        ("a1", "closed", "declined"),
        ("a2", "closed", "declined"),
        ("a1", "wrap_up", "completed"),
    ]
    assert ast.actions_named("Hangup") == []


async def test_a_caller_who_hangs_up_while_the_member_rings_is_abandoned(
    ast: FakeAsterisk, gw: ContractGateway
) -> None:
    await gw.ready()
    call = ast.new_call("c3")
    await ast.join(call)
    await ast.agent_called(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "offered", None)], "the offer")
    await ast.abandon(call)
    await ast.hangup_member(call)
    await ast.caller_hangup(call)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "closed", "abandoned")], "abandoned")
    assert gw.engine.agent("a1")["in_use"]["sessions"] == 0


async def chat(gw: ContractGateway, ref: str, agent: str) -> str:
    decision = await gw.runtime.submit(
        Event(
            vendor="chat-platform",
            event_id=f"chat-{ref}",
            type=EventType.OFFER,
            interaction_id=f"chat-{ref}",
            channel=Channel.CHAT,
            agent_id=agent,
            occurred_at=datetime.now(timezone.utc),
        )
    )
    assert decision.kind.value == "assigned", decision
    assert decision.session_id is not None
    return decision.session_id


async def test_member_pause_follows_presence_and_capacity(ast: FakeAsterisk, gw: ContractGateway) -> None:
    """Both agents have no desktop when the adapter logs in: paused agent_offline. Ready:
    unpaused. a1 filled by two chats (profile: 2 sessions): paused agent_at_capacity; one
    chat ends: unpaused. Not ready: paused agent_not_ready. Only changes are sent."""
    await until(gw, lambda: pause_of(ast, A1) == (True, "agent_offline"), "a1 offline at login")
    await until(gw, lambda: pause_of(ast, A2) == (True, "agent_offline"), "a2 offline at login")
    await gw.ready("a1")
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 ready")
    assert pause_of(ast, A2) == (True, "agent_offline")

    first = await chat(gw, "one", "a1")
    await asyncio.sleep(0.2)
    assert pause_of(ast, A1) == (False, "")  # one chat: a call still fits
    await chat(gw, "two", "a1")
    await until(gw, lambda: pause_of(ast, A1) == (True, "agent_at_capacity"), "a1 full of chats")

    # the race: app_queue rings a1 anyway -> rejected, the ringing leg is hung up
    call = ast.new_call("race")
    await ast.join(call)
    member = await ast.agent_called(call, A1)
    await until(gw, lambda: [a["channel"] for a in ast.actions_named("Hangup")] == [member.name], "the leg hung up")
    assert [s for s in gw.sessions_of(call.uniqueid) if s.state is not SessionState.CLOSED] == []
    await ast.ring_no_answer(call, A1)  # what app_queue says of the leg: nothing more happens
    await asyncio.sleep(0.2)
    assert gw.runtime.ready and gw.health() == "up"

    await gw.runtime.act(lambda e: e.accept(first))
    await gw.runtime.act(lambda e: e.end(first))
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 has room again")
    await gw.runtime.act(lambda e: e.set_presence("a1", "not_ready"))
    await until(gw, lambda: pause_of(ast, A1) == (True, "agent_not_ready"), "a1 not ready")

    a1_pauses = [(a["paused"], a.get("reason", "")) for a in ast.actions_named("QueuePause") if a["interface"] == A1]
    assert a1_pauses == [
        ("true", "agent_offline"),
        ("false", ""),
        ("true", "agent_at_capacity"),
        ("false", ""),
        ("true", "agent_not_ready"),
    ]


@pytest.mark.parametrize("listing", ["CoreShowChannels", "Status"])
async def test_a_dropped_connection_mid_call_is_resynchronised(
    ast: FakeAsterisk, gw: ContractGateway, listing: str
) -> None:
    """Three calls when the line drops: one stays up (kept), one ends while the link is
    down (its session ends), one was ringing and got answered meanwhile (accepted). After
    the reconnect every member's pause is told again; no session is duplicated or lost."""
    if listing == "Status":  # a manager user not allowed CoreShowChannels: Status instead
        ast.refuse.add("coreshowchannels")
    await gw.ready()
    kept = ast.new_call("kept")
    await ast.join(kept)
    await ast.agent_called(kept, A1)
    await ast.agent_connect(kept, A1)
    gone = ast.new_call("gone")
    await ast.join(gone)
    await ast.agent_called(gone, A2)
    await ast.agent_connect(gone, A2)
    await until(gw, lambda: states(gw, gone.uniqueid) == [("a2", "active", None)], "both calls up")
    await until(gw, lambda: states(gw, kept.uniqueid) == [("a1", "active", None)], "both calls up")
    pauses_before = len(ast.actions_named("QueuePause"))

    ast.server.drop()
    ast.vanish(gone)  # ends while nobody listens
    await until(gw, lambda: gw.health() == "down" or ast.logins >= 2, "the drop seen")
    await until(gw, lambda: ast.logins >= 2 and gw.health() == "up", "reconnected", timeout=15)
    await until(gw, lambda: states(gw, gone.uniqueid) == [("a2", "wrap_up", "completed")], "gone ended")
    assert states(gw, kept.uniqueid) == [("a1", "active", None)]
    # every member told again after the new login (both are busy or wrapping up: paused)
    await until(gw, lambda: len(ast.actions_named("QueuePause")) >= pauses_before + 2, "pauses re-sent")

    # a ring answered while the link is down
    ringing = ast.new_call("ringing")
    await until(gw, lambda: states(gw, gone.uniqueid)[0][1] == "closed", "a2 wrap-up over")
    await ast.join(ringing)
    await ast.agent_called(ringing, A2)
    await until(gw, lambda: states(gw, ringing.uniqueid) == [("a2", "offered", None)], "offered")
    ast.server.drop()
    assert ringing.member is not None
    ringing.member.state = 6  # answered, AgentConnect lost with the line
    await until(gw, lambda: ast.logins >= 3 and gw.health() == "up", "reconnected again", timeout=15)
    await until(gw, lambda: states(gw, ringing.uniqueid) == [("a2", "active", None)], "accepted by resync")

    # the calls go on normally afterwards, and replays are duplicates, not new sessions
    await ast.agent_connect(ringing, A2)
    await ast.agent_complete(kept, A1)
    await ast.caller_hangup(kept)
    await until(gw, lambda: states(gw, kept.uniqueid) == [("a1", "wrap_up", "completed")], "kept completed")
    for uid in (kept.uniqueid, gone.uniqueid, ringing.uniqueid):
        assert len(gw.sessions_of(uid)) == 1
    # once after each login (Status: only after the two reconnects, the first login listed channels)
    assert len(ast.actions_named(listing)) == (3 if listing == "CoreShowChannels" else 2)


async def test_a_gateway_restart_mid_call_keeps_the_call(ast: FakeAsterisk, gw: ContractGateway) -> None:
    """The adapter's memory is gone after a restart: resync rebuilds it from the gateway's
    open interactions and Asterisk's channels; the caller's Hangup still ends the session."""
    await gw.ready()
    call = ast.new_call("restart")
    await ast.join(call)
    await ast.agent_called(call, A1)
    await ast.agent_connect(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "active", None)], "active")
    await gw.restart()
    await until(gw, lambda: gw.health() == "up", "up again")
    await asyncio.sleep(0.2)
    assert states(gw, call.uniqueid) == [("a1", "active", None)]
    await ast.caller_hangup(call)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "wrap_up", "completed")], "completed")


async def test_transfers_and_hangup_from_the_desktop(ast: FakeAsterisk, gw: ContractGateway) -> None:
    """Blind transfer -> Redirect of the caller to the target's extension in
    transfer_context; the target's phone answering (DialEnd ANSWER) makes its session
    active; the first member's AgentComplete (Reason transfer) ends nothing; the desktop's
    end -> Hangup of the caller. Consult -> Atxfer on the agent's leg."""
    await gw.ready()
    call = ast.new_call("xfer")
    await ast.join(call)
    member = await ast.agent_called(call, A1)
    await ast.agent_connect(call, A1)
    [source] = await until(gw, lambda: gw.sessions_of(call.uniqueid), "offered")
    await until(gw, lambda: source.state is SessionState.ACTIVE, "active")

    target = await gw.runtime.act(lambda e: e.transfer(source.id, to_agent="a2", mode="blind"))
    redirect = await until(gw, lambda: ast.actions_named("Redirect"), "the Redirect")
    assert {k: redirect[0][k] for k in ("channel", "exten", "context", "priority")} == {
        "channel": call.channel,
        "exten": "1002",
        "context": "agents",
        "priority": "1",
    }
    await ast.agent_complete(call, A1, reason="transfer")
    await ast.hangup_member(call)
    leg = await ast.agent_called_leg(call, A2)  # the dialplan dials PJSIP/1002
    await ast.dial_end(call, leg, "ANSWER")
    await until(gw, lambda: target.state is SessionState.ACTIVE, "the target answered")
    assert source.outcome is not None and source.outcome.value == "transferred"

    await gw.runtime.act(lambda e: e.end(target.id))
    hangup = await until(gw, lambda: ast.actions_named("Hangup"), "the Hangup")
    assert hangup[0]["channel"] == call.channel
    del member

    # consult (once a1's wrap-up is over: app_queue rings unpaused members only)
    await until(gw, lambda: pause_of(ast, A1) == (False, ""), "a1 free")
    other = ast.new_call("consult")
    await ast.join(other)
    leg1 = await ast.agent_called(other, A1)
    await ast.agent_connect(other, A1)
    [first] = await until(gw, lambda: gw.sessions_of(other.uniqueid), "offered")
    await until(gw, lambda: first.state is SessionState.ACTIVE, "active")
    await until(gw, lambda: gw.engine.agent("a2")["in_use"]["sessions"] == 0, "a2 free")
    consult = await gw.runtime.act(lambda e: e.transfer(first.id, to_agent="a2", mode="consult"))
    await gw.runtime.act(lambda e: e.accept(consult.id))
    atxfer = await until(gw, lambda: ast.actions_named("Atxfer"), "the Atxfer")
    assert {k: atxfer[0][k] for k in ("channel", "exten", "context")} == {
        "channel": leg1.name,
        "exten": "1002",
        "context": "agents",
    }


async def test_an_offer_timeout_hangs_up_the_ringing_leg(ast: FakeAsterisk, tmp_path: Path) -> None:
    """The gateway's voice offer_timeout_s (0.3 s here) ends the ring before app_queue's
    timeout: the late rejection hangs up the member leg; app_queue's AgentRingNoAnswer for
    it then changes nothing."""
    gw = ContractGateway(
        scenario_config(ast, tmp_path / "gw.db", profile={"offer_timeout_s": {"voice": 0.3}}), base_dir=tmp_path
    )
    await gw.start()
    try:
        await until(gw, lambda: gw.health() == "up", "up")
        await gw.ready()
        call = ast.new_call("slow")
        await ast.join(call)
        member = await ast.agent_called(call, A1)
        await until(gw, lambda: [a["channel"] for a in ast.actions_named("Hangup")] == [member.name], "hung up")
        assert states(gw, call.uniqueid) == [("a1", "closed", "expired")]
        await ast.ring_no_answer(call, A1)
        await ast.agent_called(call, A2)  # app_queue tries the next member: a new session
        await until(gw, lambda: len(gw.sessions_of(call.uniqueid)) == 2, "the next ring")
        assert gw.sessions_of(call.uniqueid)[1].agent_id == "a2"
        assert len(ast.actions_named("Hangup")) == 1
    finally:
        await gw.stop()


async def test_recorded_garbage_on_the_wire_is_skipped(ast: FakeAsterisk, gw: ContractGateway) -> None:
    """A real recorded stream with holes in it ("[218 bytes missing in capture file]...")
    and binary junk arrive between app_queue's events: skipped, the link stays up, the
    next call is offered."""
    await gw.ready()
    await ast.send(fixture_bytes("ami_panoramisk_agent_loggued_in.txt").replace(b"\n", b"\r\n"))
    await ast.send(b"\x00\x01\x02\xff\r\nEvent AgentCalled\r\n\r\n" + b"z" * 100_000 + b"\r\n\r\n")
    call = ast.new_call("after-garbage")
    await ast.join(call)
    await ast.agent_called(call, A1)
    await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "offered", None)], "the offer")
    assert gw.health() == "up" and ast.logins == 1  # never reconnected


async def test_a_reload_that_changes_the_ami_settings_restarts_the_link_and_keeps_the_call(
    ast: FakeAsterisk, tmp_path: Path
) -> None:
    """Live configuration on a connection adapter: new AMI settings restart the adapter (a
    new login, a resync), the call in progress keeps its one session, and the new adapter
    knows it (the caller's hangup still ends it)."""
    config_file = tmp_path / "gateway.yaml"
    document = scenario_config(ast, tmp_path / "gw.db").model_dump(mode="json", exclude_none=True)
    config_file.write_text(yaml.safe_dump(document))
    gw = ContractGateway(load_config(config_file), base_dir=tmp_path, config_path=config_file)
    await gw.start()
    try:
        await until(gw, lambda: gw.health() == "up", "the AMI link")
        await gw.ready()
        call = ast.new_call("reload")
        await ast.join(call)
        await ast.agent_called(call, A1)
        await ast.agent_connect(call, A1)
        await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "active", None)], "active")
        assert ast.logins == 1
        listings = len(ast.actions_named("CoreShowChannels"))

        document["vendors"][0]["ping_interval_s"] = 2
        config_file.write_text(yaml.safe_dump(document))
        result = await gw.app[RELOADER].reload() if gw.app is not None else None
        assert result is not None and result.changes["vendors_changed"] == [VENDOR], result
        await until(gw, lambda: ast.logins == 2 and gw.health() == "up", "the new adapter logged in")
        await until(gw, lambda: len(ast.actions_named("CoreShowChannels")) > listings, "resynchronised")
        await asyncio.sleep(0.2)
        assert states(gw, call.uniqueid) == [("a1", "active", None)]

        await ast.caller_hangup(call)
        await until(gw, lambda: states(gw, call.uniqueid) == [("a1", "wrap_up", "completed")], "completed")
    finally:
        await gw.stop()
