"""Agent selection and waiting lists: the indexes behind untargeted routing.

**Eligibility index.** For every (queue, channel) pair the index gives the agents of that
queue who could take one more session of that channel right now (ready, every capacity
rule satisfied), ordered by the queue's policy (a heap of sort keys, see
:class:`EligibilityIndex`):

* ``longest_idle``: the agent who has gone longest without being offered work (the later
  of becoming ready and their last offer) comes first; ties by agent id.
* ``least_busy``: the smallest share of ``max_units`` in use first, then fewer sessions,
  then longest idle, then agent id.

An agent's entries are refreshed whenever its presence, load or idle time changes: that
costs O(q · log n) for an agent in q queues, among n agents of a queue (one key per agent
and queue, in the heap of the set of channels it has room for). A routing decision takes
the least of four heads (the sets that hold the channel): O(log n + k) amortized, k being
the agents skipped because they declined or missed this interaction before. No decision
scans all agents.

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


#: each inbound channel's bit in a room mask (the channels an agent has room for)
CHANNEL_BIT: dict[Channel, int] = {Channel.VOICE: 1, Channel.CHAT: 2, Channel.EMAIL: 4}
#: channel -> the room masks that include it
_MASKS_WITH: dict[Channel, tuple[int, ...]] = {
    channel: tuple(mask for mask in range(1, 8) if mask & bit) for channel, bit in CHANNEL_BIT.items()
}


def room_mask(room: Iterable[Channel]) -> int:
    """The room mask of a set of channels (non-inbound channels are ignored)."""
    mask = 0
    for channel in room:
        mask |= CHANNEL_BIT.get(channel, 0)
    return mask


class _QueueIndex:
    """One queue's agents with room: each agent is in the table of its room mask, i.e. one
    key per agent (not one per channel)."""

    __slots__ = ("where", "tables")

    def __init__(self) -> None:
        #: agent -> its room mask (absent: no room for any inbound channel)
        self.where: dict[str, int] = {}
        #: room mask -> (agent -> its current key, the heap holding those keys and stale ones)
        self.tables: tuple[tuple[dict[str, SortKey], list[SortKey]], ...] = tuple(({}, []) for _ in range(8))


class EligibilityIndex:
    """Per queue, the agents with room, in the queue's policy order, per channel on demand.

    Each agent of a queue has one sort key in it (``(idle time, idle sequence, agent)`` for
    ``longest_idle`` and ``offer_all``; ``(busy share, sessions, idle time, idle sequence,
    agent)`` for ``least_busy``: the same order as comparing the policy's key, then the
    agent id), kept in the binary heap of its *room mask* (the set of inbound channels it
    has room for: seven heaps per queue). The agents eligible for a channel are the union
    of the heaps whose mask holds that channel (four of the seven), so their best is the
    least of those heaps' heads: the same agent, in the same order, as one heap per
    (queue, channel) would give, with one key per agent and queue to push instead of one
    per channel. Lazy invalidation: an agent's current key is kept apart (per mask), a
    change pushes the new key and leaves the old one in its heap, where it is dropped when
    it reaches the top (it is no longer its agent's current key in that mask). An update
    costs O(q · log n), a decision O(log n) amortized plus the excluded agents it skips; a
    heap holding more than twice its live keys is rebuilt (amortized O(1) per update), so
    stale keys never pile up.
    """

    def __init__(self, policies: dict[str, QueuePolicy]) -> None:
        self._policies = dict(policies)
        self._least_busy = {queue for queue, policy in policies.items() if policy is QueuePolicy.LEAST_BUSY}
        self._queues: dict[str, _QueueIndex] = {queue: _QueueIndex() for queue in policies}

    def update(self, view: AgentView) -> None:
        """Refresh one agent's entries after any change of its state."""
        self.put(
            view.agent_id,
            view.queues,
            room_mask(channel for channel, room in view.room.items() if room),
            view.idle_since,
            view.busy_share,
            view.sessions,
        )

    def put(
        self,
        agent_id: str,
        queues: Iterable[str],
        room: int,
        idle_since: tuple[float, int],
        busy_share: float,
        sessions: int,
    ) -> None:
        """:meth:`update` from the view's fields; ``room``: the room mask (:data:`CHANNEL_BIT`)."""
        idle_key: SortKey | None = None
        busy_key: SortKey | None = None
        for queue in queues:
            index = self._queues.get(queue)
            if index is None:
                continue
            where = index.where
            old_mask = where.get(agent_id, 0)
            if not room:
                if old_mask:
                    del index.tables[old_mask][0][agent_id]  # its key in the heap is stale now
                    del where[agent_id]
                continue
            if queue in self._least_busy:
                if busy_key is None:
                    busy_key = (busy_share, sessions, idle_since[0], idle_since[1], agent_id)
                key = busy_key
            else:
                if idle_key is None:
                    idle_key = (idle_since[0], idle_since[1], agent_id)
                key = idle_key
            current, heap = index.tables[room]
            if old_mask == room:
                if current[agent_id] == key:
                    continue
            elif old_mask:
                del index.tables[old_mask][0][agent_id]
            where[agent_id] = room
            current[agent_id] = key
            heappush(heap, key)
            if len(heap) > 2 * len(current) + 32:
                heap[:] = current.values()
                heapify(heap)

    def best(self, queue: str, channel: Channel, exclude: Collection[str] = ()) -> str | None:
        """The first eligible agent of ``queue`` for ``channel``, skipping ``exclude`` (None: nobody)."""
        index = self._queues.get(queue)
        masks = _MASKS_WITH.get(channel)
        if index is None or masks is None:
            return None
        tables = index.tables
        best: SortKey | None = None
        held: list[tuple[list[SortKey], SortKey]] = []
        try:
            for mask in masks:
                current, heap = tables[mask]
                while heap:
                    key = heap[0]
                    agent_id = key[-1]
                    if current.get(agent_id) is not key:  # type: ignore[call-overload]
                        heappop(heap)  # stale: the agent's key changed or it has no such room now
                    elif agent_id in exclude:
                        held.append((heap, heappop(heap)))
                    else:
                        if best is None or key < best:
                            best = key
                        break
            return None if best is None else str(best[-1])
        finally:
            for heap, key in held:
                heappush(heap, key)

    def candidates(self, queue: str, channel: Channel, exclude: Iterable[str] = ()) -> Iterator[str]:
        """Eligible agents of ``queue`` for ``channel``, best first, skipping ``exclude``."""
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        for agent_id in self.eligible(queue, channel):
            if agent_id not in excluded:
                yield agent_id

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        """All eligible agents in order (for tests and introspection: O(n log n))."""
        index = self._queues.get(queue)
        if index is None:
            return []
        keys = [key for mask in _MASKS_WITH.get(channel, ()) for key in index.tables[mask][0].values()]
        return [key[-1] for key in sorted(keys)]  # type: ignore[misc]

    def dump(self) -> list[list[Any]]:
        """Each agent's current key for each channel it has room for, per queue (JSON-able:
        ``[queue, channel, key]``, the same entries as when the index kept one key per
        channel; the stale keys left in the heaps are not state: they are skipped).
        :meth:`load` puts them back on an empty index of the same queues."""
        return [
            [queue, channel.value, list(index.tables[mask][0][agent_id])]
            for queue, index in self._queues.items()
            for agent_id, mask in index.where.items()
            for channel, bit in CHANNEL_BIT.items()
            if mask & bit
        ]

    def load(self, entries: list[list[Any]]) -> None:
        if any(index.where for index in self._queues.values()):
            raise ValueError("load() needs an empty index")
        keys: dict[str, dict[str, SortKey]] = {queue: {} for queue in self._queues}
        for queue, channel_name, key in entries:
            index = self._queues[queue]
            entry = tuple(key)
            agent_id = str(entry[-1])
            index.where[agent_id] = index.where.get(agent_id, 0) | CHANNEL_BIT[Channel(channel_name)]
            keys[queue][agent_id] = entry
        for queue, index in self._queues.items():
            for agent_id, mask in index.where.items():
                index.tables[mask][0][agent_id] = keys[queue][agent_id]
            for current, heap in index.tables:
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
