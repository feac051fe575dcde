"""What mod_callcenter's events mean for the gateway, on parsed events."""

from __future__ import annotations

import pytest

from adapters.freeswitch_esl.framing import Message, Parser, encode_event_plain, parse_event
from adapters.freeswitch_esl.mapping import Kind, MappingError, interpret

from ..scripted import fixture_bytes

MEMBER = "d0b1da34-a727-11e4-8c4f-0fcc4d7b5fbe"


def cc(action: str, seq: int = 1, **extra: str) -> dict[str, str]:
    headers = {
        "Event-Name": "CUSTOM",
        "Core-UUID": "core-1",
        "Event-Sequence": str(seq),
        "Event-Date-Timestamp": "1420557157955591",
        "Event-Subclass": "callcenter::info",
        "CC-Action": action,
        "CC-Queue": "support@default",
        "CC-Agent": "1001@default",
        "CC-Member-UUID": "member-entry-1",
        "CC-Member-Session-UUID": MEMBER,
        "CC-Member-CID-Name": "Ada Caller",
        "CC-Member-CID-Number": "+4930123456",
    }
    headers.update(extra)
    return headers


def wire(headers: dict[str, str]) -> Message:
    """Through the real encoding and parser (URL-encoded on the wire)."""
    [message] = Parser().feed(encode_event_plain(headers))
    assert isinstance(message, Message)
    return message


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("agent-offering", Kind.OFFER),
        ("bridge-agent-start", Kind.ACCEPT),
        ("bridge-agent-fail", Kind.DECLINE),
        ("bridge-agent-end", Kind.END),
        ("member-queue-end", Kind.END),
    ],
)
def test_callcenter_actions(action: str, kind: Kind) -> None:
    call = interpret(parse_event(wire(cc(action))))
    assert call is not None
    assert (call.kind, call.interaction_id, call.agent, call.queue) == (kind, MEMBER, "1001@default", "support@default")
    assert call.member_uuid == "member-entry-1"
    assert (call.caller_name, call.caller_number) == ("Ada Caller", "+4930123456")
    assert call.occurred_at is not None and call.occurred_at.year == 2015


def test_event_ids_are_the_vendors_own_and_unique_per_event() -> None:
    first = interpret(parse_event(wire(cc("agent-offering", seq=10))))
    again = interpret(parse_event(wire(cc("agent-offering", seq=10))))
    reoffer = interpret(parse_event(wire(cc("agent-offering", seq=11))))
    assert first is not None and again is not None and reoffer is not None
    assert first.event_id == again.event_id  # a replay is a duplicate
    assert first.event_id != reoffer.event_id  # mod_callcenter offering the call again is a new offer
    assert MEMBER in first.event_id and "1001@default" in first.event_id
    without_sequence = cc("agent-offering")
    del without_sequence["Event-Sequence"]
    a = interpret(parse_event(wire(without_sequence)))
    b = interpret(parse_event(wire(without_sequence)))
    assert a is not None and b is not None and a.event_id == b.event_id and len(a.event_id) <= 256


def test_hangup_complete_and_ignored_events() -> None:
    call = interpret(parse_event(wire({"Event-Name": "CHANNEL_HANGUP_COMPLETE", "Unique-ID": MEMBER})))
    assert call is not None and call.kind is Kind.HANGUP and call.interaction_id == MEMBER
    for headers in (
        cc("agent-status-change", **{"CC-Agent-Status": "Available"}),
        cc("members-count"),
        {"Event-Name": "HEARTBEAT"},
        {"Event-Name": "CUSTOM", "Event-Subclass": "sofia::register"},
    ):
        assert interpret(parse_event(wire(headers))) is None
    # the recorded HEARTBEAT (a header block) means nothing to the mapping either
    block = fixture_bytes("esl_genesis_heartbeat.txt").rstrip(b"\n") + b"\n\n"
    [message] = Parser().feed(b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(block), block))
    assert isinstance(message, Message) and interpret(parse_event(message)) is None


def test_undef_and_missing_headers() -> None:
    call = interpret(parse_event(wire(cc("member-queue-end", **{"CC-Agent": "_undef_", "CC-Cause": "Cancel"}))))
    assert call is not None and call.agent is None and call.cause == "Cancel"
    no_member = cc("agent-offering")
    del no_member["CC-Member-Session-UUID"]
    with pytest.raises(MappingError, match="CC-Member-Session-UUID"):
        interpret(parse_event(wire(no_member)))
    no_agent = cc("agent-offering")
    del no_agent["CC-Agent"]
    with pytest.raises(MappingError, match="CC-Agent"):
        interpret(parse_event(wire(no_agent)))
    with pytest.raises(MappingError, match="Unique-ID"):
        interpret(parse_event(wire({"Event-Name": "CHANNEL_HANGUP_COMPLETE"})))
