"""ESL framing on the recorded FreeSWITCH byte streams (tests/fixtures/esl_*), split anywhere."""

from __future__ import annotations

import random

import pytest

from adapters.freeswitch_esl.framing import (
    Malformed,
    Message,
    Parser,
    command,
    encode_event_plain,
    parse_event,
    parse_event_json,
    parse_event_plain,
)

from ..scripted import fixture_bytes

RECORDED = {
    # name: (messages, event-plain messages)
    "esl_neventsocket_example1.txt": (27, 14),
    "esl_neventsocket_example3.txt": (22, 11),
}


def feed_in_pieces(raw: bytes, rng: random.Random, max_piece: int) -> list[Message | Malformed]:
    parser = Parser()
    out: list[Message | Malformed] = []
    i = 0
    while i < len(raw):
        n = rng.randint(1, max_piece)
        out += parser.feed(raw[i : i + n])
        i += n
    assert parser.buffered == 0
    return out


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_stream_parses_whole(name: str) -> None:
    raw = fixture_bytes(name)
    parser = Parser()
    messages = parser.feed(raw)
    count, events = RECORDED[name]
    assert all(isinstance(m, Message) for m in messages)
    assert len(messages) == count and parser.buffered == 0
    plain = [m for m in messages if isinstance(m, Message) and m.content_type == "text/event-plain"]
    assert len(plain) == events
    for message in plain:
        event = parse_event(message)
        assert event.name.startswith("CHANNEL_") or event.name in ("EXECUTE_COMPLETE", "CHANNEL_EXECUTE_COMPLETE")
        assert event.get("Unique-ID")
    first = messages[0]
    assert isinstance(first, Message) and first.content_type == "command/reply"
    # outer headers are URL-decoded too (the connect reply of an outbound socket carries channel data)
    assert first.headers["Channel-Caller-ID-Name"] == "Dan X-Lite"
    assert first.headers["FreeSWITCH-IPv6"] == "2001:0:5ef5:79fd:1c45:341e:53ef:cd79"
    assert [m.content_type for m in messages if isinstance(m, Message)].count("api/response") >= 1


@pytest.mark.parametrize("name", sorted(RECORDED))
@pytest.mark.parametrize("seed", range(6))
def test_recorded_stream_split_at_random_points(name: str, seed: int) -> None:
    raw = fixture_bytes(name)
    whole = Parser().feed(raw)
    rng = random.Random(seed)
    max_piece = [1, 3, 17, 200, 4096, 70000][seed]
    assert feed_in_pieces(raw, rng, max_piece) == whole


def test_event_plain_values_are_url_decoded() -> None:
    raw = fixture_bytes("esl_neventsocket_example1.txt")
    plain = [m for m in Parser().feed(raw) if isinstance(m, Message) and m.content_type == "text/event-plain"]
    event = parse_event(plain[0])
    assert event.name == "CHANNEL_PROGRESS_MEDIA"
    assert event.get("Event-Date-Local").startswith("2015-01-06 15:")  # sent as 2015-01-06%2015%3A...
    assert event.get("Channel-Name") == "sofia/internal/1001@172.16.50.134"  # sent with %40


@pytest.mark.parametrize(
    ("name", "event_name", "key", "value"),
    [
        ("esl_genesis_channel_create.txt", "CHANNEL_CREATE", "Channel-State", "CS_INIT"),
        ("esl_genesis_heartbeat.txt", "HEARTBEAT", "Event-Info", "System Ready"),
        ("esl_genesis_register.txt", "CUSTOM", "Event-Subclass", "sofia::register"),
    ],
)
def test_recorded_header_blocks_framed_and_split(name: str, event_name: str, key: str, value: str) -> None:
    """The genesis captures are event header blocks only: put the outer framing around
    them as FreeSWITCH does and parse them from random pieces."""
    block = fixture_bytes(name).rstrip(b"\n") + b"\n\n"
    framed = b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(block), block)
    stream = framed * 3
    messages = feed_in_pieces(stream, random.Random(7), 13)
    assert len(messages) == 3
    for message in messages:
        assert isinstance(message, Message)
        event = parse_event(message)
        assert event.name == event_name
        assert event.get(key) == value


