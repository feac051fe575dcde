"""The ``chat_ws`` adapter end to end: a real gateway connects to a real ``websockets``
server playing the chat platform; a real desktop WebSocket watches the agent's side."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.sessions import SessionState

from ..contract.harness import TOKENS, VENDOR, ContractGateway, contract_config
from .platform import TOKEN, Platform

pytestmark = pytest.mark.asyncio

FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, "ping_interval_s": 0.5, "ping_timeout_s": 0.5}


def settings(platform: Platform, **extra: Any) -> dict[str, Any]:
    return {"url": platform.url, "token": TOKEN, "queue": "support", **FAST, **extra}


@pytest_asyncio.fixture
async def platform() -> AsyncIterator[Platform]:
    peer = Platform()
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


async def gateway_for(tmp_path: Path, vendor_settings: dict[str, Any], *, up: bool = True) -> ContractGateway:
    gw = ContractGateway(contract_config("chat_ws", vendor_settings, tmp_path / "gw.db"), base_dir=tmp_path)
    await gw.start()
    await gw.ready()
    if up:
        await gw.until(lambda: gw.health() == "up", what="the platform link")
    return gw


@pytest_asyncio.fixture
async def gw(platform: Platform, tmp_path: Path) -> AsyncIterator[ContractGateway]:
    gateway = await gateway_for(tmp_path, settings(platform))
    try:
        yield gateway
    finally:
        await gateway.stop()


class Desktop:
    """The agent's real desktop socket on the gateway."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive_json()
                self.messages.append(message)
                if message.get("type") == kind:
                    return message


@pytest_asyncio.fixture
async def desktop(gw: ContractGateway) -> AsyncIterator[Desktop]:
    headers = {"Authorization": f"Bearer {TOKENS['a1']}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.base}/v1/agents/a1/ws", headers=headers) as ws:
        desk = Desktop(ws)
        await desk.next("hello")
        yield desk


def session_of(gw: ContractGateway, chat_id: str) -> Any:
    sessions = gw.sessions_of(chat_id)
    return sessions[-1] if sessions else None


