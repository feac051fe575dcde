"""JSON encoding on the hot path: orjson where it says exactly what the standard library says.

Journal rows, desktop and supervisor WebSocket messages and the webhook's HTTP answers are
encoded here. orjson is several times faster than :mod:`json`, but it does not refuse
everything :mod:`json` (with ``allow_nan=False``) refuses, nor accept everything it accepts:

* it writes NaN and the infinities as ``null`` (``json`` raises ``ValueError``): checked
  here, so a non-finite number is never stored or sent as ``null``;
* it refuses integers beyond 64 bits, dict keys that are not ``str`` and lone surrogates
  (``json`` writes the first two; for the third each caller has its own rule);
* it writes dataclasses, datetimes, UUIDs and enums that ``json`` refuses.

:func:`dumps` returns orjson's bytes only when neither applies, else ``None``: the caller
then takes the standard library's path, which gives the answer (or the error) it always
gave. Decoding stays with :mod:`json`: orjson reads an integer beyond 64 bits as a float,
which would change what a vendor sent (and what a restart restores).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from aiohttp import web

__all__ = ["dumps", "json_response", "loads", "plain"]

_isfinite = math.isfinite
#: values written as they are (exact types: subclasses take the slower path)
_SCALARS = frozenset({str, int, bool, type(None)})


def plain(obj: Any) -> bool:
    """Whether ``obj`` is made of what :mod:`json` writes the way orjson does: dicts, lists,
    tuples, strings, ints, bools, None and *finite* floats (subclasses included). A NaN, an
    infinity, a dataclass, a datetime or anything else: False.

    The containers' values are checked in one loop each (a scalar is never pushed on the
    stack and popped again): this walk costs several times what orjson's encoding does, and
    every journal row and socket message takes it."""
    stack: list[Any] = [(obj,)]
    pop, push = stack.pop, stack.append
    while stack:
        for value in pop():
            kind = type(value)
            if kind in _SCALARS:
                continue
            if kind is dict:
                push(value.values())
            elif kind is float:
                if not _isfinite(value):
                    return False
            elif kind is list or kind is tuple:
                push(value)
            elif isinstance(value, (str, int)):  # StrEnum, IntEnum: as json writes them
                continue
            elif isinstance(value, float):
                if not _isfinite(value):
                    return False
            elif isinstance(value, dict):
                push(value.values())
            elif isinstance(value, (list, tuple)):
                push(value)
            else:
                return False
    return True


def dumps(obj: Any) -> bytes | None:
    """Compact UTF-8 JSON of ``obj``, or None where orjson cannot answer as :mod:`json` would
    (see the module doc): the caller then encodes with :mod:`json`."""
    try:
        data = orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: surrogates, big ints, non-str keys, unknown types
        return None
    return data if plain(obj) else None


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """``web.json_response`` with the encoding above (the standard library's where needed)."""
    body = dumps(data)
    if body is None:
        return web.json_response(data, status=status)
    return web.Response(body=body, status=status, content_type="application/json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every untrusted body: ``json.loads(raw, parse_constant=...)`` builds a
#: new decoder on every call.
_decoder = json.JSONDecoder(parse_constant=_no_constant)


def loads(raw: str | bytes | bytearray) -> Any:
    """``json.loads(raw, parse_constant=f)`` with ``f`` refusing NaN and the infinities
    (``ValueError``), decoded as :func:`json.loads` decodes (bytes: UTF-8/16/32 detected)."""
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        text = raw
    else:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return _decoder.decode(text)
