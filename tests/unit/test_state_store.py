"""The state store: presence and counters with compare-and-set, reserve and release."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.capacity import Load, Presence, Reason
from gateway.config import CapacityProfile
from gateway.events import Channel
from gateway.state import AgentState, MemoryStateStore
from gateway.state.base import CAS_ATTEMPTS, StateStore, StoreConflict, agent_state

PROFILE = CapacityProfile(max_sessions=2, units={Channel.EMAIL: 2}, max_units=3)


def ready_store() -> MemoryStateStore:
    store = MemoryStateStore()
    store.set_presence("a1", Presence.READY, None)
    return store


def test_a_new_agent_starts_offline_with_nothing_in_use() -> None:
    state = MemoryStateStore().get("a1")
    assert state == AgentState(presence=Presence.OFFLINE, reason=None, load=Load(), version=0)


def test_compare_and_set_writes_only_on_the_expected_version() -> None:
    store = MemoryStateStore()
    first = store.compare_and_set("a1", 0, AgentState(presence=Presence.READY))
    assert first is not None and first.version == 1
    assert store.compare_and_set("a1", 0, AgentState(presence=Presence.OFFLINE)) is None
    assert store.get("a1").presence is Presence.READY
    assert list(store.agent_ids()) == ["a1"]


def test_reserve_takes_one_session_with_its_weight() -> None:
    store = ready_store()
    reason, state = store.reserve("a1", PROFILE, Channel.EMAIL)
    assert reason is None
    assert state.load == Load(sessions=1, units=2, email=1)
    assert store.get("a1") == state


def test_a_refused_reserve_gives_the_reason_and_writes_nothing() -> None:
    store = ready_store()
    store.reserve("a1", PROFILE, Channel.EMAIL)
    before = store.get("a1")
    reason, state = store.reserve("a1", PROFILE, Channel.EMAIL)  # 4 units > 3
    assert reason is Reason.AGENT_AT_CAPACITY
    assert state == before == store.get("a1")


def test_reserve_of_an_offline_agent_is_agent_offline() -> None:
    reason, _ = MemoryStateStore().reserve("a1", PROFILE, Channel.CHAT)
    assert reason is Reason.AGENT_OFFLINE


def test_release_gives_back_exactly_what_reserve_took() -> None:
    store = ready_store()
    store.reserve("a1", PROFILE, Channel.CHAT)
    store.reserve("a1", PROFILE, Channel.EMAIL)
    store.release("a1", PROFILE, Channel.EMAIL)
    assert store.get("a1").load == Load(sessions=1, units=1, chat=1)
    store.release("a1", PROFILE, Channel.CHAT)
    assert store.get("a1").load == Load()


def test_release_of_a_session_not_held_raises_and_writes_nothing() -> None:
    store = ready_store()
    before = store.get("a1")
    with pytest.raises(ValueError):
        store.release("a1", PROFILE, Channel.VOICE)
    assert store.get("a1") == before


def test_set_presence_keeps_the_load() -> None:
    store = ready_store()
    store.reserve("a1", PROFILE, Channel.CHAT)
    state = store.set_presence("a1", Presence.NOT_READY, "lunch")
    assert (state.presence, state.reason, state.load) == (
        Presence.NOT_READY,
        "lunch",
        Load(sessions=1, units=1, chat=1),
    )


class _CasStore(StateStore):
    """A store with compare-and-set only: reserve and release are the base class's retry
    loops (what a shared store without server-side scripts would run)."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentState] = {}

    def get(self, agent_id: str) -> AgentState:
        return self._agents.get(agent_id) or AgentState()

    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        if self.get(agent_id).version != expected_version:
            return None
        stored = self._agents[agent_id] = replace(new, version=expected_version + 1)
        return stored

    def agent_ids(self) -> Iterable[str]:
        return tuple(self._agents)


class _LosingStore(_CasStore):
    """Someone else always wins the compare-and-set."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        self.attempts += 1
        return None


def test_reserve_retries_a_lost_compare_and_set_then_gives_up() -> None:
    store = _LosingStore()
    store._agents["a1"] = AgentState(presence=Presence.READY)
    with pytest.raises(StoreConflict):
        store.reserve("a1", PROFILE, Channel.CHAT)
    assert store.attempts == CAS_ATTEMPTS


class _RacingStore(_CasStore):
    """Another writer takes a chat slot between our read and our write, once."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        if not self.raced:
            self.raced = True
            current = self.get(agent_id)
            super().compare_and_set(
                agent_id,
                current.version,
                AgentState(presence=current.presence, load=current.load.plus(Channel.CHAT, 1), version=current.version),
            )
        return super().compare_and_set(agent_id, expected_version, new)


def test_reserve_rechecks_the_rules_after_losing_a_race() -> None:
    """max_sessions 2, one chat held: we want a call, a racer takes the last slot (a chat)
    between our read and our write: our write fails, the retry sees the new load and
    refuses. The cap is never exceeded."""
    store = _RacingStore()
    store._agents["a1"] = AgentState(presence=Presence.READY, load=Load(sessions=1, units=1, chat=1))
    reason, state = store.reserve("a1", PROFILE, Channel.VOICE)
    assert reason is Reason.AGENT_AT_CAPACITY
    assert store.get("a1").load == Load(sessions=2, units=2, chat=2)
    assert state.load.sessions == 2


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reserve", "release", "presence"]),
            st.sampled_from(["a1", "a2"]),
            st.sampled_from(list(Channel)),
            st.sampled_from(list(Presence)),
        ),
        max_size=40,
    )
)
def test_the_memory_stores_one_step_reserve_and_release_equal_the_compare_and_set_loops(
    steps: list[tuple[str, str, Channel, Presence]],
) -> None:
    """MemoryStateStore reserves and releases in one step (no compare-and-set): the same
    reasons, the same errors, the same states (load, presence and version) as the base
    class's retry loops on a compare-and-set store."""
    one_step, looping = MemoryStateStore(), _CasStore()
    for what, agent, channel, presence in steps:
        if what == "presence":
            assert one_step.set_presence(agent, presence, None) == looping.set_presence(agent, presence, None)
        elif what == "reserve":
            assert one_step.reserve(agent, PROFILE, channel) == looping.reserve(agent, PROFILE, channel)
        else:
            errors = []
            for store in (one_step, looping):
                try:
                    store.release(agent, PROFILE, channel)
                except ValueError as exc:
                    errors.append(str(exc))
            assert len(errors) in (0, 2) and len(set(errors)) <= 1
        assert one_step.get(agent) == looping.get(agent)


def test_agent_state_builds_the_same_frozen_object_as_the_dataclass() -> None:
    """The reservation's fast constructor: equal, same hash and repr, still frozen."""
    load = Load(sessions=2, units=3, chat=1, voice=1)
    fast = agent_state(Presence.NOT_READY, "lunch", load, 7)
    slow = AgentState(Presence.NOT_READY, "lunch", load, 7)
    assert type(fast) is AgentState
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert (fast.presence, fast.reason, fast.load, fast.version) == (Presence.NOT_READY, "lunch", load, 7)
    with pytest.raises(FrozenInstanceError):
        fast.version = 8  # type: ignore[misc]
