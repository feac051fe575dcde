"""The runtime as an adapter's host (adapters.base.AdapterHost), on a real SQLite journal:
``agents_changed`` after every journaled change that touched an agent, ``availability``,
vendor-side ``accept`` events, and adapter state that survives a restart."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

import pytest
from aiohttp import web

from adapters.base import Adapter
from adapters.registry import default_registry
from gateway.app import RUNTIME, build_app
from gateway.config import GatewayConfig
from gateway.events import Channel, Event, EventType
from gateway.runtime import Runtime
from gateway.sessions import SessionState

pytestmark = pytest.mark.asyncio


class Mirror(Adapter):
    """Records what the host tells it, as an AMI adapter would mirror pause state."""

    name: ClassVar[str] = "mirror"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    seen: ClassVar[list[set[str]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def agents_changed(self, agent_ids: set[str]) -> None:
        Mirror.seen.append(set(agent_ids))


def config(db: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "store": {"url": f"sqlite:///{db}"},
            "capacity_profiles": {"p": {"max_sessions": 2, "channels": {"voice": 1}}},
            "queues": [{"name": "support"}],
            "agents": [{"id": a, "name": a, "profile": "p", "queues": ["support"]} for a in ("a1", "a2")],
            "vendors": [{"name": "pbx", "adapter": "mirror"}],
        }
    )


async def running(db: Path) -> tuple[web.AppRunner, Runtime]:
    registry = default_registry()
    registry.register(Mirror)
    app = build_app(config(db), registry=registry, base_dir=db.parent)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner, app[RUNTIME]


def voice(type_: str, event_id: str, **fields: object) -> Event:
    return Event.model_validate(
        {
            "vendor": "pbx",
            "event_id": event_id,
            "type": EventType(type_),
            "interaction_id": "call-1",
            "occurred_at": datetime.now(timezone.utc),
            **fields,
        }
    )


async def test_the_host_mirrors_capacity_takes_vendor_accepts_and_keeps_adapter_state(tmp_path: Path) -> None:
    Mirror.seen.clear()
    runner, runtime = await running(tmp_path / "gw.db")
    try:
        await runtime.act(lambda e: e.set_presence("a1", "ready"))
        assert Mirror.seen[-1] == {"a1"}
        assert runtime.availability("a1", Channel.VOICE) is None
        assert runtime.availability("a2", Channel.VOICE) == "agent_offline"

        decision = await runtime.submit(voice("offer", "e1", channel="voice", agent_id="a1"))
        assert Mirror.seen[-1] == {"a1"}
        assert runtime.availability("a1", Channel.VOICE) == "channel_at_capacity"
        await runtime.submit(voice("accept", "e2", agent_id="a1"))
        assert runtime.engine.sessions[decision.session_id or ""].state is SessionState.ACTIVE
        assert [row["state"] for row in runtime.open_interactions("pbx")] == ["active"]

        await runtime.save_adapter_state("pbx", "uidvalidity", {"value": 42, "last_uid": 7})
        assert runtime.adapter_state("pbx", "uidvalidity") == {"value": 42, "last_uid": 7}
    finally:
        await runner.cleanup()

    runner, runtime = await running(tmp_path / "gw.db")
    try:
        assert runtime.adapter_state("pbx", "uidvalidity") == {"value": 42, "last_uid": 7}
        assert runtime.adapter_state("other", "uidvalidity") is None
        assert runtime.availability("a1", Channel.VOICE) == "channel_at_capacity", "restored with its call"
    finally:
        await runner.cleanup()
