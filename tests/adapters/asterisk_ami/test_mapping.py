"""Mapping on parsed events: app_queue's events of Asterisk 12+ and of Asterisk <= 11 (other
header names) become the same normalized events with the same deterministic ids; the
adapter's handling is driven here with a FakeHost (no network)."""

from __future__ import annotations

import pytest

from adapters.asterisk_ami import AmiConfig, AsteriskAmiAdapter
from adapters.asterisk_ami.adapter import ResyncNeeded
from adapters.asterisk_ami.framing import Framer, Message
from adapters.asterisk_ami.mapping import Kind, parse_call_event
from gateway.errors import GatewayError
from gateway.events import Event
from gateway.notices import Decision, DecisionKind
from tests.adapters.conftest import FakeHost


def message(text: str) -> Message:
    [item] = Framer().feed(text.strip().encode() + b"\n\n")
    assert isinstance(item, Message)
    return item


AST11 = {
    "called": """
Event: AgentCalled
Privilege: agent,all
Queue: support
AgentCalled: SIP/1001
AgentName: Ada
ChannelCalling: SIP/trunk-00000001
DestinationChannel: SIP/1001-00000002
CallerIDNum: 5551234
CallerIDName: <unknown>
Context: from-trunk
Extension: 500
Priority: 3
Uniqueid: 1413823936.3729
""",
    "connect": """
Event: AgentConnect
Privilege: agent,all
Queue: support
Uniqueid: 1413823936.3729
Channel: SIP/1001-00000002
Member: SIP/1001
MemberName: Ada
Holdtime: 9
BridgedChannel: 1413823940.3730
Ringtime: 3
""",
    "complete": """
Event: AgentComplete
Privilege: agent,all
Queue: support
Uniqueid: 1413823936.3729
Channel: SIP/1001-00000002
Member: SIP/1001
MemberName: Ada
HoldTime: 9
TalkTime: 42
Reason: agent
""",
}

AST13_CALLED = """
Event: AgentCalled
Privilege: agent,all
Channel: PJSIP/trunk-00000001
ChannelState: 6
CallerIDNum: 5551234
CallerIDName: Ada Caller
Uniqueid: 1700000001.1
Linkedid: 1700000001.1
DestChannel: PJSIP/1001-00000002
DestChannelState: 5
DestUniqueid: 1700000002.2
DestLinkedid: 1700000001.1
Queue: support
MemberName: Ada
Interface: PJSIP/1001
"""


def test_asterisk_11_and_13_layouts() -> None:
    old = parse_call_event(message(AST11["called"]))
    assert old is not None and old.kind is Kind.CALLED
    assert (old.uniqueid, old.channel, old.interface, old.member_channel, old.ring_key) == (
        "1413823936.3729",
        "SIP/trunk-00000001",
        "SIP/1001",
        "SIP/1001-00000002",
        "SIP/1001-00000002",
    )
    assert old.caller_name is None  # "<unknown>" is no name
    connect = parse_call_event(message(AST11["connect"]))
    assert connect is not None and (connect.kind, connect.interface, connect.ring_key) == (
        Kind.CONNECT,
        "SIP/1001",
        "SIP/1001-00000002",
    )
    new = parse_call_event(message(AST13_CALLED))
    assert new is not None
    assert (new.uniqueid, new.channel, new.interface, new.member_uniqueid, new.ring_key, new.caller_name) == (
        "1700000001.1",
        "PJSIP/trunk-00000001",
        "PJSIP/1001",
        "1700000002.2",
        "1700000002.2",
        "Ada Caller",
    )
    leave = parse_call_event(message("Event: QueueCallerLeave\nUniqueid: 1.1\nQueue: q\nCount: 0"))
    assert leave is not None and leave.kind is Kind.LEAVE
    assert parse_call_event(message("Event: VarSet\nUniqueid: 1.1")) is None
    assert parse_call_event(message("Response: Success\nUniqueid: 1.1")) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Event: AgentCalled\nQueue: q\nInterface: PJSIP/1\nDestChannel: PJSIP/1-1", "without Uniqueid"),
        ("Event: AgentCalled\nUniqueid: 1.1\nQueue: q", "names no member interface"),
        ("Event: AgentRingNoAnswer\nUniqueid: 1.1\nInterface: PJSIP/1", "names no member channel"),
    ],
)
def test_events_without_their_ids_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_call_event(message(text))


def adapter(host: FakeHost) -> AsteriskAmiAdapter:
    config = AmiConfig.model_validate(
        {"host": "pbx", "username": "gw", "secret": "x", "agent_map": {"SIP/1001": "a1", "PJSIP/1001": "a1"}}
    )
    return AsteriskAmiAdapter("pbx", config, host)


