"""The shared state store on a real redis-server (issue 11 item 2, the foundation).

* the Lua reserve applies exactly the rules of :func:`gateway.capacity.check` (same reason,
  same counters after) on a wide sample of states;
* an allocation storm from three client processes (their own connections) at a handful of
  agents: the sessions held per agent and channel equal the caps exactly, never more, and
  every other attempt has its exact reason; then a release storm gives everything back and
  a release of what is not held is refused, never driving a counter below zero;
* a Redis restart: calls fail fast with ``not_ready`` while it is down, and the same store
  object works again once it is back (reconnect, scripts reloaded), with its counters;
* a password never shows in a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gateway.capacity import Load, Presence, Reason, check, within_limits
from gateway.config import CapacityProfile
from gateway.events import Channel
from gateway.state.redis import NotHeld, RedisStateStore, StoreUnavailable
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer

from .live import ROOT


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStateStore]:
    store = RedisStateStore.from_url(redis_server.url)
    try:
        yield store
    finally:
        await store.close()


def profile(**fields: Any) -> CapacityProfile:
    return CapacityProfile.model_validate(fields)


PROFILES = [
    profile(max_sessions=5, reserved_inbound=1, channels={"voice": 1, "chat": 4, "email": 2, "manual": 2}, max_units=6,
            units={"voice": 3, "chat": 1, "email": 1, "manual": 1}),
    profile(max_sessions=3),
    profile(max_sessions=4, reserved_inbound=2, channels={"chat": 3}, units={"email": 2}, max_units=5),
]  # fmt: skip


@pytest.mark.asyncio
async def test_the_lua_reserve_applies_the_capacity_rules_exactly(
    store: RedisStateStore, redis_server: RedisServer
) -> None:
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    rng = random.Random(11)
    seen: Counter[str] = Counter()
    try:
        for case in range(400):
            prof = rng.choice(PROFILES)
            presence = rng.choice(list(Presence))
            counts = {c: rng.randint(0, 3) for c in ("voice", "chat", "email", "manual")}
            load = Load(
                sessions=sum(counts.values()),
                units=sum(n * prof.weight(Channel(c)) for c, n in counts.items()),
                **counts,
            )
            channel = rng.choice(list(Channel))
            agent = f"x{case}"
            await raw.hset(
                f"cti:agent:{agent}",
                mapping={"presence": presence.value, "reason": "", "version": 7, **load.as_dict()},
            )
            reason, state = await store.reserve(agent, prof, channel)
            expected = check(prof, load, presence, channel)
            assert reason == expected, (prof, load, presence, channel)
            assert state.load == (load if expected else load.plus(channel, prof.weight(channel)))
            assert state.version == (7 if expected else 8)
            assert await store.get(agent) == replace(state, reason=None)
            seen[expected.value if expected else "granted"] += 1
    finally:
        await raw.aclose()
    # the sample reached every outcome of the rules
    assert set(seen) == {"granted", "agent_offline", "agent_not_ready", "channel_at_capacity", "agent_at_capacity"}


@pytest.mark.asyncio
async def test_occupy_release_presence_and_a_release_of_nothing(store: RedisStateStore) -> None:
    prof = PROFILES[0]
    assert await store.get("a1") == replace(await store.get("a1"), presence=Presence.OFFLINE, load=Load(), version=0)
    reason, _ = await store.reserve("a1", prof, Channel.CHAT)
    assert reason is Reason.AGENT_OFFLINE
    state = await store.set_presence("a1", Presence.NOT_READY, "lunch")
    assert (state.presence, state.reason) == (Presence.NOT_READY, "lunch")
    # occupy restores a session whatever the rules say (not ready, above the channel cap)
    await store.occupy("a1", prof, Channel.VOICE)
    state = await store.occupy("a1", prof, Channel.VOICE)
    assert state.load == Load(sessions=2, units=6, voice=2)
    await store.release("a1", prof, Channel.VOICE)
    state = await store.release("a1", prof, Channel.VOICE)
    assert state.load == Load()
    with pytest.raises(NotHeld, match="no voice session of weight 3 is held"):
        await store.release("a1", prof, Channel.VOICE)
    assert (await store.get("a1")).load == Load()  # nothing changed
    assert await store.agent_ids() == ["a1"]
    assert (await store.get("a1")).reason == "lunch"


# ---------------------------------------------------------------------------- the storm

STORM_PROFILES = {
    # the channel caps add up to max_sessions: each channel fills to its cap exactly, and a
    # refusal can only be channel_at_capacity
    "split": {"max_sessions": 6, "channels": {"voice": 1, "chat": 3, "email": 2}},
    # no channel caps: three sessions in all, whichever channels; then agent_at_capacity
    "pool": {"max_sessions": 3},
    # units bind: one voice session (3 units of 3), then agent_at_capacity
    "heavy": {"max_sessions": 5, "units": {"voice": 3}, "max_units": 3},
}
STORM_AGENTS = {"s1": "split", "s2": "split", "p1": "pool", "h1": "heavy", "n1": "split", "o1": "split"}
STORM_CHANNELS = {
    "s1": ["voice", "chat", "email"],
    "s2": ["voice", "chat", "email"],
    "p1": ["chat", "email"],
    "h1": ["voice"],
    "n1": ["chat", "voice"],
    "o1": ["email"],
}
PROCESSES = 3
PER_CHANNEL = 30  # attempts per agent and channel in each process


def run_clients(tmp_path: Path, url: str, op: str, plans: list[list[tuple[str, ...]]]) -> list[list[Any]]:
    """Run one client process per plan, all released at the same instant; their results."""
    procs = []
    for index, attempts in enumerate(plans):
        path = tmp_path / f"{op}-{index}.json"
        plan = {"url": url, "profiles": STORM_PROFILES, "agents": STORM_AGENTS, "op": op, "attempts": attempts}
        path.write_text(json.dumps(plan))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.integration.redis_storm", str(path)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    try:
        for proc in procs:  # every process is connected ...
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"ready\n", (
                line,
                proc.stderr.read().decode(errors="replace")[-3000:] if proc.stderr else "",
            )
        for proc in procs:  # ... before any of them starts
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        results: list[list[Any]] = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
            results.extend(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.asyncio
async def test_an_allocation_storm_from_three_processes_fills_every_cap_exactly_and_never_beyond(
    store: RedisStateStore, redis_server: RedisServer, tmp_path: Path
) -> None:
    for agent in STORM_AGENTS:
        if agent == "n1":
            await store.set_presence(agent, Presence.NOT_READY, "training")
        elif agent != "o1":
            await store.set_presence(agent, Presence.READY, None)
    rng = random.Random(4242)
    plans = []
    for _ in range(PROCESSES):
        attempts = [(a, c) for a, channels in STORM_CHANNELS.items() for c in channels for _ in range(PER_CHANNEL)]
        rng.shuffle(attempts)
        plans.append(attempts)
    total = sum(len(p) for p in plans)
    assert total >= 1000

    began = time.monotonic()
    results = await asyncio.to_thread(run_clients, tmp_path, redis_server.url, "reserve", plans)
    assert len(results) == total
    granted: Counter[tuple[str, str]] = Counter()
    refused: Counter[tuple[str, str]] = Counter()
    for agent, channel, reason, load in results:
        prof = CapacityProfile.model_validate(STORM_PROFILES[STORM_AGENTS[agent]])
        assert within_limits(prof, Load(**load)), (agent, load)  # no answer ever saw a cap exceeded
        if reason is None:
            granted[agent, channel] += 1
        else:
            refused[agent, reason] += 1

    # held per agent and channel: exactly the caps
    assert {k: v for k, v in granted.items() if k[0] in ("s1", "s2", "h1")} == {
        ("s1", "voice"): 1, ("s1", "chat"): 3, ("s1", "email"): 2,
        ("s2", "voice"): 1, ("s2", "chat"): 3, ("s2", "email"): 2,
        ("h1", "voice"): 1,
    }  # fmt: skip
    assert granted["p1", "chat"] + granted["p1", "email"] == 3
    assert not any(granted[k] for k in granted if k[0] in ("n1", "o1"))
    # every other attempt has its exact reason
    tries = PROCESSES * PER_CHANNEL
    assert dict(refused) == {
        ("s1", "channel_at_capacity"): 3 * tries - 6,
        ("s2", "channel_at_capacity"): 3 * tries - 6,
        ("p1", "agent_at_capacity"): 2 * tries - 3,
        ("h1", "agent_at_capacity"): tries - 1,
        ("n1", "agent_not_ready"): 2 * tries,
        ("o1", "agent_offline"): tries,
    }
    # the store holds what was granted, no more
    for agent in ("s1", "s2", "p1", "h1", "n1", "o1"):
        load = (await store.get(agent)).load
        assert load.sessions == sum(n for (a, _c), n in granted.items() if a == agent)
        for channel in ("voice", "chat", "email"):
            assert load.of(Channel(channel)) == granted[agent, channel]
    elapsed = time.monotonic() - began

    # the release storm: every process gives back a share of what was granted and tries
    # as many releases of nothing; counters end at zero, never below
    held = [(a, c) for (a, c), n in granted.items() for _ in range(n)]
    extra = [(a, c) for a, c in held]  # one release too many for each
    mixed = held + extra
    rng.shuffle(mixed)
    plans = [mixed[i::PROCESSES] for i in range(PROCESSES)]
    released = await asyncio.to_thread(run_clients, tmp_path, redis_server.url, "release", plans)
    outcomes = Counter(outcome for _a, _c, outcome, _load in released)
    assert outcomes == {None: len(held), "not_held": len(extra)}
    for agent in STORM_AGENTS:
        assert (await store.get(agent)).load == Load()
    print(f"storm: {total} reserves from {PROCESSES} processes in {elapsed:.2f} s (start included)")


@pytest.mark.asyncio
async def test_sessions_delivered_to_three_processes_are_held_once_and_released_once(
    store: RedisStateStore, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Every reservation names its session and every process sends every one of them (the
    same event delivered to three instances): a session is granted everywhere or nowhere,
    counted once, and released exactly once however many release it."""
    agents = {"s1": ["voice", "chat", "email"], "s2": ["voice", "chat", "email"], "p1": ["chat", "email"]}
    for agent in agents:
        await store.set_presence(agent, Presence.READY, None)
    sessions = [(a, c, f"{a}-{c}-{i}") for a, channels in agents.items() for c in channels for i in range(12)]
    rng = random.Random(7)
    plans: list[list[tuple[str, ...]]] = []
    for _ in range(PROCESSES):
        plan: list[tuple[str, ...]] = list(sessions)
        rng.shuffle(plan)
        plans.append(plan)
    results = await asyncio.to_thread(run_clients, tmp_path, redis_server.url, "reserve", plans)
    by_session: dict[str, set[str | None]] = {}
    for (agent, channel, reason, _load), (a, c, sid) in zip(results, [s for plan in plans for s in plan], strict=True):
        assert (agent, channel) == (a, c)
        by_session.setdefault(sid, set()).add(reason)
    # the same answer for every copy of a session: granted everywhere or refused everywhere
    assert all(len(answers) == 1 for answers in by_session.values()), by_session
    granted = {sid for sid, answers in by_session.items() if answers == {None}}
    for agent, channels in agents.items():
        held = await store.held(agent)
        assert set(held) == {sid for sid in granted if sid.startswith(f"{agent}-")}
        load = (await store.get(agent)).load
        assert load.sessions == len(held)  # counted once each
        for channel in channels:
            assert load.of(Channel(channel)) == sum(1 for c in held.values() if c == channel)
    caps = Counter({("s1", "voice"): 1, ("s1", "chat"): 3, ("s1", "email"): 2,
                    ("s2", "voice"): 1, ("s2", "chat"): 3, ("s2", "email"): 2})  # fmt: skip
    assert Counter((sid.split("-")[0], sid.split("-")[1]) for sid in granted if not sid.startswith("p1")) == caps
    assert sum(1 for sid in granted if sid.startswith("p1-")) == 3

    # every process releases every granted session: each is released exactly once
    releases = [(sid.split("-")[0], sid.split("-")[1], sid) for sid in sorted(granted)]
    plans = []
    for _ in range(PROCESSES):
        plan = list(releases)
        rng.shuffle(plan)
        plans.append(plan)
    released = await asyncio.to_thread(run_clients, tmp_path, redis_server.url, "release_session", plans)
    assert Counter(outcome for _a, _c, outcome, _l in released) == {
        None: len(granted),
        "not_held": (PROCESSES - 1) * len(granted),
    }
    for agent in agents:
        assert (await store.get(agent)).load == Load()
        assert await store.held(agent) == {}


