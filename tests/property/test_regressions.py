"""Engine bugs found by the state machine (test_engine_stateful.py), kept as plain unit tests."""

from __future__ import annotations

import asyncio
import itertools

from gateway.clock import ManualClock, ms_between
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.records.memory import MemoryJournal

T0 = 1_700_000_000.0


def _engine(*, clock: ManualClock | None = None, fresh: bool = False) -> tuple[Engine, ManualClock]:
    """An engine with agent a1 (ready, its desktop connected); ``fresh``: nothing done yet."""
    config = GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},
            "capacity_profiles": {"std": {"max_sessions": 3}},
            "queues": [{"name": "support"}],
            "agents": [{"id": "a1", "profile": "std", "queues": ["support"]}],
        }
    )
    ids = itertools.count(1)
    clock = clock or ManualClock(T0)
    engine = Engine(config, clock=clock, new_id=lambda: f"s{next(ids)}")
    if fresh:
        return engine, clock
    engine.set_presence("a1", "ready")
    engine.desktop_connected("a1")  # focus time counts only while a desktop is connected
    engine.drain()
    return engine, clock


def test_focus_time_never_exceeds_the_elapsed_time_when_focus_switches_back_and_forth() -> None:
    """Found by the state machine: focus_ms 547 > elapsed 546.

    Each focus interval was rounded to whole ms and the rounded values summed, so a session
    focused for its whole life in several intervals of x.5+ ms gained up to 0.5 ms per
    interval. Two desktop focus messages handled at the same instant (leave, re-enter) are
    enough. The history, shrunk::

        manual session s1 on a2 (created focused), 0.524289 s pass,
        manual session s2 on a2 (takes the focus), focus s1 again at once, 0.020501 s pass
        -> s1: focus_ms 547 > elapsed 546
    """
    engine, clock = _engine()
    s1 = engine.new_session("a1")
    clock.advance(0.524289)
    engine.new_session("a1")  # takes the focus from s1
    engine.focus("a1", s1.id)  # and s1 gets it back at the same instant
    clock.advance(0.020501)
    now = clock.now()
    elapsed = ms_between(s1.offered_at, now)
    assert elapsed is not None
    assert s1.focus_ms(now) <= elapsed
    # many switches with no time between them add nothing
    for _ in range(20):
        clock.advance(0.0016)
        engine.focus("a1", None)
        engine.focus("a1", s1.id)
    now = clock.now()
    assert s1.focus_ms(now) == ms_between(s1.offered_at, now)
    engine.end(s1.id)
    record = engine.session(s1.id).as_dict(clock.now())
    assert record["focus_ms"] <= ms_between(s1.offered_at, s1.closed_at)


def test_a_second_restart_does_not_restart_the_desktop_grace_period() -> None:
    """Found by the state machine's restart rule: a desktop connected at a crash starts its
    grace period at the restore, but that deadline was not journaled, so a second restart
    within it started a new one (and the agent stayed "present" longer than desktop_grace_s)."""
    journal = MemoryJournal()
    asyncio.run(journal.open())
    engine, clock = _engine()  # a1 ready, its desktop connected
    asyncio.run(journal.commit(engine.take_changes()))

    def restart(after: float) -> Engine:
        clock.advance(after)
        fresh, _ = _engine(clock=clock, fresh=True)
        fresh.restore(asyncio.run(journal.load(since=clock.now() - fresh.dedup_window_s)))
        fresh.drain()
        asyncio.run(journal.commit(fresh.take_changes()))
        return fresh

    first = restart(1.0)
    deadline = first.next_deadline()
    assert deadline == clock.now() + 60  # the default desktop_grace_s
    second = restart(30.0)
    assert second.next_deadline() == deadline
    clock.set(deadline)
    second.tick()
    assert second.presence_of("a1").value == "offline"
