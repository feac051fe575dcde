"""Settings of an ``asterisk_ami`` vendor (DESIGN section 8, plus the keys documented here)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from ..base import AdapterConfig

__all__ = ["AmiConfig", "interface_of_channel"]

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
#: a queue member interface: ``TECH/resource`` (``PJSIP/1001``, ``SIP/alice``, ``Local/1001@agents/n``)
_INTERFACE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/[^\s,|]{1,200}")
_TOKEN = re.compile(r"[A-Za-z0-9_+*#.@\-]{1,80}")
#: the suffix Asterisk adds to a device's channel names: ``PJSIP/1001-0000001a``
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]{6,}(;[12])?$")


def interface_of_channel(channel: str) -> str:
    """The device a channel belongs to: ``PJSIP/1001-0000001a`` -> ``PJSIP/1001``."""
    return _CHANNEL_SUFFIX.sub("", channel)


def _check_host(value: str) -> str:
    host = value
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]")
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a host name (letters, digits, '-' and '.') or an IP address")
    return host


class AmiConfig(AdapterConfig):
    """The YAML keys of an ``asterisk_ami`` vendor beside ``name`` and ``adapter``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    #: Asterisk's manager interface (manager.conf ``bindaddr`` / ``port``)
    host: str
    port: int = Field(default=5038, ge=1, le=65535)
    #: the manager.conf user (``[gateway]``) and its ``secret``
    username: str = Field(min_length=1, max_length=80)
    secret: SecretStr
    #: ``md5`` (challenge/response: the secret never crosses the wire) or ``plain``
    auth: Literal["md5", "plain"] = "md5"
    #: queue member interface (as in queues.conf / QueueAdd) -> gateway agent id
    agent_map: dict[str, str] = Field(min_length=1)
    #: Asterisk queue -> gateway queue (default: the same name when the gateway has it)
    queue_map: dict[str, str] = Field(default_factory=dict)
    #: dialplan context a transfer sends the call to (``Redirect`` / ``Atxfer``)
    transfer_context: str = "default"
    #: gateway agent -> extension dialled in ``transfer_context`` to reach it (default:
    #: the resource of its member interface: ``PJSIP/1001`` -> ``1001``)
    agent_extensions: dict[str, str] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    action_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: a ``Ping`` is sent after this long; no byte and no answer within ``stall_timeout_s``
    #: is a stall: the connection is dropped and made again
    ping_interval_s: float = Field(default=10.0, gt=0, le=3600)
    stall_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw or any(c in raw for c in "\r\n\x00"):
            raise ValueError("must be non-empty, on one line")
        return value

    @field_validator("username", "transfer_context")
    @classmethod
    def _one_token(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError("must be letters, digits and _+*#.@- only")
        return value

    @field_validator("agent_map")
    @classmethod
    def _interfaces(cls, value: dict[str, str]) -> dict[str, str]:
        for interface in value:
            if not _INTERFACE.fullmatch(interface):
                raise ValueError(f"{interface!r} is not a queue member interface like PJSIP/1001")
        lowered = [interface.lower() for interface in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("an interface is listed twice (interfaces are case-insensitive)")
        return value

    @field_validator("agent_extensions")
    @classmethod
    def _extensions(cls, value: dict[str, str]) -> dict[str, str]:
        for agent, exten in value.items():
            if not _TOKEN.fullmatch(exten):
                raise ValueError(f"extension of {agent!r} must be letters, digits and _+*#.@- only")
        return value

    @model_validator(mode="after")
    def _timing(self) -> AmiConfig:
        if self.stall_timeout_s < self.ping_interval_s:
            raise ValueError("stall_timeout_s must be at least ping_interval_s")
        return self

    def references(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        yield from super().references()
        for agent in self.agent_extensions:
            yield ("agent_extensions", agent), "agent", agent

    def interfaces_of(self, agent_id: str) -> list[str]:
        return [interface for interface, agent in self.agent_map.items() if agent == agent_id]

    def extension_of(self, agent_id: str) -> str | None:
        if agent_id in self.agent_extensions:
            return self.agent_extensions[agent_id]
        for interface in self.interfaces_of(agent_id):
            resource = interface.split("/", 1)[1].split("@", 1)[0].split("/", 1)[0]
            if _TOKEN.fullmatch(resource):
                return resource
        return None
