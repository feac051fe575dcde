"""Contract driver of the ``kamailio`` adapter: a real Kamailio 5.6 running the shipped
example cfg, real SIP over UDP from a caller and to two agent phones (a small SIP UA the
test controls, :mod:`tests.adapters.kamailio.sipua`: the phones ring until the caller
cancels), and the evapi connection passing through a byte pipe so that ``garbage`` can slip
malformed frames into what the adapter reads, between Kamailio's real messages.

What the vendor "saw" is SIP: a refusal is a final 4xx/5xx to the caller, an assignment is
the INVITE arriving at that agent's phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, ClassVar

from gateway.events import Channel

from ...kamailio.peers import Kamailio, free_port
from ...kamailio.sipua import SipAgent
from ..harness import ContractGateway


class _Pipe:
    """A TCP pass-through from the adapter to Kamailio's evapi port, with a way in for garbage."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._downstream: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._downstream.append(writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def inject(self, data: bytes) -> None:
        for writer in self._downstream:
            if not writer.is_closing():
                writer.write(data)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._downstream:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


class KamailioDriver:
    adapter: ClassVar[str] = "kamailio"
    channel: ClassVar[Channel] = Channel.VOICE
    connection_based: ClassVar[bool] = True
    supports_queue: ClassVar[bool] = True

    def __init__(self) -> None:
        self.kamailio: Kamailio | None = None
        self.pipe: _Pipe | None = None
        self.caller = SipAgent()
        self.phones = {"a1": SipAgent("ring"), "a2": SipAgent("ring")}

    async def start_peer(self, tmp_path: Path) -> None:
        self.kamailio = Kamailio(tmp_path)
        await self.kamailio.start()
        self.pipe = _Pipe(self.kamailio.evapi_port)
        await self.pipe.start()
        for agent in (self.caller, *self.phones.values()):
            await agent.start()

    async def stop_peer(self) -> None:
        for agent in (self.caller, *self.phones.values()):
            agent.close()
        if self.pipe is not None:
            await self.pipe.stop()
        if self.kamailio is not None:
            await self.kamailio.stop()

    def settings(self) -> dict[str, Any]:
        assert self.pipe is not None
        return {
            "host": "127.0.0.1",
            "port": self.pipe.port,
            "agent_contacts": {a: f"sip:{a}@127.0.0.1:{phone.port}" for a, phone in self.phones.items()},
            "queue_map": {"support": "support"},
        }

    def bind(self, gateway: ContractGateway) -> None:
        pass

    def interaction_id(self, ref: str) -> str:
        return f"contract-{ref}@127.0.0.1"

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        assert self.kamailio is not None
        call = await self.caller.invite(self.kamailio.sip, agent or "support", self.interaction_id(ref))
        deadline = time.monotonic() + 5
        while not call.responses and time.monotonic() < deadline:  # 100 Trying: Kamailio has it
            await asyncio.sleep(0.01)

    async def rejected_at_vendor(self, ref: str) -> bool:
        call = self.caller.calls.get(self.interaction_id(ref))
        if call is None or call.final is None:
            return False
        with contextlib.suppress(TimeoutError):
            final = await asyncio.wait_for(asyncio.shield(call.final), 5)
            return 400 <= final.code < 700
        return False

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.interaction_id(ref) in self.phones[agent].rang:
                return True
            await asyncio.sleep(0.02)
        return False

    async def end(self, ref: str) -> None:
        assert self.kamailio is not None
        call = self.caller.calls[self.interaction_id(ref)]
        if call.final is not None and call.final.done() and call.final.result().code == 200:
            self.caller.bye(self.kamailio.sip, call.call_id)
        else:
            self.caller.cancel(self.kamailio.sip, call.call_id)

    async def outage(self) -> None:
        assert self.kamailio is not None
        await self.kamailio.stop()

    async def recover(self) -> None:
        assert self.kamailio is not None
        await self.kamailio.start()

    async def garbage(self) -> None:
        assert self.pipe is not None
        self.pipe.inject(
            b"9:not json!,"  # a frame that is not JSON
            b"2:[],"  # JSON but not an object
            b'19:{"event":"unknown"},'  # an event Kamailio never sends
            b'15:{"event":"bye"},'  # a known event without its call_id
            b'32:{"event":"answered","call_id":7},'  # a call_id that is not a string
            b"xyz:,"  # not a length
            b'6:{"a":1},'  # a wrong length: the frame is not closed by ','
        )
        await asyncio.sleep(0.2)


DRIVER = KamailioDriver
