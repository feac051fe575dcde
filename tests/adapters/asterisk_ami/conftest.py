"""A real gateway (SQLite journal, system clock) with an ``asterisk_ami`` vendor connected
to a scripted Asterisk (:class:`~.peer.FakeAsterisk`), in the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from gateway.config import GatewayConfig
from tests.adapters.contract.harness import VENDOR, ContractGateway, contract_config

from .peer import FakeAsterisk

INTERFACES = {"a1": "PJSIP/1001", "a2": "PJSIP/1002"}


def ami_settings(ast: FakeAsterisk, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": ast.port,
        "username": ast.username,
        "secret": ast.secret,
        "agent_map": {iface: agent for agent, iface in INTERFACES.items()},
        "queue_map": {"sales-q": "support"},
        "transfer_context": "agents",
        "connect_timeout_s": 2,
        "ping_interval_s": 1,
        "stall_timeout_s": 3,
        **extra,
    }


def scenario_config(
    ast: FakeAsterisk, db: Path, *, profile: dict[str, Any] | None = None, **extra: Any
) -> GatewayConfig:
    """The contract set-up, with a profile of 2 sessions (1 voice, 2 chats) and 0.5 s of
    voice wrap-up, so that chats alone can fill an agent (``profile`` adds to it)."""
    base = contract_config("asterisk_ami", ami_settings(ast, **extra), db).model_dump(mode="json")
    base["capacity_profiles"] = {
        "contract": {
            "max_sessions": 2,
            "channels": {"voice": 1, "chat": 2},
            "wrap_up_s": {"voice": 0.5},
            **(profile or {}),
        }
    }
    for agent in base["agents"]:
        agent["profile"] = "contract"
    return GatewayConfig.model_validate(base)


@pytest_asyncio.fixture
async def ast() -> AsyncIterator[FakeAsterisk]:
    peer = FakeAsterisk()
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


@pytest_asyncio.fixture
async def gw(ast: FakeAsterisk, tmp_path: Path) -> AsyncIterator[ContractGateway]:
    gateway = ContractGateway(scenario_config(ast, tmp_path / "gw.db"), base_dir=tmp_path)
    await gateway.start()
    try:
        await gateway.until(lambda: gateway.health() == "up", what="the AMI link")
        yield gateway
    finally:
        await gateway.stop()


__all__ = ["INTERFACES", "VENDOR", "ami_settings", "scenario_config"]
