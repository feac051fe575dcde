"""A recorded period, read from a gateway's SQLite journal.

The journal's ``events`` table holds every inbound normalized event with the time the
engine took it and its decision; ``sessions`` holds every session (offered, accepted,
ended and closed times, outcome); ``interactions`` each interaction's decisions in order.
That is all a replay needs, except agent presence: the ``agents`` table keeps only each
agent's latest state, so the presence history of the period cannot be rebuilt (see
:mod:`gateway.replay.run` for what the replay assumes instead).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..persistence import StateDict
from ..records.sqlite import APPLICATION_ID


class RecordingError(Exception):
    """The recording cannot be read (not a journal, unreadable, empty period)."""


@dataclass(slots=True)
class Recording:
    source: str
    #: inbound event rows (``vendor``, ``event_id``, ``at``, ``type``, ``interaction_id``,
    #: ``event``, ``decision``), in the order the engine took them
    events: list[StateDict] = field(default_factory=list)
    #: session state dicts, oldest offer first
    sessions: list[StateDict] = field(default_factory=list)
    #: interaction state dicts (with their decisions)
    interactions: list[StateDict] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds or an RFC 3339 / ISO 8601 time (UTC if no offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give epoch seconds or e.g. 2026-12-01T08:00:00Z") from None
    if value.tzinfo is None:
        from datetime import timezone

        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def load_journal(path: str | Path, *, start: float | None = None, end: float | None = None) -> Recording:
    """The period [start, end) of the SQLite journal at ``path`` (default: all of it).

    Only interactions whose offer lies in the period are taken (with all their events and
    sessions, even past ``end``), and the manual sessions started in it."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RecordingError(f"{path}: cannot open: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise RecordingError(f"{path}: not a cti-gateway journal (application_id {app_id})")
        events = [json.loads(r[0]) for r in conn.execute("SELECT data FROM events ORDER BY at, rowid")]
        sessions = [json.loads(r[0]) for r in conn.execute("SELECT data FROM sessions ORDER BY offered_at, rowid")]
        interactions = [json.loads(r[0]) for r in conn.execute("SELECT data FROM interactions ORDER BY rowid")]
    except sqlite3.DatabaseError as exc:
        raise RecordingError(f"{path}: cannot read the journal: {exc}") from None
    finally:
        conn.close()
    return select(Recording(str(path), events, sessions, interactions), start=start, end=end)


def select(recording: Recording, *, start: float | None, end: float | None) -> Recording:
    """The part of ``recording`` whose offers (and manual sessions) start in [start, end)."""

    def inside(at: float) -> bool:
        return (start is None or at >= start) and (end is None or at < end)

    offered = {(e["vendor"], e["interaction_id"]) for e in recording.events if e["type"] == "offer" and inside(e["at"])}
    events = [e for e in recording.events if (e["vendor"], e["interaction_id"]) in offered]
    sessions = [
        s
        for s in recording.sessions
        if (s.get("vendor"), s.get("interaction_id")) in offered
        or (s.get("channel") == "manual" and inside(s["offered_at"]))
    ]
    interactions = [i for i in recording.interactions if (i["vendor"], i["interaction_id"]) in offered]
    if not events and not sessions:
        raise RecordingError(f"{recording.source}: no offer in the period")
    times = [e["at"] for e in events] + [s["offered_at"] for s in sessions]
    ends = times + [t for s in sessions for t in (s.get("closed_at"), s.get("ended_at")) if t is not None]
    first = min(times) if start is None else start
    last = max(ends) if end is None else max(end, max(ends))
    return Recording(recording.source, events, sessions, interactions, first, last)


def decisions_of(interaction: StateDict) -> list[dict[str, Any]]:
    return list(interaction.get("decisions", []))
