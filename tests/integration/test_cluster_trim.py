"""Snapshots and trimming with real processes: gateway instances on one real redis-server
and one real PostgreSQL (``store.snapshot_every`` small so that it happens in seconds).

* Under steady traffic the log's length stays bounded (it does not grow with the traffic),
  and a new instance started after the trim (from the snapshot: the first entries are
  gone) serves correctly: the same ``hello``, the same ``in_use``, a duplicate resent to
  it is a ``duplicate`` with the first answer.
* An instance SIGKILLed while it writes a snapshot leaves a usable one: what is in Redis
  reads back, and an instance started from it serves correctly.
* Entries pending for an effects consumer that died are never trimmed: they stay in the
  log (while snapshots are written and the log trimmed up to them), another instance
  takes them over and their records reach PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.cluster import snapshot
from tests.peers.redis import RedisServer

from .conftest import GatewayFactory
from .live import GatewayProcess, LiveClient
from .test_cluster import AGENTS, client, cluster_config, offer, records_reach_postgres, set_ready

SNAPSHOT_EVERY = 150


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def trim_config(redis_url: str, records_url: str, **store: Any) -> dict[str, Any]:
    config = cluster_config(redis_url, records_url)
    config["store"].update({"snapshot_every": SNAPSHOT_EVERY, "snapshot_every_s": 0, **store})
    return config


def entry(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def end_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": f"end-{event['event_id']}",
        "type": "end",
        "interaction_id": event["interaction_id"],
        "occurred_at": event["occurred_at"],
    }


async def steady(c: LiveClient, prefix: str, count: int, answers: dict[str, Any], *, workers: int = 8) -> None:
    """Offers, each ended by the vendor once answered (capacity comes back): ``count`` of
    them, ``workers`` at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker(w: int) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            event = offer(f"{prefix}{n}", AGENTS[(n + w) % len(AGENTS)], ("voice", "chat")[n % 2])
            status, body = await c.webhook(event)
            assert status in (200, 409), body
            answers[event["event_id"]] = body
            if body["decision"] == "assigned" and n % 4:  # most end: a few stay open
                status, ended = await c.webhook(end_event(event))
                assert status == 200, ended

    await asyncio.gather(*(worker(w) for w in range(workers)))


async def stream_info(url: str) -> dict[str, Any]:
    redis = aioredis.from_url(url, decode_responses=True)
    try:
        info: dict[str, Any] = await redis.xinfo_stream("cti:log")
        return info
    finally:
        await redis.aclose()


async def trim_inputs(url: str) -> dict[str, Any]:
    """What bounds the trim (the trim script in gateway/cluster/log.py): the log's length
    and first entry, the newest snapshot's position, the effects group's last delivered and
    oldest pending entries, and the positions the instances reported."""
    redis = aioredis.from_url(url, decode_responses=True)
    try:
        info = await redis.xinfo_stream("cti:log")
        snap = await redis.hmget("cti:snapshot", ["ms", "seq"])
        groups = await redis.xinfo_groups("cti:log")
        return {
            "length": info["length"],
            "first": (info.get("first-entry") or [None])[0],
            "snapshot": "-".join(snap) if snap[0] else None,
            "groups": [{k: g.get(k) for k in ("name", "last-delivered-id", "pending", "lag")} for g in groups],
            "oldest_pending": (await redis.xpending("cti:log", "effects")).get("min") if groups else None,
            "positions": await redis.hgetall("cti:log:applied"),
        }
    finally:
        await redis.aclose()


