"""The state store interface: agent presence and capacity counters with compare-and-set.

The router never increments a counter blindly: it reads an agent's :class:`AgentState`,
computes the next one with the pure rules of :mod:`gateway.capacity`, and writes it back
with :meth:`StateStore.compare_and_set`, which fails if anyone else changed the agent in
between (the ``version`` moved). That is the same atomic reservation app_queue and
mod_callcenter make, and what a shared store (Redis with a Lua script) implements for
several gateway instances: :meth:`reserve` and :meth:`release` may be overridden by such a
store with one server-side atomic step, with the same results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..capacity import Load, Presence, Reason, check
from ..config import CapacityProfile
from ..events import Channel

#: How often reserve/release retry a lost compare-and-set before giving up.
CAS_ATTEMPTS = 64


class StoreConflict(RuntimeError):
    """A compare-and-set kept losing: the store is under extreme contention."""


@dataclass(frozen=True, slots=True)
class AgentState:
    presence: Presence = Presence.OFFLINE
    reason: str | None = None
    load: Load = field(default_factory=Load)
    version: int = 0


_new_object = object.__new__
_SETTERS = tuple(AgentState.__dict__[name].__set__ for name in ("presence", "reason", "load", "version"))


def agent_state(presence: Presence, reason: str | None, load: Load, version: int) -> AgentState:
    """``AgentState(presence, reason, load, version)``, the same frozen object, built at about
    half the cost: the dataclass's ``__init__`` sets each field through an
    ``object.__setattr__`` call, this sets the slots directly (every reservation builds one)."""
    state = _new_object(AgentState)
    set_presence, set_reason, set_load, set_version = _SETTERS
    set_presence(state, presence)
    set_reason(state, reason)
    set_load(state, load)
    set_version(state, version)
    return state


class StateStore(ABC):
    """Agent presence and counters. Implementations must make ``compare_and_set`` atomic."""

    @abstractmethod
    def get(self, agent_id: str) -> AgentState:
        """The agent's current state (a new agent starts offline with nothing in use)."""

    @abstractmethod
    def compare_and_set(self, agent_id: str, expected_version: int, new: AgentState) -> AgentState | None:
        """Store ``new`` (with the version bumped) iff the stored version is ``expected_version``.

        Returns the stored state, or None when the version moved (nothing written).
        """

    @abstractmethod
    def agent_ids(self) -> Iterable[str]:
        """Every agent the store holds state for."""

    def ping(self) -> bool:
        """Whether the store is reachable."""
        return True

    def put(self, agent_id: str, state: AgentState) -> None:
        """Store ``state`` as it is, version included (loading an engine's state dump)."""
        raise NotImplementedError(f"{type(self).__name__} cannot load a state dump")

    # --- operations built on compare_and_set (a shared store may do each in one step) ---

    def reserve(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> tuple[Reason | None, AgentState]:
        """Take one ``channel`` session on the agent if the capacity rules allow it."""
        for _ in range(CAS_ATTEMPTS):
            state = self.get(agent_id)
            reason = check(profile, state.load, state.presence, channel)
            if reason is not None:
                return reason, state
            new = agent_state(
                state.presence, state.reason, state.load.plus(channel, profile.weight(channel)), state.version
            )
            stored = self.compare_and_set(agent_id, state.version, new)
            if stored is not None:
                return None, stored
        raise StoreConflict(f"reserve on {agent_id} lost {CAS_ATTEMPTS} compare-and-sets")

    def occupy(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> AgentState:
        """Count one more ``channel`` session without checking the rules (restoring sessions)."""
        for _ in range(CAS_ATTEMPTS):
            state = self.get(agent_id)
            new = replace(state, load=state.load.plus(channel, profile.weight(channel)))
            stored = self.compare_and_set(agent_id, state.version, new)
            if stored is not None:
                return stored
        raise StoreConflict(f"occupy on {agent_id} lost {CAS_ATTEMPTS} compare-and-sets")

    def release(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> AgentState:
        """Give back one ``channel`` session of the agent."""
        for _ in range(CAS_ATTEMPTS):
            state = self.get(agent_id)
            new = agent_state(
                state.presence, state.reason, state.load.minus(channel, profile.weight(channel)), state.version
            )
            stored = self.compare_and_set(agent_id, state.version, new)
            if stored is not None:
                return stored
        raise StoreConflict(f"release on {agent_id} lost {CAS_ATTEMPTS} compare-and-sets")

    def set_presence(self, agent_id: str, presence: Presence, reason: str | None) -> AgentState:
        for _ in range(CAS_ATTEMPTS):
            state = self.get(agent_id)
            stored = self.compare_and_set(agent_id, state.version, replace(state, presence=presence, reason=reason))
            if stored is not None:
                return stored
        raise StoreConflict(f"presence of {agent_id} lost {CAS_ATTEMPTS} compare-and-sets")
