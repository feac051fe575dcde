"""In-process state store (the embedded default; durability comes from the journal)."""

from __future__ import annotations

from collections.abc import Iterable

from ..capacity import Reason, check
from ..config import CapacityProfile
from ..events import Channel
from .base import AgentState, StateStore, agent_state


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._agents: dict[str, AgentState] = {}

    def get(self, agent_id: str) -> AgentState:
        return self._agents.get(agent_id) or AgentState()

    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        current = self.get(agent_id)
        if current.version != expected_version:
            return None
        stored = agent_state(new.presence, new.reason, new.load, expected_version + 1)
        self._agents[agent_id] = stored
        return stored

    def agent_ids(self) -> Iterable[str]:
        return tuple(self._agents)

    def put(self, agent_id: str, state: AgentState) -> None:
        """Store ``state`` as it is, version included (loading a state dump)."""
        self._agents[agent_id] = state

    # reserve and release in one step: nobody else writes between the read and the write
    # in one process, so the compare-and-set of the base class cannot lose; the results
    # (reason, load, version bumped by one) are the same as its (tests/unit/test_state_store.py)

    def reserve(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> tuple[Reason | None, AgentState]:
        state = self._agents.get(agent_id) or AgentState()
        reason = check(profile, state.load, state.presence, channel)
        if reason is not None:
            return reason, state
        stored = self._agents[agent_id] = agent_state(
            state.presence, state.reason, state.load.plus(channel, profile.weight(channel)), state.version + 1
        )
        return None, stored

    def release(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> AgentState:
        state = self._agents.get(agent_id) or AgentState()
        stored = self._agents[agent_id] = agent_state(
            state.presence, state.reason, state.load.minus(channel, profile.weight(channel)), state.version + 1
        )
        return stored
