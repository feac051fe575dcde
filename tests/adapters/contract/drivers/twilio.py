"""Contract driver of the ``twilio`` adapter: a Twilio stand-in posting webhooks signed by
the ``twilio`` package's RequestValidator, following the TwiML ``<Redirect>`` of a waiting
call as Twilio does. The gateway sits "behind a proxy": requests go to its local address,
signatures cover ``PUBLIC_URL`` + the path, as Twilio signs what it called."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel

from ...twilio.client import AUTH_TOKEN, PUBLIC_URL, Answer, TwilioClient, incoming
from ..harness import VENDOR, ContractGateway

NUMBERS = {"+15550000100": "support", "+15550000101": "agent:a1", "+15550000102": "agent:a2"}
DIRECT = {"a1": "+15550000101", "a2": "+15550000102"}
TARGETS = {"a1": "client:alice", "a2": "sip:a2@pbx.example.test"}


class TwilioDriver:
    adapter: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.VOICE
    connection_based: ClassVar[bool] = False
    supports_queue: ClassVar[bool] = True

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.client: TwilioClient | None = None

    async def start_peer(self, tmp_path: Path) -> None:
        pass

    async def stop_peer(self) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {
            "auth_token": AUTH_TOKEN,
            "public_url": PUBLIC_URL,
            "numbers": NUMBERS,
            "agent_targets": TARGETS,
            "hold_poll_s": 1,
        }

    def bind(self, gateway: ContractGateway) -> None:
        self.client = TwilioClient(gateway.base, VENDOR)

    def interaction_id(self, ref: str) -> str:
        return f"CA{ref}"

    def _to(self, agent: str | None) -> str:
        return DIRECT[agent] if agent is not None else "+15550000100"

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        assert self.client is not None
        self.answers[ref] = await self.client.post("voice", incoming(self.interaction_id(ref), self._to(agent)))
        assert self.answers[ref].status == 200, self.answers[ref]

    async def rejected_at_vendor(self, ref: str) -> bool:
        answer = self.answers.get(ref)
        return answer is not None and answer.verb() == "Reject"

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        """Dialled at once, or (a waiting call) by the TwiML a ``<Redirect>`` fetches later."""
        assert self.client is not None
        answer = self.answers.get(ref)
        deadline = time.monotonic() + 5.0
        while answer is not None:
            if answer.dialed() is not None:
                return answer.dialed() == TARGETS[agent]
            redirect = answer.twiml().find("Redirect")
            if redirect is None or redirect.text is None or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)  # Twilio would wait the <Pause> first
            params = incoming(self.interaction_id(ref), "+15550000100", status="in-progress")
            answer = self.answers[ref] = await self.client.follow(redirect.text, params)
        return False

    async def end(self, ref: str) -> None:
        assert self.client is not None
        params = {"CallSid": self.interaction_id(ref), "CallStatus": "completed", "CallDuration": "5"}
        answer = await self.client.post("status", params)
        assert answer.status == 204, answer

    async def outage(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def recover(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def garbage(self) -> None:
        assert self.client is not None
        call = incoming("CAgarbage", "+15550000101")
        answers = [
            await self.client.post("voice", call, sign=False),
            await self.client.post("voice", call, signature="bm90IGEgc2lnbmF0dXJl"),
            await self.client.post("voice", {k: v for k, v in call.items() if k != "CallSid"}),
            await self.client.post("voice", {}, data=b"\xff\xfe", signature="x"),
            await self.client.post("voice", {}, data=b"\xff\xfe", signature=self.client.sign("/x", [])),
            await self.client.post("taskrouter/assignment", {"TaskSid": "WT1"}),
            await self.client.post("voice", {"Body": "x" * 70_000}),
        ]
        assert [a.status for a in answers] == [403, 403, 400, 403, 403, 400, 413], answers


DRIVER = TwilioDriver