@pytest.mark.asyncio
async def test_a_named_session_is_counted_once_and_released_with_its_own_weight(store: RedisStateStore) -> None:
    prof = PROFILES[0]  # voice weighs 3 units
    await store.set_presence("a1", Presence.READY, None)
    assert (await store.reserve("a1", prof, Channel.VOICE, session_id="call-1"))[0] is None
    reason, state = await store.reserve("a1", prof, Channel.VOICE, session_id="call-1")  # a retry
    assert reason is None and state.load == Load(sessions=1, units=3, voice=1)
    reason, _ = await store.reserve("a1", prof, Channel.VOICE, session_id="call-2")
    assert reason is Reason.CHANNEL_AT_CAPACITY
    state = await store.occupy("a1", prof, Channel.VOICE, session_id="call-1")  # restoring it: already held
    assert state.load == Load(sessions=1, units=3, voice=1)
    assert await store.held("a1") == {"call-1": Channel.VOICE}
    released, state = await store.release_session("a1", "call-1")
    assert released and state.load == Load()
    released, state = await store.release_session("a1", "call-1")
    assert not released and state.load == Load()
    released, _ = await store.release_session("a1", "never-held")
    assert not released


@pytest.mark.asyncio
async def test_reconcile_releases_reservations_no_journal_knows_and_counts_open_sessions(
    store: RedisStateStore,
) -> None:
    prof = PROFILES[0]  # voice weighs 3
    await store.set_presence("a1", Presence.READY, None)
    for sid, channel in (("s1", Channel.CHAT), ("s2", Channel.VOICE), ("s3", Channel.EMAIL)):
        assert (await store.reserve("a1", prof, channel, session_id=sid))[0] is None
    # s2 and s3 were reserved by an instance that died before journaling them; s4 is open
    # in a journal but not held (its reservation was lost)
    open_sessions = {"s1": Channel.CHAT, "s4": Channel.EMAIL}
    assert await store.reconcile("a1", prof, open_sessions) == (["s2", "s3"], ["s4"])
    assert await store.held("a1") == open_sessions
    assert (await store.get("a1")).load == Load(sessions=2, units=2, chat=1, email=1)
    assert await store.reconcile("a1", prof, open_sessions) == ([], [])  # idempotent
    assert (await store.get("a1")).load == Load(sessions=2, units=2, chat=1, email=1)


