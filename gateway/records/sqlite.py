"""The embedded journal: one SQLite file in WAL mode, written by group commit.

Durability
----------
``commit()`` returns once its transaction is committed. The file runs in WAL mode with
``synchronous=NORMAL`` by default: a committed transaction is in the WAL file (handed to
the operating system) before ``commit()`` returns, so it survives a crash *of the gateway
process* (an exception, ``kill -9``, the OOM killer): that is the promise we make, and what
``tests/integration/test_sqlite_journal.py`` checks with SIGKILL.

The trade-off: with ``NORMAL`` the WAL is fsynced only at checkpoints, so a *power loss or
kernel crash* may lose the transactions committed since the last checkpoint (the file stays
consistent, never corrupt; it just rolls back to an earlier commit). Pass
``synchronous="FULL"`` to fsync the WAL on every transaction, which makes acknowledged
changes survive power loss too; group commit amortizes that fsync over every commit waiting
at the time, see ``tests/bench/bench_journal.py`` for the cost on a given machine.

Group commit
------------
Callers of :meth:`SqliteJournal.commit` put their encoded changes in a queue and wait on a
future. One writer task (:class:`gateway.records._common.GroupCommit`, shared with the
PostgreSQL records store) takes *everything* queued at once, writes it in ONE transaction
(upserts, the later row for a key winning), commits, and then resolves the futures in queue
order. If the transaction fails, each of those futures gets a :class:`JournalUnavailable`
(``not_ready``, retryable) and nothing of the batch is written; so does every commit queued
behind it at that moment (it was made after the failed ones and may build on them). The
writer goes on with later commits. The queue is bounded (``max_pending`` commits not yet resolved): beyond it,
``commit()`` fails at once with ``not_ready`` rather than piling up memory. Each wait is
bounded by ``commit_timeout_s``; a commit that timed out stays queued and may still be
written (the caller only learns "not acknowledged", as with any timeout).

Where the write happens
-----------------------
With ``synchronous=NORMAL`` in WAL mode a transaction is a few page writes handed to the
operating system, no fsync: shorter than handing it to another thread and back (a thread
wake-up, a GIL hand-over and a loop wake-up per batch, ~10% of the gateway's CPU per message
under load). So the writer runs the transaction on the event loop's thread, with a busy
timeout of zero: when another connection holds the write lock (a backup, a tool, the
``sqlite3`` shell) the statement fails at once with ``SQLITE_BUSY`` before anything was
written, and the same transaction is run again on the connection's thread, which waits for
the lock up to ``busy_timeout_s`` as before (while it waits, ``ping()`` fails and the loop
goes on serving). The checkpoints that copy the WAL into the database (each with an fsync)
run on the read connection's thread, at most once a second after a write
(:data:`CHECKPOINT_INTERVAL_S`), so the loop never waits for them; the writer's own automatic
checkpoint is off. With ``synchronous=FULL`` (an fsync per transaction), or where WAL mode is
unavailable, everything runs on the connection's thread as before.

Reads use a second, read-only connection, so that they never see a transaction the writer
has not committed yet and (thanks to WAL) never wait for it.

Retention: session records, interactions and events are kept forever (the records are the
reporting data); the gateway keeps only open work and a bounded set of recent rows in
memory and reads the others here one by one (``event``, ``interaction``, ``record``: each
a primary-key lookup). There is no pruning; archive or delete rows offline if a site needs to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Literal, cast

import aiosqlite

from ..persistence import Changes, Snapshot, StateDict
from ._common import (
    GroupCommit,
    GroupCommitted,
    JournalSchemaError,
    JournalStats,
    JournalUnavailable,
    Merged,
    check_range,
    loads,
    prepare,
)
from .lock import JournalLock

log = logging.getLogger(__name__)

#: Version of the schema below (stored as the file's ``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a cti-gateway journal ("CTIG").
APPLICATION_ID = 0x43544947

_SCHEMA = (
    # The JSON columns are declared TEXT on purpose: a column declared "JSON" would get
    # NUMERIC affinity, and SQLite would turn a JSON text such as "5" into the integer 5.
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY NOT NULL,
        agent_id TEXT,
        state TEXT NOT NULL,
        offered_at REAL,
        closed_at REAL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_state ON sessions (state)",
    "CREATE INDEX IF NOT EXISTS sessions_offered_at ON sessions (offered_at)",
    """CREATE TABLE IF NOT EXISTS interactions (
        vendor TEXT NOT NULL,
        interaction_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        done_at REAL,
        data TEXT NOT NULL,
        PRIMARY KEY (vendor, interaction_id)
    )""",
    "CREATE INDEX IF NOT EXISTS interactions_phase ON interactions (phase)",
    "CREATE INDEX IF NOT EXISTS interactions_done_at ON interactions (done_at)",
    """CREATE TABLE IF NOT EXISTS agents (
        id TEXT PRIMARY KEY NOT NULL,
        data TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        vendor TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at REAL NOT NULL,
        type TEXT,
        interaction_id TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (vendor, event_id)
    )""",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at)",
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    )""",
)

