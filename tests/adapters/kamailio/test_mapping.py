"""evapi messages -> normalized events, and decisions -> what goes back to Kamailio."""

from __future__ import annotations

import json

import pytest

from adapters.kamailio import mapping
from adapters.kamailio.framing import NetstringDecoder
from adapters.kamailio.mapping import BadMessage, parse_message
from gateway.events import Channel, EventType

from ..scripted import fixture_bytes

T = 1_700_000_000.0
FRAMES = NetstringDecoder().feed(fixture_bytes("evapi_kamailio56_example_cfg.txt"))


def test_every_recorded_message_parses() -> None:
    messages = [parse_message(f) for f in FRAMES]
    invite = messages[1]
    assert invite.event == "invite"
    assert (invite.call_id, invite.ruri_user, invite.from_uri, invite.from_name) == (
        "1-1640@127.0.0.1",
        "support",
        "sip:caller@127.0.0.1:5060",
        "sipp",
    )
    assert (invite.tindex, invite.tlabel, invite.cseq) == (28431, 542849745, 1)
    failed = next(m for m in messages if m.event == "failed")
    assert (failed.agent, failed.code, failed.tindex) == ("a2", 486, 37393)
    call = next(m for m in messages if m.event == "call")
    assert (call.call_id, call.state) == ("1-1727@127.0.0.1", "talking")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event": "hangup"}', "unknown event"),
        (b'{"call_id": "x"}', "unknown event"),
        (b'{"event": "bye"}', "call_id is missing"),
        (b'{"event": "bye", "call_id": ""}', "call_id is missing"),
        (b'{"event": "bye", "call_id": 7}', "call_id is not a string"),
        (b'{"event": "invite", "call_id": "c", "tindex": 1, "tlabel": 2}', "ruri_user is missing"),
        (b'{"event": "invite", "call_id": "c", "tindex": -1, "tlabel": 2, "ruri_user": "u"}', "tindex"),
        (b'{"event": "invite", "call_id": "c", "tindex": true, "tlabel": 2, "ruri_user": "u"}', "tindex"),
        (b'{"event": "failed", "call_id": "c", "tindex": 1, "tlabel": "x", "agent": "a"}', "tlabel"),
        (json.dumps({"event": "bye", "call_id": "c" * 3000}).encode(), "longer than"),
    ],
)
def test_bad_messages_say_what_is_wrong(payload: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        parse_message(payload)


def test_integers_as_strings_are_taken() -> None:
    m = parse_message(b'{"event": "failed", "call_id": "c", "tindex": "12", "tlabel": "34", "agent": "a1"}')
    assert (m.tindex, m.tlabel) == (12, 34)


def test_an_invite_to_a_queue_and_to_an_agent() -> None:
    invite = parse_message(FRAMES[1])
    queued = mapping.offer_event("kam", invite, T, queue="support")
    assert (queued.type, queued.channel, queued.queue, queued.agent_id) == (
        EventType.OFFER,
        Channel.VOICE,
        "support",
        None,
    )
    assert queued.event_id == "1-1640@127.0.0.1:invite" and queued.interaction_id == "1-1640@127.0.0.1"
    assert queued.customer is not None and queued.customer.address == "sip:caller@127.0.0.1:5060"
    assert queued.customer.name == "sipp"
    assert queued.attributes["ruri_user"] == "support"
    targeted = mapping.offer_event("kam", invite, T, agent_id="a1001")
    assert (targeted.queue, targeted.agent_id, targeted.event_id) == (None, "a1001", queued.event_id)


def test_event_ids_are_derived_from_the_call_so_repeats_are_duplicates() -> None:
    answered = parse_message(b'{"event":"answered","call_id":"c1","agent":"a1"}')
    failed = parse_message(b'{"event":"failed","call_id":"c1","tindex":1,"tlabel":2,"agent":"a1","code":486}')
    assert mapping.accept_event("k", answered, T).event_id == "c1:answered:a1"
    assert mapping.accept_event("k", answered, T + 5).event_id == "c1:answered:a1"
    decline = mapping.decline_event("k", failed, T)
    assert (decline.type, decline.agent_id, decline.event_id) == (EventType.DECLINE, "a1", "c1:failed:a1")
    assert decline.attributes == {"sip_code": 486}
    assert mapping.end_event("k", "c1", T, why="bye").event_id == mapping.end_event("k", "c1", T, why="resync").event_id


def test_a_very_long_call_id_is_hashed_into_an_id() -> None:
    iid = mapping.interaction_id("x" * 500)
    assert iid.startswith("sha256:") and len(iid) < 100
    assert mapping.interaction_id("short@host") == "short@host"


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("agent_at_capacity", 486),
        ("channel_at_capacity", 486),
        ("no_agent_available", 486),
        ("agent_not_ready", 480),
        ("agent_offline", 480),
        ("unknown_agent", 404),
        ("offer_timeout", 480),
        ("something_new", 500),
        (None, 500),
    ],
)
def test_rejection_reasons_become_sip_answers(reason: str | None, code: int) -> None:
    assert mapping.reply_for(reason)[0] == code


def test_route_commands() -> None:
    assert mapping.route_command(1, 2, uri="sip:a1@127.0.0.1:5090", agent="a1") == {
        "cmd": "route",
        "tindex": 1,
        "tlabel": 2,
        "action": "relay",
        "uri": "sip:a1@127.0.0.1:5090",
        "agent": "a1",
    }
    assert mapping.route_command(1, 2, reply=(486, "Busy Here")) == {
        "cmd": "route",
        "tindex": 1,
        "tlabel": 2,
        "action": "reply",
        "code": "486",
        "reason": "Busy Here",
    }
