"""Live configuration: what changed between the running configuration and a new one.

:func:`diff` compares two validated configurations and returns a :class:`ConfigDiff`: the
agents, capacity profiles, queues and vendors added, removed or changed, the server settings
applied live and those that need a restart. It is pure (no I/O); the engine applies the
agent, profile and queue part in one step (:meth:`gateway.engine.Engine.reconfigure`), the
runtime the rest (adapters, tokens, API settings; see :mod:`gateway.reload`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import GatewayConfig

__all__ = ["LIVE_SERVER_SETTINGS", "RESTART_SETTINGS", "ConfigDiff", "diff"]

#: server settings a reload applies at once
LIVE_SERVER_SETTINGS = (
    "supervisor_token_sha256",
    "desktop_grace_s",
    "rate_limit_per_s",
    "rate_limit_burst",
    "max_desktops_per_agent",
    "remote_admin",
)
#: settings that only a restart applies (the listening socket, its limits, the store, retention)
RESTART_SETTINGS = (
    "server.host",
    "server.port",
    "server.idle_timeout_s",
    "server.max_connections_per_address",
    "server.access_log",
    "store.url",
    "retention.dedup_window_s",
    "retention.cached_events",
    "retention.cached_finished",
)


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    agents_added: tuple[str, ...] = ()
    agents_removed: tuple[str, ...] = ()
    #: agents whose name, profile (or the profile's settings) or queues changed
    agents_changed: tuple[str, ...] = ()
    #: agents whose token changed or was removed: their desktops must reconnect
    tokens_changed: tuple[str, ...] = ()
    profiles_changed: tuple[str, ...] = ()
    queues_added: tuple[str, ...] = ()
    queues_removed: tuple[str, ...] = ()
    queues_changed: tuple[str, ...] = ()
    vendors_added: tuple[str, ...] = ()
    vendors_removed: tuple[str, ...] = ()
    vendors_changed: tuple[str, ...] = ()
    server_changed: tuple[str, ...] = ()
    #: settings that changed in the file but take effect only after a restart
    needs_restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(self.summary().values())

    def summary(self) -> dict[str, list[str]]:
        """What changed, by kind (empty lists left out of :meth:`compact`)."""
        return {
            "agents_added": list(self.agents_added),
            "agents_removed": list(self.agents_removed),
            "agents_changed": list(self.agents_changed),
            "tokens_changed": list(self.tokens_changed),
            "profiles_changed": list(self.profiles_changed),
            "queues_added": list(self.queues_added),
            "queues_removed": list(self.queues_removed),
            "queues_changed": list(self.queues_changed),
            "vendors_added": list(self.vendors_added),
            "vendors_removed": list(self.vendors_removed),
            "vendors_changed": list(self.vendors_changed),
            "server_changed": list(self.server_changed),
            "needs_restart": list(self.needs_restart),
        }

    def compact(self) -> dict[str, list[str]]:
        return {key: value for key, value in self.summary().items() if value}


def _split(old: dict[str, Any], new: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    added = tuple(name for name in new if name not in old)
    removed = tuple(name for name in old if name not in new)
    changed = tuple(name for name in new if name in old and old[name] != new[name])
    return added, removed, changed


def diff(old: GatewayConfig, new: GatewayConfig) -> ConfigDiff:
    """What a reload from ``old`` to ``new`` changes."""
    profiles_added, profiles_removed, profiles_changed = _split(old.capacity_profiles, new.capacity_profiles)
    del profiles_added, profiles_removed  # visible through the agents that use them
    old_agents = {a.id: a for a in old.agents}
    new_agents = {a.id: a for a in new.agents}
    agents_added, agents_removed, _ = _split(old_agents, new_agents)
    agents_changed: list[str] = []
    tokens_changed: list[str] = []
    for agent_id, agent in new_agents.items():
        before = old_agents.get(agent_id)
        if before is None:
            continue
        if before.token_sha256 != agent.token_sha256:
            tokens_changed.append(agent_id)
        if (
            before.name != agent.name
            or before.profile != agent.profile
            or before.queues != agent.queues
            or old.capacity_profiles[before.profile] != new.capacity_profiles[agent.profile]
        ):
            agents_changed.append(agent_id)
    tokens_changed.extend(a for a in agents_removed if old_agents[a].token_sha256)
    queues_added, queues_removed, queues_changed = _split(
        {q.name: q for q in old.queues}, {q.name: q for q in new.queues}
    )
    vendors_added, vendors_removed, vendors_changed = _split(
        {v.name: v.model_dump() for v in old.vendors}, {v.name: v.model_dump() for v in new.vendors}
    )
    server_changed = tuple(
        name for name in LIVE_SERVER_SETTINGS if getattr(old.server, name) != getattr(new.server, name)
    )
    needs_restart: list[str] = []
    for dotted in RESTART_SETTINGS:
        section, name = dotted.split(".")
        if getattr(getattr(old, section), name, None) != getattr(getattr(new, section), name, None):
            needs_restart.append(dotted)
    return ConfigDiff(
        agents_added=agents_added,
        agents_removed=agents_removed,
        agents_changed=tuple(agents_changed),
        tokens_changed=tuple(tokens_changed),
        profiles_changed=profiles_changed,
        queues_added=queues_added,
        queues_removed=queues_removed,
        queues_changed=queues_changed,
        vendors_added=vendors_added,
        vendors_removed=vendors_removed,
        vendors_changed=vendors_changed,
        server_changed=server_changed,
        needs_restart=tuple(needs_restart),
    )