_UPSERT_SESSIONS = """
INSERT INTO sessions (id, agent_id, state, offered_at, closed_at, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, state = excluded.state,
    offered_at = excluded.offered_at, closed_at = excluded.closed_at, data = excluded.data
"""
_UPSERT_INTERACTIONS = """
INSERT INTO interactions (vendor, interaction_id, phase, done_at, data) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (vendor, interaction_id) DO UPDATE SET phase = excluded.phase,
    done_at = excluded.done_at, data = excluded.data
"""
_UPSERT_AGENTS = """
INSERT INTO agents (id, data) VALUES (?, ?)
ON CONFLICT (id) DO UPDATE SET data = excluded.data
"""
_UPSERT_EVENTS = """
INSERT INTO events (vendor, event_id, at, type, interaction_id, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (vendor, event_id) DO UPDATE SET at = excluded.at, type = excluded.type,
    interaction_id = excluded.interaction_id, data = excluded.data
"""
_UPSERT_META = """
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""

# The tables grow forever, so the start-up queries must not scan them: "state != 'closed'"
# is written as two ranges so that SQLite searches the index on state (MULTI-INDEX OR), and
# the unary "+" in ORDER BY keeps the planner from scanning the whole table in index order
# instead (checked with EXPLAIN QUERY PLAN in the tests).
_LOAD_SESSIONS = "SELECT data FROM sessions WHERE state < 'closed' OR state > 'closed' ORDER BY +offered_at, +rowid"
_LOAD_INTERACTIONS = (
    "SELECT data FROM interactions WHERE phase < 'done' OR phase > 'done' OR done_at >= ? ORDER BY +rowid"
)
# bounded loads (``recent``): the open interactions, then the most recent done ones (and
# events) by the index on their time, oldest first
_LOAD_OPEN_INTERACTIONS = "SELECT data FROM interactions WHERE phase < 'done' OR phase > 'done' ORDER BY +rowid"
_LOAD_RECENT_DONE = (
    "SELECT data FROM (SELECT data, done_at, rowid AS r FROM interactions WHERE done_at >= ? AND +phase = 'done' "
    "ORDER BY done_at DESC LIMIT ?) ORDER BY done_at, r"
)
_LOAD_AGENTS = "SELECT data FROM agents ORDER BY rowid"
_LOAD_EVENTS = "SELECT data FROM events WHERE at >= ? ORDER BY at, rowid"
_LOAD_RECENT_EVENTS = (
    "SELECT data FROM (SELECT data, at, rowid AS r FROM events WHERE at >= ? ORDER BY at DESC LIMIT ?) ORDER BY at, r"
)
# one row by its primary key
_EVENT = "SELECT data FROM events WHERE vendor = ? AND event_id = ?"
_INTERACTION = "SELECT data FROM interactions WHERE vendor = ? AND interaction_id = ?"
_LOAD_META = "SELECT key, value FROM meta"


#: Shortest time between two checkpoints (each copies what the WAL holds into the database).
CHECKPOINT_INTERVAL_S = 1.0


def _decode_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Any:
    """Row factory of the read connection: the JSON column (last) decoded, in the db thread."""
    if len(row) == 1:
        return loads(row[0])
    return (*row[:-1], loads(row[-1]))


__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "JournalStats", "SqliteJournal"]


class SqliteJournal(GroupCommitted):
    """The :class:`gateway.persistence.Journal` on one SQLite file (see the module doc).

    ``synchronous``: ``"NORMAL"`` (default; durable against a process crash) or ``"FULL"``
    (also against power loss). ``busy_timeout_s``: how long a statement waits for a lock held
    by another connection. ``commit_timeout_s``: how long ``commit()`` waits for its
    transaction before raising ``not_ready``. ``max_pending``: commits queued or in flight
    beyond which ``commit()`` raises ``not_ready`` at once. ``read_timeout_s`` bounds
    ``ping()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 5.0,
        commit_timeout_s: float = 10.0,
        max_pending: int = 10_000,
        ping_timeout_s: float = 2.0,
    ) -> None:
        sync = synchronous.upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = sync
        self.busy_timeout_s = busy_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.stats = JournalStats()
        self._group = GroupCommit(
            self._write,
            what="journal",
            stats=self.stats,
            max_pending=max_pending,
            commit_timeout_s=commit_timeout_s,
            on_failure=_log_failure,
        )
        #: the single-writer guard (``gateway.db.lock``), held while the journal is open
        self._lock = JournalLock(self.path)
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._read_lock: asyncio.Lock | None = None
        self._life_lock: asyncio.Lock | None = None
        #: transactions run on the loop's thread (see "Where the write happens")
        self.inline = False
        self._checkpoint: asyncio.Task[None] | None = None
        #: the loop's time after which a write starts a checkpoint (None: one is due at once)
        self._checkpoint_after: float | None = None

    @property
    def commit_wait_bound_s(self) -> float:
        """``commit()`` waits at most this long (see :class:`gateway.persistence.Journal`)."""
        return self._group.commit_timeout_s

    # the writer's state, as the tests observe it
    @property
    def _pending(self) -> int:
        return self._group.pending

    @property
    def _queue(self) -> Any:
        return self._group.queue

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self.path)!r}, state={self._state})"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the directory, the file and the schema if needed; start the writer. Idempotent."""
        if self._life_lock is None:
            self._life_lock = asyncio.Lock()
        async with self._life_lock:
            if self._state == "open":
                return
            self._prepare_directory()
            self._lock.acquire()  # one gateway per journal: before the database is touched
            writer = reader = None
            try:
                self._prepare_file()
                # the writer's connection is used from the loop's thread too (inline writes)
                writer = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
                wal = await self._configure(writer)
                await self._migrate(writer)
                inline = wal and self.synchronous == "NORMAL"
                if inline:
                    # a lock held elsewhere fails an inline write at once (it is then run on
                    # the thread, waiting); checkpoints are ours, off the loop's thread
                    await writer.execute("PRAGMA busy_timeout = 0")
                    await writer.execute("PRAGMA wal_autocheckpoint = 0")
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                await reader.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
                await reader.execute("PRAGMA query_only = ON")
                reader.row_factory = _decode_row  # type: ignore[assignment]
            except BaseException as exc:
                for conn in (reader, writer):
                    if conn is not None:
                        await conn.close()
                self._lock.release()
                if isinstance(exc, sqlite3.Error):
                    raise JournalUnavailable(f"cannot open journal {self.path}: {exc}") from exc
                raise
            self._writer_conn, self._reader_conn = writer, reader
            self._read_lock = asyncio.Lock()
            self.inline = inline
            self._checkpoint = None
            self._checkpoint_after = None
            self._group.start(name=f"journal-writer:{self.path.name}")
            self._state = "open"

    async def close(self) -> None:
        """Write every commit already queued, then close the file. Idempotent."""
        if self._life_lock is None:
            return
        async with self._life_lock:
            if self._state != "open":
                return
            self._state = "closing"  # commit() refuses from now on
            try:
                await self._group.stop()
            except Exception:  # pragma: no cover - the writer catches its own errors
                log.exception("journal writer ended with an error")
            finally:
                if self._checkpoint is not None:
                    # (closing the last connection checkpoints everything anyway)
                    await asyncio.gather(self._checkpoint, return_exceptions=True)
                    self._checkpoint = None
                assert self._read_lock is not None
                async with self._read_lock:
                    for conn in (self._reader_conn, self._writer_conn):
                        if conn is not None:
                            try:
                                await conn.close()
                            except Exception:  # pragma: no cover - best effort
                                log.exception("closing the journal connection failed")
                self._reader_conn = self._writer_conn = None
                self._lock.release()
                self._state = "closed"

    def _prepare_directory(self) -> None:
        # Every directory we create gets 0o750 (Path.mkdir(parents=True) would give the
        # intermediate ones the default mode).
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o750, exist_ok=True)
            except OSError as exc:
                raise JournalUnavailable(f"cannot create the journal directory {directory}: {exc}") from exc

    def _prepare_file(self) -> None:
        # Create the file ourselves so that it is not world-readable (records hold customer
        # data); SQLite gives the -wal and -shm files the same permissions.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            pass
        except OSError as exc:
            raise JournalUnavailable(f"cannot create journal {self.path}: {exc}") from exc
        else:
            os.close(fd)

    async def _configure(self, conn: aiosqlite.Connection) -> bool:
        """Set the connection up; whether the file is in WAL mode."""
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
        mode = str(row[0]).lower() if row else "?"
        if mode != "wal":
            log.warning(
                "journal %s: WAL mode unavailable (journal_mode=%s); readers will block on writes", self.path, mode
            )
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # Keep the WAL file from staying huge after a burst (bytes; it is truncated at checkpoints).
        await conn.execute("PRAGMA journal_size_limit = 67108864")
        return mode == "wal"

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = await _scalar(conn, "PRAGMA user_version")
            app_id = await _scalar(conn, "PRAGMA application_id")
            tables = await _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            if app_id not in (0, APPLICATION_ID) or (version == 0 and app_id == 0 and tables):
                raise JournalSchemaError(
                    f"{self.path} is an SQLite database of another application "
                    f"(application_id={app_id}, {tables} tables), not a cti-gateway journal; "
                    "point store.url at another file"
                )
            if version > SCHEMA_VERSION:
                raise JournalSchemaError(
                    f"{self.path} has journal schema version {version}, newer than this "
                    f"cti-gateway supports ({SCHEMA_VERSION}): it was written by a newer "
                    "release; upgrade cti-gateway (or restore a backup made before the upgrade)"
                )
            if version < SCHEMA_VERSION:
                # Version 0: a new file. Later versions add their migration steps here.
                for statement in _SCHEMA:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writes

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        """Return once ``changes`` and every earlier commit are committed (see the module doc).

        ``position`` (a shared log's order, see :class:`gateway.persistence.Journal`) is
        taken and ignored: one writer commits in order.

        Raises :class:`JournalUnavailable` (``not_ready``) when the journal is not open, the
        queue is full, the wait times out, or the transaction failed. Raises ``ValueError``
        / ``TypeError`` for state dicts that cannot be stored (missing keys, not JSON).
        """
        if self._state != "open":
            raise JournalUnavailable(f"journal {self.path.name} is {self._state}, not open")
        if not self._group.running:
            raise JournalUnavailable("journal writer is not running")
        await self._group.submit(prepare(changes))

    async def _write(self, merged: Merged) -> None:
        conn = self._writer_conn
        if conn is None:  # pragma: no cover - the writer runs only while the file is open
            raise JournalUnavailable("journal is not open")
        raw: sqlite3.Connection = conn._conn
        if self.inline:
            try:
                _write_rows(raw, merged)  # on the loop's thread (see "Where the write happens")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                # another connection holds the write lock; nothing was written: the same
                # transaction again, on the connection's thread, waiting for the lock
                await conn._execute(_write_rows_waiting, raw, merged, self.busy_timeout_s)  # type: ignore[no-untyped-call]
            self._maybe_checkpoint()
            return
        # the whole transaction in one call on the connection's thread: one hop there and
        # one back per batch, whatever the number of tables and rows
        await conn._execute(_write_rows, raw, merged)  # type: ignore[no-untyped-call]

    def _maybe_checkpoint(self) -> None:
        """Start a checkpoint (on the read connection's thread) if none ran lately."""
        if self._state != "open" or (self._checkpoint is not None and not self._checkpoint.done()):
            return  # (closing: closing the last connection checkpoints everything)
        now = asyncio.get_running_loop().time()
        if self._checkpoint_after is not None and now < self._checkpoint_after:
            return
        self._checkpoint_after = now + CHECKPOINT_INTERVAL_S
        self._checkpoint = asyncio.create_task(self._run_checkpoint(), name=f"journal-checkpoint:{self.path.name}")

    async def _run_checkpoint(self) -> None:
        """Copy what the WAL holds into the database (PASSIVE: never waits for the writer or
        readers; what it cannot copy now the next one does). A failure is logged, no more:
        the WAL only grows until a checkpoint succeeds."""
        try:
            conn, lock = self._reader()
            async with lock, conn.execute("PRAGMA wal_checkpoint(PASSIVE)"):
                pass  # done by the statement's first step; leaving the block ends it
        except (sqlite3.Error, JournalUnavailable, ValueError) as exc:
            log.warning("journal checkpoint failed: %s", exc)

    # ------------------------------------------------------------------ reads

    def _reader(self) -> tuple[aiosqlite.Connection, asyncio.Lock]:
        if self._state != "open" or self._reader_conn is None or self._read_lock is None:
            raise JournalUnavailable(f"journal {self.path.name} is {self._state}, not open")
        return self._reader_conn, self._read_lock

    async def load(self, *, since: float, recent: int | None = None) -> Snapshot:
        if recent is not None and recent < 0:
            raise ValueError(f"recent must be >= 0, got {recent}")
        conn, lock = self._reader()
        async with lock:
            try:
                await conn.execute("BEGIN")  # one consistent snapshot across the tables
                try:
                    # rows are already decoded by _decode_row
                    sessions = cast(list[StateDict], list(await conn.execute_fetchall(_LOAD_SESSIONS)))
                    if recent is None:
                        interactions = cast(
                            list[StateDict], list(await conn.execute_fetchall(_LOAD_INTERACTIONS, (since,)))
                        )
                        events = cast(list[StateDict], list(await conn.execute_fetchall(_LOAD_EVENTS, (since,))))
                    else:
                        interactions = cast(list[StateDict], list(await conn.execute_fetchall(_LOAD_OPEN_INTERACTIONS)))
                        interactions += cast(
                            list[StateDict], list(await conn.execute_fetchall(_LOAD_RECENT_DONE, (since, recent)))
                        )
                        events = cast(
                            list[StateDict], list(await conn.execute_fetchall(_LOAD_RECENT_EVENTS, (since, recent)))
                        )
                    agents = cast(list[StateDict], list(await conn.execute_fetchall(_LOAD_AGENTS)))
                    meta = cast(StateDict, dict(cast(Any, await conn.execute_fetchall(_LOAD_META))))
                finally:
                    await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise JournalUnavailable(f"journal read failed: {exc}") from exc
        return Snapshot(sessions=sessions, interactions=interactions, agents=agents, events=events, meta=meta)

    async def record(self, session_id: str) -> StateDict | None:
        conn, lock = self._reader()
        async with lock:
            try:
                rows = await conn.execute_fetchall("SELECT data FROM sessions WHERE id = ?", (session_id,))
            except sqlite3.Error as exc:
                raise JournalUnavailable(f"journal read failed: {exc}") from exc
        for row in rows:
            return cast(StateDict, row)
        return None

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        return await self._one(_EVENT, (vendor, event_id))

    async def interaction(self, vendor: str, interaction_id: str) -> StateDict | None:
        return await self._one(_INTERACTION, (vendor, interaction_id))

    async def _one(self, sql: str, params: tuple[Any, ...]) -> StateDict | None:
        conn, lock = self._reader()
        async with lock:
            try:
                rows = await conn.execute_fetchall(sql, params)
            except sqlite3.Error as exc:
                raise JournalUnavailable(f"journal read failed: {exc}") from exc
        for row in rows:
            return cast(StateDict, row)
        return None

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        check_range(start, end, limit)
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("offered_at >= ?")
            params.append(start)
        if end is not None:
            where.append("offered_at < ?")
            params.append(end)
        sql = "SELECT data FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY offered_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        conn, lock = self._reader()
        async with lock:
            try:
                return cast(list[StateDict], list(await conn.execute_fetchall(sql, params)))
            except sqlite3.Error as exc:
                raise JournalUnavailable(f"journal read failed: {exc}") from exc

    async def ping(self) -> bool:
        """Whether the writer runs and its connection answers a query within ``ping_timeout_s``.

        The query goes through the writer's connection, behind any transaction in progress:
        a writer stuck on a lock (another process holding the file) makes ping fail.
        """
        conn = self._writer_conn
        if self._state != "open" or conn is None or not self._group.running:
            return False
        try:
            version = await asyncio.wait_for(_scalar(conn, "PRAGMA user_version"), self.ping_timeout_s)
        except (TimeoutError, sqlite3.Error, ValueError):
            return False
        return bool(version == SCHEMA_VERSION)


