"""Two clients ("two instances") over one real redis-server, driven by interleaved actions
(presence, reserve with a session id, retried reserves, releases, concurrent bursts from
both), checked after every step against a model of the held sessions:

* a reserve gets exactly the answer of :func:`gateway.capacity.check` on the model's state
  (a session already held: granted again, not counted twice);
* a release gives back a held session exactly once;
* the store's counters equal the sessions it holds, and never exceed a cap, whatever the
  interleaving of the two clients (bursts run concurrently on both).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.capacity import Load, Presence, check, within_limits
from gateway.config import CapacityProfile
from gateway.events import Channel
from gateway.state.redis import RedisStateStore
from tests.peers.redis import RedisServer

PROFILES = {
    "a1": CapacityProfile.model_validate(
        {
            "max_sessions": 4,
            "reserved_inbound": 1,
            "channels": {"voice": 1, "chat": 3, "email": 2, "manual": 1},
            "units": {"voice": 2},
            "max_units": 4,
        }
    ),
    "a2": CapacityProfile.model_validate({"max_sessions": 2}),
    "a3": CapacityProfile.model_validate({"max_sessions": 3, "channels": {"chat": 2}, "units": {"email": 2}}),
}
AGENTS = sorted(PROFILES)
agents = st.sampled_from(AGENTS)
channels = st.sampled_from(list(Channel))
slots = st.integers(0, 5)  # session ids per agent: a small pool, so retries happen


def load_of(profile: CapacityProfile, held: dict[str, Channel]) -> Load:
    load = Load()
    for channel in held.values():
        load = load.plus(channel, profile.weight(channel))
    return load


class TwoInstances(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        with redis.Redis.from_url(self.url) as raw:
            raw.flushdb()
        self.loop = asyncio.new_event_loop()
        self.stores = [RedisStateStore.from_url(self.url), RedisStateStore.from_url(self.url)]
        self.presence = dict.fromkeys(AGENTS, Presence.OFFLINE)
        self.held: dict[str, dict[str, Channel]] = {a: {} for a in AGENTS}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for store in self.stores:
            self.run(store.close())
        self.loop.close()

    # mostly ready: the capacity rules, not presence, should decide most reserves
    @rule(client=st.integers(0, 1), agent=agents, presence=st.sampled_from([Presence.READY] * 3 + list(Presence)))
    def set_presence(self, client: int, agent: str, presence: Presence) -> None:
        state = self.run(self.stores[client].set_presence(agent, presence, None))
        assert state.presence is presence
        self.presence[agent] = presence

    @rule(client=st.integers(0, 1), agent=agents, channel=channels, slot=slots)
    def reserve(self, client: int, agent: str, channel: Channel, slot: int) -> None:
        sid = f"{agent}-s{slot}"
        profile = PROFILES[agent]
        reason, state = self.run(self.stores[client].reserve(agent, profile, channel, session_id=sid))
        if sid in self.held[agent]:
            assert reason is None  # a retry: granted again, counted once
        else:
            expected = check(profile, load_of(profile, self.held[agent]), self.presence[agent], channel)
            assert reason == expected
            if reason is None:
                self.held[agent][sid] = channel
        assert state.load == load_of(profile, self.held[agent])

    @rule(client=st.integers(0, 1), agent=agents, slot=slots)
    def release(self, client: int, agent: str, slot: int) -> None:
        sid = f"{agent}-s{slot}"
        released, state = self.run(self.stores[client].release_session(agent, sid))
        assert released == (sid in self.held[agent])
        self.held[agent].pop(sid, None)
        assert state.load == load_of(PROFILES[agent], self.held[agent])

    @rule(
        burst=st.lists(st.tuples(st.integers(0, 1), agents, channels, slots), min_size=2, max_size=12),
    )
    def concurrent_burst(self, burst: list[tuple[int, str, Channel, int]]) -> None:
        """Reserves from both clients at once: which ones win is up to Redis; the invariants
        and the per-session answers must hold."""

        async def fire() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(self.stores[c].reserve(a, PROFILES[a], ch, session_id=f"{a}-s{slot}") for c, a, ch, slot in burst)
                )
            )

        held_before = {a: dict(h) for a, h in self.held.items()}
        results = self.run(fire())
        granted = {
            f"{a}-s{slot}" for (_c, a, _ch, slot), (reason, _s) in zip(burst, results, strict=True) if not reason
        }
        for _c, agent, _ch, slot in burst:
            sid = f"{agent}-s{slot}"
            if sid in held_before[agent]:
                assert sid in granted  # held before the burst: every copy granted
        # the store holds exactly what was held plus what was granted now (a session asked
        # for twice with two channels is held with the channel of the copy that won)
        for agent in AGENTS:
            stored = self.run(self.stores[0].held(agent))
            assert set(stored) == set(held_before[agent]) | {sid for sid in granted if sid.startswith(f"{agent}-")}
            self.held[agent] = stored

    @invariant()
    def counters_equal_held_sessions_and_respect_caps(self) -> None:
        for agent in AGENTS:
            profile = PROFILES[agent]
            state = self.run(self.stores[1].get(agent))
            assert state.load == load_of(profile, self.held[agent])
            assert state.presence is self.presence[agent]
            assert within_limits(profile, state.load)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.timeout(600)
def test_two_instances_over_one_redis(redis_url: str) -> None:
    TwoInstances.url = redis_url
    run_state_machine_as_test(
        TwoInstances,
        settings=settings(
            max_examples=60 if os.environ.get("CI") else 25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
