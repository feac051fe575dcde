"""gateway.fastjson: orjson's bytes only where they say what the standard library would."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
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
