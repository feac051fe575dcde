"""Agent selection and waiting lists: the indexes behind untargeted routing.

**Eligibility index.** For every (queue, channel) pair the index keeps a sorted list of the
agents of that queue who could take one more session of that channel right now (ready,
every capacity rule satisfied), ordered by the queue's policy:

* ``longest_idle``: the agent who has gone longest without being offered work (the later
  of becoming ready and their last offer) comes first; ties by agent id.
* ``least_busy``: the smallest share of ``max_units`` in use first, then fewer sessions,
  then longest idle, then agent id.

An agent's entries are refreshed whenever its presence, load or idle time changes: that
costs O(q · c · log n) for an agent in q queues with c routable channels, among n agents of
a queue. A routing decision peeks the head of one sorted list: O(log n + k), k being the
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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
    def __init__(self, policies: dict[str, QueuePolicy]) -> None:
        self._policies = dict(policies)
        self._lists: dict[tuple[str, Channel], SortedList] = {
            (queue, channel): SortedList() for queue in policies for channel in INBOUND_CHANNELS
        }
        # (queue, channel, agent) -> the entry currently in the list
        self._entries: dict[tuple[str, Channel, str], tuple[SortKey, str]] = {}

    def _key(self, policy: QueuePolicy, view: AgentView) -> SortKey:
        if policy is QueuePolicy.LEAST_BUSY:
            return (view.busy_share, view.sessions, view.idle_since)
        return (view.idle_since,)

    def update(self, view: AgentView) -> None:
        """Refresh one agent's entries after any change of its state."""
        for queue in view.queues:
            policy = self._policies.get(queue)
            if policy is None:
                continue
            for channel in INBOUND_CHANNELS:
                slot = (queue, channel, view.agent_id)
                old = self._entries.get(slot)
                new = (self._key(policy, view), view.agent_id) if view.room.get(channel) else None
                if old == new:
                    continue
                if old is not None:
                    self._lists[(queue, channel)].remove(old)
                    del self._entries[slot]
                if new is not None:
                    self._lists[(queue, channel)].add(new)
                    self._entries[slot] = new

    def candidates(self, queue: str, channel: Channel, exclude: Iterable[str] = ()) -> Iterator[str]:
        """Eligible agents of ``queue`` for ``channel``, best first, skipping ``exclude``."""
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        for _key, agent_id in self._lists.get((queue, channel), ()):
            if agent_id not in excluded:
                yield agent_id

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        """All eligible agents in order (for tests and introspection)."""
        return [agent_id for _key, agent_id in self._lists.get((queue, channel), ())]


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
