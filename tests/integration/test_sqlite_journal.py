"""The journals on real SQLite files: the Journal contract, group commit, failures, crashes.

Contract tests run against :class:`SqliteJournal`, :class:`MemoryJournal` and
:class:`PostgresJournal` (a real PostgreSQL server; tests/peers/postgres.py). The
SQLite-only tests hold the database's write lock from a second, plain ``sqlite3``
connection to stall the writer deterministically (a real lock, as another process would
hold it), and the crash test SIGKILLs a committing child process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError, GatewayError
from gateway.persistence import Changes, Journal
from gateway.records import (
    SCHEMA_VERSION,
    JournalSchemaError,
    JournalUnavailable,
    MemoryJournal,
    SqliteJournal,
    open_journal,
    open_records,
    sqlite_path,
)
from gateway.records import sqlite as sqlite_module

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


# ---------------------------------------------------------------------------- builders


def session(
    sid: str, state: str = "active", offered_at: float = T0, closed_at: float | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": sid,
        "agent_id": "a1",
        "state": state,
        "offered_at": offered_at,
        "closed_at": closed_at,
        "record": {"id": sid, "state": state, "account": {"state": "unidentified", "id": None}},
        **extra,
    }


def interaction(iid: str, phase: str = "offered", done_at: float | None = None, vendor: str = "crm") -> dict[str, Any]:
    return {"vendor": vendor, "interaction_id": iid, "phase": phase, "done_at": done_at, "channel": "chat"}


def event(eid: str, at: float, vendor: str = "crm") -> dict[str, Any]:
    return {
        "vendor": vendor,
        "event_id": eid,
        "at": at,
        "type": "offer",
        "interaction_id": "i-" + eid,
        "event": {"event_id": eid},
        "decision": {"kind": "assigned", "agent_id": "a1"},
    }


def ids(rows: list[dict[str, Any]], key: str = "id") -> list[Any]:
    return [row[key] for row in rows]


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file (autocommit), always closed."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as conn:
        yield conn


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock (as another process could) until the block ends."""
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def assert_not_ready(exc: BaseException, text: str = "") -> None:
    assert isinstance(exc, GatewayError), exc
    assert isinstance(exc, JournalUnavailable)
    assert exc.code == "not_ready"
    assert exc.retryable is True
    assert text in exc.message


# ---------------------------------------------------------------------------- both journals

