"""Netstring framing on the real recorded evapi bytes, split anywhere, and on garbage."""

from __future__ import annotations

import json
import random

import pytest

from adapters.kamailio.framing import MAX_FRAME, FramingError, NetstringDecoder, encode

from ..scripted import fixture_bytes

RECORDED = fixture_bytes("evapi_kamailio56_example_cfg.txt")


def whole(decoder: NetstringDecoder, data: bytes) -> list[bytes]:
    return decoder.feed(data)


def expected_frames() -> list[bytes]:
    frames = NetstringDecoder().feed(RECORDED)
    return frames


def test_the_recording_decodes_to_json_objects_with_nothing_left() -> None:
    decoder = NetstringDecoder()
    frames = decoder.feed(RECORDED)
    events = [json.loads(f)["event"] for f in frames]
    assert events[:4] == ["pong", "invite", "answered", "bye"]
    assert {"failed", "gone", "call", "sync_done"} <= set(events)
    assert len(frames) == 17
    assert decoder.buffered == 0 and decoder.skipped == 0 and decoder.take_problems() == []


@pytest.mark.parametrize("seed", range(25))
def test_any_split_of_the_stream_gives_the_same_frames(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(RECORDED)), rng.randint(1, 60)))
    decoder = NetstringDecoder()
    frames: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(RECORDED)], strict=True):
        frames += decoder.feed(RECORDED[a:b])
    assert frames == expected_frames()
    assert decoder.skipped == 0


def test_byte_by_byte() -> None:
    decoder = NetstringDecoder()
    frames = [f for i in range(len(RECORDED)) for f in decoder.feed(RECORDED[i : i + 1])]
    assert frames == expected_frames()


def test_encode_round_trip_and_empty_payload() -> None:
    assert encode(b'{"cmd":"sync"}') == b'14:{"cmd":"sync"},'
    assert NetstringDecoder().feed(encode(b"") + encode("é".encode())) == [b"", "é".encode()]


@pytest.mark.parametrize(
    "garbage",
    [
        b"xyz:,",  # a length that is not a number
        b'6:{"a":1},',  # a wrong length: not closed by ','
        b"\x00\xff\r\n",  # binary noise
        b"-5:{},",  # a negative length
        b"00:,",  # leading zeros
        b"12345678901234:{",  # a length with too many digits
    ],
)
def test_garbage_is_skipped_and_the_next_frame_is_found(garbage: bytes) -> None:
    good = encode(b'{"event":"pong"}')
    decoder = NetstringDecoder()
    frames = decoder.feed(good + garbage + good)
    assert frames == [b'{"event":"pong"}', b'{"event":"pong"}']
    assert decoder.skipped > 0
    assert decoder.take_problems()  # something to log
    assert decoder.buffered == 0


def test_garbage_split_across_reads_keeps_a_frame_start_that_arrives_in_pieces() -> None:
    decoder = NetstringDecoder()
    assert decoder.feed(b"garbage 7") == []
    assert decoder.feed(b":") == []
    assert decoder.feed(b'{"a":1},') == [b'{"a":1}']


def test_a_length_beyond_the_limit_drops_the_connection() -> None:
    with pytest.raises(FramingError):
        NetstringDecoder().feed(b"%d:{" % (MAX_FRAME + 1))
