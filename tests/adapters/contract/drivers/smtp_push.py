"""Contract driver of ``smtp_push``: the vendor is a mail relay speaking real SMTP (smtplib).

A relay cannot end a mail (an e-mail session ends on the agent's side) and has no way back
after its ``250`` (a mail that waited in a queue and is assigned later tells the relay
nothing): ``can_end`` and ``supports_queue`` are False.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel

from ...smtp_push.conftest import free_port, mail, send
from ..harness import ContractGateway


class SmtpPushDriver:
    adapter: ClassVar[str] = "smtp_push"
    channel: ClassVar[Channel] = Channel.EMAIL
    connection_based: ClassVar[bool] = False
    supports_queue: ClassVar[bool] = False
    can_end: ClassVar[bool] = False

    def __init__(self) -> None:
        self.port = 0
        self.replies: dict[str, tuple[int, str]] = {}

    async def start_peer(self, tmp_path: Path) -> None:
        self.port = free_port()

    async def stop_peer(self) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {
            "listen_port": self.port,
            "recipients": {"a1@support.test": "agent:a1", "a2@support.test": "agent:a2"},
            "queue": "support",
        }

    def bind(self, gateway: ContractGateway) -> None:
        pass

    def interaction_id(self, ref: str) -> str:
        return f"{ref}@contract.test"

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        to = f"{agent}@support.test" if agent else "anyone@support.test"
        self.replies[ref] = await send(self.port, mail(self.interaction_id(ref), to=to), to=[to])

    async def rejected_at_vendor(self, ref: str) -> bool:
        code, reply = self.replies.get(ref, (0, ""))
        return code == 451 and reply.startswith("4.3.2")

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        code, reply = self.replies.get(ref, (0, ""))
        return code == 250 and "assigned" in reply

    async def end(self, ref: str) -> None:  # pragma: no cover - can_end is False
        raise NotImplementedError

    async def outage(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def recover(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def garbage(self) -> None:
        def talk() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.recv(1024)
                sock.sendall(b"\x00\xff\xfe HELO ???\r\nMAIL FROM:<<<>\r\nRCPT TO:\r\nDATA\r\n" + b"A" * 5000 + b"\r\n")
                sock.sendall(b"QUIT\r\n")
                chunks = []
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks)

        replies = await asyncio.to_thread(talk)
        assert b"221" in replies, replies  # the server answered every line and said goodbye
        code, _ = await send(self.port, b"Subject: no blank line, no body, no ids\r\n")
        assert 200 <= code < 600


DRIVER = SmtpPushDriver
