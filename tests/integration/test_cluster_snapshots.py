"""Snapshots and trimming of the shared log, in process, on a real redis-server.

* An instance writes snapshots as the log grows and the log is trimmed behind them; a new
  instance starts from the newest snapshot (not from the first entry, which is gone) and
  holds exactly the state of the instance that applied everything: same dump, a resend is
  a ``duplicate`` with the first answer, the next offers are decided alike.
* The trim never removes an entry pending in the consumer group: an instance that claimed
  entries and died leaves them pending; a snapshot past them is written and the log
  trimmed; an instance that starts from that snapshot (it never applied those entries)
  takes them over and writes their records (the snapshot carries their side effects).
* A snapshot of another configuration is refused as a configuration mismatch; one of
  another format is refused with a clear log line and the instance replays the log if it
  was never trimmed, and refuses to start if it was (it would start from a state the
  others do not hold).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gateway import commands
from gateway.cluster.log import RedisLog
from gateway.cluster.replica import Replica
from gateway.cluster.runtime import ClusterRuntime, ClusterSettings, ConfigMismatch, SnapshotUnusable
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.notices import Decision, DecisionKind
from gateway.records import MemoryJournal
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer
from tests.unit.conftest import make_config

CONFIG = make_config(
    profiles={"std": {"max_sessions": 3, "channels": {"voice": 1, "chat": 2}, "wrap_up_s": {"chat": 0.2}}},
    queues=[{"name": "support"}, {"name": "line", "on_full": "wait", "max_wait_s": 600}],
    agents=[{"id": a, "name": a.upper(), "profile": "std", "queues": ["support", "line"]} for a in ("a1", "a2", "a3")],
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def records() -> AsyncIterator[MemoryJournal]:
    journal = MemoryJournal()  # one records store shared by the instances (PostgreSQL's place)
    await journal.open()
    yield journal
    await journal.close()


def make_runtime(
    url: str, records: MemoryJournal, name: str, config: GatewayConfig = CONFIG, **settings: Any
) -> ClusterRuntime:
    replica = Replica()
    options: dict[str, Any] = {"claim_idle_s": 0.5, "claim_every_s": 0.1, "snapshot_check_s": 0.1}
    options.update(settings)
    return ClusterRuntime(
        Engine(config, **replica.engine_options()),
        records,
        clock=replica.clock,
        metrics=Metrics(),
        shared=RedisLog(parse_redis_url(url), block_ms=200),
        replica=replica,
        config=config,
        caps={},
        settings=ClusterSettings(**options),
        instance=name,
    )


def offer(n: int, *, queue: str = "support", channel: Channel = Channel.CHAT) -> Event:
    return Event(
        vendor="crm",
        event_id=f"e{n}",
        type=EventType.OFFER,
        interaction_id=f"i{n}",
        channel=channel,
        queue=queue,
        occurred_at=datetime.now(timezone.utc),
    )


def entry(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def raw(url: str) -> aioredis.Redis:
    return aioredis.from_url(url, decode_responses=True)


async def traffic(runtime: ClusterRuntime, start: int, count: int) -> dict[str, Decision]:
    """Offers, accepts and ends (sessions come and go, some wait in the line)."""
    answers: dict[str, Decision] = {}
    for n in range(start, start + count):
        decision = await runtime.act(commands.event(offer(n, queue="line" if n % 3 else "support")))
        answers[f"e{n}"] = decision
        if decision.kind is DecisionKind.ASSIGNED and n % 2:
            assert decision.session_id is not None and decision.agent_id is not None
            await runtime.act(commands.accept(decision.session_id, decision.agent_id))
            await runtime.act(commands.end(decision.session_id, decision.agent_id))
    return answers


async def settled(*runtimes: ClusterRuntime) -> None:
    """Every instance applied the whole log."""
    async with asyncio.timeout(15):
        while True:
            last = await runtimes[0].shared.last_id()
            if all(r.replica.last_id == last for r in runtimes):
                return
            await asyncio.sleep(0.02)


def state(runtime: ClusterRuntime) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(runtime.replica.dump()))
    return loaded


@pytest.mark.asyncio
async def test_a_new_instance_starts_from_the_snapshot_behind_which_the_log_was_trimmed(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    a = make_runtime(redis_server.url, records, "a", snapshot_every=40)
    await a.start()
    assert a.started_from is None
    first_entry = (await a.shared.read(a.replica.last_id and "0-0", 1, block=False))[0][0]
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    answers = await traffic(a, 0, 120)
    assert {d.kind for d in answers.values()} >= {DecisionKind.ASSIGNED, DecisionKind.QUEUED}
    client = await raw(redis_server.url)
    try:
        # snapshots were written and the log trimmed behind them
        async with asyncio.timeout(15):
            while not (a.snapshots_written and await client.get("cti:log:trimmed")):
                await asyncio.sleep(0.05)
        entries = await client.xrange("cti:log", "-", "+")
        assert entries[0][0] != first_entry, "the first entries were trimmed"
        assert len(entries) < 120, len(entries)
        # a new instance starts from the newest snapshot and holds the same state
        b = make_runtime(redis_server.url, records, "b", snapshot_every=40)
        await b.start()
        assert b.started_from is not None
        await settled(a, b)
        assert state(b)["engine"] == state(a)["engine"]
        # resends through the new instance: duplicates with the first answers
        for n in (0, 1, 2, 60, 119):
            again = await b.act(commands.event(offer(n, queue="line" if n % 3 else "support")))
            assert again.kind is DecisionKind.DUPLICATE, again
            assert again.original == answers[f"e{n}"]
        # and the next offers are decided alike on both (one log)
        more = await traffic(b, 500, 10)
        await settled(a, b)
        assert state(b)["engine"] == state(a)["engine"]
        assert all(d.kind is not DecisionKind.DUPLICATE for d in more.values())
        await b.stop()
    finally:
        await client.aclose()
        await a.stop()


@pytest.mark.asyncio
async def test_a_snapshot_is_due_after_snapshot_every_entries_past_the_newest_one_whoever_wrote_it(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """An instance that learns of another's snapshot after it applied entries past it still
    counts those entries (before, it started counting when it noticed: with both instances
    counting short, a log whose traffic stopped stayed above snapshot_every entries after
    the newest snapshot, untrimmed, for good when snapshot_every_s is 0)."""
    # the snapshot loops run once at the start, then only when the test says
    options: dict[str, Any] = {"snapshot_every": 10, "snapshot_every_s": 0, "snapshot_check_s": 3600}
    a = make_runtime(redis_server.url, records, "a", **options)
    b = make_runtime(redis_server.url, records, "b", **options)
    await a.start()
    await b.start()
    client = await raw(redis_server.url)

    async def after_snapshot() -> int:
        await settled(a, b)
        position = a._snapshot_seen
        return sum(1 for entry_id, _ in await client.xrange("cti:log", "-", "+") if entry(entry_id) > entry(position))

    try:
        for n in range(12):
            await a.act(commands.event(offer(n, queue="line")))
        await settled(a, b)
        assert await a.write_snapshot()
        n = 100
        while await after_snapshot() < 9:
            await a.act(commands.event(offer(n, queue="line")))
            n += 1
        # b learns of a's snapshot now, 9 entries after it: not due yet
        assert not await b.check_snapshot()
        assert b.entries_since_snapshot() == await after_snapshot() == 9
        await a.act(commands.event(offer(n, queue="line")))
        assert await after_snapshot() == 10
        # the tenth entry past the snapshot makes one due on b as on a
        assert b.entries_since_snapshot() == a.entries_since_snapshot() == 10
        assert await b.check_snapshot()
        assert b.entries_since_snapshot() == 0
    finally:
        await client.aclose()
        await b.stop()
        await a.stop()


@pytest.mark.asyncio
async def test_entries_pending_in_the_group_are_kept_and_finished_from_the_snapshot(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    a = make_runtime(redis_server.url, records, "a", snapshot_every=0, snapshot_every_s=0)
    b = make_runtime(redis_server.url, records, "b", snapshot_every=0, snapshot_every_s=0)
    await a.start()
    await b.start()
    # a alone performs side effects, and it dies before doing those it claimed
    for runtime in (a, b):
        task = runtime._tasks[1]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    decisions = [await a.act(commands.event(offer(n))) for n in range(6)]
    sessions = {d.session_id for d in decisions if d.session_id}
    assert len(sessions) == 6
    claimed = await a.shared.claim_new("a", 100)
    assert len(claimed) >= 9
    a._closing = True
    a._stopped.set()
    a._stop_liveness.set()
    a._wake.set()
    await asyncio.gather(*a._tasks, return_exceptions=True)
    await a.shared.close()
    # more traffic, then a snapshot past the pending entries, and a trim
    for n in range(6, 30):
        await b.act(commands.event(offer(n, queue="line")))
    await settled(b)
    assert await b.write_snapshot()
    # a's last position report would hold the log back too (for position_stale_s, then it
    # is dropped): dropped now, so that only the consumer group holds it back here
    await b.shared.forget_position("a")
    _removed, mark = await b.shared.trim(60_000)
    client = await raw(redis_server.url)
    try:
        remaining = {entry_id for entry_id, _ in await client.xrange("cti:log", "-", "+")}
        # nothing pending was trimmed (a's claimed entries are kept, and entries before them
        # are gone: the snapshot is past them)
        assert set(claimed) <= remaining
        assert mark is not None and entry(mark) == min(entry(i) for i in claimed)
    finally:
        await client.aclose()
    await b.stop()
    # an instance that starts from the snapshot never applied a's entries: the snapshot
    # carries their side effects, and it finishes them
    c = make_runtime(redis_server.url, records, "c", snapshot_every=0, snapshot_every_s=0)
    await c.start()
    assert c.started_from is not None
    async with asyncio.timeout(15):
        while await c.shared.pending():
            await asyncio.sleep(0.05)
    stored = {r["id"] for r in await records.records(start=None, end=None)}
    assert sessions <= stored
    events = {e["event_id"] for e in (await records.load(since=0)).events}
    assert {f"e{n}" for n in range(6)} <= events
    # nothing is pending now: once a's last report counts as gone (here: at once), the
    # log is trimmed up to the snapshot
    c_removed, c_mark = await c.shared.trim(0)
    assert c_removed > 0
    assert c_mark is not None and entry(c_mark) > max(entry(i) for i in claimed)
    await c.stop()


@pytest.mark.asyncio
async def test_a_snapshot_that_does_not_fit_is_refused_and_never_silently_used(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    a = make_runtime(redis_server.url, records, "a", snapshot_every=0, snapshot_every_s=0)
    await a.start()
    # this test trims by itself (a's loop would trim as soon as there is a snapshot)
    loop = next(t for t in a._tasks if t.get_name() == "log-snapshots")
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    await a.act(commands.presence("a1", "ready", None, None))
    await a.act(commands.event(offer(1)))
    assert await a.write_snapshot()
    client = await raw(redis_server.url)
    try:
        # another configuration: the instance refuses to start, as on a log entry
        other = make_runtime(
            redis_server.url, records, "other", make_config(profiles={"std": {"max_sessions": 1}}), snapshot_every=0
        )
        with pytest.raises(ConfigMismatch, match="the shared log runs another configuration"):
            await other.start()
        await other.shared.close()
        # a trim that removes nothing (an instance at the first entry holds the log) leaves
        # no mark: the log still counts as whole
        await a.shared.report_position("hold", "0-1")
        assert await a.shared.trim(60_000) == (0, None)
        assert await client.get("cti:log:trimmed") is None
        await client.hdel("cti:log:applied", "hold")
        # another format, the log never trimmed: refused (logged), the whole log replayed
        await client.hset("cti:snapshot", "format", "999")
        b = make_runtime(redis_server.url, records, "b", snapshot_every=0, snapshot_every_s=0)
        await b.start()
        assert b.started_from is None
        assert state(b)["engine"] == state(a)["engine"]
        await b.stop()
        # the log trimmed behind the snapshot: no safe state to start from, refused with one line
        await client.hset("cti:snapshot", "format", "1")
        await a.shared.report_position("a", a.replica.last_id)
        removed, _ = await a.shared.trim(60_000)
        assert removed > 0
        await client.hset("cti:snapshot", "format", "999")
        c = make_runtime(redis_server.url, records, "c", snapshot_every=0, snapshot_every_s=0)
        with pytest.raises(SnapshotUnusable) as refused:
            await c.start()
        message = refused.value.message
        assert "the shared log is trimmed" in message and "snapshot format 999, this gateway reads 1" in message
        assert "\n" not in message
        await c.shared.close()
        # a corrupt state (the right format): refused the same way
        await client.hset("cti:snapshot", mapping={"format": "1", "state": "not zlib"})
        d = make_runtime(redis_server.url, records, "d", snapshot_every=0, snapshot_every_s=0)
        with pytest.raises(SnapshotUnusable, match="the snapshot cannot be read"):
            await d.start()
        await d.shared.close()
    finally:
        await client.aclose()
        await a.stop()


@pytest.mark.asyncio
async def test_a_snapshot_older_than_a_reload_starts_an_instance_on_the_reloaded_file(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """A snapshot carries the configuration in force at its position: an instance on the file
    of a later reload starts from it (engine built from the snapshot's configuration, then
    the reload applied at its position) and holds the same state; one on the first file is
    refused; a snapshot written after the reload is of the reloaded configuration."""
    a = make_runtime(redis_server.url, records, "a", snapshot_every=0, snapshot_every_s=0)
    await a.start()
    loop = next(t for t in a._tasks if t.get_name() == "log-snapshots")
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    await traffic(a, 0, 20)
    assert await a.write_snapshot()  # at the first configuration
    reloaded = make_config(
        profiles={name: p.model_dump() for name, p in CONFIG.capacity_profiles.items()},
        queues=[q.model_dump() for q in CONFIG.queues],
        agents=[*(x.model_dump() for x in CONFIG.agents), {"id": "a4", "profile": "std", "queues": ["line"]}],
    )
    a.own_file(reloaded, {})
    assert (await a.act(a.reload_command(reloaded, {})))["agents_added"] == ["a4"]
    await a.act(commands.presence("a4", "ready", None, None))
    await traffic(a, 100, 20)
    await a.shared.report_position("a", a.replica.last_id)
    removed, _ = await a.shared.trim(60_000)
    assert removed > 0  # the entries before the snapshot are gone: only it can start an instance
    b = make_runtime(redis_server.url, records, "b", reloaded, snapshot_every=0, snapshot_every_s=0)
    old = make_runtime(redis_server.url, records, "old", CONFIG, snapshot_every=0, snapshot_every_s=0)
    c: ClusterRuntime | None = None
    try:
        await b.start()
        assert b.started_from is not None and b.log_generation == 1 and b.file_differs is None
        await settled(a, b)
        assert state(b)["engine"] == state(a)["engine"]
        with pytest.raises(ConfigMismatch, match="in force since reload 1"):
            await old.start()
        # a snapshot written now is of the reloaded configuration
        assert await a.write_snapshot()
        c = make_runtime(redis_server.url, records, "c", reloaded, snapshot_every=0, snapshot_every_s=0)
        await c.start()
        assert c.started_from is not None and c.started_from != b.started_from
        await settled(a, c)
        assert state(c)["engine"] == state(a)["engine"]
    finally:
        await old.shared.close()
        for runtime in (b, c):
            if runtime is not None and runtime._tasks:
                await runtime.stop()
        await a.stop()


@pytest.mark.asyncio
async def test_an_instance_left_behind_the_trim_resyncs_from_the_snapshot(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """An instance cut off while the others snapshot and trim past what it applied (its
    position report went stale) notices the gap, reloads the newest snapshot, catches up
    and holds the same state again: it never applies the log with entries missing."""
    a = make_runtime(redis_server.url, records, "a", snapshot_every=0, snapshot_every_s=0)
    b = make_runtime(redis_server.url, records, "b", snapshot_every=0, snapshot_every_s=0)
    await a.start()
    await b.start()
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    await traffic(a, 0, 10)
    await settled(a, b)
    # b is cut off: its reads of the log wait (its requests fail meanwhile), and its
    # position report goes stale
    cut_off = asyncio.Event()
    reads = b.shared.read_checked

    async def cut_read(after: str, count: int) -> Any:
        await cut_off.wait()
        return await reads(after, count)

    reports = b.shared.report_position

    async def cut_report(instance: str, entry_id: str) -> None:
        await cut_off.wait()
        await reports(instance, entry_id)

    b.shared.read_checked = cut_read  # type: ignore[method-assign]
    b.shared.report_position = cut_report  # type: ignore[method-assign]
    await asyncio.sleep(0.5)  # (the calls in flight end: the next ones wait)
    behind = b.replica.last_id
    # ... while a goes on, writes a snapshot and trims (b's report counts as gone: stale)
    answers = await traffic(a, 100, 30)
    assert await a.write_snapshot()
    await a.shared.forget_position("b")
    removed, mark = await a.shared.trim(60_000)
    assert removed > 0 and mark is not None and entry(mark) > entry(behind)
    # b reaches Redis again: it finds the gap, starts from the snapshot, catches up
    cut_off.set()
    async with asyncio.timeout(15):
        while not b.resyncs:
            await asyncio.sleep(0.02)
    await settled(a, b)
    assert b.ready
    assert state(b)["engine"] == state(a)["engine"]
    again = await b.act(commands.event(offer(100, queue="support")))
    assert again.kind is DecisionKind.DUPLICATE and again.original == answers["e100"]
    await b.stop()
    await a.stop()
