"""Contract driver of the FreeSWITCH ESL adapter: a scripted event socket (tests/adapters/
freeswitch_esl/peer.py) playing mod_callcenter.

mod_callcenter's ACD chooses the agent itself (``agent-offering``), so offers are always
targeted (``supports_queue = False``). What the switch sees of the gateway's decisions:

* a refusal hangs up the agent leg ringing for the caller (``hupall ORIGINATOR_CANCEL
  cc_member_pre_answer_uuid <member>``);
* an assignment leaves the leg ringing, and the agent, now holding its one voice session,
  is set ``On Break`` so mod_callcenter offers it nothing more.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel

from ...freeswitch_esl.peer import EslPeer
from ..harness import ContractGateway

PASSWORD = "contract-ClueCon"
FS_AGENTS = {"a1": "1001@default", "a2": "1002@default"}


class FreeswitchEslDriver:
    adapter: ClassVar[str] = "freeswitch_esl"
    channel: ClassVar[Channel] = Channel.VOICE
    connection_based: ClassVar[bool] = True
    supports_queue: ClassVar[bool] = False

    def __init__(self) -> None:
        self.peer = EslPeer(PASSWORD)
        self._gateway: ContractGateway | None = None

    async def start_peer(self, tmp_path: Path) -> None:
        await self.peer.start()

    async def stop_peer(self) -> None:
        await self.peer.stop()

    def settings(self) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.peer.port,
            "password": PASSWORD,
            "agent_map": {fs: agent for agent, fs in FS_AGENTS.items()},
            "queue_map": {"support@default": "support"},
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.5,
        }

    def bind(self, gateway: ContractGateway) -> None:
        self._gateway = gateway

    def interaction_id(self, ref: str) -> str:
        return f"caller-{ref}"

    def _hangups(self, ref: str) -> list[str]:
        return self.peer.commands(f"hupall ORIGINATOR_CANCEL cc_member_pre_answer_uuid m-{self.interaction_id(ref)}")

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        assert agent is not None, "mod_callcenter offers to the agent it chose"
        await self.peer.offering(self.interaction_id(ref), FS_AGENTS[agent])

    async def rejected_at_vendor(self, ref: str) -> bool:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self._hangups(ref):
                return True
            await asyncio.sleep(0.02)
        return False

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self.peer.statuses.get(FS_AGENTS[agent]) == "On Break":
                await asyncio.sleep(0.2)  # and the ringing leg is left alone
                return not self._hangups(ref)
            await asyncio.sleep(0.02)
        return False

    async def end(self, ref: str) -> None:
        """The caller hangs up while the agent's phone rings: mod_callcenter ends the
        member (``member-queue-end``, ``Cancel``), then the channel is gone."""
        member = self.interaction_id(ref)
        await self.peer.queue_end(member, "Cancel", **{"CC-Cancel-Reason": "BREAK_OUT"})
        await self.peer.hangup(member)

    async def outage(self) -> None:
        await self.peer.stop()

    async def recover(self) -> None:
        await self.peer.start()

    async def garbage(self) -> None:
        for raw in (
            b"\x00\xff\xfe binary junk without any header\n\n",
            b"Content-Length: twelve\nContent-Type: text/event-plain\n\n",
            b"Content-Length: 12\nContent-Type: text/event-plain\n\nnot an event",
            b'Content-Length: 9\nContent-Type: text/event-json\n\n{"Event-N',
        ):
            await self.peer.send(raw)
        # a callcenter event without the caller's uuid, and one with a broken escape
        await self.peer.event("CUSTOM", **{"Event-Subclass": "callcenter::info", "CC-Action": "agent-offering"})
        body = b"Event-Name: CUSTOM\nEvent-Subclass: callcenter%3\nCC-Action: %ZZ\n\n"
        await self.peer.send(b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body))


DRIVER = FreeswitchEslDriver
