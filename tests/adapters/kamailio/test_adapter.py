"""The adapter against a scripted evapi peer (real TCP, frames split at random points) and a
:class:`FakeHost`: resync after connecting, decisions back, re-asks after a failed ring,
stalls and garbage. The real Kamailio plays the same roles in test_sip_calls.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
import pytest_asyncio
import structlog
from structlog.testing import capture_logs

import adapters.kamailio.client
from adapters.base import Health
from adapters.kamailio import KamailioAdapter, KamailioConfig
from adapters.kamailio.framing import encode
from gateway.errors import GatewayError, InvalidEvent, InvalidState
from gateway.events import Event, EventType
from gateway.notices import Decision, DecisionKind, ToVendor, VendorAction

from ..conftest import FakeHost
from ..scripted import Connection, ScriptedServer

pytestmark = pytest.mark.asyncio

CONTACTS = {"a1": "sip:a1@127.0.0.1:5091", "a2": "sip:a2@127.0.0.1:5092"}


def frame(body: dict[str, Any]) -> bytes:
    return encode(json.dumps(body).encode())


def invite(call_id: str, user: str, tindex: int = 1, tlabel: int = 100) -> bytes:
    return frame(
        {
            "event": "invite",
            "call_id": call_id,
            "tindex": tindex,
            "tlabel": tlabel,
            "from": "sip:caller@127.0.0.1",
            "from_user": "caller",
            "from_name": "Caller",
            "ruri_user": user,
        }
    )


def command(message: bytes) -> dict[str, Any]:
    """A client message as split by the scripted server on '},'."""
    return json.loads(re.sub(rb"^\d+:", b"", message) + b"}")


class Peer:
    """The scripted Kamailio: answers sync with ``calls``, pings with pong (unless mute)."""

    def __init__(self) -> None:
        self.calls: dict[str, str] = {}
        #: frames sent between the call list and sync_done (Kamailio keeps taking calls)
        self.during_sync: list[bytes] = []
        self.mute = False
        self.server = ScriptedServer(delimiter=b"},", reply=self._reply, seed=7)

    async def _reply(self, server: ScriptedServer, conn: Connection, message: bytes) -> None:
        body = command(message)
        if self.mute:
            return
        if body.get("cmd") == "sync":
            for call_id, state in self.calls.items():
                await server.send(frame({"event": "call", "call_id": call_id, "state": state}), conn=conn)
            for data in self.during_sync:
                await server.send(data, conn=conn)
            await server.send(frame({"event": "sync_done"}), conn=conn)
        elif body.get("cmd") == "ping":
            await server.send(frame({"event": "pong"}), conn=conn)

    async def route(self, timeout: float = 5.0) -> dict[str, Any]:
        return command(await self.server.expect('"cmd":"route"', timeout=timeout))


@pytest.fixture
def kam_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as entries:
        monkeypatch.setattr(adapters.kamailio.client, "log", structlog.get_logger("test"))
        yield entries


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    await p.server.start()
    yield p
    await p.server.stop()


def make_adapter(host: FakeHost, port: int, **extra: Any) -> KamailioAdapter:
    config = KamailioConfig(port=port, agent_contacts=CONTACTS, queue_map={"support": "support"}, **extra)
    return KamailioAdapter("kam", config, host)


async def until(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def routed(host: FakeHost) -> Any:
    """FakeHost answers: offers to a1 assigned, to a2 rejected (full), to nobody unknown."""

    def answer(event: Event) -> Decision:
        if event.type is not EventType.OFFER:
            return Decision(DecisionKind.ACCEPTED)
        if event.queue == "support" or event.agent_id == "a1":
            return Decision(DecisionKind.ASSIGNED, agent_id="a1", session_id="s1")
        if event.agent_id == "a2":
            return Decision(DecisionKind.REJECTED, reason="agent_at_capacity")
        return Decision(DecisionKind.REJECTED, reason="unknown_agent")

    return answer


async def test_resync_ends_calls_kamailio_lost_and_accepts_calls_answered_meanwhile(host: FakeHost, peer: Peer) -> None:
    host.open_rows = [
        {"interaction_id": "gone@x", "channel": "voice", "phase": "active", "state": "active", "agent_id": "a1"},
        {"interaction_id": "talk@x", "channel": "voice", "phase": "offered", "state": "offered", "agent_id": "a2"},
        {"interaction_id": "still@x", "channel": "voice", "phase": "active", "state": "active", "agent_id": "a1"},
        {"interaction_id": "chat-1", "channel": "chat", "phase": "active", "state": "active", "agent_id": "a1"},
    ]
    host.answer = Decision(DecisionKind.ACCEPTED)
    peer.calls = {"talk@x": "talking", "still@x": "talking", "held@x": "held"}
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        assert [(e.type, e.interaction_id, e.agent_id, e.event_id) for e in host.submitted] == [
            (EventType.END, "gone@x", None, "gone@x:end"),
            (EventType.ACCEPT, "talk@x", "a2", "talk@x:answered:a2"),
        ]
    finally:
        await adapter.stop()


async def test_a_call_announced_while_resyncing_is_not_ended(host: FakeHost, peer: Peer) -> None:
    """Kamailio keeps taking calls while the gateway resyncs: a call announced after the
    call list is live even though the list did not name it (regression: it was ended)."""
    host.answer = routed(host)
    # the gateway already knows the new call by the time the resync compares (its offer)
    host.open_rows = [
        {"interaction_id": "new@x", "channel": "voice", "phase": "offered", "state": "offered", "agent_id": "a1"}
    ]
    peer.during_sync = [invite("new@x", "a1", 5, 50)]
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        assert (await peer.route())["uri"] == CONTACTS["a1"]
        assert [e.type for e in host.submitted] == [EventType.OFFER]
    finally:
        await adapter.stop()


async def test_decisions_go_back_as_relay_or_sip_replies(host: FakeHost, peer: Peer) -> None:
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(invite("c1", "support", 11, 111))
        assert await peer.route() == {
            "cmd": "route", "tindex": 11, "tlabel": 111, "action": "relay", "uri": CONTACTS["a1"], "agent": "a1",
        }  # fmt: skip
        assert (host.submitted[-1].queue, host.submitted[-1].agent_id) == ("support", None)
        await peer.server.send(invite("c2", "a2", 12, 112))
        assert (await peer.route())["code"] == "486"
        assert (host.submitted[-1].queue, host.submitted[-1].agent_id) == (None, "a2")
        await peer.server.send(invite("c3", "nobody", 13, 113))
        assert (await peer.route())["code"] == "404"

        host.answer = GatewayError("journal down", code="not_ready")
        await peer.server.send(invite("c4", "a1", 14, 114))
        reply = await peer.route()
        assert (reply["tindex"], reply["code"]) == (14, "503")
        host.answer = InvalidEvent("queue", "unknown queue")
        await peer.server.send(invite("c5", "a1", 15, 115))
        assert (await peer.route())["code"] == "404"
    finally:
        await adapter.stop()


async def test_a_failed_ring_is_a_decline_and_the_next_decision_resumes_the_held_call(
    host: FakeHost, peer: Peer
) -> None:
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(invite("c1", "support", 1, 100))
        assert (await peer.route())["uri"] == CONTACTS["a1"]
        failed = {"event": "failed", "call_id": "c1", "tindex": 1, "tlabel": 100, "agent": "a1", "code": 486}
        await peer.server.send(frame(failed))
        await until(lambda: host.submitted[-1].type is EventType.DECLINE)
        assert (host.submitted[-1].agent_id, host.submitted[-1].event_id) == ("a1", "c1:failed:a1")
        # the gateway re-routes: the late decision comes through deliver()
        await adapter.deliver(
            ToVendor("kam", "c1", VendorAction.DECISION, {"decision": "assigned", "agent_id": "a2", "session_id": "s2"})
        )
        route = await peer.route()
        assert (route["action"], route["uri"], route["tindex"], route["tlabel"]) == ("relay", CONTACTS["a2"], 1, 100)
        # a2 does not answer either: a rejection goes back as a SIP answer
        await peer.server.send(frame({**failed, "agent": "a2", "code": 408}))
        await until(lambda: host.submitted[-1].agent_id == "a2")
        await adapter.deliver(
            ToVendor("kam", "c1", VendorAction.DECISION, {"decision": "rejected", "reason": "no_agent_available"})
        )
        assert (await peer.route())["code"] == "486"
    finally:
        await adapter.stop()


async def test_a_decision_while_the_phone_rings_stops_the_ring_and_applies_once_held_again(
    host: FakeHost, peer: Peer
) -> None:
    """The desktop declined while a1's phone was ringing: the adapter asks Kamailio to
    cancel that branch; when Kamailio reports it failed (and holds the call), the re-route
    to a2 is relayed (the decline of a1 itself is stale by then)."""
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        body = json.loads(invite("c1", "support", 1, 100)[4:-1])
        await peer.server.send(frame({**body, "cseq": 7}))
        assert (await peer.route())["uri"] == CONTACTS["a1"]
        await adapter.deliver(
            ToVendor("kam", "c1", VendorAction.DECISION, {"decision": "assigned", "agent_id": "a2", "session_id": "s2"})
        )
        assert command(await peer.server.expect('"cmd":"cancel"')) == {"cmd": "cancel", "call_id": "c1", "cseq": 7}
        with pytest.raises(AssertionError):
            await peer.route(timeout=0.2)
        host.answer = InvalidState("no offered session", code="session_not_offered")
        failed = {"event": "failed", "call_id": "c1", "tindex": 1, "tlabel": 100, "agent": "a1", "code": 487}
        await peer.server.send(frame(failed))
        route = await peer.route()
        assert (route["uri"], route["tindex"]) == (CONTACTS["a2"], 1)
    finally:
        await adapter.stop()


async def test_a_decision_after_the_phone_answered_changes_nothing(host: FakeHost, peer: Peer) -> None:
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(invite("c1", "a1", 1, 100))
        assert (await peer.route())["uri"] == CONTACTS["a1"]
        await peer.server.send(frame({"event": "answered", "call_id": "c1", "agent": "a1"}))
        await until(lambda: host.submitted[-1].type is EventType.ACCEPT)
        await adapter.deliver(
            ToVendor("kam", "c1", VendorAction.DECISION, {"decision": "rejected", "reason": "offer_timeout"})
        )
        with pytest.raises(AssertionError):
            await peer.server.expect('"cmd":"(cancel|route)"', timeout=0.3)
    finally:
        await adapter.stop()


async def test_an_end_on_the_desktop_hangs_up_the_call(host: FakeHost, peer: Peer) -> None:
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(invite("c1", "a1"))
        await peer.route()
        await peer.server.send(frame({"event": "answered", "call_id": "c1", "agent": "a1"}))
        await until(lambda: host.submitted[-1].type is EventType.ACCEPT)
        await adapter.deliver(ToVendor("kam", "c1", VendorAction.ENDED, {"agent_id": "a1", "session_id": "s1"}))
        assert command(await peer.server.expect('"cmd":"end"')) == {"cmd": "end", "call_id": "c1"}
        # after a restart the adapter knows no calls: the interaction id is the Call-ID
        await adapter.deliver(ToVendor("kam", "other@x", VendorAction.ENDED, {"agent_id": "a1"}))
        assert command(await peer.server.expect('"cmd":"end"')) == {"cmd": "end", "call_id": "other@x"}
    finally:
        await adapter.stop()


async def test_a_failed_ring_nobody_waits_for_is_answered_480(host: FakeHost, peer: Peer) -> None:
    host.answer = InvalidState("no offered session", code="session_not_offered")
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(frame({"event": "failed", "call_id": "c9", "tindex": 3, "tlabel": 4, "agent": "a1"}))
        route = await peer.route()
        assert (route["tindex"], route["code"]) == (3, "480")
    finally:
        await adapter.stop()


async def test_garbage_split_anywhere_is_logged_and_skipped(
    host: FakeHost, peer: Peer, kam_logs: list[MutableMapping[str, Any]]
) -> None:
    host.answer = routed(host)
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(
            b"xyz:," + frame({"event": "nope"}) + b"2:[]," + b'6:{"a":1},' + invite("c1", "a1") + b"9:not json!,"
        )
        assert (await peer.route())["uri"] == CONTACTS["a1"]
        assert [e.event_id for e in host.submitted] == ["c1:invite"]
        # well-formed, but no valid event can be made of it (an event id over 256 characters)
        await peer.server.send(frame({"event": "answered", "call_id": "c1", "agent": "a" * 300}))
        await peer.server.send(invite("c2", "a1", 2, 200))
        assert (await peer.route())["tindex"] == 2
        events = [entry["event"] for entry in kam_logs]
        assert events.count("evapi_garbage_skipped") >= 2
        assert events.count("evapi_message_skipped") == 4  # unknown event, not an object, not JSON, id too long
        assert adapter.health is Health.UP and len(peer.server.connections) == 1
    finally:
        await adapter.stop()


async def test_an_impossible_frame_length_drops_the_connection_and_reconnects(host: FakeHost, peer: Peer) -> None:
    adapter = make_adapter(host, peer.server.port)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await peer.server.send(b"9999999:{", split=False)
        await peer.server.wait_connected(2)
        await until(lambda: adapter.health is Health.UP)
        assert Health.DOWN in host.health_states()
    finally:
        await adapter.stop()


async def test_a_silent_peer_is_dropped_and_reconnected(host: FakeHost, peer: Peer) -> None:
    adapter = make_adapter(host, peer.server.port, keepalive_s=0.1)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        peer.mute = True  # no pong, nothing
        await until(lambda: adapter.health is Health.DOWN, timeout=3)
        peer.mute = False
        await peer.server.wait_connected(2)
        await until(lambda: adapter.health is Health.UP, timeout=5)
    finally:
        await adapter.stop()


async def test_no_sync_answer_is_no_connection(host: FakeHost, peer: Peer) -> None:
    """A peer that never answers the resync request never counts as up."""
    peer.mute = True
    adapter = make_adapter(host, peer.server.port, connect_timeout_s=0.2, keepalive_s=5)
    await adapter.start()
    try:
        await peer.server.wait_connected(2)
        assert adapter.health is Health.DOWN
        assert Health.UP not in host.health_states()
    finally:
        await adapter.stop()


async def test_settings_refuse_a_contact_that_is_not_a_sip_uri() -> None:
    with pytest.raises(ValueError, match="not a sip: or sips: URI"):
        KamailioConfig(agent_contacts={"a1": "http://example.com"})
    with pytest.raises(ValueError, match="host name or an IP"):
        KamailioConfig(host="bad host!")
    assert KamailioConfig().port == 8448
