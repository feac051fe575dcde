"""A recorded period, read from a gateway's SQLite journal (or, with less in it, a session report CSV).

The journal's ``events`` table holds every inbound normalized event with the time the
engine took it and its decision; ``sessions`` holds every session (offered, accepted,
ended and closed times, outcome); ``interactions`` each interaction's decisions in order.
That is all a replay needs, except agent presence: the ``agents`` table keeps only each
agent's latest state, so the presence history of the period cannot be rebuilt (see
:mod:`gateway.replay.run` for what the replay assumes instead).

A session report CSV (``GET /v1/reports/sessions?format=csv``) holds only sessions: the
interactions never offered to an agent (rejected, or abandoned while waiting) are not in
it, an interaction that waited seems to arrive when it was first offered, and every end
reads as the agent's. :func:`load_report_csv` rebuilds what it can (one offer per
interaction, at its first session, to its queue or, without one, to its agent); the
journal is the better source.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..events import Channel, Event, EventType
from ..persistence import StateDict
from ..records.report import REPORT_COLUMNS
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


def load(path: str | Path, *, start: float | None = None, end: float | None = None) -> Recording:
    """A journal, or a session report if the file name ends in ``.csv``."""
    if str(path).lower().endswith(".csv"):
        return load_report_csv(path, start=start, end=end)
    return load_journal(path, start=start, end=end)


def _cell(text: str | None) -> str | None:
    """A report cell: empty is None; the ``'`` the report puts before formula-like text is dropped."""
    if not text:
        return None
    return text[1:] if text.startswith("'") and len(text) > 1 and text[1] in "=+-@\t\r" else text


def load_report_csv(path: str | Path, *, start: float | None = None, end: float | None = None) -> Recording:
    """The period [start, end) of a session report CSV (see the module doc for what is lost)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REPORT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RecordingError(f"{path}:1: not a session report: no column {', '.join(missing)}")
    sessions: list[StateDict] = []
    for line, row in enumerate(reader, start=2):
        cells = {k: _cell(v) for k, v in row.items() if k in REPORT_COLUMNS}
        try:
            times = {
                k: parse_time(value) if (value := cells[k]) else None
                for k in ("offered_at", "accepted_at", "ended_at", "closed_at")
            }
            channel = Channel(cells["channel"] or "")
        except ValueError as exc:
            raise RecordingError(f"{path}:{line}: {exc}") from None
        if not cells["session_id"] or not cells["agent_id"] or times["offered_at"] is None:
            raise RecordingError(f"{path}:{line}: session_id, agent_id and offered_at are required")
        if channel is not Channel.MANUAL and not (cells["vendor"] and cells["interaction_id"]):
            raise RecordingError(f"{path}:{line}: a {channel.value} session names its vendor and interaction_id")
        state = (
            "closed"
            if times["closed_at"] is not None
            else "wrap_up"
            if times["ended_at"] is not None
            else "active"
            if times["accepted_at"] is not None
            else "offered"
        )
        sessions.append(
            {
                "id": cells["session_id"],
                "agent_id": cells["agent_id"],
                "channel": channel.value,
                "state": state,
                "vendor": cells["vendor"] if channel is not Channel.MANUAL else None,
                "interaction_id": cells["interaction_id"] if channel is not Channel.MANUAL else None,
                "queue": cells["queue"],
                "outcome": cells["outcome"],
                "transferred_from": cells["transferred_from"],
                "transferred_to": cells["transferred_to"],
                "label": "",
                "record": {"focus_ms": int(cells["focus_ms"] or 0)},
                **times,
            }
        )
    sessions.sort(key=lambda s: s["offered_at"])
    events: list[StateDict] = []
    interactions: dict[tuple[str, str], StateDict] = {}
    for s in sessions:
        if s["vendor"] is None:
            continue
        key = (s["vendor"], s["interaction_id"])
        interaction = interactions.get(key)
        if interaction is None:
            if s["transferred_from"]:
                continue  # its first session is before the report's period
            offer = Event(
                vendor=s["vendor"],
                event_id=f"report-{s['interaction_id']}",
                type=EventType.OFFER,
                interaction_id=s["interaction_id"],
                channel=Channel(s["channel"]),
                queue=s["queue"],
                agent_id=None if s["queue"] else s["agent_id"],
                occurred_at=datetime.fromtimestamp(s["offered_at"], tz=timezone.utc),
            )
            decision = {"kind": "assigned", "agent_id": s["agent_id"], "session_id": s["id"]}
            events.append(
                {
                    "vendor": offer.vendor,
                    "event_id": offer.event_id,
                    "at": s["offered_at"],
                    "type": "offer",
                    "interaction_id": offer.interaction_id,
                    "event": offer.model_dump(mode="json"),
                    "decision": decision,
                }
            )
            interaction = interactions[key] = {
                "vendor": offer.vendor,
                "interaction_id": offer.interaction_id,
                "created_at": s["offered_at"],
                "phase": "done",
                "done_at": None,
                "decisions": [],
            }
        if s["transferred_from"]:
            continue
        interaction["decisions"].append({"kind": "assigned", "agent_id": s["agent_id"], "session_id": s["id"]})
        if s["state"] == "closed":
            interaction["done_at"] = s["ended_at"] if s["ended_at"] is not None else s["closed_at"]
        else:
            interaction["phase"], interaction["done_at"] = "active", None
    if not sessions:
        raise RecordingError(f"{path}: the report has no session")
    return select(Recording(str(path), events, sessions, list(interactions.values())), start=start, end=end)
