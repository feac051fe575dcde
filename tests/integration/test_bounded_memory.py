"""Duplicates over the whole window with bounded memory: the runtime on a real SQLite journal.

The engine keeps only the most recent event ids (``retention.cached_events``, here 100);
for the others the runtime looks the event up in the journal before the engine decides.
Checked: a copy of an event evicted from memory (but inside the window) gets the first
decision, across a restart too; older than the window it is a new event; two concurrent
copies of one new event are decided once, even when the first is evicted from memory
before the second reaches the engine; a closed session that left memory is refused as
closed; the restart loads no more than the caches hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio

from gateway import commands
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.notices import Decision, DecisionKind
from gateway.persistence import StateDict
from gateway.records import SqliteJournal
from gateway.runtime import Runtime

pytestmark = pytest.mark.asyncio

T0 = 1_700_000_000.0
WINDOW = 3_600.0
CACHED = 100


def config() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},  # (the tests hand the runtime its SQLite journal)
            "retention": {"dedup_window_s": WINDOW, "cached_events": CACHED, "cached_finished": 10},
            "capacity_profiles": {"std": {"max_sessions": 1}},
            "queues": [{"name": "support"}],
            "agents": [{"id": "a1", "profile": "std", "queues": ["support"]}],
        }
    )


def offer(event_id: str, interaction: str | None = None) -> Event:
    return Event(
        vendor="crm",
        event_id=event_id,
        type=EventType.OFFER,
        interaction_id=interaction or f"i-{event_id}",
        channel=Channel.CHAT,
        queue="support",
        occurred_at=datetime.fromtimestamp(T0, tz=timezone.utc),
    )


class GatedJournal(SqliteJournal):
    """A real SQLite journal whose ``event()`` lookup of one id, from its ``hold_from``-th
    call on, answers only once ``gate`` is set (what it read is what it read *before*)."""

    def __init__(self, path: Path, event_id: str, hold_from: int) -> None:
        super().__init__(path)
        self.event_id = event_id
        self.hold_from = hold_from
        self.calls = 0
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        row = await super().event(vendor, event_id)
        if event_id == self.event_id:
            self.calls += 1
            if self.calls >= self.hold_from:
                self.waiting.set()
                await self.gate.wait()
        return row


async def start(journal: SqliteJournal, clock: ManualClock) -> Runtime:
    await journal.open()
    runtime = Runtime(Engine(config(), clock=clock), journal, clock=clock, metrics=Metrics())
    await runtime.start()
    return runtime


async def stop(runtime: Runtime) -> None:
    await runtime.stop()
    await runtime.journal.close()


@pytest_asyncio.fixture
async def clock() -> AsyncIterator[ManualClock]:
    yield ManualClock(T0)


async def fill(runtime: Runtime, n: int, prefix: str = "other") -> None:
    """``n`` other events (rejected: the one agent is busy or offline), evicting older ids."""
    for i in range(n):
        decision = await runtime.submit(offer(f"{prefix}-{i}"))
        assert decision.kind is DecisionKind.REJECTED


async def first_offer(runtime: Runtime) -> Decision:
    """``e-first`` assigned to a1, accepted: a1 (one session at most) takes nothing else."""
    await runtime.act(commands.presence("a1", "ready", None, None))
    decision: Decision = await runtime.submit(offer("e-first"))
    assert decision.kind is DecisionKind.ASSIGNED and decision.session_id is not None
    await runtime.act(commands.accept(decision.session_id, None))
    return decision


async def test_a_copy_evicted_from_memory_gets_the_first_decision_also_after_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    db = tmp_path / "gw.db"
    runtime = await start(SqliteJournal(db), clock)
    try:
        first = await first_offer(runtime)
        await fill(runtime, CACHED + 50)
        assert runtime.engine.missing(offer("e-first")).event  # not in memory any more
        clock.advance(WINDOW / 2)
        again = await runtime.submit(offer("e-first"))
        assert again.kind is DecisionKind.DUPLICATE and again.original == first
        await fill(runtime, CACHED + 50, prefix="more")
    finally:
        await stop(runtime)
    clock.advance(WINDOW / 2 - 10)  # still inside the window of the first copy
    runtime = await start(SqliteJournal(db), clock)
    try:
        assert len(runtime.engine._dedup) <= CACHED  # the restart loaded the most recent only
        assert runtime.engine.missing(offer("e-first")).event
        again = await runtime.submit(offer("e-first"))
        assert again.kind is DecisionKind.DUPLICATE and again.original == first
        assert runtime.engine.load_of("a1").sessions == 1  # still the first copy's session only
    finally:
        await stop(runtime)


async def test_an_event_older_than_the_window_is_new(tmp_path: Path, clock: ManualClock) -> None:
    db = tmp_path / "gw.db"
    runtime = await start(SqliteJournal(db), clock)
    try:
        first = await first_offer(runtime)
        assert first.session_id is not None
        await runtime.act(commands.end(first.session_id, None))
        await runtime.act(commands.presence("a1", "not_ready", None, None))
        await fill(runtime, CACHED + 50)
    finally:
        await stop(runtime)
    clock.advance(WINDOW + 1)
    runtime = await start(SqliteJournal(db), clock)
    try:
        await runtime.act(commands.presence("a1", "ready", None, None))
        again = await runtime.submit(offer("e-first"))
        assert again.kind is DecisionKind.ASSIGNED
        assert again.session_id != first.session_id
        row = await runtime.journal.event("crm", "e-first")
        assert row is not None and row["at"] == T0 + WINDOW + 1  # journaled anew
    finally:
        await stop(runtime)


async def test_two_concurrent_copies_of_a_new_event_are_decided_once(tmp_path: Path, clock: ManualClock) -> None:
    """Two copies sent at once: should the second copy look the event up in the journal
    before the first is decided, that lookup's answer ("never seen") is held back until the
    first copy was decided, journaled and pushed out of memory by other events. The
    second copy must still get the first decision (it waits for the first copy instead)."""
    journal = GatedJournal(tmp_path / "gw.db", "e-first", hold_from=2)
    runtime = await start(journal, clock)
    try:
        await fill(runtime, CACHED + 1, "early")  # ids left memory: new ids are looked up
        await runtime.act(commands.presence("a1", "ready", None, None))
        copy_a = asyncio.create_task(runtime.submit(offer("e-first")))
        copy_b = asyncio.create_task(runtime.submit(offer("e-first")))
        first = await asyncio.wait_for(copy_a, 10)
        assert first.kind is DecisionKind.ASSIGNED
        await fill(runtime, CACHED + 50)
        assert runtime.engine.missing(offer("e-first")).event
        journal.gate.set()
        second = await asyncio.wait_for(copy_b, 10)
        assert second.kind is DecisionKind.DUPLICATE and second.original == first
        assert runtime.engine.load_of("a1").sessions == 1
    finally:
        journal.gate.set()
        await stop(runtime)


async def test_a_waiting_copy_is_not_answered_before_the_first_failed_or_succeeded(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A copy that arrives while the first waits for the journal is answered after it (and
    a cancelled first copy lets the second one go on)."""
    journal = GatedJournal(tmp_path / "gw.db", "e-first", hold_from=1)
    runtime = await start(journal, clock)
    try:
        await fill(runtime, CACHED + 1, "early")  # ids left memory: new ids are looked up
        await runtime.act(commands.presence("a1", "ready", None, None))
        copy_a = asyncio.create_task(runtime.submit(offer("e-first")))
        await asyncio.wait_for(journal.waiting.wait(), 10)
        copy_b = asyncio.create_task(runtime.submit(offer("e-first")))
        await asyncio.sleep(0.05)
        assert not copy_b.done()
        copy_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copy_a
        journal.gate.set()
        decision = await asyncio.wait_for(copy_b, 10)
        assert decision.kind is DecisionKind.ASSIGNED  # the first never reached the engine
    finally:
        journal.gate.set()
        await stop(runtime)