def test_recorded_background_job_with_nested_body() -> None:
    """The BACKGROUND_JOB capture carries its outer framing; the recording lost its last
    byte (the outer Content-Length says 579, 578 follow): the parser waits for it."""
    raw = fixture_bytes("esl_genesis_background_job.txt")
    parser = Parser()
    assert parser.feed(raw) == []
    [message] = parser.feed(b"\n")
    assert isinstance(message, Message)
    event = parse_event(message)
    assert event.name == "BACKGROUND_JOB"
    assert event.get("Job-Command-Arg") == "sofia/default/1005 '&park'"
    assert event.body == "+OK 7f4de4bc-17d7-11dd-b7a0-db4edd065621"


def test_garbage_is_skipped_and_the_stream_goes_on() -> None:
    good = encode_event_plain({"Event-Name": "HEARTBEAT", "Event-Info": "System Ready"})
    stream = (
        good
        + b"\x00\xff\xfe binary junk\n\n"
        + b"Content-Length: -3\nContent-Type: text/event-plain\n\n"
        + b"Content-Length: 99999999999999\nContent-Type: text/event-plain\n\n"
        + good
        + b"Content-Type: api/response\r\nContent-Length: 3\r\n\r\n+OK"  # CRLF tolerated
    )
    out = feed_in_pieces(stream, random.Random(3), 5)
    kinds = [type(item).__name__ for item in out]
    assert kinds == ["Message", "Malformed", "Malformed", "Malformed", "Message", "Message"], out
    assert isinstance(out[-1], Message) and out[-1].body == b"+OK"


def test_an_oversize_body_is_skipped_without_being_buffered() -> None:
    parser = Parser(max_body_bytes=1000)
    out = parser.feed(b"Content-Length: 5000\nContent-Type: text/event-plain\n\n")
    assert [type(o) for o in out] == [Malformed]
    for _ in range(5):
        assert parser.feed(b"x" * 1000) == []
        assert parser.buffered == 0
    [after] = parser.feed(b"Content-Type: auth/request\n\n")
    assert isinstance(after, Message) and after.content_type == "auth/request"


def test_an_endless_header_block_is_dropped() -> None:
    parser = Parser(max_header_bytes=1024)
    out = parser.feed(b"X-Junk: " + b"a" * 2000)
    assert [type(o) for o in out] == [Malformed] and parser.buffered == 0


def test_event_plain_nested_body_and_bad_events() -> None:
    raw = encode_event_plain({"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info"}, body="hello\nworld")
    [message] = Parser().feed(raw)
    assert isinstance(message, Message)
    assert b"callcenter%3A%3Ainfo" in message.body
    event = parse_event(message)
    assert event.subclass == "callcenter::info" and event.body == "hello\nworld"
    with pytest.raises(ValueError, match="Event-Name"):
        parse_event_plain(b"Foo: bar\n\n")
    with pytest.raises(ValueError, match="Content-Length"):
        parse_event_plain(b"Event-Name: X\nContent-Length: 50\n\nshort")


def test_event_json() -> None:
    event = parse_event_json(b'{"Event-Name":"CUSTOM","Event-Subclass":"callcenter::info","CC-Action":"x","_body":"b"}')
    assert event.subclass == "callcenter::info" and event.get("CC-Action") == "x" and event.body == "b"
    for bad in (b"[1]", b"{not json", b'{"CC-Action": "x"}'):
        with pytest.raises(ValueError):
            parse_event_json(bad)


def test_commands_cannot_smuggle_a_second_command() -> None:
    assert command("api", "uuid_kill", "abc") == b"api uuid_kill abc\n\n"
    with pytest.raises(ValueError, match="line break") as raised:
        command("auth", "secret\n\napi hupall")
    assert "secret" not in str(raised.value)