@pytest.mark.asyncio
async def test_an_asterisk_11_call_gives_the_normalized_events(host: FakeHost) -> None:
    ami = adapter(host)
    for name in ("called", "connect", "complete"):
        await ami._on_event(message(AST11[name]))
    await ami._on_event(message("Event: Hangup\nChannel: SIP/trunk-00000001\nUniqueid: 1413823936.3729\nCause: 16"))
    uid = "1413823936.3729"
    assert [(e.type.value, e.event_id, e.agent_id) for e in host.submitted] == [
        ("offer", f"{uid}/called/SIP/1001-00000002", "a1"),
        ("accept", f"{uid}/connect/SIP/1001-00000002", "a1"),
        ("end", f"{uid}/end", None),
    ]  # the caller's Hangup after AgentComplete: the call is gone already, nothing more
    offer = host.submitted[0]
    assert offer.interaction_id == uid and offer.queue == "support" and offer.channel is not None
    assert offer.customer is not None and offer.customer.address == "5551234"


@pytest.mark.asyncio
async def test_a_connect_whose_ring_was_missed_is_offered_first(host: FakeHost) -> None:
    """No AgentCalled seen (lost with a dropped line): the AgentConnect still gives the agent
    its session (offer, then accept) so its capacity is right."""
    ami = adapter(host)
    await ami._on_event(message(AST11["connect"]))
    assert [e.type.value for e in host.submitted] == ["offer", "accept"]


@pytest.mark.asyncio
async def test_a_refused_offer_hangs_up_the_leg_and_ignores_its_ring_no_answer(host: FakeHost) -> None:
    host.answer = Decision(DecisionKind.REJECTED, reason="agent_at_capacity")
    ami = adapter(host)
    await ami._on_event(message(AST13_CALLED))
    [ring] = ami._calls["1700000001.1"].rings.values()
    assert ring.state == "rejected"
    rna = AST13_CALLED.replace("AgentCalled", "AgentRingNoAnswer")
    await ami._on_event(message(rna))
    assert [e.type.value for e in host.submitted] == ["offer"]  # no decline of a refused ring
    await ami.stop()


@pytest.mark.asyncio
async def test_a_second_member_rung_at_once_is_hung_up(host: FakeHost) -> None:
    """strategy=ringall: one call, two legs at once; the gateway keeps the first."""
    ami = adapter(host)
    await ami._on_event(message(AST13_CALLED))
    second = AST13_CALLED.replace("1700000002.2", "1700000003.3").replace("PJSIP/1001-00000002", "PJSIP/1001-3")
    await ami._on_event(message(second))
    rings = ami._calls["1700000001.1"].rings
    assert [(k, r.state) for k, r in rings.items()] == [("1700000002.2", "ringing"), ("1700000003.3", "rejected")]
    assert [e.type.value for e in host.submitted] == ["offer"]
    await ami.stop()


@pytest.mark.asyncio
async def test_an_end_the_gateway_cannot_take_now_is_retried_then_resynchronised(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal is down for a moment: the caller's Hangup is tried again (never dropped);
    down for longer: the connection is made again, so the resync after it ends the call."""
    monkeypatch.setattr("adapters.asterisk_ami.adapter.NOT_READY_RETRIES_S", (0.01, 0.01))
    ami = adapter(host)
    await ami._on_event(message(AST13_CALLED))
    failures = 2

    def answer(event: Event) -> Decision:
        nonlocal failures
        if failures:
            failures -= 1
            raise GatewayError("journal down", code="not_ready", retryable=True)
        return Decision(DecisionKind.ACCEPTED)

    host.answer = answer
    hangup = "Event: Hangup\nChannel: PJSIP/trunk-00000001\nUniqueid: 1700000001.1\nCause: 16"
    await ami._on_event(message(hangup))
    assert [e.type.value for e in host.submitted] == ["offer", "end", "end", "end"]

    await ami._on_event(message(AST13_CALLED.replace("1700000001.1", "1700000009.9")))
    failures = 99
    with pytest.raises(ResyncNeeded, match="journal down"):
        await ami._on_event(message(hangup.replace("1700000001.1", "1700000009.9")))


@pytest.mark.asyncio
async def test_agent_dump_is_a_decline_not_an_end(host: FakeHost) -> None:
    """AgentDump: the member hung up while hearing the announcement; the caller stays in
    the queue, so the ring is declined and the interaction is not ended."""
    ami = adapter(host)
    await ami._on_event(message(AST13_CALLED))
    await ami._on_event(message(AST13_CALLED.replace("AgentCalled", "AgentDump")))
    assert [(e.type.value, e.event_id) for e in host.submitted] == [
        ("offer", "1700000001.1/called/1700000002.2"),
        ("decline", "1700000001.1/rna/1700000002.2"),
    ]
    assert "1700000001.1" in ami._calls