Factory = Callable[[], Journal]


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def make_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory: each call is a fresh instance on the same storage (a restart).

    ``postgres``: :class:`PostgresJournal` on a new database of a real PostgreSQL server."""
    if request.param == "sqlite":
        return lambda: SqliteJournal(tmp_path / "journal.db")
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return lambda: open_records(url)
    memory = MemoryJournal()
    return lambda: memory


@pytest.mark.asyncio
async def test_upsert_later_row_wins(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(
                sessions=[session("s1", note="v1")],
                interactions=[interaction("i1", "offered")],
                agents=[{"id": "a1", "presence": "ready"}],
                events=[event("e1", T0)],
            )
        )
        await journal.commit(
            Changes(
                # two rows for one key in one commit: the later one wins too
                sessions=[session("s1", "active", note="v2"), session("s1", "wrap_up", note="v3")],
                interactions=[interaction("i1", "active")],
                agents=[{"id": "a1", "presence": "not_ready"}],
                events=[event("e1", T0 + 1)],
            )
        )
        record = await journal.record("s1")
        assert record is not None and record["note"] == "v3" and record["state"] == "wrap_up"
        snap = await journal.load(since=0)
        assert [(s["id"], s["note"]) for s in snap.sessions] == [("s1", "v3")]
        assert [(i["interaction_id"], i["phase"]) for i in snap.interactions] == [("i1", "active")]
        assert snap.agents == [{"id": "a1", "presence": "not_ready"}]
        assert [(e["event_id"], e["at"]) for e in snap.events] == [("e1", T0 + 1)]


@pytest.mark.asyncio
async def test_meta_is_merged_key_by_key(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(Changes(meta={"idle_seq": 1, "other": {"x": [1, 2]}}))
        await journal.commit(Changes(meta={"idle_seq": 7}))
        assert (await journal.load(since=0)).meta == {"idle_seq": 7, "other": {"x": [1, 2]}}


@pytest.mark.asyncio
async def test_load_filters_closed_sessions_done_interactions_and_old_events(make_journal: Factory) -> None:
    since = T0 + 100
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(
                sessions=[
                    session("s-offered", "offered", T0 + 3),
                    session("s-closed", "closed", T0 + 1, closed_at=T0 + 2),
                    session("s-wrap", "wrap_up", T0 + 2),
                    session("s-active", "active", T0 + 1),
                    session("s-closed-late", "closed", since + 5, closed_at=since + 6),
                ],
                interactions=[
                    interaction("i-waiting", "waiting"),
                    interaction("i-done-old", "done", since - 0.001),
                    interaction("i-done-edge", "done", since),
                    interaction("i-done-new", "done", since + 50),
                    interaction("i-active", "active"),
                ],
                events=[event("e-new", since + 10), event("e-old", since - 1), event("e-edge", since)],
            )
        )
        # an older event committed later still comes in time order
        await journal.commit(Changes(events=[event("e-mid", since + 5)]))
        snap = await journal.load(since=since)
    assert ids(snap.sessions) == ["s-active", "s-wrap", "s-offered"]  # oldest offer first
    assert ids(snap.interactions, "interaction_id") == ["i-waiting", "i-done-edge", "i-done-new", "i-active"]
    assert ids(snap.events, "event_id") == ["e-edge", "e-mid", "e-new"]
    assert snap.events[0]["decision"] == {"kind": "assigned", "agent_id": "a1"}


@pytest.mark.asyncio
async def test_a_bounded_load_keeps_open_work_and_only_the_most_recent_done_rows(make_journal: Factory) -> None:
    """``recent``: every open interaction, and only the newest done interactions and events
    inside the window, oldest first (the rest is read one by one)."""
    since = T0 + 100
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(
                interactions=[
                    interaction("i-waiting", "waiting"),
                    *(interaction(f"i-done-{n}", "done", since + n) for n in (4, 1, 3, 2)),
                    interaction("i-done-old", "done", since - 1),
                    interaction("i-active", "active"),
                ],
                events=[event(f"e{n}", since + n) for n in (3, 1, 4, 2)] + [event("e-old", since - 1)],
            )
        )
        snap = await journal.load(since=since, recent=2)
        assert ids(snap.interactions, "interaction_id") == ["i-waiting", "i-active", "i-done-3", "i-done-4"]
        assert ids(snap.events, "event_id") == ["e3", "e4"]
        nothing_done = await journal.load(since=since, recent=0)
        assert ids(nothing_done.interactions, "interaction_id") == ["i-waiting", "i-active"]
        assert nothing_done.events == []
        everything = await journal.load(since=since, recent=100)
        assert ids(everything.events, "event_id") == ["e1", "e2", "e3", "e4"]
        with pytest.raises(ValueError, match="recent"):
            await journal.load(since=since, recent=-1)


@pytest.mark.asyncio
async def test_one_event_or_interaction_by_its_key_also_after_a_restart(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(
                interactions=[interaction("i1", "done", T0 + 1), interaction("i1", "done", T0 + 2, vendor="other")],
                events=[event("e1", T0 + 1), event("e1", T0 + 9, vendor="other")],
            )
        )
    async with make_journal() as journal:  # type: ignore[attr-defined]
        first = await journal.event("crm", "e1")
        assert first is not None and first["at"] == T0 + 1
        assert first["decision"] == {"kind": "assigned", "agent_id": "a1"}
        other = await journal.event("other", "e1")
        assert other is not None and other["at"] == T0 + 9
        assert await journal.event("crm", "e2") is None
        assert await journal.event("nobody", "e1") is None
        found = await journal.interaction("crm", "i1")
        assert found is not None and found["done_at"] == T0 + 1
        assert await journal.interaction("crm", "i2") is None


@pytest.mark.asyncio
async def test_records_by_offered_at_range_oldest_first(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(sessions=[session(f"s{i}", "closed", T0 + i, closed_at=T0 + i + 0.5) for i in (5, 1, 3, 2, 4)])
        )
        await journal.commit(Changes(sessions=[session("s0", "active", T0)]))
        assert ids(await journal.records(start=None, end=None)) == ["s0", "s1", "s2", "s3", "s4", "s5"]
        assert ids(await journal.records(start=T0 + 1, end=T0 + 4)) == ["s1", "s2", "s3"]  # [start, end)
        assert ids(await journal.records(start=T0 + 3, end=None)) == ["s3", "s4", "s5"]
        assert ids(await journal.records(start=None, end=T0 + 2)) == ["s0", "s1"]
        assert ids(await journal.records(start=None, end=None, limit=2)) == ["s0", "s1"]
        assert await journal.records(start=None, end=None, limit=0) == []
        assert await journal.records(start=T0 + 9, end=T0 + 10) == []
        with pytest.raises(ValueError):
            await journal.records(start=None, end=None, limit=-1)
        record = await journal.record("s3")
        assert record is not None and record["record"]["id"] == "s3"
        assert await journal.record("nope") is None


@pytest.mark.asyncio
async def test_data_survives_close_and_reopen(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        await journal.commit(
            Changes(
                sessions=[session("s1", "active", notes=[{"text": "ünïcode ✓", "at": T0}])],
                agents=[{"id": "a1", "idle_since": [T0, 3]}],
                meta={"idle_seq": 3},
            )
        )
    journal = make_journal()
    assert not await journal.ping()
    async with journal:  # type: ignore[attr-defined]
        assert await journal.ping()
        snap = await journal.load(since=0)
        assert snap.sessions[0]["notes"] == [{"text": "ünïcode ✓", "at": T0}]
        assert snap.agents == [{"id": "a1", "idle_since": [T0, 3]}]
        assert snap.meta == {"idle_seq": 3}
    assert not await journal.ping()


@pytest.mark.asyncio
async def test_stored_rows_are_snapshots_not_references(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        row = session("s1", note="before")
        await journal.commit(Changes(sessions=[row]))
        row["note"] = "mutated after commit"
        got = await journal.record("s1")
        assert got is not None and got["note"] == "before"
        got["note"] = "mutated by reader"
        again = await journal.record("s1")
        assert again is not None and again["note"] == "before"


@pytest.mark.asyncio
async def test_unusable_state_dicts_fail_their_caller_only(make_journal: Factory) -> None:
    async with make_journal() as journal:  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="'id'"):
            await journal.commit(Changes(sessions=[{"state": "active"}]))
        with pytest.raises(ValueError, match="offered_at"):
            await journal.commit(Changes(sessions=[session("s1", offered_at="2024-01-01")]))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'at'"):
            await journal.commit(Changes(events=[{"vendor": "crm", "event_id": "e1"}]))
        with pytest.raises(TypeError):
            await journal.commit(Changes(agents=[{"id": "a1", "x": object()}]))
        with pytest.raises(ValueError):
            await journal.commit(Changes(agents=[{"id": "a1", "x": float("nan")}]))
        await journal.commit(Changes())  # nothing: fine
        await journal.commit(Changes(sessions=[session("ok")]))
        assert ids((await journal.load(since=0)).sessions) == ["ok"]


@pytest.mark.asyncio
async def test_a_journal_that_is_not_open_is_not_ready(make_journal: Factory) -> None:
    journal = make_journal()
    with pytest.raises(JournalUnavailable) as info:
        await journal.commit(Changes(sessions=[session("s1")]))
    assert_not_ready(info.value, "not open")
    with pytest.raises(JournalUnavailable):
        await journal.load(since=0)
    with pytest.raises(JournalUnavailable):
        await journal.record("s1")
    assert not await journal.ping()
    await journal.open()
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(JournalUnavailable):
        await journal.commit(Changes(sessions=[session("s1")]))


# ---------------------------------------------------------------------------- SQLite file


@pytest.mark.asyncio
async def test_creates_directories_file_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "gw" / "journal.db"
    journal = SqliteJournal(path)
    await journal.open()
    await journal.open()  # idempotent
    try:
        assert await journal.ping()
    finally:
        await journal.close()
    for directory in (tmp_path / "var", tmp_path / "var" / "lib", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) & ~0o750 == 0, directory  # umask may remove more
    assert stat.S_IMODE(path.stat().st_mode) & ~0o640 == 0
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"sessions", "interactions", "agents", "events", "meta"}
        indexes = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }
        assert {"sessions_state", "sessions_offered_at", "events_at"} <= indexes
        columns = [r[1] for r in conn.execute("PRAGMA table_info(sessions)")]
        assert columns == ["id", "agent_id", "state", "offered_at", "closed_at", "data"]


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path):
        pass
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    journal = SqliteJournal(path)
    with pytest.raises(JournalSchemaError, match=r"schema version 2, newer than this cti-gateway supports \(1\)"):
        await journal.open()
    assert not await journal.ping()


@pytest.mark.asyncio
async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    with pytest.raises(JournalSchemaError, match="not a cti-gateway journal"):
        await SqliteJournal(path).open()


@pytest.mark.asyncio
async def test_synchronous_mode_is_applied(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteJournal(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
    for mode, level in (("NORMAL", 1), ("FULL", 2)):
        async with SqliteJournal(tmp_path / "j.db", synchronous=mode) as journal:  # type: ignore[arg-type]
            assert journal._writer_conn is not None
            assert await sqlite_module._scalar(journal._writer_conn, "PRAGMA synchronous") == level


@pytest.mark.asyncio
async def test_start_up_queries_use_the_indexes(tmp_path: Path) -> None:
    """The tables grow forever: load() must search indexes, not scan sessions/interactions/events."""
    path = tmp_path / "journal.db"
    async with SqliteJournal(path):
        pass
    with raw(path) as conn:
        for sql, params in (
            (sqlite_module._LOAD_SESSIONS, ()),
            (sqlite_module._LOAD_INTERACTIONS, (T0,)),
            (sqlite_module._LOAD_EVENTS, (T0,)),
        ):
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), plan
            assert "USING INDEX" in plan, plan
        # the bounded loads scan only their own (bounded) subquery; the lookups are one search
        # (the newest done rows by the index on their time, not all done rows sorted)
        for sql, params, search in (
            (sqlite_module._LOAD_OPEN_INTERACTIONS, (), "SEARCH interactions USING INDEX interactions_phase"),
            (sqlite_module._LOAD_RECENT_DONE, (T0, 10), "SEARCH interactions USING INDEX interactions_done_at"),
            (sqlite_module._LOAD_RECENT_EVENTS, (T0, 10), "SEARCH events USING INDEX events_at"),
            (sqlite_module._EVENT, ("crm", "e1"), "SEARCH events USING INDEX sqlite_autoindex_events_1"),
            (sqlite_module._INTERACTION, ("crm", "i1"), "SEARCH interactions USING INDEX sqlite_autoindex_inter"),
        ):
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "SCAN events" not in plan and "SCAN interactions" not in plan, plan
            assert search in plan, plan


@pytest.mark.asyncio
async def test_group_commit_many_commits_few_transactions_resolved_in_order(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "journal.db") as journal:
        before = journal.stats.transactions
        resolved: list[int] = []

        async def committer(i: int) -> None:
            # every committer also rewrites the shared row "hot": the last one must win
            await journal.commit(Changes(sessions=[session(f"s{i}"), session("hot", n=i)], meta={"last": i}))
            resolved.append(i)

        n = 300
        await asyncio.gather(*(committer(i) for i in range(n)))
        transactions = journal.stats.transactions - before
        assert 1 <= transactions < n
        assert journal.stats.commits == n
        assert resolved == list(range(n))
        hot = await journal.record("hot")
        assert hot is not None and hot["n"] == n - 1
        assert (await journal.load(since=0)).meta == {"last": n - 1}
        assert len(await journal.records(start=None, end=None)) == n + 1


@pytest.mark.asyncio
async def test_commits_queued_during_a_transaction_share_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path) as journal:
        base = journal.stats.transactions
        with write_lock(path):
            first = asyncio.create_task(journal.commit(Changes(sessions=[session("first")])))
            await settle(lambda: journal._pending == 1 and not journal._queue)  # the writer holds it
            rest = [asyncio.create_task(journal.commit(Changes(sessions=[session(f"s{i}")]))) for i in range(50)]
            await settle(lambda: len(journal._queue) == 50)
            assert not first.done()
        await asyncio.gather(first, *rest)
        assert journal.stats.transactions - base == 2
        assert journal.stats.largest_batch == 50


@pytest.mark.asyncio
async def test_a_failed_transaction_fails_every_waiter_and_the_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path) as journal:
        with raw(path) as conn:  # a real SQLite error for one row
            conn.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON sessions WHEN NEW.id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
            )
        batch = [session("b0"), session("b1"), session("poison"), session("b3"), session("b4")]
        results = await asyncio.gather(
            *(journal.commit(Changes(sessions=[row], meta={"k": row["id"]})) for row in batch), return_exceptions=True
        )
        assert len(results) == 5
        for result in results:
            assert isinstance(result, BaseException)
            assert_not_ready(result, "poisoned row")
            assert isinstance(result.__cause__, sqlite3.Error)
        assert len({id(r) for r in results}) == 5  # one exception object per waiter
        assert journal.stats.failed_transactions == 1 and journal.stats.failed_commits == 5
        # the transaction was atomic: nothing of the batch is there
        assert await journal.records(start=None, end=None) == []
        assert (await journal.load(since=0)).meta == {}
        # the writer keeps running
        await journal.commit(Changes(sessions=[session("after")]))
        assert ids(await journal.records(start=None, end=None)) == ["after"]
        assert await journal.ping()


@pytest.mark.asyncio
async def test_a_locked_database_fails_the_commit_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, busy_timeout_s=0.05) as journal:
        with write_lock(path):
            with pytest.raises(JournalUnavailable) as info:
                await journal.commit(Changes(sessions=[session("s1")]))
            assert_not_ready(info.value, "locked")
        await journal.commit(Changes(sessions=[session("s2")]))
        assert ids(await journal.records(start=None, end=None)) == ["s2"]


@pytest.mark.asyncio
async def test_the_queue_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, max_pending=5) as journal:
        with write_lock(path):
            waiting = [asyncio.create_task(journal.commit(Changes(sessions=[session(f"s{i}")]))) for i in range(5)]
            await settle(lambda: journal._pending == 5)
            started = time.monotonic()
            with pytest.raises(JournalUnavailable) as info:
                await journal.commit(Changes(sessions=[session("one-too-many")]))
            assert time.monotonic() - started < 0.5  # at once, not after a wait
            assert_not_ready(info.value, "overloaded")
        await asyncio.gather(*waiting)
        assert journal._pending == 0
        assert len(await journal.records(start=None, end=None)) == 5
        await journal.commit(Changes(sessions=[session("later")]))  # room again


@pytest.mark.asyncio
async def test_a_commit_wait_times_out_but_the_change_is_still_written(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, commit_timeout_s=0.1, busy_timeout_s=10) as journal:
        with write_lock(path):
            started = time.monotonic()
            with pytest.raises(JournalUnavailable) as info:
                await journal.commit(Changes(sessions=[session("slow")]))
            assert 0.09 <= time.monotonic() - started < 2
            assert_not_ready(info.value, "not confirmed")
    async with SqliteJournal(path) as journal:
        assert ids(await journal.records(start=None, end=None)) == ["slow"]


@pytest.mark.asyncio
async def test_each_commit_waits_its_own_timeout_from_when_it_was_made(tmp_path: Path) -> None:
    """One deadline timer serves every commit: the older commit's wait ends first, the newer
    one keeps its own time (and succeeds once the database is free again)."""
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, commit_timeout_s=2.0, busy_timeout_s=30) as journal:
        with write_lock(path):
            older = asyncio.create_task(journal.commit(Changes(sessions=[session("older")])))
            await asyncio.sleep(1.5)
            newer = asyncio.create_task(journal.commit(Changes(sessions=[session("newer")])))
            with pytest.raises(JournalUnavailable) as info:
                await older
            assert_not_ready(info.value, "not confirmed")
            assert not newer.done()  # its own wait runs until 1.5 s later
        await newer
        assert sorted(ids(await journal.records(start=None, end=None))) == ["newer", "older"]


@pytest.mark.asyncio
async def test_a_cancelled_commit_is_still_written_and_others_are_not_disturbed(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, busy_timeout_s=30) as journal:
        with write_lock(path):
            first = asyncio.create_task(journal.commit(Changes(sessions=[session("first")])))
            await settle(lambda: journal._pending == 1 and not journal._queue)  # being written
            gone = asyncio.create_task(journal.commit(Changes(sessions=[session("gone")])))
            last = asyncio.create_task(journal.commit(Changes(sessions=[session("last")])))
            await settle(lambda: len(journal._queue) == 2)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
        await asyncio.gather(first, last)
        assert ids(await journal.records(start=None, end=None)) == ["first", "gone", "last"]
        assert journal._pending == 0


@pytest.mark.asyncio
async def test_ping_fails_while_the_writer_is_stuck(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, busy_timeout_s=10, ping_timeout_s=0.1) as journal:
        assert await journal.ping()
        with write_lock(path):
            stuck = asyncio.create_task(journal.commit(Changes(sessions=[session("s1")])))
            await settle(lambda: journal._pending == 1 and not journal._queue)
            assert not await journal.ping()
        await stuck
        assert await journal.ping()


@pytest.mark.asyncio
async def test_inline_writes_leave_checkpoints_to_the_read_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With synchronous=NORMAL the transactions run on the loop's thread and the writer's own
    automatic checkpoint is off: the journal's checkpoints (on the read connection's thread)
    copy the WAL into the database file, else the WAL would only grow."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_INTERVAL_S", 0.0)
    path = tmp_path / "journal.db"
    async with SqliteJournal(path) as journal:
        assert journal.inline
        empty = path.stat().st_size
        for i in range(200):
            await journal.commit(Changes(sessions=[session(f"s{i}", pad="x" * 2000)]))
        while journal._checkpoint is not None and not journal._checkpoint.done():
            await asyncio.sleep(0.01)
        await journal.commit(Changes(sessions=[session("last")]))  # starts one more
        while journal._checkpoint is not None and not journal._checkpoint.done():
            await asyncio.sleep(0.01)
        assert path.stat().st_size > empty + 200 * 2000 // 2  # the rows are in the file itself
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 201
    async with SqliteJournal(path, synchronous="FULL") as journal:  # fsync per commit: on its thread
        assert not journal.inline
        await journal.commit(Changes(sessions=[session("full")]))
        assert len(await journal.records(start=None, end=None)) == 202


@pytest.mark.asyncio
async def test_close_writes_what_is_queued_and_then_refuses(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.open()
    tasks = [asyncio.create_task(journal.commit(Changes(sessions=[session(f"s{i}")]))) for i in range(100)]
    await asyncio.sleep(0)  # they are queued
    await journal.close()
    assert all(t.done() and t.exception() is None for t in tasks)
    with pytest.raises(JournalUnavailable):
        await journal.commit(Changes(sessions=[session("late")]))
    await journal.open()  # may be reopened
    try:
        assert len(await journal.records(start=None, end=None)) == 100
    finally:
        await journal.close()


@pytest.mark.asyncio
async def test_reads_never_see_an_uncommitted_transaction(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, busy_timeout_s=10) as journal:
        await journal.commit(Changes(sessions=[session("s1", note="old")]))
        with write_lock(path):
            pending = asyncio.create_task(journal.commit(Changes(sessions=[session("s1", note="new")])))
            await settle(lambda: journal._pending == 1 and not journal._queue)
            record = await journal.record("s1")  # the reader does not wait for the writer
            assert record is not None and record["note"] == "old"
        await pending
        record = await journal.record("s1")
        assert record is not None and record["note"] == "new"


CRASH_CHILD = r"""
import asyncio, sys
from gateway.persistence import Changes
from gateway.records import SqliteJournal