def _write_rows(conn: sqlite3.Connection, merged: Merged) -> None:
    """One transaction with every row of ``merged`` (runs on the connection's thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if merged.sessions:
            conn.executemany(_UPSERT_SESSIONS, merged.sessions.values())
        if merged.interactions:
            conn.executemany(_UPSERT_INTERACTIONS, merged.interactions.values())
        if merged.agents:
            conn.executemany(_UPSERT_AGENTS, merged.agents.values())
        if merged.events:
            conn.executemany(_UPSERT_EVENTS, merged.events.values())
        if merged.meta:
            conn.executemany(_UPSERT_META, merged.meta.values())
        conn.execute("COMMIT")
    except BaseException:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - the connection is broken
            log.error("journal rollback failed: %s", exc)
        raise


def _write_rows_waiting(conn: sqlite3.Connection, merged: Merged, busy_timeout_s: float) -> None:
    """:func:`_write_rows`, waiting up to ``busy_timeout_s`` for a lock another connection
    holds (on the connection's thread: the loop goes on meanwhile)."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    try:
        _write_rows(conn, merged)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


def _log_failure(batch: int, behind: int, exc: BaseException) -> None:
    log.error(
        "journal transaction of %d commits failed (%d more queued behind it fail too): %s",
        batch,
        behind,
        exc,
    )
