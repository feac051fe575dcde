"""What every journal shares: JSON encoding, checking and flattening :class:`Changes`, errors,
and the group-commit writer (:class:`GroupCommit`).

:func:`prepare` runs in the caller of ``commit()``: it validates the state dicts and encodes
them to JSON *at that moment*, so that

* a malformed state dict fails the caller that passed it (``ValueError``/``TypeError``),
  never a whole group-commit batch of other callers;
* the engine may go on mutating its own objects after calling ``commit()``: what is written
  is what they were when ``commit()`` was called.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from .. import fastjson
from ..errors import GatewayError
from ..persistence import Changes, StateDict

#: A lone surrogate: JSON can spell it ("\\ud800"), UTF-8 (and so SQLite) cannot store it.
_SURROGATE = re.compile("[\ud800-\udfff]")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> str:
    """JSON text that SQLite can store; ``ValueError`` / ``TypeError`` if there is none.

    Checked here, in the caller of ``commit()``, so that such data fails only its own
    commit: a lone surrogate would otherwise fail the whole group-commit transaction.
    orjson encodes what it encodes exactly as :mod:`json` would (:mod:`gateway.fastjson`);
    the rest (and every error) takes :mod:`json`'s path.
    """
    fast = fastjson.dumps(obj)
    if fast is not None:
        return fast.decode()
    try:
        text = _encoder.encode(obj)
    except RecursionError:
        raise ValueError("cannot be stored as JSON: nested too deeply") from None
    if _SURROGATE.search(text):
        raise ValueError("cannot be stored: a string holds a lone surrogate (not valid Unicode)")
    return text


#: Rows are read back with :mod:`json`: orjson would turn an integer beyond 64 bits (which
#: :func:`dumps` stores as written) into a float, and a restart would not be exact.
loads: Callable[[str | bytes], Any] = json.loads


class JournalUnavailable(GatewayError):
    """The journal cannot take or serve data right now (API: 503 ``not_ready``; retry later)."""

    code = "not_ready"
    retryable = True


class JournalSchemaError(GatewayError):
    """The database file is not a journal this code can use (newer schema, foreign file)."""

    code = "store_schema"
    retryable = False


# Row tuples, in the column order of the SQL tables (see gateway.records.sqlite).
SessionRow = tuple[str, Any, str, float | None, float | None, str]  # id, agent_id, state, offered_at, closed_at, data
InteractionRow = tuple[str, str, str, float | None, str]  # vendor, interaction_id, phase, done_at, data
AgentRow = tuple[str, str]  # id, data
EventRow = tuple[str, str, float, Any, Any, str]  # vendor, event_id, at, type, interaction_id, data
MetaRow = tuple[str, str]  # key, value (JSON)


@dataclass(slots=True)
class Prepared:
    """One commit's rows, encoded."""

    sessions: list[SessionRow] = field(default_factory=list)
    interactions: list[InteractionRow] = field(default_factory=list)
    agents: list[AgentRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    meta: list[MetaRow] = field(default_factory=list)
    #: where these changes stand in a shared, ordered log (the records store of several
    #: instances): a row never replaces one of a later position. None: no order, the later
    #: commit wins (the embedded journal).
    position: int | None = None

    def __bool__(self) -> bool:
        return bool(self.sessions or self.interactions or self.agents or self.events or self.meta)


@dataclass(slots=True)
class Merged:
    """Several commits' rows merged by unique key, the later row winning (upsert order);
    of rows with log positions (:attr:`Prepared.position`) the one of the later position."""

    sessions: dict[str, SessionRow] = field(default_factory=dict)
    interactions: dict[tuple[str, str], InteractionRow] = field(default_factory=dict)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    events: dict[tuple[str, str], EventRow] = field(default_factory=dict)
    meta: dict[str, MetaRow] = field(default_factory=dict)
    #: the log position of each kept row, by (table, key); absent: None
    positions: dict[tuple[str, Any], int] = field(default_factory=dict)

    def add(self, rows: Prepared) -> None:
        if rows.position is None and not self.positions:  # the embedded journal's case
            for s in rows.sessions:
                self.sessions[s[0]] = s
            for i in rows.interactions:
                self.interactions[(i[0], i[1])] = i
            for a in rows.agents:
                self.agents[a[0]] = a
            for e in rows.events:
                self.events[(e[0], e[1])] = e
            for m in rows.meta:
                self.meta[m[0]] = m
            return
        for s in rows.sessions:
            self._put(self.sessions, "sessions", s[0], s, rows.position)
        for i in rows.interactions:
            self._put(self.interactions, "interactions", (i[0], i[1]), i, rows.position)
        for a in rows.agents:
            self._put(self.agents, "agents", a[0], a, rows.position)
        for e in rows.events:
            self._put(self.events, "events", (e[0], e[1]), e, rows.position)
        for m in rows.meta:
            self._put(self.meta, "meta", m[0], m, rows.position)

    def _put(self, table: dict[Any, Any], name: str, key: Any, row: Any, position: int | None) -> None:
        held = self.positions.get((name, key))
        if position is not None and held is not None and position < held:
            return  # an older position never replaces a later one
        table[key] = row
        if position is None:
            self.positions.pop((name, key), None)
        else:
            self.positions[(name, key)] = position

    def position_of(self, name: str, key: Any) -> int | None:
        """The log position of the row kept for ``key`` in table ``name`` (None: none)."""
        return self.positions.get((name, key))

    def row_count(self) -> int:
        return len(self.sessions) + len(self.interactions) + len(self.agents) + len(self.events) + len(self.meta)


def _key(row: StateDict, name: str, what: str) -> str:
    value = row.get(name) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} state dict needs a non-empty string {name!r}, got {value!r}")
    return value


