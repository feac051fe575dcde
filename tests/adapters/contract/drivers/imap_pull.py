"""Contract driver of ``imap_pull``: the vendor is a real Dovecot; offering is delivering a
mail with dovecot-lda into the shared inbox the adapter reads.

An inbox offers only to the vendor's one queue: the driver's vendor uses queue ``solo``
(``a1`` alone, refusing when ``a1`` is full), so "offer to a1" means "deliver a mail". The
vendor's side of a decision is the message's flags: taken -> ``\\Seen`` + the keyword;
refused -> left unseen (offered again when a slot frees). A mailbox cannot end a mail, and
learns nothing more after it was taken (``can_end`` and ``supports_queue`` are False).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from imapclient import IMAPClient

from gateway.events import Channel
from gateway.notices import DecisionKind
from tests.peers.dovecot import PASSWORD, USER, Dovecot

from ...smtp_push.conftest import mail
from ..harness import VENDOR, ContractGateway


class ImapPullDriver:
    adapter: ClassVar[str] = "imap_pull"
    channel: ClassVar[Channel] = Channel.EMAIL
    connection_based: ClassVar[bool] = True
    supports_queue: ClassVar[bool] = False
    can_end: ClassVar[bool] = False

    def __init__(self) -> None:
        self.dovecot: Dovecot | None = None
        self.gateway: ContractGateway | None = None

    async def start_peer(self, tmp_path: Path) -> None:
        self.dovecot = Dovecot()
        await asyncio.to_thread(self.dovecot.start)

    async def stop_peer(self) -> None:
        if self.dovecot is not None:
            await asyncio.to_thread(self.dovecot.stop)

    def settings(self) -> dict[str, Any]:
        assert self.dovecot is not None
        return {
            "host": "127.0.0.1",
            "port": self.dovecot.port,
            "username": USER,
            "password": PASSWORD,
            "queue": "solo",
            "poll_interval_s": 2,
            "timeout_s": 5,
        }

    def bind(self, gateway: ContractGateway) -> None:
        self.gateway = gateway

    def interaction_id(self, ref: str) -> str:
        return f"{ref}@contract.test"

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        assert self.dovecot is not None and agent in (None, "a1"), "an inbox offers to its queue (a1's)"
        raw = mail(self.interaction_id(ref), to="inbox@support.test").as_bytes()
        await asyncio.to_thread(self.dovecot.deliver, raw)

    def _flags(self) -> dict[str, set[bytes]]:
        assert self.dovecot is not None
        with IMAPClient("127.0.0.1", port=self.dovecot.port, ssl=False, timeout=5) as client:
            client.login(USER, PASSWORD)
            client.select_folder("INBOX", readonly=True)
            found = client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            return {
                data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip().strip("<>"): set(
                    data[b"FLAGS"]
                )
                for data in found.values()
            }

    async def _until(self, condition: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await condition():
                return True
            await asyncio.sleep(0.1)
        return False

    async def rejected_at_vendor(self, ref: str) -> bool:
        assert self.gateway is not None
        key = (VENDOR, self.interaction_id(ref))

        async def refused_and_unseen() -> bool:
            interaction = self.gateway.engine.interactions.get(key) if self.gateway else None
            if interaction is None or not any(d.kind is DecisionKind.REJECTED for d in interaction.decisions):
                return False
            flags = await asyncio.to_thread(self._flags)
            return b"\\Seen" not in flags.get(self.interaction_id(ref), {b"\\Seen"})

        return await self._until(refused_and_unseen)

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        async def seen() -> bool:
            flags = await asyncio.to_thread(self._flags)
            return {b"\\Seen", b"$CtiGateway"} <= flags.get(self.interaction_id(ref), set())

        return await self._until(seen)

    async def end(self, ref: str) -> None:  # pragma: no cover - can_end is False
        raise NotImplementedError

    async def outage(self) -> None:
        assert self.dovecot is not None
        await asyncio.to_thread(self.dovecot.stop, keep=True)

    async def recover(self) -> None:
        assert self.dovecot is not None
        await asyncio.to_thread(self.dovecot.start)

    async def garbage(self) -> None:
        """A "mail" of binary junk with a broken multipart structure. It is still a customer's
        message: it is offered (one of a1's two e-mail slots), never a stopped adapter."""
        assert self.dovecot is not None
        junk = (
            b"\x00\xff\xfe: not a header\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            + bytes(range(256)) * 4
        )
        await asyncio.to_thread(self.dovecot.deliver, junk)


DRIVER = ImapPullDriver
