"""What every journal shares: JSON encoding, checking and flattening :class:`Changes`, errors.

:func:`prepare` runs in the caller of ``commit()``: it validates the state dicts and encodes
them to JSON *at that moment*, so that

* a malformed state dict fails the caller that passed it (``ValueError``/``TypeError``),
  never a whole group-commit batch of other callers;
* the engine may go on mutating its own objects after calling ``commit()``: what is written
  is what they were when ``commit()`` was called.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import GatewayError
from ..persistence import Changes, StateDict

try:  # optional speed-up; stdlib json is the default
    import orjson as _orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

#: A lone surrogate: JSON can spell it ("\\ud800"), UTF-8 (and so SQLite) cannot store it.
_SURROGATE = re.compile("[\ud800-\udfff]")

if _orjson is not None:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> str:
        try:
            return str(_orjson.dumps(obj).decode())
        except _orjson.JSONEncodeError as exc:
            raise ValueError(f"cannot be stored as JSON: {exc}") from None

    loads: Callable[[str | bytes], Any] = _orjson.loads
else:
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(obj: Any) -> str:
        """JSON text that SQLite can store; ``ValueError`` / ``TypeError`` if there is none.

        Checked here, in the caller of ``commit()``, so that such data fails only its own
        commit: a lone surrogate would otherwise fail the whole group-commit transaction.
        """
        try:
            text = _encoder.encode(obj)
        except RecursionError:
            raise ValueError("cannot be stored as JSON: nested too deeply") from None
        if _SURROGATE.search(text):
            raise ValueError("cannot be stored: a string holds a lone surrogate (not valid Unicode)")
        return text

    loads = json.loads


class JournalUnavailable(GatewayError):
    """The journal cannot take or serve data right now (API: 503 ``not_ready``; retry later)."""

    code = "not_ready"
    retryable = True


class JournalSchemaError(GatewayError):
    """The database file is not a journal this code can use (newer schema, foreign file)."""

    code = "store_schema"
    retryable = False


# Row tuples, in the column order of the SQL tables (see gateway.records.sqlite).
SessionRow = tuple[str, Any, str, float | None, float | None, str]  # id, agent_id, state, offered_at, closed_at, data
InteractionRow = tuple[str, str, str, float | None, str]  # vendor, interaction_id, phase, done_at, data
AgentRow = tuple[str, str]  # id, data
EventRow = tuple[str, str, float, Any, Any, str]  # vendor, event_id, at, type, interaction_id, data
MetaRow = tuple[str, str]  # key, value (JSON)


@dataclass(slots=True)
class Prepared:
    """One commit's rows, encoded."""

    sessions: list[SessionRow] = field(default_factory=list)
    interactions: list[InteractionRow] = field(default_factory=list)
    agents: list[AgentRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    meta: list[MetaRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.interactions or self.agents or self.events or self.meta)


@dataclass(slots=True)
class Merged:
    """Several commits' rows merged by unique key, the later row winning (upsert order)."""

    sessions: dict[str, SessionRow] = field(default_factory=dict)
    interactions: dict[tuple[str, str], InteractionRow] = field(default_factory=dict)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    events: dict[tuple[str, str], EventRow] = field(default_factory=dict)
    meta: dict[str, MetaRow] = field(default_factory=dict)

    def add(self, rows: Prepared) -> None:
        for s in rows.sessions:
            self.sessions[s[0]] = s
        for i in rows.interactions:
            self.interactions[(i[0], i[1])] = i
        for a in rows.agents:
            self.agents[a[0]] = a
        for e in rows.events:
            self.events[(e[0], e[1])] = e
        for m in rows.meta:
            self.meta[m[0]] = m

    def row_count(self) -> int:
        return len(self.sessions) + len(self.interactions) + len(self.agents) + len(self.events) + len(self.meta)


def _key(row: StateDict, name: str, what: str) -> str:
    value = row.get(name) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} state dict needs a non-empty string {name!r}, got {value!r}")
    return value


def _time(row: StateDict, name: str, what: str, *, required: bool = False) -> float | None:
    value = row.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} state dict: {name!r} must be epoch seconds (a number), got {value!r}")
    return float(value)


def prepare(changes: Changes) -> Prepared:
    """Validate and encode ``changes`` (raises ``ValueError``/``TypeError`` on bad input)."""
    out = Prepared()
    for row in changes.sessions:
        out.sessions.append(
            (
                _key(row, "id", "session"),
                row.get("agent_id"),
                _key(row, "state", "session"),
                _time(row, "offered_at", "session"),
                _time(row, "closed_at", "session"),
                dumps(row),
            )
        )
    for row in changes.interactions:
        out.interactions.append(
            (
                _key(row, "vendor", "interaction"),
                _key(row, "interaction_id", "interaction"),
                _key(row, "phase", "interaction"),
                _time(row, "done_at", "interaction"),
                dumps(row),
            )
        )
    for row in changes.agents:
        out.agents.append((_key(row, "id", "agent"), dumps(row)))
    for row in changes.events:
        at = _time(row, "at", "event", required=True)
        assert at is not None
        out.events.append(
            (
                _key(row, "vendor", "event"),
                _key(row, "event_id", "event"),
                at,
                row.get("type"),
                row.get("interaction_id"),
                dumps(row),
            )
        )
    for key, value in changes.meta.items():
        if not isinstance(key, str):
            raise TypeError(f"meta keys must be strings, got {key!r}")
        out.meta.append((key, dumps(value)))
    return out


def check_range(start: float | None, end: float | None, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name} must be epoch seconds or None, got {value!r}")
