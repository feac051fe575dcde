"""Agent selection and waiting lists: the indexes behind untargeted routing.

**Eligibility index.** For every (queue, channel) pair the index keeps the agents of that
queue who could take one more session of that channel right now (ready, every capacity
rule satisfied), ordered by the queue's policy (a heap of sort keys, see
:class:`EligibilityIndex`):

* ``longest_idle``: the agent who has gone longest without being offered work (the later
  of becoming ready and their last offer) comes first; ties by agent id.
* ``least_busy``: the smallest share of ``max_units`` in use first, then fewer sessions,
  then longest idle, then agent id.

An agent's entries are refreshed whenever its presence, load or idle time changes: that
costs O(q · c · log n) for an agent in q queues with c routable channels, among n agents of
a queue. A routing decision takes the head of one heap: O(log n + k) amortized, k being the
agents skipped because they declined or missed this interaction before. No decision scans
all agents.

**Waiting lists.** A queue with ``on_full: wait`` keeps, per channel, its waiting
interactions ordered by (higher priority first, then arrival). When an agent gets room, the
best head among the channels it has room for, over all its queues, is offered first:
O(q · c · (log w + k)). Besides the queues' lines, each agent has a line of its own
(:func:`agent_line`) for targeted offers that must wait for that agent (their vendor
cannot take a rejection); it is served like one more queue of the agent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any

from sortedcontainers import SortedList

from .config import QueuePolicy
from .events import INBOUND_CHANNELS, Channel

SortKey = tuple[object, ...]
#: what waits: an interaction, as (vendor, interaction_id)
WaitKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class AgentView:
    """What the index needs to know of one agent at one moment."""

    agent_id: str
    queues: tuple[str, ...]
    #: channel -> whether one more session of that channel is admitted now
    room: dict[Channel, bool]
    idle_since: tuple[float, int]
    busy_share: float
    sessions: int


class EligibilityIndex:
    """Per (queue, channel), the agents with room, in the queue's policy order.

    Each list is a binary heap of flat sort keys (``(idle time, idle sequence, agent)`` for
    ``longest_idle`` and ``offer_all``; ``(busy share, sessions, idle time, idle sequence,
    agent)`` for ``least_busy``: the same order as comparing the policy's key, then the
    agent id), with lazy invalidation: an agent's current key per list is kept apart
    (:attr:`_current`), a change pushes the new key and leaves the old one in the heap,
    where it is dropped when it reaches the top (it is no longer its agent's current key).
    An update costs O(q · c · log n), a decision O(log n) amortized plus the excluded
    agents it skips; a heap holding more than twice its live keys is rebuilt (amortized
    O(1) per update), so stale keys never pile up.
    """

    def __init__(self, policies: dict[str, QueuePolicy]) -> None:
        self._policies = dict(policies)
        self._least_busy = {queue for queue, policy in policies.items() if policy is QueuePolicy.LEAST_BUSY}
        self._heaps: dict[tuple[str, Channel], list[SortKey]] = {
            (queue, channel): [] for queue in policies for channel in INBOUND_CHANNELS
        }
        # (queue, channel) -> agent -> the agent's current key in that heap
        self._current: dict[tuple[str, Channel], dict[str, SortKey]] = {
            (queue, channel): {} for queue in policies for channel in INBOUND_CHANNELS
        }
        # queue -> (channel, current keys, heap) of each of its channels
        self._slots: dict[str, tuple[tuple[Channel, dict[str, SortKey], list[SortKey]], ...]] = {
            queue: tuple(
                (channel, self._current[(queue, channel)], self._heaps[(queue, channel)])
                for channel in INBOUND_CHANNELS
            )
            for queue in policies
        }

    def update(self, view: AgentView) -> None:
        """Refresh one agent's entries after any change of its state."""
        self.put(
            view.agent_id,
            view.queues,
            tuple(channel for channel in INBOUND_CHANNELS if view.room.get(channel)),
            view.idle_since,
            view.busy_share,
            view.sessions,
        )

    def put(
        self,
        agent_id: str,
        queues: Iterable[str],
        room: Collection[Channel],
        idle_since: tuple[float, int],
        busy_share: float,
        sessions: int,
    ) -> None:
        """:meth:`update` from the view's fields; ``room``: the channels it has room for."""
        idle_key: SortKey | None = None
        busy_key: SortKey | None = None
        for queue in queues:
            slots = self._slots.get(queue)
            if slots is None:
                continue
            if queue in self._least_busy:
                if busy_key is None:
                    busy_key = (busy_share, sessions, idle_since[0], idle_since[1], agent_id)
                key = busy_key
            else:
                if idle_key is None:
                    idle_key = (idle_since[0], idle_since[1], agent_id)
                key = idle_key
            for channel, current, heap in slots:
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
                    del current[agent_id]  # its key in the heap is stale now

    def best(self, queue: str, channel: Channel, exclude: Collection[str] = ()) -> str | None:
        """The first eligible agent of ``queue`` for ``channel``, skipping ``exclude`` (None: nobody)."""
        slot = (queue, channel)
        heap = self._heaps.get(slot)
        if not heap:
            return None
        current = self._current[slot]
        held: list[SortKey] = []
        try:
            while heap:
                key = heap[0]
                agent_id = key[-1]
                if current.get(agent_id) is not key:  # type: ignore[call-overload]
                    heappop(heap)  # stale: the agent's key changed or it has no room
                elif agent_id in exclude:
                    held.append(heappop(heap))
                else:
                    return str(agent_id)
            return None
        finally:
            for key in held:
                heappush(heap, key)

    def candidates(self, queue: str, channel: Channel, exclude: Iterable[str] = ()) -> Iterator[str]:
        """Eligible agents of ``queue`` for ``channel``, best first, skipping ``exclude``."""
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        for agent_id in self.eligible(queue, channel):
            if agent_id not in excluded:
                yield agent_id

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        """All eligible agents in order (for tests and introspection: O(n log n))."""
        current = self._current.get((queue, channel), {})
        return [key[-1] for key in sorted(current.values())]  # type: ignore[misc]

    def dump(self) -> list[list[Any]]:
        """Each agent's current key in each list (JSON-able: ``[queue, channel, key]``; the
        stale keys left in the heaps are not state: they are skipped). :meth:`load` puts
        them back on an empty index of the same queues."""
        return [
            [queue, channel.value, list(key)]
            for (queue, channel), current in self._current.items()
            for key in current.values()
        ]

    def load(self, entries: list[list[Any]]) -> None:
        if any(self._current.values()):
            raise ValueError("load() needs an empty index")
        for queue, channel_name, key in entries:
            slot = (queue, Channel(channel_name))
            entry = tuple(key)
            self._current[slot][str(entry[-1])] = entry
        for slot, current in self._current.items():
            heap = self._heaps[slot]
            heap[:] = current.values()  # the same objects: the heap's keys are current
            heapify(heap)


def agent_line(agent_id: str) -> str:
    """The waiting line of the interactions that wait for one agent (a targeted offer of a
    vendor that cannot take a rejection). ``/`` is never part of a queue name, so it cannot
    clash with a queue's line."""
    return f"agent/{agent_id}"


@dataclass(frozen=True, slots=True)
class Waiter:
    key: WaitKey
    queue: str
    channel: Channel
    priority: int
    seq: int

    @property
    def order(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


class WaitingLists:
    """Interactions waiting for a free slot, per queue and channel, by priority then arrival."""

    def __init__(self) -> None:
        self._lists: dict[tuple[str, Channel], SortedList] = {}
        self._by_key: dict[WaitKey, Waiter] = {}
        self._per_queue: Counter[str] = Counter()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def last_seq(self) -> int:
        """The last arrival number handed out (kept across restarts by the journal)."""
        return self._seq

    @last_seq.setter
    def last_seq(self, value: int) -> None:
        self._seq = max(self._seq, value)

    def __contains__(self, key: WaitKey) -> bool:
        return key in self._by_key

    def count(self, queue: str) -> int:
        return self._per_queue[queue]

    def add(self, key: WaitKey, queue: str, channel: Channel, priority: int, seq: int | None = None) -> Waiter:
        """Make ``key`` wait; ``seq`` keeps the place it had before (a restart, or a return
        to the queue after an agent declined it), else it goes behind everyone."""
        if key in self._by_key:
            raise ValueError(f"{key!r} is already waiting")
        if seq is None:
            self._seq += 1
            seq = self._seq
        else:
            self._seq = max(self._seq, seq)
        waiter = Waiter(key, queue, channel, priority, seq)
        self._lists.setdefault((queue, channel), SortedList(key=lambda w: w.order)).add(waiter)
        self._by_key[key] = waiter
        self._per_queue[queue] += 1
        return waiter

    def remove(self, key: WaitKey) -> Waiter | None:
        waiter = self._by_key.pop(key, None)
        if waiter is not None:
            self._lists[(waiter.queue, waiter.channel)].remove(waiter)
            self._per_queue[waiter.queue] -= 1
        return waiter

    def best_for(
        self,
        queues: Iterable[str],
        has_room: Callable[[Channel], bool],
        refuses: Callable[[WaitKey], bool],
    ) -> Waiter | None:
        """The first waiter, over ``queues``, of a channel the agent has room for.

        ``refuses(key)`` says the agent must not get that interaction (it declined it).
        """
        best: Waiter | None = None
        room = {channel: has_room(channel) for channel in INBOUND_CHANNELS}
        for queue in queues:
            for channel in INBOUND_CHANNELS:
                if not room[channel]:
                    continue
                for waiter in self._lists.get((queue, channel), ()):
                    if refuses(waiter.key):
                        continue
                    if best is None or waiter.order < best.order:
                        best = waiter
                    break
        return best

    def waiters(self) -> list[Waiter]:
        return sorted(self._by_key.values(), key=lambda w: w.order)

    def dump(self) -> dict[str, Any]:
        """The waiters in the order they were added and the last arrival number (JSON-able;
        :meth:`load` puts them back on empty lists)."""
        return {
            "seq": self._seq,
            "waiters": [
                [w.key[0], w.key[1], w.queue, w.channel.value, w.priority, w.seq] for w in self._by_key.values()
            ],
        }

    def load(self, body: dict[str, Any]) -> None:
        if self._by_key:
            raise ValueError("load() needs empty waiting lists")
        for vendor, interaction_id, queue, channel, priority, seq in body["waiters"]:
            self.add((vendor, interaction_id), queue, Channel(channel), int(priority), int(seq))
        self._seq = int(body["seq"])
