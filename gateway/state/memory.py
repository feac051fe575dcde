"""In-process state store (the embedded default; durability comes from the journal)."""

from __future__ import annotations

from collections.abc import Iterable

from .base import AgentState, StateStore


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._agents: dict[str, AgentState] = {}

    def get(self, agent_id: str) -> AgentState:
        return self._agents.get(agent_id) or AgentState()

    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        current = self.get(agent_id)
        if current.version != expected_version:
            return None
        stored = AgentState(new.presence, new.reason, new.load, expected_version + 1)
        self._agents[agent_id] = stored
        return stored

    def agent_ids(self) -> Iterable[str]:
        return tuple(self._agents)

    def put(self, agent_id: str, state: AgentState) -> None:
        """Store ``state`` as it is, version included (loading a state dump)."""
        self._agents[agent_id] = state