async def wait_for(what: str, check: Any, timeout: float = 30.0, explain: Any = None) -> Any:
    """Poll ``check`` until it holds; on time out, fail with what ``explain()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = await explain() if explain is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s {detail}")
        await asyncio.sleep(0.1)


async def same_view(clients: list[LiveClient]) -> None:
    """Every instance shows the same agents (presence, in_use, sessions), and in_use
    equals the open sessions."""
    views = [await c.ok("GET", "/v1/agents", "sup") for c in clients]
    assert all(view == views[0] for view in views[1:])
    for agent in views[0]["agents"]:
        open_sessions = [s for s in agent["sessions"] if s["state"] in ("offered", "active", "wrap_up")]
        assert agent["in_use"]["sessions"] == len(open_sessions), agent


async def hello(http: aiohttp.ClientSession, proc: GatewayProcess, agent: str) -> dict[str, Any]:
    ws = await http.ws_connect(f"{proc.base}/v1/agents/{agent}/ws", headers={"Authorization": f"Bearer tok-{agent}"})
    try:
        message: dict[str, Any] = await ws.receive_json(timeout=10)
        assert message["type"] == "hello", message
        return message
    finally:
        await ws.close()


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """A hello without what differs by the moment it is built (durations run)."""
    agent = dict(message["agent"])
    agent["sessions"] = [{k: v for k, v in s.items() if k != "focus_ms"} for s in agent["sessions"]]
    return agent


@pytest.mark.slow
@pytest.mark.asyncio
async def test_steady_traffic_keeps_the_log_bounded_and_a_new_instance_serves_from_the_snapshot(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    config = trim_config(redis_server.url, postgres_url)
    procs = [gateway_process(config, name=f"gw{i}") for i in range(2)]
    for proc in procs:
        proc.start()
    lengths: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        redis = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            while not done.is_set():
                lengths.append(int(await redis.xlen("cti:log")))
                await asyncio.sleep(0.1)
        finally:
            await redis.aclose()

    async with aiohttp.ClientSession() as http:
        clients = [client(http, p) for p in procs]
        await set_ready(clients)
        answers: dict[str, Any] = {}
        sampler = asyncio.create_task(sample())
        await asyncio.gather(steady(clients[0], "s", 900, answers), steady(clients[1], "t", 900, answers))
        done.set()
        await sampler
        added = int((await stream_info(redis_server.url))["entries-added"])
        assert added >= 2_400, added
        # bounded: trimmed while the traffic ran, the log never held more
        # than a part of what went through it (what accumulates between two snapshot
        # checks, a second apart, and the snapshot_every entries after the newest) ...
        drops = sum(1 for before, after in zip(lengths, lengths[1:], strict=False) if after < before)
        assert drops >= 1, lengths
        assert max(lengths) < added / 2, (max(lengths), added)

        # ... and once traffic stops it comes down to the entries after the newest snapshot
        async def short() -> bool:
            return int((await stream_info(redis_server.url))["length"]) <= SNAPSHOT_EVERY + 20

        # (this once failed: the instances counted the entries after the newest snapshot
        # from when they learnt of it, so both could count short of snapshot_every and the
        # log stayed longer for good; test_cluster_snapshots pins the count)
        await wait_for(
            "the log trimmed behind the newest snapshot",
            short,
            timeout=60.0,
            explain=lambda: trim_inputs(redis_server.url),
        )
        assert sum(len(p.log_events("snapshot_written")) for p in procs) >= 2
        # a new instance starts from the snapshot (the first entries are gone) ...
        late = gateway_process(config, name="late")
        late.start()
        joined = late.log_events("joined")[0]
        assert joined["snapshot"] is not None, joined
        assert joined["applied"] < SNAPSHOT_EVERY + 40, joined
        assert late.log_events("snapshot_loaded")
        all_clients = [*clients, client(http, late)]
        # ... and serves as the others do: the same agents, in_use, hello
        await same_view(all_clients)
        for agent in AGENTS:
            hellos = [comparable(await hello(http, p, agent)) for p in (*procs, late)]
            assert hellos[0] == hellos[1] == hellos[2], agent
        # resends to it (the first ones were trimmed from the log long ago): duplicates
        for event_id in ("s0", "s1", "t2", "s450", "t899"):
            n, prefix = int(event_id[1:]), event_id[0]
            event = offer(event_id, AGENTS[n % len(AGENTS)], ("voice", "chat")[n % 2])
            status, body = await all_clients[2].webhook(event)
            assert status in (200, 409) and body["decision"] == "duplicate", (event_id, body)
            first = answers[event_id]
            assert body["first_decision"] == first["decision"]
            assert body.get("session_id") == first.get("session_id")
            assert prefix in "st"
        # records: every event of the traffic (offers and ends) reached PostgreSQL once
        ends = sum(1 for e, b in answers.items() if b["decision"] == "assigned" and int(e[1:]) % 4)
        assigned = {b["session_id"] for b in answers.values() if b["decision"] == "assigned"}
        await records_reach_postgres(postgres_url, len(answers) + ends, assigned)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_an_instance_killed_while_writing_a_snapshot_leaves_a_usable_one(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    config = trim_config(redis_server.url, postgres_url)
    writer = gateway_process(config, name="writer")
    writer.start()
    redis = aioredis.from_url(redis_server.url)
    try:
        async with aiohttp.ClientSession() as http:
            c = client(http, writer)
            await set_ready([c])
            answers: dict[str, Any] = {}
            await steady(c, "w", 200, answers, workers=4)

            async def written() -> bool:
                return bool(writer.log_events("snapshot_written"))

            await wait_for("a first snapshot", written)
            # more traffic; the writer is SIGKILLed as soon as it says it writes the next one
            traffic = asyncio.create_task(steady(c, "x", 600, answers, workers=4))
            writes = len(writer.log_events("snapshot_writing"))
            deadline = time.monotonic() + 60
            while "snapshot_writing" not in writer.stderr().split("snapshot_written")[-1] or writes == len(
                writer.log_events("snapshot_writing")
            ):
                assert time.monotonic() < deadline, "no second snapshot"
                await asyncio.sleep(0.002)
            writer.kill()
            await asyncio.gather(traffic, return_exceptions=True)
            # what Redis holds is a whole snapshot (the older one, or the new one entirely)
            stored = await redis.hgetall("cti:snapshot")
            body = snapshot.decode(stored[b"state"])
            assert body["position"] == f"{stored[b'ms'].decode()}-{stored[b'seq'].decode()}"
            assert body["format"] == snapshot.FORMAT
            # an instance started now loads it and serves correctly
            after = gateway_process(config, name="after")
            after.start()
            assert after.log_events("snapshot_loaded")
            c2 = client(http, after)
            await same_view([c2])
            for event_id, first in list(answers.items())[::25]:
                # (a resend is a duplicate whatever its agent and channel: the id decides)
                status, again = await c2.webhook(offer(event_id, "a1", "chat"))
                assert status in (200, 409) and again["decision"] == "duplicate", (event_id, again)
                assert again["first_decision"] == first["decision"]
                assert again.get("session_id") == first.get("session_id")
    finally:
        await redis.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_entries_pending_for_a_dead_effects_consumer_are_never_trimmed_and_reach_postgres(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    # the survivor takes a dead instance's entries over after claim_idle_s: long enough
    # here to write snapshots and trim while they are pending
    config = trim_config(redis_server.url, postgres_url, claim_idle_s=8.0)
    victim, survivor = (gateway_process(config, name=n) for n in ("victim", "survivor"))
    victim.start()
    survivor.start()
    redis = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            cv, cs = client(http, victim), client(http, survivor)
            await set_ready([cv, cs])
            answers: dict[str, Any] = {}
            assert victim.proc is not None
            pid = victim.proc.pid
            consumer = None
            pending: list[str] = []
            for attempt in range(200):
                await steady(cv, f"v{attempt}-", 5, answers, workers=5)
                os.kill(pid, signal.SIGSTOP)  # frozen with what it claimed
                consumers = await redis.xinfo_consumers("cti:log", "effects")
                mine = [row for row in consumers if f"-{pid}-" in row["name"] and row["pending"]]
                if mine:
                    consumer = mine[0]["name"]
                    rows = await redis.xpending_range("cti:log", "effects", "-", "+", 1000, consumername=consumer)
                    pending = [row["message_id"] for row in rows]
                    break
                os.kill(pid, signal.SIGCONT)
            assert consumer is not None and pending, "the victim never held pending entries"
            victim.kill()
            # its last position report would hold the log back for a minute (then it is
            # dropped): dropped now, so that only the consumer group holds the log back
            for field in await redis.hkeys("cti:log:applied"):
                if f"-{pid}-" in field:
                    await redis.hdel("cti:log:applied", field)
            # traffic through the survivor: snapshots are written, the log trimmed ...
            before = len(survivor.log_events("snapshot_written"))
            await steady(cs, "after-", 400, answers)

            async def trimmed_up_to_the_pending() -> bool:
                mark = await redis.get("cti:log:trimmed")
                written = len(survivor.log_events("snapshot_written")) > before
                return bool(written and mark == min(pending, key=entry))

            await wait_for("a trim up to the oldest pending entry", trimmed_up_to_the_pending)
            # ... never past the dead consumer's pending entries: still there, still pending
            kept = {entry_id for entry_id, _ in await redis.xrange("cti:log", pending[0], pending[-1])}
            assert set(pending) <= kept
            still = await redis.xpending_range("cti:log", "effects", "-", "+", 1000, consumername=consumer)
            assert {row["message_id"] for row in still} == set(pending)
            # the survivor takes them over (claim_idle_s) and their records reach PostgreSQL
            ends = sum(1 for e, b in answers.items() if b["decision"] == "assigned" and int(e.split("-")[-1]) % 4)
            assigned = {b["session_id"] for b in answers.values() if b["decision"] == "assigned"}
            await records_reach_postgres(postgres_url, len(answers) + ends, assigned)

            async def nothing_pending() -> bool:
                return int((await redis.xpending("cti:log", "effects"))["pending"]) == 0

            await wait_for("the dead consumer's entries finished", nothing_pending)
            assert survivor.log_events("entries_taken_over")

            # and then the log is trimmed past them
            async def past_them() -> bool:
                first = await redis.xrange("cti:log", "-", "+", count=1)
                return bool(first) and entry(first[0][0]) > max(entry(i) for i in pending)

            await wait_for("the log trimmed past the finished entries", past_them)
    finally:
        await redis.aclose()
