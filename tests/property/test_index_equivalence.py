"""The eligibility index with one key per agent and queue gives the same agents, in the same
order, as the index it replaced (one heap per (queue, channel)), and loads its dumps.

:class:`ChannelHeaps` below is the previous :class:`gateway.router.EligibilityIndex` (main
at b0d43d6), kept here as the reference. Random updates (agents in several queues of both
policies, any subset of channels with room, ties in idle time and share, many updates of
one agent so that stale keys pile up and heaps are rebuilt) and queries with excluded
agents must give the same answers from both; each index's dump loads into the other's
(a snapshot written before the change, and one written after it) with the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from heapq import heapify, heappop, heappush
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import QueuePolicy
from gateway.events import INBOUND_CHANNELS, Channel
from gateway.router import EligibilityIndex, room_mask

SortKey = tuple[object, ...]

POLICIES = {"idle": QueuePolicy.LONGEST_IDLE, "busy": QueuePolicy.LEAST_BUSY, "all": QueuePolicy.OFFER_ALL}
AGENTS = ("a", "b", "c", "d", "e", "f")


class ChannelHeaps:
    """The previous index: a heap of keys per (queue, channel), lazily invalidated."""

    def __init__(self, policies: dict[str, QueuePolicy]) -> None:
        self._least_busy = {queue for queue, policy in policies.items() if policy is QueuePolicy.LEAST_BUSY}
        self._heaps: dict[tuple[str, Channel], list[SortKey]] = {
            (queue, channel): [] for queue in policies for channel in INBOUND_CHANNELS
        }
        self._current: dict[tuple[str, Channel], dict[str, SortKey]] = {
            (queue, channel): {} for queue in policies for channel in INBOUND_CHANNELS
        }

    def put(
        self,
        agent_id: str,
        queues: Iterable[str],
        room: Collection[Channel],
        idle_since: tuple[float, int],
        busy_share: float,
        sessions: int,
    ) -> None:
        for queue in queues:
            if (queue, Channel.VOICE) not in self._heaps:
                continue
            if queue in self._least_busy:
                key: SortKey = (busy_share, sessions, idle_since[0], idle_since[1], agent_id)
            else:
                key = (idle_since[0], idle_since[1], agent_id)
            for channel in INBOUND_CHANNELS:
                current, heap = self._current[(queue, channel)], self._heaps[(queue, channel)]
                old = current.get(agent_id)
                if channel in room:
                    if old is not None and old == key:
                        continue
                    current[agent_id] = key
                    heappush(heap, key)
                    if len(heap) > 2 * len(current) + 32:
                        heap[:] = current.values()
                        heapify(heap)
                elif old is not None:
                    del current[agent_id]

    def best(self, queue: str, channel: Channel, exclude: Collection[str] = ()) -> str | None:
        heap = self._heaps.get((queue, channel))
        if not heap:
            return None
        current = self._current[(queue, channel)]
        held: list[SortKey] = []
        try:
            while heap:
                key = heap[0]
                agent_id = key[-1]
                if current.get(agent_id) is not key:  # type: ignore[call-overload]
                    heappop(heap)
                elif agent_id in exclude:
                    held.append(heappop(heap))
                else:
                    return str(agent_id)
            return None
        finally:
            for key in held:
                heappush(heap, key)

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        current = self._current.get((queue, channel), {})
        return [str(key[-1]) for key in sorted(current.values())]

    def dump(self) -> list[list[Any]]:
        return [
            [queue, channel.value, list(key)]
            for (queue, channel), current in self._current.items()
            for key in current.values()
        ]

    def load(self, entries: list[list[Any]]) -> None:
        for queue, channel_name, key in entries:
            entry = tuple(key)
            self._current[(queue, Channel(channel_name))][str(entry[-1])] = entry
        for slot, current in self._current.items():
            self._heaps[slot][:] = current.values()
            heapify(self._heaps[slot])


queue_sets = st.lists(st.sampled_from([*POLICIES, "unknown"]), min_size=0, max_size=3, unique=True)
rooms = st.frozensets(st.sampled_from(INBOUND_CHANNELS))
updates = st.tuples(
    st.just("update"),
    st.sampled_from(AGENTS),
    queue_sets,
    rooms,
    st.tuples(st.sampled_from([0.0, 1.0, 2.0]), st.integers(0, 3)),  # idle since: ties on purpose
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    st.integers(0, 3),
)
queries = st.tuples(
    st.just("best"),
    st.sampled_from([*POLICIES, "unknown"]),
    st.sampled_from([*INBOUND_CHANNELS, Channel.MANUAL]),
    st.frozensets(st.sampled_from(AGENTS), max_size=4),
)
#: one agent updated many times with a moving key and room: stale keys pile up, heaps rebuild
churns = st.tuples(st.just("churn"), st.sampled_from(AGENTS), st.integers(20, 80))
steps = st.lists(st.one_of(updates, queries, churns), max_size=60)


def apply(step: tuple[Any, ...], new: EligibilityIndex, old: ChannelHeaps, tick: list[int]) -> None:
    if step[0] == "update":
        _, agent, queues, room, idle, share, sessions = step
        new.put(agent, queues, room_mask(room), idle, share, sessions)
        old.put(agent, queues, room, idle, share, sessions)
    elif step[0] == "churn":
        _, agent, times = step
        for n in range(times):
            tick[0] += 1
            room = [c for i, c in enumerate(INBOUND_CHANNELS) if (n >> i) & 1 or n % 5 == 0]
            idle = (float(tick[0]), tick[0])
            new.put(agent, POLICIES, room_mask(room), idle, (n % 4) / 4, n % 3)
            old.put(agent, POLICIES, room, idle, (n % 4) / 4, n % 3)
    else:
        _, queue, channel, exclude = step
        assert new.best(queue, channel, exclude) == old.best(queue, channel, exclude), step


def same_order(new: EligibilityIndex, old: ChannelHeaps) -> None:
    for queue in [*POLICIES, "unknown"]:
        for channel in INBOUND_CHANNELS:
            assert new.eligible(queue, channel) == old.eligible(queue, channel), (queue, channel)
            # every agent in turn, as a decision skipping those it already tried sees them
            tried: set[str] = set()
            while (agent := new.best(queue, channel, tried)) is not None:
                assert agent == old.best(queue, channel, tried)
                tried.add(agent)
            assert old.best(queue, channel, tried) is None


@given(steps)
def test_one_key_per_agent_and_queue_decides_like_one_heap_per_channel(steps: list[tuple[Any, ...]]) -> None:
    new, old = EligibilityIndex(POLICIES), ChannelHeaps(POLICIES)
    tick = [10]
    for step in steps:
        apply(step, new, old, tick)
        same_order(new, old)


@given(steps, steps)
def test_dumps_load_across_both_indexes(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
    """A snapshot written by the previous index loads into this one, and this one's dump
    (JSON round trip) into a fresh index, with the same answers then and after more steps;
    a replica's dump stays equal to its source's (entries and order)."""
    new, old = EligibilityIndex(POLICIES), ChannelHeaps(POLICIES)
    tick = [10]
    for step in before:
        apply(step, new, old, tick)
    # the dump holds the same entries as the previous index's: its format is unchanged
    assert sorted(map(json.dumps, new.dump())) == sorted(map(json.dumps, old.dump()))
    pairs = [(new, old)]
    for dumped in (old.dump(), new.dump()):
        stored = json.loads(json.dumps(dumped))
        loaded, reference = EligibilityIndex(POLICIES), ChannelHeaps(POLICIES)
        loaded.load(stored)
        reference.load(stored)
        pairs.append((loaded, reference))
    replica = pairs[2][0]
    assert replica.dump() == new.dump()
    ticks = [list(tick) for _ in pairs]
    for step in after:
        for (index, reference), at in zip(pairs, ticks, strict=True):
            apply(step, index, reference, at)
            same_order(index, reference)
        assert replica.dump() == new.dump()
