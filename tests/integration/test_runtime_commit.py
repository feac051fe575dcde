"""The runtime's bound on a journal commit: its own timer unless the journal bounds the wait.

:class:`~gateway.records.SqliteJournal` fails a commit by itself once ``commit_timeout_s``
is over (one deadline timer for the whole journal), so the runtime sets no timer of its own
around each commit. A journal that does not say so (or allows longer waits than the runtime
does) still gets the runtime's timer: a stuck commit never hangs a request.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway import runtime as runtime_module
from gateway.metrics import Metrics
from gateway.persistence import Changes
from gateway.records import MemoryJournal
from gateway.runtime import NotReady, Runtime
from tests.unit.conftest import make_engine

pytestmark = pytest.mark.asyncio


class StuckJournal(MemoryJournal):
    """Takes commits and never confirms them (after ``start``)."""

    def __init__(self, bound: float | None) -> None:
        super().__init__()
        self.commit_wait_bound_s = bound  # type: ignore[assignment]
        self.stuck = False

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        await super().commit(changes)


@pytest.mark.parametrize("bound", [None, 3600.0], ids=["unbounded", "longer-than-the-runtime"])
async def test_a_stuck_commit_fails_the_call_after_the_runtimes_own_timeout(
    bound: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "COMMIT_TIMEOUT_S", 0.2)
    engine = make_engine()
    journal = StuckJournal(bound)
    await journal.open()
    runtime = Runtime(engine, journal, clock=engine.clock, metrics=Metrics())
    await runtime.start()
    try:
        journal.stuck = True
        with pytest.raises(NotReady, match="journal did not take"):
            await asyncio.wait_for(runtime.act(lambda e: e.set_presence("a1", "not_ready", "lunch")), 10)
        assert not runtime.ready
    finally:
        await runtime.stop()


async def test_a_journal_that_bounds_its_own_wait_gets_no_runtime_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime trusts ``commit_wait_bound_s`` within its own timeout: a commit slower than
    the runtime's timeout (here 0.05 s) but confirmed by the journal succeeds."""
    monkeypatch.setattr(runtime_module, "COMMIT_TIMEOUT_S", 0.05)

    class SlowJournal(MemoryJournal):
        commit_wait_bound_s = 0.0

        async def commit(self, changes: Changes, *, position: int | None = None) -> None:
            await asyncio.sleep(0.2)
            await super().commit(changes)

    engine = make_engine()
    journal = SlowJournal()
    await journal.open()
    runtime = Runtime(engine, journal, clock=engine.clock, metrics=Metrics())
    await runtime.start()
    try:
        await runtime.act(lambda e: e.set_presence("a1", "not_ready", "lunch"))
        assert runtime.ready and engine.agent("a1")["presence"]["state"] == "not_ready"
    finally:
        await runtime.stop()
