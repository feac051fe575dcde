"""The configuration every instance on one shared log runs, as the log carries it.

The log records the configuration in force: at the cluster's birth (the first ``config``
entry) and at every live reload (a ``reload`` entry). What it carries is the *shared*
part (:func:`shared_part`): capacity profiles, queues, agents (token hashes only), vendors
with their settings, the server settings a reload applies live (supervisor token hash,
``desktop_grace_s``, rate limits, desktops per agent, ``remote_admin``) and ``retention``
(the de-duplication window and cache sizes decide answers: instances must agree on them;
a reload does not change them on running instances). What belongs to one instance never
goes into Redis and never counts for the agreement: its listening address and connection
limits, its access log, its store and records URLs with their passwords
(:data:`LOCAL_SERVER`; ``store``, ``records``). :func:`local_view` puts an instance's own
local part back on a shared one.

:func:`config_digest` is what instances agree on: the SHA-256 of the shared part plus the
vendors' capabilities (what the router respects).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..config import GatewayConfig
from ..events import Channel
from ..interactions import VendorCapabilities

__all__ = [
    "LOCAL_SERVER",
    "config_digest",
    "decode_caps",
    "encode_caps",
    "legacy_hash",
    "local_view",
    "shared_part",
]

#: server settings of one instance (never in the log, never compared)
LOCAL_SERVER = ("host", "port", "idle_timeout_s", "max_connections_per_address", "access_log")
#: sections of one instance
LOCAL_SECTIONS = ("store", "records")


def shared_part(config: GatewayConfig) -> dict[str, Any]:
    """The configuration as JSON, without what belongs to one instance."""
    body = config.model_dump(mode="json")
    for section in LOCAL_SECTIONS:
        body.pop(section, None)
    body["server"] = {k: v for k, v in body["server"].items() if k not in LOCAL_SERVER}
    return body


def local_view(shared: Mapping[str, Any], own: GatewayConfig) -> GatewayConfig:
    """``shared`` (from the log) with this instance's own local settings (``own``);
    :class:`pydantic.ValidationError` (a :class:`ValueError`) if it is not a configuration."""
    body = dict(shared)
    server = dict(body.get("server") or {})
    server.update({k: getattr(own.server, k) for k in LOCAL_SERVER})
    body["server"] = server
    body["store"] = own.store.model_dump(mode="json")
    body["records"] = None if own.records is None else own.records.model_dump(mode="json")
    return GatewayConfig.model_validate(body)


def encode_caps(caps: Mapping[str, VendorCapabilities]) -> dict[str, Any]:
    return {name: {**asdict(c), "channels": sorted(str(ch) for ch in c.channels)} for name, c in sorted(caps.items())}


def decode_caps(body: Mapping[str, Any]) -> dict[str, VendorCapabilities]:
    """:func:`encode_caps` reversed; :class:`ValueError` if it is not that."""
    try:
        return {
            str(name): VendorCapabilities(
                channels=frozenset(Channel(ch) for ch in c["channels"]),
                can_reject=bool(c["can_reject"]),
                can_transfer=bool(c["can_transfer"]),
                max_voice_per_agent=None if c["max_voice_per_agent"] is None else int(c["max_voice_per_agent"]),
            )
            for name, c in body.items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not vendor capabilities: {exc!r}") from None


def config_digest(config: GatewayConfig, caps: Mapping[str, VendorCapabilities]) -> str:
    """What every instance on one log must agree on (see the module docstring)."""
    body = {"config": shared_part(config), "caps": encode_caps(caps)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def legacy_hash(config: GatewayConfig, caps: Mapping[str, VendorCapabilities]) -> str:
    """The hash a log written before live reload records in its ``config`` entry (the
    engine's part only: profiles, queues, agents, ``desktop_grace_s``, retention,
    capabilities)."""
    body = {
        "capacity_profiles": {k: v.model_dump(mode="json") for k, v in sorted(config.capacity_profiles.items())},
        "queues": [q.model_dump(mode="json") for q in config.queues],
        "agents": [a.model_dump(mode="json") for a in config.agents],
        "desktop_grace_s": config.server.desktop_grace_s,
        "retention": config.retention.model_dump(mode="json"),
        "vendors": {name: asdict(c) for name, c in sorted(caps.items())},
    }
    text = json.dumps(body, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))
    return hashlib.sha256(text.encode()).hexdigest()
