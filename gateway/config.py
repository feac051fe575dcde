"""Configuration models (one YAML file per deployment).

The models here are pure: they validate shape and cross-references. Reading the YAML file,
``${ENV}`` interpolation and ``file:line`` error reporting live in
:mod:`gateway.config_loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .events import ALL_CHANNELS, Channel

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
_SHA256 = r"^[0-9a-fA-F]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapacityProfile(_Strict):
    """How many sessions of which channels one agent may hold (DESIGN section 4)."""

    max_sessions: int = Field(ge=1, le=64)
    reserved_inbound: int = Field(default=0, ge=0)
    channels: dict[Channel, int] = Field(default_factory=dict)
    units: dict[Channel, int] = Field(default_factory=dict)
    max_units: int | None = Field(default=None, ge=1)
    offer_timeout_s: dict[Channel, float] = Field(default_factory=dict)
    wrap_up_s: dict[Channel, float] = Field(default_factory=dict)
    #: Desktop start screen per channel (the session object's ``profile``); default: the channel name.
    start_screens: dict[Channel, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _admissible(self) -> CapacityProfile:
        problems: list[str] = []
        if self.reserved_inbound >= self.max_sessions:
            problems.append(
                f"reserved_inbound ({self.reserved_inbound}) must be below max_sessions "
                f"({self.max_sessions}), or no manual session could ever start"
            )
        for channel, cap in self.channels.items():
            if cap < 1:
                problems.append(f"channels.{channel}: {cap} can never admit a {channel} session (minimum 1)")
        for channel, weight in self.units.items():
            if weight < 1:
                problems.append(f"units.{channel}: must be at least 1")
            elif weight > self.unit_limit:
                problems.append(
                    f"units.{channel}: {weight} exceeds max_units ({self.unit_limit}): "
                    f"a {channel} session could never be admitted"
                )
        for channel, seconds in self.offer_timeout_s.items():
            if not 0 < seconds <= 86_400:
                problems.append(f"offer_timeout_s.{channel}: must be > 0 and <= 86400")
        for channel, seconds in self.wrap_up_s.items():
            if not 0 <= seconds <= 86_400:
                problems.append(f"wrap_up_s.{channel}: must be >= 0 and <= 86400")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def unit_limit(self) -> int:
        return self.max_units if self.max_units is not None else self.max_sessions

    def cap(self, channel: Channel) -> int:
        return self.channels.get(channel, self.max_sessions)

    def weight(self, channel: Channel) -> int:
        return self.units.get(channel, 1)

    def offer_timeout(self, channel: Channel) -> float:
        return self.offer_timeout_s.get(channel, 30.0)

    def wrap_up(self, channel: Channel) -> float:
        return self.wrap_up_s.get(channel, 0.0)

    def start_screen(self, channel: Channel) -> str:
        return self.start_screens.get(channel, str(channel))


class QueuePolicy(StrEnum):
    LONGEST_IDLE = "longest_idle"
    LEAST_BUSY = "least_busy"


class OnFull(StrEnum):
    REJECT = "reject"
    WAIT = "wait"


class QueueConfig(_Strict):
    name: str = Field(pattern=_NAME)
    policy: QueuePolicy = QueuePolicy.LONGEST_IDLE
    on_full: OnFull = OnFull.REJECT
    #: With ``on_full: wait``: how long an interaction may wait before ``queue_timeout``.
    max_wait_s: float = Field(default=60.0, gt=0, le=86_400)
    #: With ``on_full: wait``: at most this many interactions wait; more are rejected.
    max_waiting: int = Field(default=1000, ge=1, le=1_000_000)


class AgentConfig(_Strict):
    id: str = Field(pattern=_NAME)
    name: str = Field(default="", max_length=256)
    profile: str
    queues: list[str] = Field(default_factory=list)
    token_sha256: str | None = Field(default=None, pattern=_SHA256)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    supervisor_token_sha256: str | None = Field(default=None, pattern=_SHA256)
    #: Sessions survive a desktop disconnect this long; then the agent goes offline.
    desktop_grace_s: float = Field(default=60.0, ge=0, le=86_400)
    #: per token: API requests (and WebSocket messages) per second, and the burst allowed;
    #: beyond it 429 ``rate_limited``. 0 turns the limit off.
    rate_limit_per_s: float = Field(default=50.0, ge=0, le=100_000)
    rate_limit_burst: float = Field(default=100.0, ge=1, le=1_000_000)


class StoreConfig(_Strict):
    url: str = "sqlite:///data/gateway.db"

    @model_validator(mode="after")
    def _scheme(self) -> StoreConfig:
        if not re.match(r"^(sqlite|memory|redis|rediss)://", self.url):
            raise ValueError("url must start with sqlite://, memory:// or redis://")
        return self


@dataclass(frozen=True, slots=True)
class Known:
    """The agents and queues a configuration defines: what vendor settings (an adapter's
    ``agent_map``, ``queue_map`` ...) may name."""

    agents: frozenset[str]
    queues: frozenset[str]

    @classmethod
    def of(cls, config: GatewayConfig) -> Known:
        return cls(frozenset(a.id for a in config.agents), frozenset(q.name for q in config.queues))


class VendorConfig(BaseModel):
    """One vendor connection. Adapter-specific keys are validated by the adapter's own model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=_NAME)
    adapter: str = Field(min_length=1)

    def settings(self) -> dict[str, Any]:
        """The adapter-specific keys (everything but ``name`` and ``adapter``)."""
        return dict(self.model_extra or {})


class GatewayConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    capacity_profiles: dict[str, CapacityProfile]
    queues: list[QueueConfig] = Field(default_factory=list)
    agents: list[AgentConfig] = Field(default_factory=list)
    vendors: list[VendorConfig] = Field(default_factory=list)

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-reference problems as ``(path, message)``; the loader adds file:line."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen_queues: set[str] = set()
        for i, queue in enumerate(self.queues):
            if queue.name in seen_queues:
                problems.append((("queues", i, "name"), f"duplicate queue {queue.name!r}"))
            seen_queues.add(queue.name)
        seen_agents: set[str] = set()
        all_queues = {q.name for q in self.queues}
        for i, agent in enumerate(self.agents):
            if agent.id in seen_agents:
                problems.append((("agents", i, "id"), f"duplicate agent {agent.id!r}"))
            seen_agents.add(agent.id)
            if agent.profile not in self.capacity_profiles:
                problems.append((("agents", i, "profile"), f"unknown capacity profile {agent.profile!r}"))
            for j, queue_name in enumerate(agent.queues):
                if queue_name not in all_queues:
                    problems.append((("agents", i, "queues", j), f"unknown queue {queue_name!r}"))
        seen_vendors: set[str] = set()
        for i, vendor in enumerate(self.vendors):
            if vendor.name in seen_vendors:
                problems.append((("vendors", i, "name"), f"duplicate vendor {vendor.name!r}"))
            seen_vendors.add(vendor.name)
        return problems

    def profile_of(self, agent_id: str) -> CapacityProfile:
        for agent in self.agents:
            if agent.id == agent_id:
                return self.capacity_profiles[agent.profile]
        raise KeyError(agent_id)


__all__ = [
    "ALL_CHANNELS",
    "AgentConfig",
    "CapacityProfile",
    "GatewayConfig",
    "OnFull",
    "QueueConfig",
    "QueuePolicy",
    "ServerConfig",
    "StoreConfig",
    "VendorConfig",
]
