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
from gateway.cluster.runtime import ClusterRuntime, ClusterSettings, ConfigMismatch
from gateway.cluster.shared_config import config_digest
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.records import MemoryJournal
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer
from tests.unit.conftest import agent_spec, make_config


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
        config=config,
        caps={},
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


@pytest_asyncio.fixture
async def made() -> AsyncIterator[list[ClusterRuntime]]:
    """The runtimes a test made: stopped at its end, also when it fails."""
    runtimes: list[ClusterRuntime] = []
    yield runtimes
    for runtime in runtimes:
        if runtime._tasks:
            await runtime.stop()
        else:
            await runtime.shared.close()


def running(made: list[ClusterRuntime], *args: Any, **kwargs: Any) -> ClusterRuntime:
    runtime = make_runtime(*args, **kwargs)
    made.append(runtime)
    return runtime


def with_agents(*agents: str) -> GatewayConfig:
    """The default test configuration with these agents (profile std, queue support)."""
    return make_config(agents=[agent_spec(a) for a in agents])


def recorder(runtime: ClusterRuntime) -> list[list[str]]:
    """Record, per reload entry this instance applied, the agents of its new configuration."""
    seen: list[list[str]] = []

    async def hook(config: GatewayConfig, caps: Any, summary: dict[str, Any]) -> dict[str, Any]:
        seen.append([a.id for a in config.agents])
        return summary

    runtime.on_reload = hook
    return seen


def state_of(runtime: ClusterRuntime) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """The agents and each session's agent and status: what must be identical everywhere."""
    engine = runtime.engine
    return engine.agent_ids(), {sid: (s.agent_id, str(s.state)) for sid, s in engine.sessions.items()}


@pytest.mark.asyncio
async def test_two_reloads_made_on_the_same_configuration_the_second_is_refused_everywhere(
    redis_server: RedisServer, records: MemoryJournal, made: list[ClusterRuntime]
) -> None:
    """Concurrent reloads on two instances: the log orders them; the first applies on every
    instance, the second (made on a configuration no longer in force) is refused
    ``reload_conflict`` on every instance and changes nothing; a reload made after it, on the
    configuration in force, applies on top."""
    a = running(made, redis_server.url, records, "a")
    b = running(made, redis_server.url, records, "b")
    await a.start()
    await b.start()
    seen_a, seen_b = recorder(a), recorder(b)
    to_a, to_b = with_agents("a1", "a2", "a3", "a8"), with_agents("a1", "a2", "a3", "a9")
    # both made on the configuration in force now, before either is in the log
    from_a, from_b = a.reload_command(to_a, {}), b.reload_command(to_b, {})
    outcomes = await asyncio.gather(a.act(from_a), b.act(from_b), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) == 1 and len(applied) == 1, outcomes
    assert refused[0].code == "reload_conflict"
    assert "another reload was applied first" in refused[0].message
    winner = to_a if applied[0] is outcomes[0] else to_b
    winner_agents = [x.id for x in winner.agents]
    assert applied[0]["generation"] == 1
    async with asyncio.timeout(10):
        while len(seen_a) < 1 or len(seen_b) < 1 or b.replica.last != a.replica.last:
            await asyncio.sleep(0.02)
    assert seen_a == seen_b == [winner_agents]  # each instance reconciled its edges once
    assert a.log_config == b.log_config == config_digest(winner, {})
    assert a.engine.agent_ids() == b.engine.agent_ids() == winner_agents
    assert a.engine.generation == b.engine.generation == 1
    # made now, on the configuration in force: applied on top
    loser = to_b if winner is to_a else to_a
    summary = await b.act(b.reload_command(loser, {}))
    assert summary["generation"] == 2
    async with asyncio.timeout(10):
        while a.engine.generation < 2:
            await asyncio.sleep(0.02)
    assert a.engine.agent_ids() == b.engine.agent_ids() == [x.id for x in loser.agents]