async def test_an_action_on_a_closed_session_that_left_memory_is_refused_as_closed(
    tmp_path: Path, clock: ManualClock
) -> None:
    runtime = await start(SqliteJournal(tmp_path / "gw.db"), clock)
    try:
        first = await first_offer(runtime)
        sid = first.session_id
        assert sid is not None
        await runtime.act(commands.end(sid, None))
        for i in range(20):  # more closed sessions than the cache keeps (10)
            decision = await runtime.submit(offer(f"more-{i}"))
            assert decision.session_id is not None
            await runtime.act(commands.accept(decision.session_id, None))
            await runtime.act(commands.end(decision.session_id, None))
        assert sid not in runtime.engine.sessions
        with pytest.raises(GatewayError) as info:
            await runtime.act_on_session(commands.note(sid, "late", None))
        assert info.value.code == "session_not_active"
        with pytest.raises(GatewayError) as unknown:
            await runtime.act_on_session(commands.note("no-such-session", "x", None))
        assert unknown.value.code == "session_not_found"
    finally:
        await stop(runtime)


class CountingJournal(SqliteJournal):
    """Counts the event lookups the runtime makes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups: list[str] = []

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        self.lookups.append(event_id)
        return await super().event(vendor, event_id)


async def test_the_journal_is_asked_only_while_it_may_hold_an_id_memory_forgot(
    tmp_path: Path, clock: ManualClock
) -> None:
    """While every id of the window is in memory a new id is new: no journal read on the
    path of every offer. Once ids left memory, new ids are looked up (and a copy of an
    evicted one gets its first decision); once those are older than the window, no more."""
    journal = CountingJournal(tmp_path / "gw.db")
    runtime = await start(journal, clock)
    try:
        await fill(runtime, CACHED)  # exactly what the cache holds: nothing forgotten
        assert journal.lookups == []
        await fill(runtime, 1, "one-more")  # "other-0" leaves memory (once pruned)
        await fill(runtime, 2, "new")
        assert "new-1" in journal.lookups
        decision = await runtime.submit(offer("other-0"))
        assert decision.kind is DecisionKind.DUPLICATE and decision.original is not None
        clock.advance(WINDOW + 1)  # every id that left memory is outside the window now
        await runtime.act(commands.tick())
        journal.lookups.clear()
        await fill(runtime, 3, "later")
        assert journal.lookups == []
    finally:
        await stop(runtime)


async def test_after_a_restart_the_journal_is_asked_only_if_it_held_more_than_was_loaded(
    tmp_path: Path, clock: ManualClock
) -> None:
    journal = CountingJournal(tmp_path / "gw.db")
    runtime = await start(journal, clock)
    await fill(runtime, CACHED - 1)
    await stop(runtime)
    journal = CountingJournal(tmp_path / "gw.db")
    runtime = await start(journal, clock)
    try:
        assert (await runtime.submit(offer("other-5"))).kind is DecisionKind.DUPLICATE  # from memory
        await fill(runtime, 1, "new")
        assert journal.lookups == []  # all of the window was loaded: a new id is new
    finally:
        await stop(runtime)
    journal = CountingJournal(tmp_path / "gw.db")
    runtime = await start(journal, clock)  # CACHED + 0 ids in the window: some may be left out
    try:
        await fill(runtime, 1, "newer")
        assert journal.lookups == ["newer-0"]
    finally:
        await stop(runtime)