def _time(row: StateDict, name: str, what: str, *, required: bool = False) -> float | None:
    value = row.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} state dict: {name!r} must be epoch seconds (a number), got {value!r}")
    return float(value)


def prepare(changes: Changes) -> Prepared:
    """Validate and encode ``changes`` (raises ``ValueError``/``TypeError`` on bad input)."""
    out = Prepared()
    for row in changes.sessions:
        out.sessions.append(
            (
                _key(row, "id", "session"),
                row.get("agent_id"),
                _key(row, "state", "session"),
                _time(row, "offered_at", "session"),
                _time(row, "closed_at", "session"),
                dumps(row),
            )
        )
    for row in changes.interactions:
        out.interactions.append(
            (
                _key(row, "vendor", "interaction"),
                _key(row, "interaction_id", "interaction"),
                _key(row, "phase", "interaction"),
                _time(row, "done_at", "interaction"),
                dumps(row),
            )
        )
    for row in changes.agents:
        out.agents.append((_key(row, "id", "agent"), dumps(row)))
    for row in changes.events:
        at = _time(row, "at", "event", required=True)
        assert at is not None
        out.events.append(
            (
                _key(row, "vendor", "event"),
                _key(row, "event_id", "event"),
                at,
                row.get("type"),
                row.get("interaction_id"),
                dumps(row),
            )
        )
    for key, value in changes.meta.items():
        if not isinstance(key, str):
            raise TypeError(f"meta keys must be strings, got {key!r}")
        out.meta.append((key, dumps(value)))
    return out


def check_range(start: float | None, end: float | None, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name} must be epoch seconds or None, got {value!r}")


# ---------------------------------------------------------------------------- group commit


@dataclass(slots=True)
class JournalStats:
    """Counters, for tests, benchmarks and metrics."""

    #: commits acknowledged (their futures resolved with success)
    commits: int = 0
    #: transactions committed (each holds one or more commits)
    transactions: int = 0
    #: transactions that failed (each failing every commit it held)
    failed_transactions: int = 0
    #: commits failed by a failed transaction
    failed_commits: int = 0
    #: rows written (after merging rows with the same key inside a transaction)
    rows: int = 0
    #: most commits ever held by one transaction
    largest_batch: int = 0


class _Stop:
    """Queue sentinel: the writer exits once it reaches it."""


@dataclass(slots=True)
class _Waiter:
    """One commit: its encoded rows, the future its caller awaits, when its wait is over."""

    rows: Prepared
    future: asyncio.Future[None]
    deadline: float  # the loop's clock


