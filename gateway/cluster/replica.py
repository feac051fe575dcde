"""One instance's copy of the state: an engine that applies the shared log's entries.

Pure and synchronous (no Redis here): :class:`Replica` applies an entry (its ID and its
:class:`~gateway.commands.Command`) to its engine with the engine's clock set to the
entry's time (the milliseconds of the stream ID, i.e. the Redis server's clock when the
entry was appended) and an id factory that derives ids from the entry ID. Two replicas fed
the same entries therefore end identical, whatever machine or moment they apply them on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..commands import Command, CommandError, apply
from ..engine import Engine
from ..errors import GatewayError
from ..notices import Notice
from ..persistence import Changes

__all__ = ["Applied", "EntryId", "LogClock", "LogIds", "Replica", "parse_entry_id"]

EntryId = tuple[int, int]


def parse_entry_id(entry_id: str) -> EntryId:
    """``"1764590400123-4"`` -> ``(1764590400123, 4)``; :class:`ValueError` if malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream entry ID: {entry_id!r}")
    return int(ms), int(seq)


class LogClock:
    """The engine's clock: the time of the entry being applied.

    Outside an entry (reads between entries: a REST ``GET``) it answers the later of the
    last entry's time and the wall clock, so read-only views show durations up to now;
    nothing changes the state outside an entry.
    """

    def __init__(self) -> None:
        self.entry_time: float | None = None
        self.last = 0.0

    def now(self) -> float:
        if self.entry_time is not None:
            return self.entry_time
        return max(self.last, time.time())


class LogIds:
    """Ids derived from the entry ID: ``{ms:012x}{seq:04x}{n:04x}`` for the n-th id of an entry."""

    def __init__(self) -> None:
        self.base = ""
        self.n = 0

    def start(self, entry: EntryId) -> None:
        self.base = f"{entry[0]:012x}{entry[1]:04x}"
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.base}{self.n:04x}"


@dataclass(slots=True)
class Applied:
    """What applying one entry did."""

    entry_id: str
    command: Command
    result: Any = None
    #: the engine's refusal (the same on every instance), or a command that was not valid
    error: GatewayError | None = None
    notices: list[Notice] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)
    touched: set[str] = field(default_factory=set)
    #: an engine bug (not a GatewayError): logged by the caller; every instance hits it alike
    crash: BaseException | None = None


class Replica:
    """An engine driven by log entries (see the module docstring).

    The engine must have been built with ``clock=replica.clock`` and ``new_id=replica.ids``
    (use :meth:`engine_options`).
    """

    def __init__(self) -> None:
        self.clock = LogClock()
        self.ids = LogIds()
        #: the last entry applied ("0-0": none)
        self.last_id = "0-0"
        self.last: EntryId = (0, 0)
        self.engine: Engine | None = None

    def engine_options(self) -> dict[str, Any]:
        return {"clock": self.clock, "new_id": self.ids}

    def apply(self, entry_id: str, command: Command) -> Applied:
        """Apply one entry (entries must come in the log's order, each once)."""
        engine = self.engine
        assert engine is not None, "bind an engine first"
        entry = parse_entry_id(entry_id)
        if entry <= self.last:
            raise ValueError(f"entry {entry_id} is not after {self.last_id}")
        self.clock.entry_time = max(entry[0] / 1000.0, self.clock.last)
        self.ids.start(entry)
        applied = Applied(entry_id, command)
        try:
            applied.result = apply(engine, command)
        except GatewayError as exc:
            applied.error = exc
        except CommandError as exc:
            applied.error = GatewayError(str(exc))
        except Exception as exc:  # noqa: BLE001 - an engine bug: the caller logs it
            applied.crash = exc
        finally:
            applied.changes = engine.take_changes()
            applied.notices = engine.drain()
            applied.touched = engine.take_touched_agents()
            self.clock.last = self.clock.entry_time
            self.clock.entry_time = None
            self.last, self.last_id = entry, entry_id
        return applied

    def dump(self) -> dict[str, Any]:
        """Where this replica is (the last entry applied, the log clock) and its engine's
        whole state (:meth:`Engine.dump_state`): a replica that :meth:`load` s it applies
        the entries after that position exactly as this one does."""
        engine = self.engine
        assert engine is not None, "bind an engine first"
        return {"position": self.last_id, "clock": self.clock.last, "engine": engine.dump_state()}

    def load(self, body: dict[str, Any]) -> None:
        """Take a :meth:`dump` (on a fresh engine of the same configuration; the engine's
        :class:`~gateway.engine.DumpRefused` if it does not fit)."""
        engine = self.engine
        assert engine is not None, "bind an engine first"
        position = str(body["position"])
        entry = parse_entry_id(position)
        engine.load_state(body["engine"])
        self.last, self.last_id = entry, position
        self.clock.last = float(body["clock"])
        self.clock.entry_time = None

    def skip(self, entry_id: str) -> None:
        """An entry that is not the engine's (e.g. a config entry): only its position counts."""
        self.last, self.last_id = parse_entry_id(entry_id), entry_id
        self.clock.last = max(self.clock.last, self.last[0] / 1000.0)
