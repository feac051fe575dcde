"""adapters.connection.Link against real loopback TCP: a refused port, a server that
accepts then drops, reconnects with backoff, health and the outage logged once."""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar

import pytest
import structlog
from structlog.testing import capture_logs

import adapters.connection
from adapters.base import Adapter, Health
from adapters.connection import Backoff, Link
from gateway.events import Channel

from .conftest import FakeHost


class _Probe(Adapter):
    name: ClassVar[str] = "probe"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})

    async def start(self) -> None:  # pragma: no cover - the Link is driven directly
        pass

    async def stop(self) -> None:  # pragma: no cover
        pass


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    delays = Backoff(initial_s=1, max_s=8, factor=2, jitter=0.25).delays(random.Random(7))
    got = [next(delays) for _ in range(7)]
    for delay, nominal in zip(got, [1, 2, 4, 8, 8, 8, 8], strict=True):
        assert nominal * 0.75 <= delay <= nominal * 1.25
    assert len(set(got)) == len(got), "jitter makes every delay different"


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


@pytest.mark.asyncio
async def test_reconnects_after_refusal_and_drop_logging_the_outage_once(monkeypatch: pytest.MonkeyPatch) -> None:
    host = FakeHost()
    adapter = _Probe("pbx", _Probe.Config(), host)
    port = await _free_port()
    attempts = 0

    async def session(link: Link) -> None:
        nonlocal attempts
        attempts += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            link.up("connected")
            await reader.read()  # until the server drops us
        finally:
            writer.close()

    link = Link(adapter, session, backoff=Backoff(initial_s=0.02, max_s=0.05), describe=f"127.0.0.1:{port}")
    with capture_logs() as logs:
        monkeypatch.setattr(adapters.connection, "log", structlog.get_logger("test"))
        link.start()
        await asyncio.sleep(0.3)  # refused several times: nobody listens yet
        assert attempts >= 3 and adapter.health is Health.DOWN
        assert [e["event"] for e in logs].count("vendor_link_lost") == 1, logs

        accepted: list[asyncio.StreamWriter] = []

        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.append(w)

        server = await asyncio.start_server(on_client, "127.0.0.1", port)
        for _ in range(200):
            if adapter.health is Health.UP:
                break
            await asyncio.sleep(0.01)
        assert adapter.health is Health.UP and link.connects == 1

        accepted[0].close()  # the vendor drops the line
        for _ in range(200):
            if link.connects == 2:
                break
            await asyncio.sleep(0.01)
        assert link.connects == 2 and adapter.health is Health.UP
        assert [e["event"] for e in logs].count("vendor_link_lost") == 2, "one per outage"
        await link.stop()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert adapter.health is Health.DOWN
    assert [h for _, h, _ in host.health] == [Health.UP, Health.DOWN, Health.UP, Health.DOWN]


@pytest.mark.asyncio
async def test_stop_ends_a_session_that_turns_its_cancellation_into_an_error() -> None:
    """A session whose clean-up raises while it is being cancelled (e.g. a protocol goodbye
    that fails) must not keep the link reconnecting: stop() returns."""
    host = FakeHost()
    adapter = _Probe("pbx", _Probe.Config(), host)
    started = asyncio.Event()

    async def session(link: Link) -> None:
        link.up()
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            raise ConnectionError("goodbye failed")

    link = Link(adapter, session, backoff=Backoff(initial_s=0.01, max_s=0.01))
    link.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(link.stop(), 5)
    assert link.connects == 1 and adapter.health is Health.DOWN


@pytest.mark.asyncio
async def test_stop_ends_a_session_that_swallows_a_cancellation() -> None:
    """asyncio.wait_for in Python 3.11 returns the inner result instead of raising when the
    cancellation and the inner future's completion coincide; a session built on it may lose
    stop()'s cancel. stop() must still return."""
    host = FakeHost()
    adapter = _Probe("pbx", _Probe.Config(), host)
    started = asyncio.Event()

    async def session(link: Link) -> None:
        link.up()
        started.set()
        swallowed = 0
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 2:
                    raise

    link = Link(adapter, session, backoff=Backoff(initial_s=0.01, max_s=0.01))
    link.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(link.stop(), 10)
    assert adapter.health is Health.DOWN
