"""The scripted peer itself: split writes arrive whole, client messages are framed, drop and
restart work (so adapter tests built on it fail only for the adapter's reasons)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from .scripted import FIXTURES, ScriptedServer, fixture_bytes


@pytest.mark.asyncio
async def test_split_writes_arrive_whole_and_client_messages_are_framed() -> None:
    server = ScriptedServer(delimiter=b"\r\n\r\n", seed=3)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await server.wait_connected()
        payload = fixture_bytes("ami_panoramisk_queue_status.txt")
        await server.send(payload)
        assert await reader.readexactly(len(payload)) == payload

        writer.write(b"Action: Ping\r\nActionID: 1\r\n\r\nAction: Lo")
        await writer.drain()
        assert await server.expect("Action: Ping") == b"Action: Ping\r\nActionID: 1"
        writer.write(b"goff\r\n\r\n")
        await writer.drain()
        assert await server.expect(lambda m: m.startswith(b"Action: Logoff"))

        server.drop()
        assert await reader.read() == b""
    finally:
        writer.close()
        await server.stop()


@pytest.mark.asyncio
async def test_stop_and_start_again_on_the_same_port() -> None:
    server = ScriptedServer()
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await server.start()
    assert server.port == port
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await server.wait_connected()
    writer.close()
    await server.stop()


def test_every_fixture_has_its_header_and_a_transcript() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.txt"))
    assert len(names) >= 19
    for name in names:
        assert fixture_bytes(name).strip(), name


@pytest.mark.asyncio
async def test_stopping_during_a_reply_logs_no_asyncio_error(caplog: pytest.LogCaptureFixture) -> None:
    """stop() cancels a connection task that is busy answering: asyncio (3.11) must not
    report it as an "Unhandled exception in client_connected_cb"."""
    replying = asyncio.Event()

    async def reply(server: ScriptedServer, conn: object, message: bytes) -> None:
        replying.set()
        await asyncio.sleep(10)

    server = ScriptedServer(reply=reply, seed=1)
    await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"Action: Ping\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(replying.wait(), 5)
    with caplog.at_level("ERROR", logger="asyncio"):
        await server.stop()
        for _ in range(5):
            await asyncio.sleep(0)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
