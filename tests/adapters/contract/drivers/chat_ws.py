"""Contract driver of the ``chat_ws`` adapter: a real ``websockets`` server plays the chat
platform the gateway connects to."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel

from ...chat_ws.platform import TOKEN, Platform
from ..harness import ContractGateway


class ChatWsDriver:
    adapter: ClassVar[str] = "chat_ws"
    channel: ClassVar[Channel] = Channel.CHAT
    connection_based: ClassVar[bool] = True
    supports_queue: ClassVar[bool] = True

    def __init__(self) -> None:
        self.platform = Platform()

    async def start_peer(self, tmp_path: Path) -> None:
        await self.platform.start()

    async def stop_peer(self) -> None:
        await self.platform.stop()

    def settings(self) -> dict[str, Any]:
        return {
            "url": self.platform.url,
            "token": TOKEN,
            "queue": "support",
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.5,
            "ping_interval_s": 1,
            "ping_timeout_s": 1,
        }

    def bind(self, gateway: ContractGateway) -> None:
        pass

    def interaction_id(self, ref: str) -> str:
        return f"chat-{ref}"

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        chat_id = self.interaction_id(ref)
        frame_id = await self.platform.start_chat(chat_id, **({"agent_id": agent} if agent else {}))
        ack = await self.platform.wait_for(type="ack", id=frame_id)
        assert ack["chat_id"] == chat_id, ack

    async def _decision(self, ref: str, timeout: float, **match: Any) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.platform.frames(chat_id=self.interaction_id(ref), **match):
                return True
            await asyncio.sleep(0.02)
        return False

    async def rejected_at_vendor(self, ref: str) -> bool:
        return await self._decision(ref, 2.0, type="chat.rejected")

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        return await self._decision(ref, 5.0, type="chat.assigned", agent_id=agent)

    async def end(self, ref: str) -> None:
        frame_id = await self.platform.end_chat(self.interaction_id(ref))
        await self.platform.wait_for(type="ack", id=frame_id)

    async def outage(self) -> None:
        await self.platform.stop()

    async def recover(self) -> None:
        await self.platform.start()

    async def garbage(self) -> None:
        before = self.platform.connections
        for raw in ("{not json", "[]", '{"type": "nope"}', '{"type": "chat.start"}', b"\xff\xfe", "x" * 70_000):
            await self.platform.send(raw)
        errors = await self.platform.wait_for_all(6, type="error")
        assert [e["code"] for e in errors[-6:]] == [
            "invalid_frame",
            "invalid_frame",
            "unknown_type",
            "invalid_frame",
            "invalid_frame",
            "frame_too_large",
        ], errors
        assert self.platform.connections == before  # the same connection carries on


DRIVER = ChatWsDriver
