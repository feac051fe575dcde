"""Two replicated runtimes ("two instances") over one real redis-server, driven by
interleaved actions from both (presence, offers targeted and queued, resends of the same
event through either instance, accepts, declines, ends, manual sessions, concurrent bursts
from both, waits in which offer timeouts fall due), checked after every step:

* both engines hold exactly the same state (the shared log's order decides, whichever
  instance a request went to);
* the engine's invariants hold on both (counters equal the open sessions, no cap exceeded,
  at most one active session per interaction);
* idempotency is global: a resend through either instance answers ``duplicate`` with the
  first answer;
* a timer falls due on both instances but fires once (one tick entry per deadline).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway import commands
from gateway.cluster.log import RedisLog
from gateway.cluster.replica import Replica
from gateway.cluster.runtime import ClusterRuntime, ClusterSettings
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.events import Channel, Event, EventType
from gateway.metrics import Metrics
from gateway.notices import Decision, DecisionKind
from gateway.records import MemoryJournal
from gateway.store_url import parse_redis_url
from tests.peers.redis import RedisServer
from tests.unit.conftest import agent_spec, assert_counters_exact, make_config, snapshot

AGENTS = ("a1", "a2", "a3")
CONFIG = make_config(
    profiles={
        "std": {"max_sessions": 3, "channels": {"voice": 1, "chat": 2}, "offer_timeout_s": {"voice": 0.2, "chat": 30}}
    },
    queues=[{"name": "support"}, {"name": "timers"}],
    agents=[*(agent_spec(a) for a in AGENTS), agent_spec("t9", queues=("timers",))],
)
clients = st.integers(0, 1)
agents = st.sampled_from(AGENTS)
channel_names = st.sampled_from(["voice", "chat"])
event_ids = st.integers(0, 11)  # a small pool: resends happen


def _event(n: int, agent: str | None, channel: str) -> Event:
    return Event(
        vendor="crm",
        event_id=f"e{n}",
        type=EventType.OFFER,
        interaction_id=f"i{n}",
        channel=Channel(channel),
        agent_id=agent,
        queue=None if agent else "support",
        occurred_at=datetime.now(timezone.utc),
    )


class TwoInstances(RuleBasedStateMachine):
    url: str = ""
    #: over all examples: what the run exercised (checked at the end)
    seen: dict[str, int] = {"duplicate": 0, "tick": 0, "assigned": 0, "rejected": 0}

    def __init__(self) -> None:
        super().__init__()
        with redis.Redis.from_url(self.url) as raw:
            raw.flushdb()
        self.loop = asyncio.new_event_loop()
        self.runtimes = [self._runtime(n) for n in range(2)]
        for runtime in self.runtimes:
            self.run(runtime.journal.open())
            self.run(runtime.start())
        self.timer_offers = 0
        #: event id -> the first answer (kind, session id, reason)
        self.first: dict[str, tuple[str, str | None, str | None]] = {}

    def _runtime(self, n: int) -> ClusterRuntime:
        replica = Replica()
        engine = Engine(CONFIG, **replica.engine_options())
        return ClusterRuntime(
            engine,
            MemoryJournal(),
            clock=replica.clock,
            metrics=Metrics(),
            shared=RedisLog(parse_redis_url(self.url), block_ms=200),
            replica=replica,
            config=CONFIG,
            caps={},
            settings=ClusterSettings(claim_idle_s=0.5),
            instance=f"test-{n}",
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for runtime in self.runtimes:
            self.run(runtime.stop())
        self.loop.close()

    async def _act(self, client: int, command: commands.Command) -> Any:
        try:
            return await self.runtimes[client].act(command)
        except GatewayError as exc:
            assert exc.code != "not_ready", exc  # Redis is up: every request is answered
            return exc

    def _sessions(self, agent: str) -> list[str]:
        return sorted(s.id for s in self.runtimes[0].engine.sessions.values() if s.agent_id == agent and s.occupying)

    def _check_decision(self, event_id: str, decision: Decision) -> None:
        kind = decision.kind.value
        if kind in self.seen:
            self.seen[kind] += 1
        if decision.kind is DecisionKind.DUPLICATE:
            assert decision.original is not None
            first = self.first[event_id]
            assert (decision.original.kind.value, decision.original.session_id, decision.original.reason) == first
        else:
            assert event_id not in self.first, f"{event_id} decided twice"
            self.first[event_id] = (decision.kind.value, decision.session_id, decision.reason)

    # ------------------------------------------------------------------ rules

    @rule(client=clients, agent=agents, state=st.sampled_from(["ready", "ready", "not_ready", "offline"]))
    def presence(self, client: int, agent: str, state: str) -> None:
        self.run(self._act(client, commands.presence(agent, state, None, None)))

    @rule(client=clients, n=event_ids, agent=st.one_of(st.none(), agents), channel=channel_names)
    def offer(self, client: int, n: int, agent: str | None, channel: str) -> None:
        decision = self.run(self._act(client, commands.event(_event(n, agent, channel))))
        assert isinstance(decision, Decision), decision
        self._check_decision(f"e{n}", decision)

    @rule(
        burst=st.lists(
            st.tuples(clients, event_ids, st.one_of(st.none(), agents), channel_names), min_size=2, max_size=10
        )
    )
    def concurrent_burst(self, burst: list[tuple[int, int, str | None, str]]) -> None:
        """Offers through both instances at once: the log's order decides."""

        async def fire() -> list[Any]:
            return list(
                await asyncio.gather(*(self._act(c, commands.event(_event(n, a, ch))) for c, n, a, ch in burst))
            )

        ordered = sorted(
            zip(burst, self.run(fire()), strict=True),
            key=lambda pair: pair[1].kind is DecisionKind.DUPLICATE,  # first answers first
        )
        for (_c, n, _a, _ch), decision in ordered:
            assert isinstance(decision, Decision), decision
            self._check_decision(f"e{n}", decision)

    @rule(client=clients, agent=agents, pick=st.integers(0, 5), action=st.sampled_from(["accept", "decline", "end"]))
    def session_action(self, client: int, agent: str, pick: int, action: str) -> None:
        sessions = self._sessions(agent)
        if not sessions:
            return
        sid = sessions[pick % len(sessions)]
        make = {"accept": commands.accept, "decline": commands.decline, "end": commands.end}[action]
        self.run(self._act(client, make(sid, agent)))

    @rule(client=clients, agent=agents)
    def manual_session(self, client: int, agent: str) -> None:
        self.run(self._act(client, commands.new_session(agent, "callback", agent)))

    @rule(client=clients)
    def offers_time_out(self, client: int) -> None:
        """Voice offers expire after 0.2 s: both instances see the deadline, one tick fires it
        (t9 gets a voice offer here only, so it always has room for one)."""
        self.timer_offers += 1
        self.run(self._act(client, commands.presence("t9", "ready", None, None)))
        offer = Event(
            vendor="crm",
            event_id=f"t{self.timer_offers}",
            type=EventType.OFFER,
            interaction_id=f"t{self.timer_offers}",
            channel=Channel.VOICE,
            agent_id="t9",
            occurred_at=datetime.now(timezone.utc),
        )
        decision = self.run(self._act(1 - client, commands.event(offer)))
        assert decision.kind is DecisionKind.ASSIGNED, decision
        self.run(asyncio.sleep(0.35))

    # ------------------------------------------------------------------ checks

    async def _settled(self) -> None:
        """Both instances have applied everything in the log (and no timer is overdue)."""
        shared = self.runtimes[0].shared
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            last = await shared.last_id()
            engine = self.runtimes[0].engine
            due = engine.next_deadline()
            overdue = due is not None and due < self.runtimes[0].replica.clock.now() - 0.05
            if all(r.replica.last_id == last for r in self.runtimes) and not overdue:
                return
            assert asyncio.get_running_loop().time() < deadline, "the instances did not settle"
            await asyncio.sleep(0.01)

    @invariant()
    def both_instances_hold_the_same_state_and_the_invariants(self) -> None:
        self.run(self._settled())
        states = []
        for runtime in self.runtimes:
            clock = runtime.replica.clock
            clock.entry_time = clock.last  # both read at the same log time
            try:
                assert_counters_exact(runtime.engine)
                states.append(snapshot(runtime.engine))
            finally:
                clock.entry_time = None
        assert states[0] == states[1]

    @invariant()
    def one_tick_per_deadline(self) -> None:
        with redis.Redis.from_url(self.url, decode_responses=True) as raw:
            entries = raw.xrange("cti:log")
        dues = [
            commands.Command.decode(fields["c"]).args["due"] for _id, fields in entries if '"c":"tick"' in fields["c"]
        ]
        # both instances propose every deadline: one tick each
        assert len(dues) == len(set(dues)), dues
        self.seen["tick"] = max(self.seen["tick"], len(dues))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")), appendonly=True).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.timeout(600)
def test_two_instances_over_one_redis_hold_the_same_state(redis_url: str) -> None:
    TwoInstances.url = redis_url
    run_state_machine_as_test(
        TwoInstances,
        settings=settings(
            max_examples=30 if os.environ.get("CI") else 15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    # one explicit history in every run, so that a timer's deadline is checked whatever the
    # random draws held (a CI run once drew no offer timeout at all: tick 0)
    machine = TwoInstances()
    try:
        machine.offers_time_out(0)
        machine.offers_time_out(1)
        machine.both_instances_hold_the_same_state_and_the_invariants()
        machine.one_tick_per_deadline()
    finally:
        machine.teardown()
    # the run exercised what it checks: resends, timers, both answers
    assert all(count > 0 for count in TwoInstances.seen.values()), TwoInstances.seen
