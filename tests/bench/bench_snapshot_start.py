"""How long an instance takes to start on a long shared log, with and without a snapshot,
and what the log costs Redis before and after the trim (no test, nothing asserted).

    .venv/bin/python -m tests.bench.bench_snapshot_start [ENTRIES] [RUNS]

A private redis-server (no persistence: the figure is the gateway's start, not the disk) is
filled with ENTRIES log entries (50,000 by default: vendor offers to 10 agents and their
ends, through one in-process instance, 200 at a time). Then RUNS times, interleaved, a new
instance (the replicated runtime in process, as ``cti-gateway run`` builds it) is started
and timed until it takes requests: once without a snapshot (it applies every entry), once
from a snapshot written at the end of the log (it loads it and applies what follows). The
log is kept whole meanwhile (a held position). Last, the log is trimmed behind the
snapshot, and Redis' memory for the stream is shown before and after (``MEMORY USAGE``);
then ENTRIES / 2 more entries of steady traffic through an instance with
``snapshot_every: 2000``, the log's length and memory sampled every 0.5 s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis.asyncio as aioredis

from gateway import commands
from gateway.cluster.log import RedisLog
from gateway.cluster.replica import Replica
from gateway.cluster.runtime import ClusterRuntime, ClusterSettings
from gateway.engine import Engine
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.records import MemoryJournal
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer
from tests.unit.conftest import make_config

AGENTS = [f"a{n}" for n in range(10)]
CONFIG = make_config(
    profiles={"std": {"max_sessions": 4, "channels": {"voice": 1, "chat": 3}}},
    agents=[{"id": a, "name": a.upper(), "profile": "std", "queues": ["support"]} for a in AGENTS],
)
#: what no instance would do: keeps the whole log while the starts are measured
HOLD = "bench-hold-the-log"


def runtime(url: str, name: str, settings: ClusterSettings | None = None) -> ClusterRuntime:
    replica = Replica()
    return ClusterRuntime(
        Engine(CONFIG, **replica.engine_options()),
        MemoryJournal(),
        clock=replica.clock,
        metrics=Metrics(),
        shared=RedisLog(parse_redis_url(url), block_ms=200),
        replica=replica,
        config=CONFIG,
        caps={},
        settings=settings or ClusterSettings(snapshot_every=0, snapshot_every_s=0, snapshot_check_s=3600),
        instance=name,
    )


def event(n: int, kind: EventType, prefix: str = "") -> Event:
    return Event(
        vendor="crm",
        event_id=f"{prefix}{kind.value}-{n}",
        type=kind,
        interaction_id=f"{prefix}i{n}",
        channel=Channel.CHAT if kind is EventType.OFFER else None,
        agent_id=AGENTS[n % len(AGENTS)] if kind is EventType.OFFER else None,
        occurred_at=datetime.now(timezone.utc),
    )


async def fill(writer: ClusterRuntime, entries: int, prefix: str = "") -> None:
    for agent in AGENTS:
        await writer.act(commands.presence(agent, "ready", None, None))
    n = 0
    while n * 2 < entries:
        batch = range(n, n + 100)
        await asyncio.gather(*(writer.act(commands.event(event(i, EventType.OFFER, prefix))) for i in batch))
        await asyncio.gather(*(writer.act(commands.event(event(i, EventType.END, prefix))) for i in batch))
        n += 100


async def timed_start(url: str, name: str) -> tuple[float, int]:
    instance = runtime(url, name)
    await instance.journal.open()
    started = time.perf_counter()
    await instance.start()
    elapsed = time.perf_counter() - started
    applied = instance.applied_entries
    await instance.stop()
    await instance.journal.close()
    return elapsed, applied


async def steady(url: str, redis: aioredis.Redis, *, every: int, entries: int) -> None:
    """Steady traffic through an instance with ``snapshot_every: every``: the log's length
    and Redis' memory for it, sampled every 0.5 s."""
    instance = runtime(url, "steady", ClusterSettings(snapshot_every=every, snapshot_every_s=0))
    await instance.journal.open()
    await instance.start()
    lengths: list[int] = []
    memory: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            lengths.append(int(await redis.xlen("cti:log")))
            memory.append(int(await redis.memory_usage("cti:log", samples=0) or 0))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    began = time.perf_counter()
    await fill(instance, entries, "steady-")
    done.set()
    await sampler
    print(
        f"steady traffic, snapshot_every {every}: {entries} entries in {time.perf_counter() - began:.0f} s, "
        f"{instance.snapshots_written} snapshots; the log held at most {max(lengths)} entries "
        f"({max(memory) / 1e3:.0f} kB MEMORY USAGE), {lengths[-1]} at the end"
    )
    await instance.stop()
    await instance.journal.close()


async def main(entries: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            url = server.url
            redis = aioredis.from_url(url, decode_responses=True)
            writer = runtime(url, "writer")
            await writer.journal.open()
            await writer.start()
            began = time.perf_counter()
            await fill(writer, entries)
            length = await redis.xlen("cti:log")
            print(f"log: {length} entries, filled in {time.perf_counter() - began:.1f} s", flush=True)
            # every entry done (records, none pending), then a snapshot at the end of the log
            while int((await redis.xpending("cti:log", "effects"))["pending"]):
                await asyncio.sleep(0.1)
            assert await writer.write_snapshot()
            ms, seq = await redis.hmget("cti:snapshot", "ms", "seq")
            size = await redis.hstrlen("cti:snapshot", "state")
            print(f"snapshot: at {ms}-{seq}, {size} bytes stored", flush=True)
            memory_before = int(await redis.memory_usage("cti:log", samples=0) or 0)
            full: list[float] = []
            loaded: list[float] = []
            for run in range(runs):
                await redis.hset("cti:log:applied", HOLD, "0-1 9999999999999")  # nothing trimmed
                await redis.rename("cti:snapshot", "cti:snapshot:aside")
                seconds, applied = await timed_start(url, f"full-{run}")
                full.append(seconds)
                print(f"run {run}: without a snapshot {seconds:.2f} s ({applied} entries applied)", flush=True)
                await redis.rename("cti:snapshot:aside", "cti:snapshot")
                seconds, applied = await timed_start(url, f"snap-{run}")
                loaded.append(seconds)
                print(f"run {run}: from the snapshot   {seconds:.2f} s ({applied} entries applied)", flush=True)
            await redis.hdel("cti:log:applied", HOLD)
            await writer.shared.report_position(writer.instance, writer.replica.last_id)
            removed, mark = await writer.shared.trim(60_000)
            memory_after = int(await redis.memory_usage("cti:log", samples=0) or 0)
            print(
                f"start, median of {runs}: without a snapshot {statistics.median(full):.2f} s, "
                f"from the snapshot {statistics.median(loaded):.2f} s "
                f"({statistics.median(full) / statistics.median(loaded):.0f}x)"
            )
            print(
                f"log: {length} entries, MEMORY USAGE {memory_before / 1e6:.1f} MB; trimmed {removed} "
                f"(mark {mark}): {await redis.xlen('cti:log')} entries, {memory_after / 1e3:.1f} kB"
            )
            await writer.stop()
            await writer.journal.close()
            await steady(url, redis, every=2_000, entries=entries // 2)
            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            await redis.aclose()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
