"""The replicated runtime in process, on a real redis-server: an instance that claimed
entries and died leaves them pending, another takes them over (XAUTOCLAIM) and performs
their side effects; instances on other configurations refuse to start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway import commands
from gateway.cluster.log import RedisLog
from gateway.cluster.replica import Replica
from gateway.cluster.runtime import ClusterRuntime, ClusterSettings, ConfigMismatch, config_hash
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.records import MemoryJournal
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer
from tests.unit.conftest import make_config


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def make_runtime(url: str, records: MemoryJournal, name: str, config: GatewayConfig | None = None) -> ClusterRuntime:
    config = config or make_config()
    replica = Replica()
    return ClusterRuntime(
        Engine(config, **replica.engine_options()),
        records,
        clock=replica.clock,
        metrics=Metrics(),
        shared=RedisLog(parse_redis_url(url), block_ms=200),
        replica=replica,
        config_hash=config_hash(config, {}),
        settings=ClusterSettings(claim_idle_s=0.5, claim_every_s=0.1),
        instance=name,
    )


@pytest_asyncio.fixture
async def records() -> AsyncIterator[MemoryJournal]:
    journal = MemoryJournal()  # one records store shared by the instances (PostgreSQL's place)
    await journal.open()
    yield journal
    await journal.close()


def offer(n: int) -> Event:
    return Event(
        vendor="crm",
        event_id=f"e{n}",
        type=EventType.OFFER,
        interaction_id=f"i{n}",
        channel=Channel.CHAT,
        queue="support",
        occurred_at=datetime.now(timezone.utc),
    )


@pytest.mark.asyncio
async def test_entries_claimed_by_a_dead_instance_are_finished_by_another(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    a = make_runtime(redis_server.url, records, "a")
    b = make_runtime(redis_server.url, records, "b")
    await a.start()
    await b.start()
    # only a performs side effects for now; b's worker starts later
    effects_b = b._tasks[1]
    effects_b.cancel()
    effects_a = a._tasks[1]
    effects_a.cancel()
    for task in (effects_a, effects_b):
        with pytest.raises(asyncio.CancelledError):
            await task
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    decisions = [await a.act(commands.event(offer(n))) for n in range(6)]
    sessions = {d.session_id for d in decisions if d.session_id}
    assert len(sessions) == 6
    # a takes every entry for its side effects, then dies before doing them
    claimed = await a.shared.claim_new("a", 100)
    assert len(claimed) >= 9  # config, presences, offers
    a._closing = True  # its loops end where they are: nothing it claimed is acknowledged
    a._wake.set()
    await asyncio.gather(*a._tasks, return_exceptions=True)
    await a.shared.close()
    assert await b.shared.pending() >= len(claimed)
    assert {r["id"] for r in await records.records(start=None, end=None)} == set()
    # b's worker finds them idle (claim_idle_s) and finishes them
    b._tasks[1] = asyncio.create_task(b._effects_loop())
    async with asyncio.timeout(15):
        while await b.shared.pending():
            await asyncio.sleep(0.05)
    assert {r["id"] for r in await records.records(start=None, end=None)} == sessions
    snapshot = await records.load(since=0)
    assert {e["event_id"] for e in snapshot.events} == {f"e{n}" for n in range(6)}
    await b.stop()


@pytest.mark.asyncio
async def test_an_instance_on_another_configuration_refuses_to_start(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    first = make_runtime(redis_server.url, records, "first")
    await first.start()
    other = make_runtime(redis_server.url, records, "other", make_config(profiles={"std": {"max_sessions": 1}}))
    with pytest.raises(ConfigMismatch) as refused:
        await other.start()
    message = refused.value.message
    assert message.startswith(f"redis://127.0.0.1:{redis_server.port}/0: the shared log runs another configuration")
    assert "every instance on one store must run the same agents, profiles, queues and vendors" in message
    assert "\n" not in message
    await other.shared.close()
    # the same configuration joins, and sees what the first one did
    await first.act(commands.presence("a1", "ready", None, None))
    same = make_runtime(redis_server.url, records, "same")
    await same.start()
    assert same.engine.presence_of("a1").value == "ready"
    await same.stop()
    await first.stop()


async def until(condition: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def die(runtime: ClusterRuntime) -> None:
    """The process is gone: its loops stop where they are, nothing is said to anyone."""
    runtime._closing = True
    runtime._wake.set()
    runtime._stop_liveness.set()
    await asyncio.gather(*runtime._tasks, return_exceptions=True)
    await runtime.shared.close()


@pytest.mark.asyncio
async def test_a_desktop_moving_between_instances_is_never_taken_for_gone(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """Agent a1's desktop moves from instance a to b (b's socket opens, then a's closes), and
    a2 has desktops on both: every engine keeps both connected, no grace period starts. Then
    b dies without a word: after its silence (claim_idle_s) a declares it gone and the
    agents whose desktops b held start their grace period, on every instance."""
    a = make_runtime(redis_server.url, records, "a")
    b = make_runtime(redis_server.url, records, "b")
    await a.start()
    await b.start()
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    await a.act(commands.desktop_connected("a1", True, a.desktop_host))
    await b.act(commands.desktop_connected("a1", True, b.desktop_host))
    await a.act(commands.desktop_disconnected("a1", a.desktop_host))
    await a.act(commands.desktop_connected("a2", True, a.desktop_host))
    await b.act(commands.desktop_connected("a2", True, b.desktop_host))
    await a.act(commands.desktop_connected("a3", True, a.desktop_host))
    await until(lambda: b.replica.last == a.replica.last)
    for runtime in (a, b):
        for agent in ("a1", "a2", "a3"):
            assert runtime.engine.agent(agent)["desktop_connected"] is True, (runtime.instance, agent)
        assert runtime.engine.next_deadline() is None  # no grace period anywhere
    # a few heartbeats later still nobody is taken for gone
    await asyncio.sleep(1.5)
    assert a.engine.desktop_hosts() == {"a", "b"}

    await die(b)
    # a1's only desktop was on b: its grace period starts; a2 and a3 keep a's
    await until(lambda: not a.engine.agent("a1")["desktop_connected"])
    assert a.engine.desktop_hosts() == {"a"}
    assert a.engine.agent("a2")["desktop_connected"] is True
    assert a.engine.agent("a3")["desktop_connected"] is True
    deadline = a.engine.next_deadline()
    assert deadline is not None and deadline > time.time()  # the grace period (60 s), not an offline
    assert a.engine.presence_of("a1").value == "ready"
    # an instance that joins now replays the same: a1 in its grace period, a2 and a3 connected
    c = make_runtime(redis_server.url, records, "c")
    await c.start()
    await until(lambda: c.replica.last == a.replica.last)
    assert [c.engine.agent(x)["desktop_connected"] for x in ("a1", "a2", "a3")] == [False, True, True]
    assert c.engine.next_deadline() == deadline
    await c.stop()
    await a.stop()


class _Socket:
    """A desktop socket held in an instance's hub (what agent_ws registers)."""

    def offer(self, message: Any) -> bool:
        return True

    def overflow(self) -> None:  # pragma: no cover - never falls behind
        pass


@pytest.mark.asyncio
async def test_an_instance_taken_for_gone_announces_the_desktops_it_still_holds(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """a lost Redis long enough for b to declare it gone, yet a1's desktop is still open on a:
    a sees the declaration in the log and tells the log again, before the grace period ends."""
    a = make_runtime(redis_server.url, records, "a")
    b = make_runtime(redis_server.url, records, "b")
    await a.start()
    await b.start()
    a.hub.add("a1", _Socket())
    await a.act(commands.desktop_connected("a1", True, a.desktop_host))
    assert await b.act(commands.desktops_gone("a")) == ["a1"]
    # (the declaration itself gave a1 a grace period; a's announcement ends it)
    await until(lambda: a.engine.desktop_hosts() == {"a"} and b.engine.desktop_hosts() == {"a"})
    await until(lambda: b.replica.last == a.replica.last)
    for runtime in (a, b):
        assert runtime.engine.agent("a1")["desktop_connected"] is True
        assert runtime.engine.next_deadline() is None
    await b.stop()
    await a.stop()
