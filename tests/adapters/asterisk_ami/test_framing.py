"""AMI framing on the real recorded transcripts (tests/fixtures/ami_panoramisk_*.txt): the
same messages come out whatever the split of the byte stream and whether lines end in LF
(as stored) or CRLF (as on the wire)."""

from __future__ import annotations

import random

import pytest

from adapters.asterisk_ami.framing import Banner, Framer, Malformed, Message, encode_action
from tests.adapters.scripted import FIXTURES, fixture_bytes

AMI_FIXTURES = sorted(p.name for p in FIXTURES.glob("ami_panoramisk_*.txt"))


def frame(data: bytes, cuts: list[int] | None = None) -> list[object]:
    framer = Framer()
    items: list[object] = []
    bounds = [0, *(cuts or []), len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        items.extend(framer.feed(data[a:b]))
    return items


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_every_ami_fixture_is_there() -> None:
    assert len(AMI_FIXTURES) == 13


@pytest.mark.parametrize("name", AMI_FIXTURES)
@pytest.mark.parametrize("line_end", ["lf", "crlf"])
def test_any_split_gives_the_same_messages(name: str, line_end: str) -> None:
    raw = fixture_bytes(name)
    data = raw if line_end == "lf" else crlf(raw)
    whole = frame(data)
    assert any(isinstance(item, Message) for item in whole)
    rng = random.Random(f"{name}-{line_end}")
    for _ in range(25):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
        assert frame(data, cuts) == whole
    # byte by byte, the worst split there is
    if len(data) < 5000:
        assert frame(data, list(range(1, len(data)))) == whole
    # CRLF and LF give the same messages
    assert frame(crlf(raw)) == frame(raw.replace(b"\r\n", b"\n"))


def test_the_login_transcripts() -> None:
    items = frame(fixture_bytes("ami_panoramisk_login_md5.txt"))
    assert items[0] == Banner("7.0.3")
    action, response = items[1:]
    assert isinstance(action, Message) and action.kind == "action" and action.get("authtype") == "MD5"
    assert isinstance(response, Message) and response.get("Challenge") == "145769581"
    failed = frame(fixture_bytes("ami_panoramisk_login_failed.txt"))
    assert failed[0] == Banner("1.3")
    assert isinstance(failed[-1], Message) and failed[-1].get("message") == "Authentication failed"


def test_both_styles_of_command_reply() -> None:
    *_, old = frame(fixture_bytes("ami_panoramisk_command_core_show_version.txt"))
    assert isinstance(old, Message) and old.name == "Follows"
    assert old.action_id == "action/transaction_uid/1/1" and old.get("Privilege") == "Command"
    assert old.output == (
        "Asterisk 11.11.0+xivo.14.15~20140724.155259.ed5592b-wheezy built by root @ wheezy-farm on a x86_64 "
        "running Linux on 2014-08-06 19:30:37 UTC",
    )
    # Follows output keeps empty lines and lines that look like headers; ends at --END COMMAND--
    follows = (
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\nName: x\r\n\r\n  two\r\n--END COMMAND--\r\n\r\n"
    )
    [message] = frame(follows)
    assert isinstance(message, Message) and message.output == ("Name: x", "", "  two")
    modern = (
        b"Response: Success\r\nActionID: 8\r\nMessage: Command output follows\r\nOutput: line one\r\nOutput: \r\n\r\n"
    )
    [message] = frame(modern)
    assert isinstance(message, Message) and message.output == ("line one", "")


def test_lists_repeated_keys_and_case() -> None:
    items = [i for i in frame(fixture_bytes("ami_panoramisk_queue_status.txt")) if isinstance(i, Message)]
    assert items[0].get("message") == "Queue status will follow"
    members = [i for i in items if i.name == "QueueMember"]
    assert members and all(m.get("actionid") == "action/transaction_uid/1/1" for m in members)
    [message] = frame(b"Event: VarSet\nVariable: A\nvariable: B\nValue:\n\n")
    assert isinstance(message, Message) and message.getall("Variable") == ["A", "B"] and message.get("value") == ""


def test_recorded_garbage_is_skipped_and_the_rest_kept() -> None:
    """The capture has holes ("[218 bytes missing in capture file]Event: ..."): reported as
    malformed, every whole block around them still comes out."""
    items = frame(fixture_bytes("ami_panoramisk_agent_loggued_in.txt"))
    bad = [i for i in items if isinstance(i, Malformed)]
    assert [b.excerpt[:24] for b in bad] == ["[218 bytes missing in ca", "[1613 bytes missing in c"]
    assert sum(isinstance(i, Message) and i.kind == "event" for i in items) > 100


def test_garbage_and_oversize_input_are_skipped() -> None:
    framer = Framer(max_line=100, max_lines=5)
    items = framer.feed(b"\x00\xff junk\r\nEvent: A\r\nUniqueid: 1\r\n\r\n")
    assert isinstance(items[0], Malformed) and isinstance(items[1], Message) and items[1].name == "A"
    items = framer.feed(b"Event: B\r\nnot a header\r\nX: y\r\n\r\nEvent: C\r\n\r\n")
    assert isinstance(items[0], Malformed) and items[1] == Message((("Event", "C"),))
    items = framer.feed(b"y" * 250)  # a line too long, still unfinished: dropped up to its end
    assert isinstance(items[0], Malformed) and framer.pending == 0
    items = framer.feed(b"y" * 50 + b"\r\nEvent: D\r\n\r\n")
    assert items == [Message((("Event", "D"),))]
    items = framer.feed(b"".join(b"K%d: v\r\n" % n for n in range(9)) + b"\r\nEvent: E\r\n\r\n")
    assert isinstance(items[0], Malformed) and items[1] == Message((("Event", "E"),))


def test_actions_are_crlf_and_refuse_injection() -> None:
    assert encode_action("QueuePause", "1", [("Interface", "PJSIP/1001"), ("Paused", "true")]) == (
        b"Action: QueuePause\r\nActionID: 1\r\nInterface: PJSIP/1001\r\nPaused: true\r\n\r\n"
    )
    with pytest.raises(ValueError, match="line break"):
        encode_action("Hangup", "2", [("Channel", "PJSIP/1-1\r\n\r\nAction: Originate")])
    with pytest.raises(ValueError, match="header name"):
        encode_action("Hangup", "3", [("Bad Key", "x")])


def test_a_stray_follows_does_not_swallow_the_events_after_it() -> None:
    """A ``Response: Follows`` whose output never ends: the next event after an empty line
    is still an event (only the broken reply is lost)."""
    data = b"Response: Follows\r\nPrivilege: Command\r\nsome output\r\n\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"
    items = frame(data)
    assert isinstance(items[0], Malformed) and "END COMMAND" in items[0].reason
    assert items[1:] == [Message((("Event", "Hangup"), ("Uniqueid", "1.1")))]