class GroupCommit:
    """The group-commit writer of a journal (SQLite's and PostgreSQL's alike).

    Callers of :meth:`submit` queue their encoded rows and wait on a future. One writer task
    takes *everything* queued at once, merges it by key (the later row winning) and hands it
    to ``write`` (one transaction), then resolves the futures in queue order. If ``write``
    raises, each of those futures gets a :class:`JournalUnavailable` (``not_ready``,
    retryable), and so does every commit queued behind them at that moment (made after the
    failed ones, it may build on them); ``on_failure(batch, behind, exc)`` is told. The
    writer goes on with later commits. The queue is bounded (``max_pending`` commits not yet
    resolved: beyond it :meth:`submit` fails at once); each wait is bounded by
    ``commit_timeout_s`` (a commit that timed out stays queued and may still be written).
    ``what`` names the store in messages (``journal``, ``records store``).
    """

    def __init__(
        self,
        write: Callable[[Merged], Awaitable[None]],
        *,
        what: str,
        stats: JournalStats,
        max_pending: int,
        commit_timeout_s: float,
        on_failure: Callable[[int, int, BaseException], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._write = write
        self.what = what
        self.stats = stats
        self.max_pending = max_pending
        self.commit_timeout_s = commit_timeout_s
        self._on_failure = on_failure
        self._queue: deque[_Waiter | _Stop] = deque()
        #: the batch being written (taken off the queue, not yet resolved)
        self._writing: list[_Waiter] = []
        #: the one timer failing commits whose wait is over (None: nothing to watch)
        self._deadline: asyncio.TimerHandle | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: commits queued or being written, not yet resolved
        self.pending = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue(self) -> deque[_Waiter | _Stop]:
        """Commits waiting for the writer (not those it is writing), for tests."""
        return self._queue

    def start(self, name: str) -> None:
        self._queue = deque()
        self._writing = []
        self.pending = 0
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Write every commit already queued, then end the writer."""
        task = self._task
        if task is None:
            return
        assert self._wakeup is not None
        self._queue.append(_Stop())
        self._wakeup.set()
        try:
            await task
        finally:
            self._task = None

    async def submit(self, rows: Prepared) -> None:
        """Return once ``rows`` and every commit queued before are written (see the class doc).

        The caller waits on its own future only: no timer per call. One deadline timer for
        the writer fails the commits whose wait is over (:meth:`_expire`).
        """
        if not self.running:
            raise JournalUnavailable(f"{self.what} writer is not running")
        if not rows and self.pending == 0:
            return  # nothing to write and nothing earlier still in flight
        if self.pending >= self.max_pending:
            raise JournalUnavailable(f"{self.what} overloaded: {self.pending} commits pending")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(_consume)
        waiter = _Waiter(rows, future, loop.time() + self.commit_timeout_s)
        self._queue.append(waiter)
        self.pending += 1
        if self._deadline is None:
            self._deadline = loop.call_at(waiter.deadline, self._expire)
        assert self._wakeup is not None
        self._wakeup.set()
        # A cancelled caller cancels only its own future: its rows stay queued and are
        # written with the others (whether they are is unknown to it, as with a timeout).
        await future

    def _expire(self) -> None:
        """The deadline timer: fail every commit whose wait is over (its rows stay queued and
        may still be written), then wait for the oldest one still unresolved."""
        self._deadline = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for item in (*self._writing, *self._queue):
            if isinstance(item, _Stop) or item.future.done():
                continue
            if item.deadline > now:  # FIFO with one timeout: the rest expire later
                self._deadline = loop.call_at(item.deadline, self._expire)
                return
            item.future.set_exception(
                JournalUnavailable(
                    f"{self.what} commit not confirmed within {self.commit_timeout_s:g}s (it may still be written)"
                )
            )

    async def _run(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                stop = False
                batch: list[_Waiter] = []
                while self._queue:
                    item = self._queue.popleft()
                    if isinstance(item, _Stop):
                        stop = True
                        break
                    batch.append(item)
                if batch:
                    self._writing = batch
                    await self._write_batch(batch)
                    self._writing = []
                if stop:
                    return
        finally:
            # Only reached with work left if the task was cancelled or hit a bug. The batch
            # in hand is already uncounted by _write_batch; what is still queued is not.
            queued = [item for item in self._queue if not isinstance(item, _Stop)]
            self._queue.clear()
            self.pending -= len(queued)
            for item in [*self._writing, *queued]:
                if not item.future.done():
                    item.future.set_exception(JournalUnavailable(f"{self.what} writer stopped"))
            self._writing = []
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

    async def _write_batch(self, batch: list[_Waiter]) -> None:
        merged = Merged()
        for item in batch:
            merged.add(item.rows)
        try:
            if merged.row_count():
                await self._write(merged)
        except Exception as exc:  # noqa: BLE001 - any failure fails the batch; the writer lives on
            # Every commit queued behind the failed ones was made after them, so it may
            # build on them: it fails too rather than being stored without them. The caller
            # (the runtime) rebuilds its state from what is stored before committing again.
            behind = [item for item in self._queue if not isinstance(item, _Stop)]
            self._queue = deque(item for item in self._queue if isinstance(item, _Stop))
            self.pending -= len(behind)
            failed = batch + behind
            self.stats.failed_transactions += 1
            self.stats.failed_commits += len(failed)
            if self._on_failure is not None:
                self._on_failure(len(batch), len(behind), exc)
            message = str(exc) if isinstance(exc, JournalUnavailable) else f"{self.what} write failed: {exc}"
            for item in failed:
                if not item.future.done():
                    error = JournalUnavailable(message)
                    error.__cause__ = exc
                    item.future.set_exception(error)
        else:
            if merged.row_count():
                self.stats.transactions += 1
                self.stats.rows += merged.row_count()
            self.stats.commits += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
        finally:
            self.pending -= len(batch)


def _consume(future: asyncio.Future[None]) -> None:
    """Mark the outcome as retrieved, so a waiter that timed out leaves no asyncio warning."""
    if not future.cancelled():
        future.exception()


class JournalLifecycle:
    """``async with journal:`` opens it and closes it (every journal has ``open``/``close``)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class GroupCommitted(JournalLifecycle):
    """A journal whose commits go through one :class:`GroupCommit` (``self._group``): its
    bounds, readable (and the commit timeout settable, for tests) on the journal."""

    _group: GroupCommit

    @property
    def commit_timeout_s(self) -> float:
        """How long ``commit()`` waits for its transaction before raising ``not_ready``."""
        return self._group.commit_timeout_s

    @commit_timeout_s.setter
    def commit_timeout_s(self, value: float) -> None:
        self._group.commit_timeout_s = value

    @property
    def max_pending(self) -> int:
        """Commits queued or in flight beyond which ``commit()`` raises ``not_ready`` at once."""
        return self._group.max_pending
