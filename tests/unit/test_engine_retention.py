"""Bounded memory: what the engine keeps of finished work, and what it takes back.

The engine keeps the open work, the most recent event ids (``retention.cached_events``)
and the most recent finished interactions and closed sessions (``retention.cached_finished``
each); everything else is only in the journal. The runtime reads the journal for what
:meth:`Engine.missing` names and hands it in as :class:`Recalled`; these tests play that
part with the rows the engine itself gave the journal (``take_changes``).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine import Engine, Recalled
from gateway.errors import InvalidState, NotFound
from gateway.notices import DecisionKind
from gateway.persistence import StateDict

from .conftest import advance, event, make_engine, offer

WINDOW = 3_600.0


def journaled(engine: Engine, rows: dict[str, dict[Any, StateDict]]) -> None:
    """Keep what the engine hands to the journal, as a journal would (later rows win)."""
    changes = engine.take_changes()
    for row in changes.events:
        rows["events"][(row["vendor"], row["event_id"])] = row
    for row in changes.interactions:
        rows["interactions"][(row["vendor"], row["interaction_id"])] = row
    for row in changes.sessions:
        rows["sessions"][row["id"]] = row


def new_rows() -> dict[str, dict[Any, StateDict]]:
    return {"events": {}, "interactions": {}, "sessions": {}}


def serve_and_finish(engine: Engine, n: int, rows: dict[str, dict[Any, StateDict]]) -> list[str]:
    """``n`` chats offered, accepted and ended one after the other; their event ids."""
    ids = []
    for i in range(n):
        ev = offer(f"i{i}", event_id=f"e{i}")
        decision = engine.handle_event(ev)
        assert decision.kind is DecisionKind.ASSIGNED and decision.session_id is not None
        engine.accept(decision.session_id)
        engine.end(decision.session_id)
        journaled(engine, rows)
        advance(engine, 1.0)
        ids.append(ev.event_id)
    return ids


def test_finished_work_leaves_memory_beyond_the_cache_sizes() -> None:
    """After 500 finished interactions the engine holds no more than the caches allow
    (without the bound it held all 500 of each for the whole window)."""
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    serve_and_finish(engine, 500, rows)
    engine.tick()
    assert len(engine._dedup) <= 100
    assert len(engine.interactions) <= 10
    assert len(engine.sessions) <= 10
    # the journal has all of them
    assert len(rows["events"]) == 500 == len(rows["sessions"]) == len(rows["interactions"])
    # the most recent ones stay
    assert ("crm", "e499") in engine._dedup and ("crm", "i499") in engine.interactions


def test_open_work_never_leaves_memory() -> None:
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    held = engine.handle_event(offer("held", event_id="e-held"))
    assert held.kind is DecisionKind.ASSIGNED and held.session_id is not None
    engine.accept(held.session_id)
    serve_and_finish(engine, 200, rows)
    assert engine.sessions[held.session_id].state.value == "active"
    assert ("crm", "held") in engine.interactions
    engine.end(held.session_id)  # still workable


def test_a_duplicate_evicted_from_memory_gets_the_first_decision_when_recalled() -> None:
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    first = engine.handle_event(offer("i-first", event_id="e-first"))
    journaled(engine, rows)
    serve_and_finish(engine, 150, rows)
    again = offer("i-first", event_id="e-first")
    missing = engine.missing(again)
    assert missing.event and not missing.interaction  # an offer needs no interaction
    row = rows["events"][("crm", "e-first")]
    decision = engine.handle_event(again, recalled=Recalled(event=row))
    assert decision.kind is DecisionKind.DUPLICATE
    assert decision.original == first
    assert engine.take_changes().events == []  # a duplicate changes nothing
    # and it is known in memory again
    assert not engine.missing(again).event
    assert engine.handle_event(again).original == first


def test_an_event_older_than_the_window_is_new_even_when_recalled() -> None:
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    first = engine.handle_event(offer("i-old", event_id="e-old", agent="a1"))
    assert first.kind is DecisionKind.ASSIGNED and first.session_id is not None
    engine.accept(first.session_id)
    engine.end(first.session_id)
    journaled(engine, rows)
    advance(engine, WINDOW + 1)
    again = offer("i-old", event_id="e-old", agent="a1")
    assert engine.missing(again).event
    decision = engine.handle_event(again, recalled=Recalled(event=rows["events"][("crm", "e-old")]))
    assert decision.kind is DecisionKind.ASSIGNED
    assert decision.session_id != first.session_id
    assert [r["event_id"] for r in engine.take_changes().events] == ["e-old"]  # journaled anew


def test_a_late_vendor_event_on_a_finished_interaction_that_left_memory() -> None:
    """An ``end`` for an interaction the agent ended long ago (but inside the window) is
    accepted as before, once its journaled state is recalled; older than the window it is
    unknown, as before."""
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    serve_and_finish(engine, 50, rows)
    late = event("end", "i0", event_id="late-end")
    missing = engine.missing(late)
    assert missing.event and missing.interaction
    with pytest.raises(NotFound):
        engine.handle_event(late)  # what the engine alone can say
    recalled = Recalled(interaction=rows["interactions"][("crm", "i0")])
    assert engine.handle_event(late, recalled=recalled).kind is DecisionKind.ACCEPTED
    # beyond the window: unknown
    advance(engine, WINDOW)
    old = event("end", "i1", event_id="older-end")
    with pytest.raises(NotFound):
        engine.handle_event(old, recalled=Recalled(interaction=rows["interactions"][("crm", "i1")]))


def test_a_closed_session_that_left_memory_is_refused_as_closed_once_recalled() -> None:
    engine = make_engine(dedup_window_s=WINDOW, cached_events=100, cached_finished=10)
    rows = new_rows()
    serve_and_finish(engine, 50, rows)
    first = next(sid for sid, row in rows["sessions"].items() if row["interaction_id"] == "i0")
    assert first not in engine.sessions
    with pytest.raises(NotFound):
        engine.end(first)
    assert engine.recall_session(rows["sessions"][first])
    assert not engine.recall_session(rows["sessions"][first])  # already back
    with pytest.raises(InvalidState) as info:
        engine.end(first)
    assert info.value.code == "session_not_active"
    assert engine.take_changes().sessions == []  # recalling changes nothing to journal
    # an open session's row is never taken back (open ones are always in memory)
    open_row = dict(rows["sessions"][first], state="active", id="s-other")
    assert not engine.recall_session(open_row)


def test_the_cache_sizes_default_to_the_configuration() -> None:
    engine = make_engine()
    assert (engine.dedup_window_s, engine.cached_events, engine.cached_finished) == (86_400.0, 10_000, 1_000)
