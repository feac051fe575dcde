"""Agent state stores: where presence and capacity counters live.

:class:`~gateway.state.base.StateStore` is the interface (compare-and-set semantics);
:class:`~gateway.state.memory.MemoryStateStore` the single-process implementation.
"""

from .base import AgentState, StateStore
from .memory import MemoryStateStore

__all__ = ["AgentState", "MemoryStateStore", "StateStore"]
