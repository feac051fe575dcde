"""Clocks. The core never reads time itself: it is handed a :class:`Clock`.

Times are Unix epoch seconds as ``float`` (wall clock), so that they can be journaled,
restored after a restart and shown in records. Durations in records are whole ms.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time, Unix epoch seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = float(when)


def ms_between(start: float | None, end: float | None) -> int | None:
    """Whole milliseconds from ``start`` to ``end`` (None if either is unknown)."""
    if start is None or end is None:
        return None
    return max(0, int(round((end - start) * 1000)))
