"""What ``cti-gateway run`` tells the operator when it starts: the banner and the sample
credentials warning. Pure functions of the configuration and the routes (no I/O).

The shipped ``config/gateway.yaml`` works out of the box with sample credentials that are
printed in its comments and in the README. :func:`sample_credentials` finds them in a
configuration; on an address other hosts can reach (anything but loopback) ``run`` logs
``sample_credentials_exposed`` at warning and prints a warning under the banner.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable

from .config import GatewayConfig
from .store_url import parse_records_url

__all__ = ["SAMPLE_SECRETS", "SAMPLE_TOKENS", "banner", "exposed_warning", "is_loopback", "sample_credentials"]

#: The sample tokens of the shipped configuration (their hashes are in it).
SAMPLE_TOKENS = ("supervisor-sample", "agent-a1001-sample", "agent-a1002-sample")
#: The sample vendor secrets of the shipped configuration (written in clear: they are secrets).
SAMPLE_SECRETS = ("crm-hooks-sample-secret",)

_SAMPLE_HASHES = {hashlib.sha256(token.encode()).hexdigest(): token for token in SAMPLE_TOKENS}
_WILDCARDS = ("", "0.0.0.0", "::")


def sample_credentials(config: GatewayConfig) -> list[str]:
    """The settings that hold a shipped sample credential, e.g. ``agents[a1001].token_sha256 (agent-a1001-sample)``."""
    found: list[str] = []
    supervisor = (config.server.supervisor_token_sha256 or "").lower()
    if supervisor in _SAMPLE_HASHES:
        found.append(f"server.supervisor_token_sha256 ({_SAMPLE_HASHES[supervisor]})")
    for agent in config.agents:
        token = (agent.token_sha256 or "").lower()
        if token in _SAMPLE_HASHES:
            found.append(f"agents[{agent.id}].token_sha256 ({_SAMPLE_HASHES[token]})")
    for vendor in config.vendors:
        for key, value in vendor.settings().items():
            if isinstance(value, str) and value in SAMPLE_SECRETS:
                found.append(f"vendors[{vendor.name}].{key} (the sample secret)")
    return found


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, or a wildcard: other hosts may reach it


def _url_host(host: str) -> str:
    if host in _WILDCARDS:
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


def banner(
    config: GatewayConfig,
    *,
    version: str,
    host: str,
    port: int,
    config_path: str,
    vendor_routes: Iterable[tuple[str, str, str, str]],
) -> list[str]:
    """The lines printed once the gateway listens.

    ``vendor_routes``: ``(vendor, adapter, method, path)`` of every vendor endpoint, the
    path as served (``/v1/vendors/crm-hooks/events``).
    """
    base = f"http://{_url_host(host)}:{port}"
    where = " (all addresses)" if host in _WILDCARDS else ""
    lines = [
        f"cti-gateway {version} listening on {base}{where} (config {config_path}, store {config.store.url}"
        + (f", records {parse_records_url(config.records.url).describe()})" if config.records else ")"),
        f"  agent desktops: ws://{_url_host(host)}:{port}/v1/agents/{{id}}/ws   "
        f"supervisor stream: ws://{_url_host(host)}:{port}/v1/events/ws",
    ]
    routes = list(vendor_routes)
    for vendor in config.vendors:
        mine = [(method, path) for name, _adapter, method, path in routes if name == vendor.name]
        if mine:
            lines += [f"  vendor {vendor.name} ({vendor.adapter}): {method} {base}{path}" for method, path in mine]
        else:
            lines.append(f"  vendor {vendor.name} ({vendor.adapter}): no HTTP endpoint on this port")
    lines.append(
        "  tokens are configured as SHA-256 hashes: `cti-gateway hash-token TOKEN` prints one "
        "(the shipped config's sample tokens are in its comments)"
    )
    return lines


def exposed_warning(config: GatewayConfig, host: str) -> list[str]:
    """The warning lines when sample credentials are in use on a non-loopback address (else none)."""
    found = sample_credentials(config)
    if not found or is_loopback(host):
        return []
    return [
        "!" * 100,
        f"!! WARNING: listening on {host or '0.0.0.0'}, reachable from other hosts, with the PUBLIC SAMPLE "
        "CREDENTIALS of the shipped config:",
        *(f"!!   {item}" for item in found),
        "!! Anyone who has read the README can act as these agents or the supervisor and send webhooks.",
        "!! Replace them (`cti-gateway hash-token NEW-TOKEN`, a new secret) or listen on 127.0.0.1.",
        "!" * 100,
    ]
