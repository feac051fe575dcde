"""mod_callcenter scenarios played by the scripted event socket against a real gateway
(SQLite journal, system clock, the adapter loaded from its entry point)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.freeswitch_esl import FreeswitchEslAdapter
from gateway.config import GatewayConfig
from gateway.events import Channel, Event, EventType
from gateway.sessions import Outcome, SessionState

from ..contract.harness import VENDOR, ContractGateway
from .peer import EslPeer

pytestmark = pytest.mark.asyncio

PASSWORD = "scenario-ClueCon"
A1, A2 = "1001@default", "1002@default"
CHATS = "chat-hooks"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config(port: int, db: Path, offer_timeout_s: int = 30, **settings: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "server": {"supervisor_token_sha256": sha("sup-token-0123456789"), "desktop_grace_s": 600},
            "store": {"url": f"sqlite:///{db}"},
            # two sessions: two chats fill the agent (no room for a call)
            "capacity_profiles": {
                "blended": {
                    "max_sessions": 2,
                    "channels": {"voice": 1, "chat": 2},
                    "offer_timeout_s": {"voice": offer_timeout_s},
                }
            },
            "queues": [{"name": "support"}],
            "agents": [
                {"id": a, "name": a.upper(), "profile": "blended", "queues": ["support"], "token_sha256": sha(a)}
                for a in ("a1", "a2")
            ],
            "vendors": [
                {
                    "name": VENDOR,
                    "adapter": "freeswitch_esl",
                    "host": "127.0.0.1",
                    "port": port,
                    "password": PASSWORD,
                    "agent_map": {A1: "a1", A2: "a2"},
                    "queue_map": {"support@default": "support"},
                    "reconnect_initial_s": 0.05,
                    "reconnect_max_s": 0.3,
                    **settings,
                },
                {"name": CHATS, "adapter": "webhook", "secret": "chat-hooks-secret-0123456789"},
            ],
        }
    )


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[EslPeer]:
    server = EslPeer(PASSWORD, seed=11)
    await server.start()
    yield server
    await server.stop()


async def running(peer: EslPeer, tmp_path: Path, **settings: Any) -> ContractGateway:
    gw = ContractGateway(config(peer.port, tmp_path / "gw.db", **settings), base_dir=tmp_path)
    await gw.start()
    await gw.ready()
    await gw.until(lambda: gw.health() == "up", what="the adapter to connect")
    await peer.wait_status(A1, "Available")
    await peer.wait_status(A2, "Available")
    return gw


@pytest_asyncio.fixture
async def gw(peer: EslPeer, tmp_path: Path) -> AsyncIterator[ContractGateway]:
    gateway = await running(peer, tmp_path)
    yield gateway
    await gateway.stop()


def adapter(gw: ContractGateway) -> FreeswitchEslAdapter:
    found = gw.runtime.adapters[VENDOR]
    assert isinstance(found, FreeswitchEslAdapter)
    return found


async def answered_call(gw: ContractGateway, peer: EslPeer, member: str, agent: str) -> Any:
    await peer.offering(member, agent)
    [session] = await gw.until(lambda: gw.sessions_of(member), what=f"the offer of {member}")
    assert session.state is SessionState.OFFERED and session.channel is Channel.VOICE
    await peer.answered(member, agent)
    await gw.until(lambda: session.state is SessionState.ACTIVE, what=f"{member} answered")
    return session


async def test_offer_answered_and_completed(peer: EslPeer, gw: ContractGateway) -> None:
    await peer.offering("call-1", A1)
    [session] = await gw.until(lambda: gw.sessions_of("call-1"), what="the offer")
    assert (session.agent_id, session.queue, session.state) == ("a1", "support", SessionState.OFFERED)
    assert session.customer is not None and session.customer.address == "+4930123456"
    await peer.wait_status(A1, "On Break")  # its one voice session is taken
    await peer.answered("call-1", A1)
    await gw.until(lambda: session.state is SessionState.ACTIVE, what="accepted")

    await peer.bridge_end("call-1", A1)
    await peer.queue_end("call-1")
    await peer.hangup("call-1")
    await gw.until(lambda: session.state in (SessionState.WRAP_UP, SessionState.CLOSED), what="ended")
    assert session.outcome is Outcome.COMPLETED and session.handle_ms is not None
    await peer.wait_status(A1, "Available")
    assert gw.sessions_of("call-1") == [session]
    assert not peer.commands("hupall") and not peer.commands("uuid_kill")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gw.base}/v1/sessions/{session.id}", headers={"Authorization": "Bearer sup-token-0123456789"}
        ) as response,
    ):
        record = await response.json()
    assert response.status == 200, record
    assert (record["outcome"], record["vendor"], record["interaction_id"]) == ("completed", VENDOR, "call-1")


async def test_ring_no_answer_declines_then_offered_again(peer: EslPeer, gw: ContractGateway) -> None:
    await peer.offering("call-2", A1)
    [first] = await gw.until(lambda: gw.sessions_of("call-2"), what="the offer")
    await peer.failed("call-2", A1, "NO_ANSWER")
    await gw.until(lambda: first.state is SessionState.CLOSED, what="declined")
    assert first.outcome is Outcome.DECLINED
    await peer.wait_status(A1, "Available")

    await peer.offering("call-2", A1)  # mod_callcenter tries the agent again: a new offer
    second = await gw.until(lambda: [s for s in gw.sessions_of("call-2") if s is not first], what="the new offer")
    [second_session] = second
    assert second_session.interaction_id == first.interaction_id and second_session.agent_id == "a1"
    await peer.answered("call-2", A1)
    await gw.until(lambda: second_session.state is SessionState.ACTIVE, what="answered")
    # the gateway's answer to the decline (a late rejection) hung up nothing: the new leg rang on
    assert not peer.commands("hupall")


async def chat(gw: ContractGateway, ref: str, kind: EventType = EventType.OFFER) -> None:
    await gw.runtime.submit(
        Event(
            vendor=CHATS,
            event_id=f"{kind.value}-{ref}",
            type=kind,
            interaction_id=ref,
            channel=Channel.CHAT if kind is EventType.OFFER else None,
            agent_id="a1" if kind is EventType.OFFER else None,
            occurred_at=datetime.now(timezone.utc),
        )
    )


async def test_an_agent_filled_by_chats_goes_on_break_and_back(peer: EslPeer, gw: ContractGateway) -> None:
    sent_before = len(peer.status_log)
    await chat(gw, "chat-1")
    await chat(gw, "chat-2")
    await peer.wait_status(A1, "On Break")
    assert gw.runtime.availability("a1", Channel.VOICE, VENDOR) == "agent_at_capacity"

    await chat(gw, "chat-1", EventType.END)
    await peer.wait_status(A1, "Available")
    # only on change: one On Break, one Available, nothing for a2
    assert peer.status_log[sent_before:] == [(A1, "On Break"), (A1, "Available")]

    # a race: mod_callcenter offered before the status arrived -> rejected, the ringing leg hung up
    await chat(gw, "chat-3")
    await peer.wait_status(A1, "On Break")
    await peer.offering("call-race", A1)
    await peer.wait_for(lambda: peer.commands("hupall ORIGINATOR_CANCEL cc_member_pre_answer_uuid m-call-race"))
    assert not [s for s in gw.sessions_of("call-race") if s.state is not SessionState.CLOSED]
    await peer.failed("call-race", A1, "ORIGINATOR_CANCEL")  # what mod_callcenter reports then
    await peer.heartbeat()
    assert gw.health() == "up"


async def test_presence_goes_to_the_status(peer: EslPeer, gw: ContractGateway) -> None:
    await gw.runtime.act(lambda e: e.set_presence("a2", "not_ready"))
    await peer.wait_status(A2, "On Break")
    await gw.runtime.act(lambda e: e.set_presence("a2", "ready"))
    await peer.wait_status(A2, "Available")


async def test_dropped_mid_call_reconnect_and_resync(peer: EslPeer, gw: ContractGateway) -> None:
    kept = await answered_call(gw, peer, "call-kept", A1)
    gone = await answered_call(gw, peer, "call-gone", A2)
    statuses_before = len(peer.status_log)

    peer.server.drop()  # the line drops mid-call ...
    peer.live.discard("call-gone")  # ... and one caller hangs up meanwhile (the event is lost)
    await gw.until(lambda: adapter(gw).link.connects == 2, what="the reconnect")

    await gw.until(lambda: gone.state is not SessionState.ACTIVE, what="the vanished call ended")
    assert gone.outcome is Outcome.COMPLETED
    assert kept.state is SessionState.ACTIVE  # still up: kept
    assert gw.sessions_of("call-kept") == [kept] and gw.sessions_of("call-gone") == [gone]  # no duplicate
    assert peer.commands("show channels as json")
    # the statuses are sent again on the new connection: a1 busy, a2 (in wrap-up or free)
    await peer.wait_for(lambda: {a for a, _ in peer.status_log[statuses_before:]} == {A1, A2}, what="statuses again")
    assert peer.statuses[A1] == "On Break"

    # the kept call goes on as usual over the new connection
    await peer.bridge_end("call-kept", A1)
    await gw.until(lambda: kept.state is not SessionState.ACTIVE, what="the kept call ended")
    assert kept.outcome is Outcome.COMPLETED


async def test_gateway_restart_while_a_call_ended(peer: EslPeer, tmp_path: Path) -> None:
    """The gateway (not the link) goes away mid-call; the call ends meanwhile: the next
    start's resync ends its session, from the journal's open interactions."""
    gw = await running(peer, tmp_path)
    try:
        session = await answered_call(gw, peer, "call-r", A1)
        await gw.stop()
        peer.live.discard("call-r")
        await gw.start()
        await gw.until(lambda: gw.health() == "up", what="connected again")
        [restored] = await gw.until(
            lambda: [s for s in gw.sessions_of("call-r") if s.state is not SessionState.ACTIVE], what="ended"
        )
        assert restored.id == session.id and restored.outcome is Outcome.COMPLETED
    finally:
        await gw.stop()


async def test_garbage_mid_call_is_skipped(peer: EslPeer, gw: ContractGateway) -> None:
    session = await answered_call(gw, peer, "call-g", A1)
    for raw in (
        b"\x00\xff\xfe junk\n\n",
        b"Content-Length: nope\nContent-Type: text/event-plain\n\n",
        b"Content-Length: 5\nContent-Type: text/event-plain\n\nhello",
        b'Content-Length: 4\nContent-Type: text/event-json\n\n{"a"',
        b"Content-Type: text/unknown\n\n",
    ):
        await peer.send(raw)
    await peer.callcenter("bridge-agent-end", "", A1)  # no caller uuid: skipped
    await peer.bridge_end("call-g", A1)
    await gw.until(lambda: session.state is not SessionState.ACTIVE, what="ended after the garbage")
    assert adapter(gw).link.connects == 1 and gw.health() == "up"


async def test_transfer_and_end_from_the_desktop(peer: EslPeer, gw: ContractGateway) -> None:
    session = await answered_call(gw, peer, "call-t", A1)
    target = await gw.runtime.act(lambda e: e.transfer(session.id, to_agent="a2", mode="blind"))
    await peer.wait_for(lambda: peer.commands("uuid_transfer call-t 1002 XML default"), what="uuid_transfer")
    assert session.outcome is Outcome.TRANSFERRED and target.state is SessionState.OFFERED
    # mod_callcenter reports the old bridge's end: the transferred call goes on
    handled = adapter(gw).stats["events"]
    await peer.bridge_end("call-t", A1)
    await peer.queue_end("call-t")
    await gw.until(lambda: adapter(gw).stats["events"] >= handled + 2, what="both handled")
    assert target.state is SessionState.OFFERED
    await gw.runtime.act(lambda e: e.accept(target.id))
    assert target.state is SessionState.ACTIVE
    await peer.hangup("call-t")  # the caller hangs up at the new destination
    await gw.until(lambda: target.state is not SessionState.ACTIVE, what="ended by the hangup")
    assert target.outcome is Outcome.COMPLETED

    other = await answered_call(gw, peer, "call-k", A1)
    await gw.runtime.act(lambda e: e.end(other.id))
    await peer.wait_for(lambda: peer.commands("uuid_kill call-k"), what="uuid_kill")


async def test_an_offer_missed_while_down_is_adopted_when_answered(peer: EslPeer, gw: ContractGateway) -> None:
    """bridge-agent-start for a call the gateway never saw offered (the link was down):
    the call is live on the agent, so it gets its session, active."""
    await peer.answered("call-missed", A2)
    [session] = await gw.until(lambda: gw.sessions_of("call-missed"), what="adopted")
    await gw.until(lambda: session.state is SessionState.ACTIVE, what="active")
    assert session.agent_id == "a2"


async def test_rings_that_changed_while_down_are_settled_by_the_resync(peer: EslPeer, gw: ContractGateway) -> None:
    """While the link is down, one ringing agent answers, another's ring fails, and later a
    third call is offered and answered: the events are lost, mod_callcenter's member table
    tells the resync what happened."""
    await peer.offering("call-ans", A1)
    await peer.offering("call-fail", A2)
    ans = (await gw.until(lambda: gw.sessions_of("call-ans"), what="offer 1"))[0]
    fail = (await gw.until(lambda: gw.sessions_of("call-fail"), what="offer 2"))[0]

    peer.server.drop()
    peer.member("call-ans", "Answered", A1)  # bridged: bridge-agent-start lost
    peer.member("call-fail", "Waiting")  # no answer: bridge-agent-fail lost, the caller waits again
    await gw.until(lambda: adapter(gw).link.connects == 2, what="the reconnect")
    await gw.until(lambda: ans.state is SessionState.ACTIVE, what="the answered ring accepted")
    await gw.until(lambda: fail.state is SessionState.CLOSED, what="the failed ring declined")
    assert fail.outcome is Outcome.DECLINED
    assert not peer.commands("hupall")  # the gateway's answer to that decline hangs up nothing

    peer.server.drop()
    peer.live.add("call-new")
    peer.member("call-new", "Answered", A2)  # offered and answered entirely while down
    await gw.until(lambda: adapter(gw).link.connects == 3, what="the second reconnect")
    [new] = await gw.until(lambda: gw.sessions_of("call-new"), what="the missed call adopted")
    await gw.until(lambda: new.state is SessionState.ACTIVE, what="active")
    assert new.agent_id == "a2" and new.queue == "support"

    peer.server.drop()  # a third resync finds everything in place: nothing changes
    await gw.until(lambda: adapter(gw).link.connects == 4, what="the third reconnect")
    assert [len(gw.sessions_of(c)) for c in ("call-ans", "call-fail", "call-new")] == [1, 1, 1]
    assert ans.state is SessionState.ACTIVE and new.state is SessionState.ACTIVE


async def test_ring_out_leaves_a_rejected_ring_alone(peer: EslPeer, tmp_path: Path) -> None:
    gw = await running(peer, tmp_path, on_reject="ring_out")
    try:
        await chat(gw, "chat-1")
        await chat(gw, "chat-2")
        await peer.wait_status(A1, "On Break")
        handled = adapter(gw).stats["events"]
        await peer.offering("call-ro", A1)
        await gw.until(lambda: adapter(gw).stats["events"] > handled, what="the offer handled")
        await gw.until(lambda: adapter(gw).stats["offer"] >= 1, what="submitted")
        assert not [s for s in gw.sessions_of("call-ro") if s.state is not SessionState.CLOSED]
        assert not peer.commands("hupall")
    finally:
        await gw.stop()


async def test_the_gateways_offer_timeout_cancels_the_ring(peer: EslPeer, tmp_path: Path) -> None:
    """The agent's phone rings longer than the voice offer_timeout_s: the gateway withdraws
    the offer and FreeSWITCH cancels the ringing leg, so mod_callcenter moves on."""
    gw = await running(peer, tmp_path, offer_timeout_s=1)
    try:
        await peer.offering("call-slow", A1)
        [session] = await gw.until(lambda: gw.sessions_of("call-slow"), what="the offer")
        await peer.wait_for(
            lambda: peer.commands("hupall ORIGINATOR_CANCEL cc_member_pre_answer_uuid m-call-slow"), timeout=5
        )
        assert session.state is SessionState.CLOSED and session.outcome is Outcome.EXPIRED
        await peer.failed("call-slow", A1, "ORIGINATOR_CANCEL")  # what mod_callcenter says then
        await peer.wait_status(A1, "Available")
    finally:
        await gw.stop()
