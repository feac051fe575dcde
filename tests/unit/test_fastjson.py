"""gateway.fastjson: orjson's bytes only where they say what the standard library would."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import fastjson


class Color(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float


REFUSED: list[Any] = [
    float("nan"),
    {"a": [1, {"b": float("inf")}]},
    (float("-inf"),),
    2**64,  # beyond 64 bits: orjson refuses, json writes it
    {1: "x"},  # a key that is not a string: json writes "1"
    {Color.RED: 1},
    "lone \ud800",
    Point(1.0),  # json refuses dataclasses, orjson would write them
    datetime.datetime(2026, 1, 1),
    object(),
]


def test_what_orjson_would_say_differently_takes_the_standard_path() -> None:
    for value in REFUSED:
        assert fastjson.dumps(value) is None, value


def test_subclasses_are_written_as_json_writes_them() -> None:
    assert fastjson.dumps({"c": Color.RED, "t": (1, True, None)}) == b'{"c":"red","t":[1,true,null]}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_orjson_bytes_decode_to_what_json_wrote(value: Any) -> None:
    fast = fastjson.dumps(value)
    try:
        expected = json.dumps(value, allow_nan=False, ensure_ascii=False)
        standard: Any = json.loads(expected)
    except ValueError:  # NaN / infinity: refused by json, so never written by orjson either
        assert fast is None
        return
    if fast is not None:
        assert json.loads(fast) == standard


def test_json_response_falls_back_to_the_standard_encoder() -> None:
    response = fastjson.json_response({"n": 2**70}, status=201)
    assert response.status == 201 and response.content_type == "application/json"
    assert response.body is not None and json.loads(bytes(response.body)) == {"n": 2**70}  # type: ignore[arg-type]
    fast = fastjson.json_response({"n": 1})
    assert fast.body == b'{"n":1}'


def _reference(raw: str | bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=no_constant)


def _outcome(load: Any, raw: str | bytes) -> tuple[str, Any]:
    try:
        return "ok", load(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        return type(exc).__name__, str(exc)


@settings(max_examples=100, deadline=None)
@given(json_values, st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig", "str"]))
def test_loads_reads_what_json_loads_reads(value: Any, encoding: str) -> None:
    try:
        text = json.dumps(value, allow_nan=True)
    except ValueError:
        return
    raw: str | bytes = text if encoding == "str" else text.encode(encoding, "surrogatepass")
    assert _outcome(fastjson.loads, raw) == _outcome(_reference, raw)


def test_loads_refuses_what_json_loads_refused() -> None:
    for raw in (b"NaN", b'{"a": Infinity}', b"[-Infinity]", "\ufeff{}", b"\xff\xfe\x00garbage", b"{", b"[" * 50_000):
        try:
            expected = _outcome(_reference, raw)
        except RecursionError:
            expected = ("RecursionError", None)
        try:
            got = _outcome(fastjson.loads, raw)
        except RecursionError:
            got = ("RecursionError", None)
        assert got == expected and got[0] != "ok", raw


class Level(enum.IntEnum):
    LOW = 1


class Plain(enum.Enum):  # neither str nor int: json refuses it, orjson writes its value
    A = "a"


def reference_plain(obj: Any) -> bool:
    """The first walk (one stack entry per value), kept to check the faster one against."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, int)) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            return False
    return True


odd_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=3)
    | st.sampled_from([Color.RED, Level.LOW, Plain.A, Point(1.0), datetime.date(2026, 1, 1), b"x", {1, 2}]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3).map(collections.OrderedDict)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(odd_values)
def test_the_walk_refuses_and_accepts_what_the_first_one_did(value: Any) -> None:
    assert fastjson.plain(value) == reference_plain(value)


def test_values_json_refuses_are_never_written_by_orjson() -> None:
    for value in (Plain.A, {"k": [Plain.A]}, {"u": uuid.uuid4()}, [1, (2, float("nan"))]):
        assert not fastjson.plain(value) and fastjson.dumps(value) is None, value
