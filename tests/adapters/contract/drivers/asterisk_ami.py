"""Contract driver of the Asterisk AMI adapter: a scripted Asterisk (tests/adapters/
asterisk_ami/peer.py) on real TCP plays app_queue's events; a refusal is seen as the
gateway's ``Hangup`` of the ringing member leg."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel
from tests.adapters.asterisk_ami.peer import Call, FakeAsterisk

from ..harness import ContractGateway

INTERFACES = {"a1": "PJSIP/1001", "a2": "PJSIP/1002"}


class AsteriskAmiDriver:
    adapter: ClassVar[str] = "asterisk_ami"
    channel: ClassVar[Channel] = Channel.VOICE
    connection_based: ClassVar[bool] = True
    supports_queue: ClassVar[bool] = False

    def __init__(self) -> None:
        self.ast = FakeAsterisk()

    async def start_peer(self, tmp_path: Path) -> None:
        await self.ast.start()

    async def stop_peer(self) -> None:
        await self.ast.stop()

    def settings(self) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.ast.port,
            "username": self.ast.username,
            "secret": self.ast.secret,
            "agent_map": {iface: agent for agent, iface in INTERFACES.items()},
            "connect_timeout_s": 2,
            "ping_interval_s": 1,
            "stall_timeout_s": 3,
        }

    def bind(self, gateway: ContractGateway) -> None:
        self.gateway = gateway

    def _call(self, ref: str) -> Call:
        return self.ast.calls.get(ref) or self.ast.new_call(ref)

    def interaction_id(self, ref: str) -> str:
        return self._call(ref).uniqueid

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        assert agent is not None, "app_queue always names the member it rings"
        call = self._call(ref)
        await self.ast.join(call)
        await self.ast.agent_called(call, INTERFACES[agent])

    def _hung_up(self, call: Call) -> bool:
        member = call.member.name if call.member else None
        return any(a.get("channel") == member for a in self.ast.actions_named("Hangup"))

    async def rejected_at_vendor(self, ref: str) -> bool:
        call = self._call(ref)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._hung_up(call):
                return True
            await asyncio.sleep(0.02)
        return False

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        """Assigned: the member keeps ringing (the gateway does not hang its leg up)."""
        call = self._call(ref)
        await asyncio.sleep(0.3)
        return call.member is not None and call.member.name.startswith(INTERFACES[agent]) and not self._hung_up(call)

    async def end(self, ref: str) -> None:
        call = self._call(ref)
        await self.ast.abandon(call)
        await self.ast.hangup_member(call)
        await self.ast.caller_hangup(call)

    async def outage(self) -> None:
        await self.ast.stop()

    async def recover(self) -> None:
        await self.ast.start()

    async def garbage(self) -> None:
        await self.ast.send(
            b"\x00\xff\xfegarbage without a colon\r\n"
            b"more garbage\r\n\r\n"
            b"Event: AgentCalled\r\nQueue: support\r\n\r\n"  # no Uniqueid, no member
            b"Response: Success\r\nActionID: nobody-asked\r\n\r\n"
            b"Event: AgentConnect\r\nUniqueid: 1.1\r\nInterface: PJSIP/1001\r\nDestChannel: PJSIP/1001-1\r\n"
            b"this line is not a header\r\n\r\n" + b"x" * 70_000 + b"\r\n\r\n"
        )


DRIVER = AsteriskAmiDriver
