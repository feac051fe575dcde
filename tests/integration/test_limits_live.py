"""Slow and greedy clients against a real ``cti-gateway run`` process (issue 6 item 7): the
``server.idle_timeout_s``, ``server.max_connections_per_address`` and
``server.max_desktops_per_agent`` settings, as an operator configures them. The finer cases
run in-process in ``tests/api/test_limits.py``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from .conftest import GatewayFactory
from .live import sha, sqlite_url

pytestmark = pytest.mark.asyncio

TOKEN = "limits-agent-token"


async def test_slow_and_greedy_clients_are_bounded(gateway_process: GatewayFactory, tmp_path: Path) -> None:
    proc = gateway_process(
        {
            "server": {"idle_timeout_s": 1, "max_connections_per_address": 4, "max_desktops_per_agent": 1},
            "store": {"url": sqlite_url(tmp_path / "limits.db")},
            "capacity_profiles": {"p": {"max_sessions": 2}},
            "queues": [{"name": "q"}],
            "agents": [{"id": "a1", "profile": "p", "queues": ["q"], "token_sha256": sha(TOKEN)}],
        }
    ).start()

    # a client trickling its request head is closed after the idle timeout
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    started = time.monotonic()
    closed = False
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60:
            # closed: EOF, or a reset (the server closed with our bytes unread)
            if reader.at_eof() or reader.exception() is not None:
                closed = True
                break
            if time.monotonic() - started > 5:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.25)
    except (ConnectionError, OSError):
        closed = True
    assert closed, "still connected after 5 s"
    assert time.monotonic() - started < 3
    writer.close()

    # four connections from one address, the fifth is refused
    held = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(4)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    data = await asyncio.wait_for(reader.read(), 3)
    assert data.startswith(b"HTTP/1.1 503"), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
    writer.close()
    for _r, w in held:
        w.close()
    await asyncio.sleep(0.2)

    # one desktop per agent here: a second one replaces the first (4009)
    async with aiohttp.ClientSession() as http:
        url = f"{proc.base}/v1/agents/a1/ws?token={TOKEN}"
        first = await http.ws_connect(url)
        assert json.loads((await first.receive(timeout=5)).data)["type"] == "hello"
        second = await http.ws_connect(url)
        assert json.loads((await second.receive(timeout=5)).data)["type"] == "hello"
        gone = await first.receive(timeout=5)
        assert gone.type is aiohttp.WSMsgType.CLOSE and gone.data == 4009, gone
        async with http.get(f"{proc.base}/v1/agents/a1", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert (await response.json())["desktop_connected"] is True
        await second.close()
    assert proc.terminate() == 0