async def main(path, total, width):
    journal = SqliteJournal(path)
    await journal.open()

    async def worker(w):
        for b in range(w, total, width):
            await journal.commit(Changes(
                sessions=[{"id": f"s{b}", "agent_id": "a1", "state": "active", "offered_at": float(b),
                           "record": {"id": f"s{b}", "pad": "x" * 200}}],
                events=[{"vendor": "v", "event_id": f"e{b}", "at": float(b)}],
                meta={f"w{w}": b},
            ))
            print(b, flush=True)  # acknowledged

    await asyncio.gather(*(worker(w) for w in range(width)))
    print("done", flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def commit_then_sigkill(path: Path, width: int, kill_after: int) -> tuple[list[int], int, str, str]:
    """Run the committing child, SIGKILL it after ``kill_after`` acks; every ack it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acked: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(path), "10000000", str(width)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    ) as child:
        assert child.stdout is not None
        while len(acked) < kill_after:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        child.send_signal(signal.SIGKILL)  # mid-way: the child is committing as fast as it can
        rest, errors = child.communicate(timeout=30)
    lines = rest.split("\n")
    acked += [int(line) for line in lines[:-1] if line != "done"]  # a last line without "\n" is no ack
    return acked, child.returncode, rest, errors


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "crash" / "journal.db"
    width = 8
    acked, returncode, rest, errors = await asyncio.to_thread(commit_then_sigkill, path, width, 1500)
    assert len(acked) >= 1500, errors
    assert returncode == -signal.SIGKILL
    assert "done" not in rest

    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    async with SqliteJournal(path) as journal:
        stored = {r["id"] for r in await journal.records(start=None, end=None)}
        snap = await journal.load(since=0)
    missing = {f"s{b}" for b in acked} - stored
    assert not missing, f"{len(missing)} acknowledged commits lost, e.g. {sorted(missing)[:5]}"
    events = {e["event_id"] for e in snap.events}
    assert {f"e{b}" for b in acked} <= events
    for w in range(width):
        mine = [b for b in acked if b % width == w]
        if mine:
            assert snap.meta[f"w{w}"] >= max(mine)


# ---------------------------------------------------------------------------- open_journal


def test_relative_sqlite_url_is_relative_to_base_dir(tmp_path: Path) -> None:
    journal = open_journal("sqlite:///data/gateway.db", base_dir=tmp_path)
    assert isinstance(journal, SqliteJournal)
    assert journal.path == tmp_path / "data" / "gateway.db"
    assert journal.synchronous == "NORMAL"


def test_relative_sqlite_url_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    journal = open_journal("sqlite:///data/gateway.db")
    assert isinstance(journal, SqliteJournal)
    assert journal.path == tmp_path / "data" / "gateway.db"
    monkeypatch.chdir("/")
    assert journal.path == tmp_path / "data" / "gateway.db"  # resolved once


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    target = tmp_path / "abs dir" / "x.db"
    journal = open_journal("sqlite:///" + str(target), base_dir=Path("/elsewhere"))
    assert isinstance(journal, SqliteJournal) and journal.path == target
    assert open_journal("sqlite:////var/lib/cti-gateway/gateway.db").path == Path("/var/lib/cti-gateway/gateway.db")  # type: ignore[attr-defined]
    escaped = open_journal("sqlite:///" + str(tmp_path / "abs%20dir" / "x.db"))
    assert escaped.path == target  # type: ignore[attr-defined]


def test_sqlite_url_synchronous_option(tmp_path: Path) -> None:
    journal = open_journal("sqlite:///g.db?synchronous=full", base_dir=tmp_path)
    assert isinstance(journal, SqliteJournal) and journal.synchronous == "FULL"
    assert sqlite_path("sqlite:///g.db?synchronous=normal", base_dir=tmp_path) == (
        tmp_path / "g.db",
        {"synchronous": "normal"},
    )


def test_memory_url() -> None:
    assert isinstance(open_journal("memory://"), MemoryJournal)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/0", "redis:// is the shared log of several instances, not a journal"),
        ("rediss://cache:6380/0", "rediss:// is the shared log of several instances, not a journal"),
        ("postgres://db/x", "unsupported store scheme postgres://"),
        ("sqlite://host/gateway.db", "has no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///data/", "names no file"),
        ("sqlite:///:memory:", "use memory://"),
        ("sqlite:///g.db?journal=off", "unknown sqlite option"),
        ("sqlite:///g.db?synchronous=off", "synchronous must be normal or full"),
        ("memory://somewhere", "takes no path"),
        ("data/gateway.db", "expected a URL"),
    ],
)
def test_unusable_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_journal(url)
    assert info.value.problems[0].startswith("store.url: ")
    assert message in info.value.message