@pytest.mark.asyncio
async def test_a_later_instance_agrees_with_the_configuration_in_force_not_the_first_one(
    redis_server: RedisServer, records: MemoryJournal, made: list[ClusterRuntime]
) -> None:
    """An instance started after a reload on the reloaded file joins (it replays the entries
    before the reload on the configuration they were decided with, so its state is the
    others' exactly); one started on the cluster's first file is refused in one line."""
    agents = [agent_spec(a) for a in ("a1", "a2")]
    first = make_config(agents=agents, profiles={"std": {"max_sessions": 1}})
    reloaded = make_config(agents=[*agents, agent_spec("a3")], profiles={"std": {"max_sessions": 2}})
    a = running(made, redis_server.url, records, "a", first)
    await a.start()
    recorder(a)
    for agent in ("a1", "a2"):
        await a.act(commands.presence(agent, "ready", None, None))
    # decided on the first configuration: one session per agent, the third offer refused
    before = [await a.act(commands.event(offer(n))) for n in range(3)]
    assert [d.kind.value for d in before].count("assigned") == 2
    await a.act(a.reload_command(reloaded, {}))
    await a.act(commands.presence("a3", "ready", None, None))
    after = [await a.act(commands.event(offer(n))) for n in range(3, 6)]
    assert [d.kind.value for d in after].count("assigned") == 3

    late = running(made, redis_server.url, records, "late", reloaded)
    await late.start()
    assert state_of(late) == state_of(a)
    assert late.log_generation == 1 and late.file_differs is None

    old = running(made, redis_server.url, records, "old", first)
    with pytest.raises(ConfigMismatch) as refused:
        await old.start()
    message = refused.value.message
    assert "the shared log runs another configuration (sha256 " in message
    assert ", in force since reload 1; this instance " in message
    assert "start it on the file in force (the one last reloaded)" in message and "\n" not in message


@pytest.mark.asyncio
async def test_an_instance_whose_file_differs_from_the_reloaded_one_says_so_and_runs_the_log(
    redis_server: RedisServer, records: MemoryJournal, made: list[ClusterRuntime]
) -> None:
    a = running(made, redis_server.url, records, "a")
    b = running(made, redis_server.url, records, "b")
    await a.start()
    await b.start()
    recorder(a), recorder(b)
    assert (await b.check_ready()).get("config") is None
    new = with_agents("a1", "a2", "a3", "a9")
    a.own_file(new, {})  # (what the reloader does: a's file is the new one)
    await a.act(a.reload_command(new, {}))
    async with asyncio.timeout(10):
        while b.engine.generation < 1:
            await asyncio.sleep(0.02)
    assert "a9" in b.engine.agent_ids()
    checks = await b.check_ready()
    assert checks["ready"] is True  # it serves the log's configuration
    assert "this instance's file" in checks["config"] and "differs from the configuration in force" in checks["config"]
    assert checks["config_in_force"]["generation"] == 1
    assert (await a.check_ready()).get("config") is None


@pytest.mark.asyncio
async def test_a_resend_evicted_from_memory_is_still_a_duplicate(
    redis_server: RedisServer, records: MemoryJournal
) -> None:
    """retention.cached_events is a size, never an answer, on a shared store too: an event id
    pushed out of memory by 149 later ones is looked up in the records store (as on one
    gateway) and answered ``duplicate`` with its first decision, through any instance."""
    data = make_config(profiles={"std": {"max_sessions": 64}}).model_dump(mode="json")
    data["retention"] = {"cached_events": 100}
    config = GatewayConfig.model_validate(data)
    a = make_runtime(redis_server.url, records, "a", config)
    b = make_runtime(redis_server.url, records, "b", config)
    await a.start()
    await b.start()
    for agent in ("a1", "a2", "a3"):
        await a.act(commands.presence(agent, "ready", None, None))
    first = await a.submit(offer(0))
    assert first.kind.value == "assigned"
    for n in range(1, 150):
        await a.submit(offer(n))
    async with asyncio.timeout(15):  # the records store has them (written once, by the group)
        while await a.shared.pending() or len((await records.load(since=0)).events) < 150:
            await asyncio.sleep(0.05)
    await until(lambda: b.replica.last == a.replica.last)
    assert b.engine.missing(offer(0))  # no longer in memory
    again = await b.submit(offer(0))
    assert again.kind.value == "duplicate" and again.original == first
    assert sum(1 for s in b.engine.sessions.values() if s.interaction_id == "i0") <= 1
    await b.stop()
    await a.stop()