async def test_a_chat_from_start_to_end(gw: ContractGateway, platform: Platform, desktop: Desktop) -> None:
    assert platform.headers[-1]["Authorization"] == f"Bearer {TOKEN}"
    hello = platform.frames(type="hello")[0]
    assert hello == {"type": "hello", "protocol": "cti-gateway.chat.v1", "vendor": VENDOR}

    start = await platform.start_chat("c1", customer={"name": "Jo", "address": "jo@example.com"}, text="hi")
    ack = await platform.wait_for(type="ack", id=start)
    assigned = await platform.wait_for(type="chat.assigned", chat_id="c1")
    assert ack == {"type": "ack", "id": start, "chat_id": "c1", "decision": "assigned"}
    session = session_of(gw, "c1")
    assert assigned == {"type": "chat.assigned", "chat_id": "c1", "agent_id": "a1", "session_id": session.id}
    offered = await desktop.next("session.offered")
    assert offered["session"]["id"] == session.id and offered["alert"] is True
    assert session.customer.name == "Jo"

    await gw.runtime.act(lambda e: e.accept(session.id))
    accepted = await platform.wait_for(type="chat.accepted", chat_id="c1")
    assert accepted["agent_id"] == "a1" and accepted["id"].startswith("gw-")

    message = await platform.message("c1", "m-1", "where is my parcel?")
    assert (await platform.wait_for(type="ack", id=message))["decision"] == "accepted"
    shown = await desktop.next("chat.message")
    assert (shown["session_id"], shown["text"], shown["alert"]) == (session.id, "where is my parcel?", True)

    await gw.runtime.act(lambda e: e.focus("a1", session.id))
    await platform.message("c1", "m-2", "hello?")
    assert (await desktop.next("chat.message"))["alert"] is False  # the agent is looking at it

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gw.base}/v1/sessions/{session.id}/send",
            json={"text": "on its way"},
            headers={"Authorization": f"Bearer {TOKENS['a1']}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    reply = await platform.wait_for(type="agent.message", chat_id="c1")
    assert reply["text"] == "on its way" and reply["agent_id"] == "a1" and reply["session_id"] == session.id
    adapter: Any = gw.runtime.adapters[VENDOR]
    await platform.wait(lambda: adapter.describe()["outbox"] == 0)  # the platform acked it

    end = await platform.end_chat("c1")
    await platform.wait_for(type="ack", id=end)
    assert session.state is not SessionState.ACTIVE and session.outcome.value == "completed"
    assert gw.engine.agent("a1")["in_use"]["sessions"] == 0


async def test_a_resent_frame_is_a_duplicate(gw: ContractGateway, platform: Platform) -> None:
    frame = {"type": "chat.start", "id": "p-9", "chat_id": "c9", "queue": "support"}
    await platform.send(frame)
    await platform.send(frame)
    acks = await platform.wait_for_all(2, type="ack", id="p-9")
    assert [a["decision"] for a in acks] == ["assigned", "duplicate"]
    decisions = await platform.wait_for_all(2, type="chat.assigned", chat_id="c9")
    assert decisions[0] == decisions[1]
    assert len(gw.sessions_of("c9")) == 1
    for _ in range(2):
        await platform.send({"type": "chat.message", "id": "p-10", "chat_id": "c9", "message_id": "m1", "text": "x"})
    assert [a["decision"] for a in await platform.wait_for_all(2, type="ack", id="p-10")] == ["accepted", "duplicate"]


async def test_refusals_are_error_frames_and_the_connection_stays(gw: ContractGateway, platform: Platform) -> None:
    await platform.send({"type": "chat.message", "id": 7, "chat_id": "nope", "message_id": "m", "text": "x"})
    await platform.send({"type": "chat.start", "id": "p-2", "chat_id": "c2", "queue": "no-such-queue"})
    await platform.send({"type": "chat.start", "id": "p-3", "chat_id": "c3", "customer": "Jo"})
    await platform.send({"type": "chat.message", "id": "p-4", "chat_id": "c3", "message_id": "m"})
    await platform.send('{"type": "chat.start", "id": {"nested": 1}, "chat_id": "c4"}')
    errors = await platform.wait_for_all(5, type="error")
    assert [(e["id"], e["code"], e.get("field")) for e in errors] == [
        (7, "interaction_not_found", None),
        ("p-2", "invalid_event", "queue"),
        ("p-3", "invalid_frame", "customer"),
        ("p-4", "invalid_frame", "text"),
        (None, "invalid_frame", "id"),
    ]
    assert platform.connections == 1 and gw.health() == "up"
    assert gw.engine.open_interactions(VENDOR) == []
    await platform.start_chat("c5")
    assert (await platform.wait_for(type="chat.assigned", chat_id="c5"))["agent_id"] in ("a1", "a2")


async def test_a_chat_without_a_queue_needs_one(platform: Platform, tmp_path: Path) -> None:
    gw = await gateway_for(tmp_path, {**settings(platform), "queue": None})
    try:
        await platform.send({"type": "chat.start", "id": "p-1", "chat_id": "c1"})
        error = await platform.wait_for(type="error", id="p-1")
        assert error["field"] == "queue"
        await platform.start_chat("c2", agent_id="a2")
        assert (await platform.wait_for(type="chat.assigned", chat_id="c2"))["agent_id"] == "a2"
    finally:
        await gw.stop()


async def test_resync_after_a_reconnect(gw: ContractGateway, platform: Platform) -> None:
    """While the link is down the platform ends c2 and starts c3, and the agent replies in
    c1: after the reconnect c2 is ended, c3 offered, c1 kept, and the reply delivered."""
    for chat_id in ("c1", "c2"):
        await platform.start_chat(chat_id)
        await platform.wait_for(type="chat.assigned", chat_id=chat_id)
    c1 = session_of(gw, "c1")
    await gw.runtime.act(lambda e: e.accept(c1.id))
    await platform.stop()
    await gw.until(lambda: gw.health() == "down", what="down")

    await gw.runtime.act(lambda e: e.send(c1.id, "sorry for the wait"))
    del platform.chats["c2"]
    platform.chats["c3"] = {"chat_id": "c3", "customer": {"name": "Sam"}}
    await platform.start()
    await gw.until(lambda: gw.health() == "up", timeout=10, what="up again")

    assert session_of(gw, "c2").state is SessionState.CLOSED
    assert session_of(gw, "c1").state is SessionState.ACTIVE
    assert (await platform.wait_for(type="chat.assigned", chat_id="c3"))["agent_id"] in ("a1", "a2")
    assert session_of(gw, "c3").customer.name == "Sam"
    reply = await platform.wait_for(type="agent.message", chat_id="c1")
    assert reply["text"] == "sorry for the wait"
    assert {row["interaction_id"] for row in gw.engine.open_interactions(VENDOR)} == {"c1", "c3"}


async def test_frames_the_platform_did_not_ack_are_sent_again(gw: ContractGateway, platform: Platform) -> None:
    platform.auto_ack = False
    await platform.start_chat("c1")
    await platform.wait_for(type="chat.assigned", chat_id="c1")
    session = session_of(gw, "c1")
    await gw.runtime.act(lambda e: e.accept(session.id))
    await gw.runtime.act(lambda e: e.send(session.id, "one"))
    first = await platform.wait_for(type="agent.message", chat_id="c1")

    await platform.stop()  # the connection drops before the platform acked
    platform.auto_ack = True
    await platform.start()
    again = await platform.wait_for_all(2, type="agent.message", chat_id="c1", timeout=10)
    assert again[1]["id"] == first["id"] and again[1]["text"] == "one"
    adapter: Any = gw.runtime.adapters[VENDOR]
    await platform.wait(lambda: adapter.describe()["outbox"] == 0)


async def test_a_wrong_token_keeps_the_link_down_and_retrying(platform: Platform, tmp_path: Path) -> None:
    gw = await gateway_for(tmp_path, {**settings(platform), "token": "wrong-token-wrong-token"}, up=False)
    try:
        await platform.wait(lambda: platform.refused_handshakes >= 3)
        assert gw.health() == "down" and platform.connections == 0
    finally:
        await gw.stop()


async def test_a_platform_that_never_answers_sync_is_not_up(platform: Platform, tmp_path: Path) -> None:
    platform.answer_sync = False
    gw = await gateway_for(tmp_path, {**settings(platform), "sync_timeout_s": 0.3}, up=False)
    try:
        await platform.wait(lambda: platform.connections >= 2)  # gave up on the first, reconnected
        assert gw.health() == "down"
        platform.answer_sync = True
        await gw.until(lambda: gw.health() == "up", timeout=10, what="up once sync is answered")
    finally:
        await gw.stop()


async def test_a_stalled_platform_is_detected_by_pings(tmp_path: Path) -> None:
    """A peer that completes the handshake and then goes silent (no pongs, no close): the
    ping timeout drops the link and the gateway reconnects."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        token = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + token + b"\r\n\r\n"
        )
        await writer.drain()
        accepted.append(writer)
        await asyncio.sleep(3600)  # never reads again: no pong, no chat.list

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    vendor_settings = {"url": f"ws://127.0.0.1:{port}/chat", "token": TOKEN, "queue": "support", **FAST}
    gw = await gateway_for(tmp_path, {**vendor_settings, "sync_timeout_s": 30}, up=False)
    try:
        await gw.until(lambda: len(accepted) >= 2, timeout=10, what="a reconnect after the stall")
        assert gw.health() == "down"
    finally:
        await gw.stop()
        server.close()
        for writer in accepted:
            writer.close()


async def test_agent_ids_are_mapped_both_ways(platform: Platform, tmp_path: Path) -> None:
    """The platform names its agents its own way (``agent_map``) and reads its own ids back."""
    gw = await gateway_for(tmp_path, settings(platform, agent_map={"ada@platform": "a1", "bob@platform": "a2"}))
    try:
        await platform.start_chat("c1", agent_id="bob@platform")
        assigned = await platform.wait_for(type="chat.assigned", chat_id="c1")
        assert assigned["agent_id"] == "bob@platform" and session_of(gw, "c1").agent_id == "a2"
        session = session_of(gw, "c1")
        await gw.runtime.act(lambda e: e.accept(session.id))
        await gw.runtime.act(lambda e: e.send(session.id, "hi"))
        reply = await platform.wait_for(type="agent.message", chat_id="c1")
        assert reply["agent_id"] == "bob@platform"
    finally:
        await gw.stop()


async def test_no_ack_while_the_gateway_cannot_journal(gw: ContractGateway, platform: Platform) -> None:
    """An ack promises durability: a gateway that takes no events answers not_ready instead
    (the platform keeps the frame and sends it again later)."""
    await gw.runtime.stop_intake()
    frame = {"type": "chat.start", "id": "p-1", "chat_id": "c1", "queue": "support"}
    await platform.send(frame)
    error = await platform.wait_for(type="error", id="p-1")
    assert error["code"] == "not_ready" and platform.frames(type="ack") == []
    assert gw.engine.open_interactions(VENDOR) == []
