"""The records store of several instances: the journal's tables on PostgreSQL (asyncpg).

``records: {url: postgresql://...}`` (README, "Running several instances"). It implements
:class:`gateway.persistence.Journal` with the schema and the semantics of
:class:`gateway.records.sqlite.SqliteJournal`: the same tables (sessions, interactions,
agents, events, meta), the same upserts (the later row for a key winning), and the state
dicts stored as the very JSON text :func:`gateway.records._common.prepare` made of them, in
``text`` columns (not ``jsonb``, which would reorder keys and respell numbers). So
``record()``, ``records()`` and the reports built from them (JSON and CSV) are the same,
byte for byte, as the SQLite journal's for the same commits; ``records()`` sorts as SQLite
does (``offered_at``, NULLs first, then ``id`` by bytes: ``COLLATE "C"``).

Group commit: callers of :meth:`PostgresJournal.commit` queue their encoded changes and
wait; one writer task (:class:`gateway.records._common.GroupCommit`, SQLite's too) takes
everything queued and writes it in ONE transaction. A failed
transaction fails its commits and those queued behind it (``not_ready``), as SQLite's. A
transaction that failed because the connection broke (PostgreSQL restarted, a pooled
connection gone stale) is tried once more on a fresh connection first: the upserts are
idempotent, so a transaction whose COMMIT was sent but not confirmed does no harm written
twice.

Log positions: ``commit(changes, position=N)`` stores each row with the position of the
shared log entry it comes from (column ``pos``), and an upsert never replaces a row by one
of an older position (nor does the group commit's merge): several instances may write the
entries of one log out of order, or one entry twice, and each row still ends as of its
latest entry. Without a position, the later commit wins, as in SQLite.

Connections come from a pool (``max_connections``) with a timeout on connecting, on taking
a connection from the pool and on every statement. PostgreSQL unreachable: each call
raises :class:`JournalUnavailable` (``not_ready``: vendors get 503 and retry) within those
timeouts; the outage is logged once (``records_unreachable``) and the recovery once
(``records_recovered``); the pool connects again by itself on the next call, no restart.
``open()`` does not need PostgreSQL to answer: the schema is created (or checked) at the
first call that reaches it, so a gateway may start during an outage (``ping()`` false until
it ends). A database this code cannot use (a newer schema, tables of another application,
an encoding other than UTF-8) raises :class:`JournalSchemaError` at ``open()`` or at the
first call that reaches it.

Migrations: the table ``cti_gateway_schema`` holds the schema version; ``open()`` creates the
tables of a new database and will apply later versions' steps, under a transaction-level
advisory lock so that instances starting together do not race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import asyncpg
import structlog

from ..persistence import Changes, Snapshot, StateDict
from ..store_url import PostgresUrl
from ._common import (
    GroupCommit,
    GroupCommitted,
    JournalSchemaError,
    JournalStats,
    JournalUnavailable,
    Merged,
    Prepared,
    check_range,
    loads,
    prepare,
)

__all__ = ["MAX_POSITION", "SCHEMA_VERSION", "PostgresJournal"]

log = structlog.get_logger("cti_gateway.records.postgres")

#: Version of the schema below (the row of ``cti_gateway_schema``).
SCHEMA_VERSION = 1
#: ``pg_advisory_xact_lock`` key of the migration ("CTIG").
_MIGRATION_LOCK = 0x43544947

_TABLES = ("sessions", "interactions", "agents", "events", "meta")

# Each table has a ``seq`` identity column: SQLite's rowid (kept by an upsert's update), so
# that load() returns rows in the same order as the SQLite journal.
_SCHEMA = (
    """CREATE TABLE sessions (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        id text PRIMARY KEY,
        agent_id text,
        state text NOT NULL,
        offered_at double precision,
        closed_at double precision,
        data text NOT NULL,
        pos bigint
    )""",
    "CREATE INDEX sessions_open ON sessions (offered_at, seq) WHERE state <> 'closed'",
    'CREATE INDEX sessions_offered_at ON sessions (offered_at, id COLLATE "C")',
    """CREATE TABLE interactions (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        vendor text NOT NULL,
        interaction_id text NOT NULL,
        phase text NOT NULL,
        done_at double precision,
        data text NOT NULL,
        pos bigint,
        PRIMARY KEY (vendor, interaction_id)
    )""",
    "CREATE INDEX interactions_open ON interactions (seq) WHERE phase <> 'done'",
    "CREATE INDEX interactions_done_at ON interactions (done_at)",
    """CREATE TABLE agents (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        id text PRIMARY KEY,
        data text NOT NULL,
        pos bigint
    )""",
    """CREATE TABLE events (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        vendor text NOT NULL,
        event_id text NOT NULL,
        at double precision NOT NULL,
        type text,
        interaction_id text,
        data text NOT NULL,
        pos bigint,
        PRIMARY KEY (vendor, event_id)
    )""",
    "CREATE INDEX events_at ON events (at, seq)",
    """CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL,
        pos bigint
    )""",
)

# ``pos``: the log position of the commit that wrote the row (None: none given); a row of an
# older position never replaces one of a later position (several instances may write the
# entries of one shared log out of order).
_NEWER = "WHERE excluded.pos IS NULL OR {t}.pos IS NULL OR excluded.pos >= {t}.pos"

_UPSERT_SESSIONS = f"""
INSERT INTO sessions (id, agent_id, state, offered_at, closed_at, data, pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, state = excluded.state,
    offered_at = excluded.offered_at, closed_at = excluded.closed_at, data = excluded.data, pos = excluded.pos
{_NEWER.format(t="sessions")}
"""
_UPSERT_INTERACTIONS = f"""
INSERT INTO interactions (vendor, interaction_id, phase, done_at, data, pos) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (vendor, interaction_id) DO UPDATE SET phase = excluded.phase,
    done_at = excluded.done_at, data = excluded.data, pos = excluded.pos
{_NEWER.format(t="interactions")}
"""
_UPSERT_AGENTS = f"""
INSERT INTO agents (id, data, pos) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET data = excluded.data, pos = excluded.pos
{_NEWER.format(t="agents")}
"""
_UPSERT_EVENTS = f"""
INSERT INTO events (vendor, event_id, at, type, interaction_id, data, pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (vendor, event_id) DO UPDATE SET at = excluded.at, type = excluded.type,
    interaction_id = excluded.interaction_id, data = excluded.data, pos = excluded.pos
{_NEWER.format(t="events")}
"""
_UPSERT_META = f"""
INSERT INTO meta (key, value, pos) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, pos = excluded.pos
{_NEWER.format(t="meta")}
"""

#: the largest log position (a PostgreSQL bigint)
MAX_POSITION = 2**63 - 1

# The same rows in the same order as SQLite's load queries (rowid -> seq; SQLite sorts NULLs first).
_LOAD_SESSIONS = "SELECT data FROM sessions WHERE state <> 'closed' ORDER BY offered_at NULLS FIRST, seq"
_LOAD_INTERACTIONS = "SELECT data FROM interactions WHERE phase <> 'done' OR done_at >= $1 ORDER BY seq"
_LOAD_AGENTS = "SELECT data FROM agents ORDER BY seq"
_LOAD_EVENTS = "SELECT data FROM events WHERE at >= $1 ORDER BY at, seq"
_LOAD_META = "SELECT key, value FROM meta"
# bounded loads (``recent``): the open interactions, then the newest done ones and events
_LOAD_OPEN_INTERACTIONS = "SELECT data FROM interactions WHERE phase <> 'done' ORDER BY seq"
_LOAD_RECENT_DONE = (
    "SELECT data FROM (SELECT data, done_at, seq FROM interactions WHERE done_at >= $1 AND phase = 'done' "
    "ORDER BY done_at DESC, seq DESC LIMIT $2) AS recent ORDER BY done_at, seq"
)
_LOAD_RECENT_EVENTS = (
    "SELECT data FROM (SELECT data, at, seq FROM events WHERE at >= $1 ORDER BY at DESC, seq DESC LIMIT $2) "
    "AS recent ORDER BY at, seq"
)
_EVENT = "SELECT data FROM events WHERE vendor = $1 AND event_id = $2"
_INTERACTION = "SELECT data FROM interactions WHERE vendor = $1 AND interaction_id = $2"

T = TypeVar("T")


def _check_text(rows: Prepared) -> None:
    """What SQLite stores but a PostgreSQL ``text`` column refuses: fail the caller, not the batch.

    The JSON text never holds a NUL (JSON escapes it); the key columns must be text (or
    None where SQLite allows NULL) without NUL characters.
    """
    columns: list[tuple[str, object]] = []
    for s in rows.sessions:
        columns += [("session id", s[0]), ("session agent_id", s[1]), ("session state", s[2])]
    for i in rows.interactions:
        columns += [("interaction vendor", i[0]), ("interaction_id", i[1]), ("interaction phase", i[2])]
    for a in rows.agents:
        columns.append(("agent id", a[0]))
    for e in rows.events:
        columns += [("event vendor", e[0]), ("event_id", e[1]), ("event type", e[3]), ("event interaction_id", e[4])]
    for m in rows.meta:
        columns.append(("meta key", m[0]))
    for name, value in columns:
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"{name} cannot be stored: it holds a NUL character")


class PostgresJournal(GroupCommitted):
    """The :class:`gateway.persistence.Journal` on a PostgreSQL database (see the module doc).

    ``connect_timeout_s``: connecting (and taking a connection from a full pool);
    ``query_timeout_s``: every statement; ``commit_timeout_s``: how long ``commit()`` waits
    for its transaction before raising ``not_ready``; ``max_pending``: commits queued or in
    flight beyond which ``commit()`` raises ``not_ready`` at once; ``ping_timeout_s`` bounds
    ``ping()``; ``max_connections``: the pool's size.
    """

    def __init__(
        self,
        where: PostgresUrl,
        *,
        connect_timeout_s: float = 3.0,
        query_timeout_s: float = 5.0,
        commit_timeout_s: float = 10.0,
        max_pending: int = 10_000,
        ping_timeout_s: float = 2.0,
        max_connections: int = 4,
    ) -> None:
        if max_connections < 2:
            raise ValueError("max_connections must be >= 2 (the writer and a reader)")
        self.where = where
        self.connect_timeout_s = connect_timeout_s
        self.query_timeout_s = query_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.max_connections = max_connections
        self.stats = JournalStats()
        self._group = GroupCommit(
            self._write,
            what="records store",
            stats=self.stats,
            max_pending=max_pending,
            commit_timeout_s=commit_timeout_s,
        )
        #: whether the last call reached PostgreSQL (for /readyz and /metrics)
        self.healthy = True
        #: calls that failed because PostgreSQL could not be reached
        self.failures = 0
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._pool: asyncpg.Pool | None = None
        self._schema_ok = False
        self._schema_lock: asyncio.Lock | None = None
        self._life_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"PostgresJournal({self.where.describe()!r}, state={self._state})"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the pool and, if PostgreSQL answers, the schema; start the writer. Idempotent.

        PostgreSQL unreachable: logged once, the journal opens anyway (``ping()`` false,
        calls ``not_ready`` until it answers). A database this code cannot use raises
        :class:`JournalSchemaError`.
        """
        if self._life_lock is None:
            self._life_lock = asyncio.Lock()
            self._schema_lock = asyncio.Lock()
        async with self._life_lock:
            if self._state == "open":
                return
            where = self.where
            self._pool = asyncpg.create_pool(
                host=where.host,
                port=where.port,
                user=where.user,
                password=where.password,
                database=where.database,
                ssl=where.sslmode,
                min_size=0,  # nothing connects here: open() works during an outage
                max_size=self.max_connections,
                timeout=self.connect_timeout_s,
                command_timeout=self.query_timeout_s,
                # a client name for pg_stat_activity; statement cache off (no prepared
                # statements to go stale across a server restart)
                server_settings={"application_name": "cti-gateway"},
                statement_cache_size=0,
            )
            await self._pool
            self._schema_ok = False
            try:
                await self._call(lambda: self._ensure_schema())
            except JournalSchemaError:
                await self._close_pool()
                raise
            except JournalUnavailable:
                pass  # logged once by _call; the schema is made by the first call that reaches the server
            self._group.start(name=f"records-writer:{where.describe()}")
            self._state = "open"

    async def close(self) -> None:
        """Write every commit already queued (or fail it), then close the pool. Idempotent."""
        if self._life_lock is None:
            return
        async with self._life_lock:
            if self._state != "open":
                return
            self._state = "closing"
            try:
                await self._group.stop()
            finally:
                await self._close_pool()
                self._state = "closed"

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.query_timeout_s)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()

    async def _ensure_schema(self) -> None:
        """Check the database, create or migrate the schema (once per open journal)."""
        if self._schema_ok:
            return
        assert self._schema_lock is not None and self._pool is not None
        async with self._schema_lock:
            if self._schema_ok:
                return
            async with self._pool.acquire(timeout=self.connect_timeout_s) as conn:
                encoding = await conn.fetchval("SHOW server_encoding")
                if str(encoding).upper() not in ("UTF8", "UTF-8"):
                    raise JournalSchemaError(
                        f"{self.where.describe()} has the encoding {encoding}; the records need a UTF8 "
                        "database: CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0"
                    )
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await self._migrate(conn)
            self._schema_ok = True

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        has_version_table = await conn.fetchval("SELECT to_regclass('cti_gateway_schema') IS NOT NULL")
        version = 0
        if has_version_table:
            version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM cti_gateway_schema") or 0
        if version > SCHEMA_VERSION:
            raise JournalSchemaError(
                f"{self.where.describe()} has records schema version {version}, newer than this cti-gateway "
                f"supports ({SCHEMA_VERSION}): it was written by a newer release; upgrade cti-gateway"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            foreign = [t for t in _TABLES if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", t)]
            if foreign:
                raise JournalSchemaError(
                    f"{self.where.describe()} already has tables named {', '.join(foreign)} that are not "
                    "cti-gateway's (no cti_gateway_schema table): give the gateway a database of its own"
                )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS cti_gateway_schema ("
                "version integer NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())"
            )
            for statement in _SCHEMA:
                await conn.execute(statement)
        # Later versions add their migration steps here (version 1 -> 2 ...).
        await conn.execute("INSERT INTO cti_gateway_schema (version) VALUES ($1)", SCHEMA_VERSION)
        log.info("records_schema_created", records=self.where.describe(), version=SCHEMA_VERSION)

    # ------------------------------------------------------------------ health

    async def _call(self, work: Callable[[], Awaitable[T]], *, retry: bool = False) -> T:
        """Run ``work`` (talking to PostgreSQL); failures to reach it become
        :class:`JournalUnavailable` and mark the outage (logged once), a success its end.

        ``retry``: a connection that broke is replaced and ``work`` tried once more (for
        idempotent work only)."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                result = await work()
            except (JournalSchemaError, ValueError, TypeError):
                raise
            except JournalUnavailable as exc:
                self._down(exc)
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                broken = isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError))
                if broken and self._pool is not None:
                    await self._pool.expire_connections()  # stale pooled connections go too
                if broken and attempt + 1 < attempts:
                    continue
                self._down(exc)
                error = JournalUnavailable(f"records store {self.where.describe()} failed: {_describe(exc)}")
                raise error from exc
            self._up()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _down(self, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            self.healthy = False
            log.error("records_unreachable", records=self.where.describe(), error=_describe(exc))

    def _up(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("records_recovered", records=self.where.describe(), failures=self.failures)

    def _open_pool(self) -> asyncpg.Pool:
        if self._state not in ("open", "closing") or self._pool is None:
            raise JournalUnavailable(f"records store {self.where.describe()} is {self._state}, not open")
        return self._pool

    # ------------------------------------------------------------------ writes

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        """Return once ``changes`` and every earlier commit are committed.

        ``position``: where these changes stand in a shared, ordered log (0 to
        :data:`MAX_POSITION`, growing with the log order; e.g. a Redis stream entry id
        ``MS-SEQ`` as ``MS * 1_000_000 + SEQ``). A row is then never replaced by one of an
        older position, whichever instance writes last: entries written out of order, or
        written again, leave each row as of its latest entry. Without it (the
        :class:`gateway.persistence.Journal` protocol's ``commit``), the later commit wins.

        Raises :class:`JournalUnavailable` (``not_ready``) when the journal is not open, the
        queue is full, the wait times out, or the transaction failed (PostgreSQL down).
        Raises ``ValueError`` / ``TypeError`` for state dicts that cannot be stored.
        """
        if self._state != "open":
            raise JournalUnavailable(f"records store {self.where.describe()} is {self._state}, not open")
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= MAX_POSITION
        ):
            raise ValueError(f"position must be an integer from 0 to {MAX_POSITION}, got {position!r}")
        rows = prepare(changes)
        _check_text(rows)
        rows.position = position
        await self._group.submit(rows)

    async def _write(self, merged: Merged) -> None:
        await self._call(lambda: self._transaction(merged), retry=True)

    async def _transaction(self, merged: Merged) -> None:
        pool = self._open_pool()
        await self._ensure_schema()
        tables: list[tuple[str, str, dict[Any, Any]]] = [
            ("sessions", _UPSERT_SESSIONS, merged.sessions),
            ("interactions", _UPSERT_INTERACTIONS, merged.interactions),
            ("agents", _UPSERT_AGENTS, merged.agents),
            ("events", _UPSERT_EVENTS, merged.events),
            ("meta", _UPSERT_META, merged.meta),
        ]
        async with pool.acquire(timeout=self.connect_timeout_s) as conn, conn.transaction():
            for name, sql, rows in tables:
                if rows:
                    args = [(*row, merged.position_of(name, key)) for key, row in rows.items()]
                    await conn.executemany(sql, args)

    # ------------------------------------------------------------------ reads

    async def _read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._open_pool()  # not open: not_ready, and no outage

        async def attempt() -> T:
            await self._ensure_schema()
            async with pool.acquire(timeout=self.connect_timeout_s) as conn:
                return await work(conn)

        return await self._call(attempt, retry=True)

    async def load(self, *, since: float, recent: int | None = None) -> Snapshot:
        if recent is not None and recent < 0:
            raise ValueError(f"recent must be >= 0, got {recent}")

        async def work(conn: asyncpg.Connection) -> Snapshot:
            # one consistent snapshot across the tables
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                sessions = [loads(r[0]) for r in await conn.fetch(_LOAD_SESSIONS)]
                if recent is None:
                    interactions = [loads(r[0]) for r in await conn.fetch(_LOAD_INTERACTIONS, float(since))]
                    events = [loads(r[0]) for r in await conn.fetch(_LOAD_EVENTS, float(since))]
                else:
                    interactions = [loads(r[0]) for r in await conn.fetch(_LOAD_OPEN_INTERACTIONS)]
                    interactions += [loads(r[0]) for r in await conn.fetch(_LOAD_RECENT_DONE, float(since), recent)]
                    events = [loads(r[0]) for r in await conn.fetch(_LOAD_RECENT_EVENTS, float(since), recent)]
                agents = [loads(r[0]) for r in await conn.fetch(_LOAD_AGENTS)]
                meta = {r[0]: loads(r[1]) for r in await conn.fetch(_LOAD_META)}
            return Snapshot(sessions=sessions, interactions=interactions, agents=agents, events=events, meta=meta)

        return await self._read(work)

    async def record(self, session_id: str) -> StateDict | None:
        if "\x00" in session_id:
            return None  # no id holds one (commit refuses them)

        async def work(conn: asyncpg.Connection) -> StateDict | None:
            data = await conn.fetchval("SELECT data FROM sessions WHERE id = $1", session_id)
            return None if data is None else dict(loads(data))

        return await self._read(work)

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        return await self._one(_EVENT, vendor, event_id)

    async def interaction(self, vendor: str, interaction_id: str) -> StateDict | None:
        return await self._one(_INTERACTION, vendor, interaction_id)

    async def _one(self, sql: str, *key: str) -> StateDict | None:
        if any("\x00" in part for part in key):
            return None  # no key holds one (commit refuses them)

        async def work(conn: asyncpg.Connection) -> StateDict | None:
            data = await conn.fetchval(sql, *key)
            return None if data is None else dict(loads(data))

        return await self._read(work)

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        check_range(start, end, limit)
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            params.append(float(start))
            where.append(f"offered_at >= ${len(params)}")
        if end is not None:
            params.append(float(end))
            where.append(f"offered_at < ${len(params)}")
        sql = "SELECT data FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY offered_at NULLS FIRST, id COLLATE "C"'
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"

        async def work(conn: asyncpg.Connection) -> list[StateDict]:
            return [loads(r[0]) for r in await conn.fetch(sql, *params)]

        return await self._read(work)

    async def ping(self) -> bool:
        """Whether PostgreSQL answers within ``ping_timeout_s`` with this code's schema version."""
        if self._state != "open" or not self._group.running:
            return False

        async def work(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT max(version) FROM cti_gateway_schema")

        try:
            version = await asyncio.wait_for(self._read(work), self.ping_timeout_s)
        except TimeoutError:
            self._down(TimeoutError(f"no answer within {self.ping_timeout_s:g}s"))
            return False
        except (JournalUnavailable, JournalSchemaError):
            return False
        return bool(version == SCHEMA_VERSION)


def _describe(exc: BaseException) -> str:
    """An error for logs and messages (asyncpg's never carry the password)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