# ---------------------------------------------------------------------------- outages


@pytest.mark.asyncio
async def test_a_redis_restart_fails_fast_while_down_and_the_same_store_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    store = RedisStateStore.from_url(server.url, timeout_s=0.5, connect_timeout_s=0.5)
    prof = PROFILES[1]
    try:
        await store.set_presence("a1", Presence.READY, None)
        assert (await store.reserve("a1", prof, Channel.CHAT))[0] is None
        assert await store.ping() and store.healthy

        server.stop()
        for call in (
            store.reserve("a1", prof, Channel.CHAT),
            store.release("a1", prof, Channel.CHAT),
            store.get("a1"),
        ):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await call
            assert time.monotonic() - began < 3.0  # bounded: vendors get their 503 quickly
            assert info.value.code == "not_ready" and info.value.retryable
            assert info.value.message == (
                f"the shared store redis://127.0.0.1:{server.port}/0 is unreachable (ConnectionError)"
            )
        assert not await store.ping() and not store.healthy

        server.start()  # same port; the append-only file brings the counters back
        assert await store.ping() and store.healthy
        assert (await store.get("a1")).load == Load(sessions=1, units=1, chat=1)
        # the script cache of the new server is empty: EVALSHA falls back to loading it
        assert (await store.reserve("a1", prof, Channel.EMAIL))[0] is None
        assert (await store.release("a1", prof, Channel.CHAT)).load == Load(sessions=1, units=1, email=1)
    finally:
        await store.close()
        server.stop()


@pytest.mark.asyncio
async def test_a_password_is_used_and_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cret-redis-pass"
    server = RedisServer(tmp_path / "redis", password=secret).start()
    good = RedisStateStore.from_url(server.url)
    bad = RedisStateStore.from_url(f"redis://:wrong-{secret}@127.0.0.1:{server.port}/0", timeout_s=0.5)
    try:
        assert await good.ping()
        assert (await good.set_presence("a1", Presence.READY, None)).presence is Presence.READY
        with pytest.raises(StoreUnavailable) as info:
            await bad.get("a1")
        assert secret not in info.value.message and secret not in repr(good) and secret not in repr(bad)
        assert secret not in repr(parse_redis_url(server.url))
    finally:
        await good.close()
        await bad.close()
        server.stop()
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
