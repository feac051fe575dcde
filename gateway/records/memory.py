"""An in-memory journal (``store: memory://``, and tests): same contract, no durability.

It stores each row as the same JSON text the SQLite journal writes, so a state dict that
SQLite could not store fails here too, and every read returns fresh copies (a caller that
mutates what it got, or what it committed, never changes what is stored). Data survives
``close()``/``open()`` of the same instance (a simulated restart), never the process.

Nothing is ever dropped: every row stays in the process's memory for as long as it runs
(the engine's own memory is bounded; this journal's is not). Use it for tests and demos,
not for steady traffic.
"""

from __future__ import annotations

from ..persistence import Changes, Snapshot, StateDict
from ._common import JournalLifecycle, JournalUnavailable, Merged, check_range, loads, prepare


class MemoryJournal(JournalLifecycle):
    #: ``commit()`` never waits (see :class:`gateway.persistence.Journal`)
    commit_wait_bound_s = 0.0

    def __init__(self) -> None:
        self._open = False
        self._rows = Merged()
        #: commits acknowledged
        self.commits = 0

    def __repr__(self) -> str:
        return f"MemoryJournal(open={self._open}, sessions={len(self._rows.sessions)})"

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise JournalUnavailable("journal memory:// is not open")

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        """Keep ``changes`` (``position``: taken and ignored, one writer commits in order)."""
        self._check_open()
        rows = prepare(changes)
        self._rows.add(rows)
        self.commits += 1

    async def load(self, *, since: float, recent: int | None = None) -> Snapshot:
        self._check_open()
        if recent is not None and recent < 0:
            raise ValueError(f"recent must be >= 0, got {recent}")
        rows = self._rows
        sessions = sorted(
            (r for r in rows.sessions.values() if r[2] != "closed"),
            key=lambda r: (r[3] is not None, r[3] or 0.0),  # NULLs first, as in SQLite
        )
        if recent is None:
            interactions = [
                r for r in rows.interactions.values() if r[2] != "done" or (r[3] is not None and r[3] >= since)
            ]
        else:
            done = [r for r in rows.interactions.values() if r[2] == "done" and r[3] is not None and r[3] >= since]
            done.sort(key=lambda r: r[3] or 0.0)  # stable: insertion order among equal times
            interactions = [r for r in rows.interactions.values() if r[2] != "done"]
            interactions += done[len(done) - recent :] if recent else []
        events = sorted((r for r in rows.events.values() if r[2] >= since), key=lambda r: r[2])
        if recent is not None:
            events = events[len(events) - recent :] if recent else []
        return Snapshot(
            sessions=[loads(r[-1]) for r in sessions],
            interactions=[loads(r[-1]) for r in interactions],
            agents=[loads(r[-1]) for r in rows.agents.values()],
            events=[loads(r[-1]) for r in events],
            meta={key: loads(value) for key, value in rows.meta.values()},
        )

    async def record(self, session_id: str) -> StateDict | None:
        self._check_open()
        row = self._rows.sessions.get(session_id)
        return loads(row[-1]) if row is not None else None

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        self._check_open()
        row = self._rows.events.get((vendor, event_id))
        return loads(row[-1]) if row is not None else None

    async def interaction(self, vendor: str, interaction_id: str) -> StateDict | None:
        self._check_open()
        row = self._rows.interactions.get((vendor, interaction_id))
        return loads(row[-1]) if row is not None else None

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        self._check_open()
        check_range(start, end, limit)
        selected = [
            r
            for r in self._rows.sessions.values()
            if (start is None or (r[3] is not None and r[3] >= start))
            and (end is None or (r[3] is not None and r[3] < end))
        ]
        selected.sort(key=lambda r: (r[3] is not None, r[3] or 0.0, r[0]))
        if limit is not None:
            selected = selected[:limit]
        return [loads(r[-1]) for r in selected]

    async def ping(self) -> bool:
        return self._open
