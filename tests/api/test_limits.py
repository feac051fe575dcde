"""Slow and greedy clients (issue 6 item 7), against the server as ``cti-gateway run`` serves
it (:func:`gateway.serve.start`): the idle / request-head timeout, the connection limit per
client address, and the desktop sockets per agent."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from gateway.api.sockets import CLOSE_REPLACED

from .conftest import Gateway, host_port, receive_json, receive_until, request_ws, running_gateway, wait_for

pytestmark = pytest.mark.asyncio


async def closed_after(reader: asyncio.StreamReader, timeout: float) -> tuple[float, bytes]:
    """Read until the server closes; (seconds it took, what it sent)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    data = await asyncio.wait_for(reader.read(), timeout)
    return loop.time() - started, data


# ---------------------------------------------------------------------------- idle / head timeout


async def test_a_client_trickling_its_headers_is_closed_after_the_idle_timeout() -> None:
    async with running_gateway(idle_timeout_s=1) as gw:
        reader, writer = await asyncio.open_connection(*host_port(gw))
        loop = asyncio.get_running_loop()
        started = loop.time()
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        sent = 0
        with pytest.raises((ConnectionError, OSError)):  # noqa: PT012 - the write that finds it closed
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.25)
                if reader.at_eof() or reader.exception() is not None:  # EOF, or a reset
                    raise ConnectionResetError("closed by the server")
                assert loop.time() - started < 5, "the trickling client is still connected after 5 s"
        took = loop.time() - started
        assert 0.9 <= took < 2.5, took
        assert sent < len(head)
        writer.close()


async def test_a_silent_connection_and_an_idle_keepalive_connection_are_closed() -> None:
    async with running_gateway(idle_timeout_s=1) as gw:
        reader, writer = await asyncio.open_connection(*host_port(gw))
        took, data = await closed_after(reader, 5)
        assert 0.9 <= took < 2.5 and data == b""
        writer.close()
        # a keep-alive connection: answered, then closed once idle
        reader, writer = await asyncio.open_connection(*host_port(gw))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        took, data = await closed_after(reader, 5)
        assert data.startswith(b"HTTP/1.1 200") and 0.9 <= took < 2.5, (took, data[:40])
        writer.close()


async def test_a_desktop_socket_outlives_the_idle_timeout() -> None:
    async with running_gateway(idle_timeout_s=1) as gw:
        ws = await gw.ws("a1")
        assert (await receive_json(ws))["type"] == "hello"
        await asyncio.sleep(2.2)
        assert await request_ws(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
        await ws.close()


# ---------------------------------------------------------------------------- connections per address


async def test_connections_beyond_the_per_address_limit_get_503_and_are_closed() -> None:
    async with running_gateway(max_connections_per_address=3) as gw:
        assert gw.limiter is not None
        held = [await asyncio.open_connection(*host_port(gw)) for _ in range(3)]
        await wait_for(lambda: sum(gw.limiter.open.values()) == 3)  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(*host_port(gw))
        _took, data = await closed_after(reader, 3)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), data
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        writer.close()
        assert gw.limiter.refused == 1
        # an HTTP client sees the same answer
        async with aiohttp.ClientSession() as other:
            async with other.get(gw.url("/healthz")) as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "too_many_connections"
        # one closes: room for one more
        _r, w = held.pop()
        w.close()
        await wait_for(lambda: sum(gw.limiter.open.values()) == 2)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as other:
            async with other.get(gw.url("/healthz")) as response:
                assert response.status == 200
        for _r, w in held:
            w.close()


async def test_the_connection_limit_can_be_turned_off() -> None:
    async with running_gateway(max_connections_per_address=0) as gw:
        held = [await asyncio.open_connection(*host_port(gw)) for _ in range(20)]
        async with aiohttp.ClientSession() as other:
            async with other.get(gw.url("/healthz")) as response:
                assert response.status == 200
        for _r, w in held:
            w.close()


# ---------------------------------------------------------------------------- desktops per agent


async def test_a_new_desktop_beyond_the_limit_closes_the_oldest_with_4009() -> None:
    async with running_gateway(max_desktops_per_agent=2) as gw:
        await gw.ready("a1")
        first = await gw.ws("a1")
        second = await gw.ws("a1")
        for ws in (first, second):
            assert (await receive_json(ws))["type"] == "hello"
        third = await gw.ws("a1")
        assert (await receive_json(third))["type"] == "hello"
        msg = await asyncio.wait_for(first.receive(), 3)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        assert (msg.data, msg.extra) == (CLOSE_REPLACED, "replaced by a newer desktop")
        assert gw.runtime.hub.connected("a1") == 2
        assert gw.runtime.engine.agent("a1")["desktop_connected"] is True
        # the two newest get the offers
        sid = await gw.offer("a1")
        for ws in (second, third):
            assert (await receive_until(ws, "session.offered"))["session"]["id"] == sid
        # the replaced one leaving did not count as the desktop going away
        await second.close()
        await asyncio.sleep(0.05)
        assert gw.runtime.engine.agent("a1")["desktop_connected"] is True
        await third.close()
        await wait_for(lambda: gw.runtime.engine.agent("a1")["desktop_connected"] is False)


async def test_one_token_cannot_hold_many_desktop_sockets(gw: Gateway) -> None:
    """The default: 4 per agent, however many are opened."""
    sockets = []
    for _ in range(12):
        ws = await gw.ws("a1")
        assert (await receive_json(ws))["type"] == "hello"
        sockets.append(ws)
        assert gw.runtime.hub.connected("a1") <= 4
    closed = 0
    for ws in sockets[:-4]:
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_REPLACED
        closed += 1
    assert closed == 8 and gw.runtime.hub.connected("a1") == 4
    for ws in sockets[-4:]:
        assert await request_ws(ws, {"type": "ping", "ref": "p"}) == {"type": "pong", "ref": "p"}
        await ws.close()
