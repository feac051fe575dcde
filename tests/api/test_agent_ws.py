"""The agent desktop WebSocket against a live server."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.api.sockets import CLOSE_TOO_SLOW

from .conftest import TOKENS, Gateway, auth, receive_json, receive_until, request_ws, wait_for

pytestmark = pytest.mark.asyncio


# ---------------------------------------------------------------------------- connect


async def test_hello_on_connect_and_on_reconnect_with_open_sessions(gw: Gateway) -> None:
    ws = await gw.ws("a1")
    hello = await receive_json(ws)
    assert hello["type"] == "hello"
    agent = hello["agent"]
    assert agent["id"] == "a1" and agent["desktop_connected"] is True and agent["sessions"] == []
    assert agent["presence"] == {"state": "offline", "reason": None}
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is True

    reply = await request_ws(ws, {"type": "presence", "state": "ready", "ref": "p1"})
    assert reply == {"type": "ack", "ref": "p1"}
    sid = await gw.offer("a1")
    offered = await receive_until(ws, "session.offered")
    assert offered["session"]["id"] == sid and offered["alert"] is True
    await ws.close()
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False

    again = await gw.ws("a1")
    hello = await receive_json(again)
    assert hello["type"] == "hello"
    assert hello["agent"]["presence"]["state"] == "ready"
    assert [(s["id"], s["state"]) for s in hello["agent"]["sessions"]] == [(sid, "offered")]
    # a second desktop (another tab) gets its own hello; both get later messages
    tab = await gw.ws("a1")
    assert (await receive_json(tab))["type"] == "hello"
    await gw.offer("a1")
    assert (await receive_json(again))["type"] == "session.offered"
    assert (await receive_json(tab))["type"] == "session.offered"
    await tab.close()
    await asyncio.sleep(0.05)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is True  # one tab is still open
    await again.close()


async def test_who_may_open_the_agent_socket(gw: Gateway) -> None:
    for path, headers, status in (
        ("/v1/agents/a1/ws", {}, 401),
        ("/v1/agents/a1/ws", {"Authorization": "Bearer wrong"}, 401),
        ("/v1/agents/a2/ws", {"Authorization": f"Bearer {TOKENS['a1']}"}, 403),
        ("/v1/agents/a1/ws", {"Authorization": f"Bearer {TOKENS['supervisor']}"}, 403),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await gw.http.ws_connect(gw.url(path), headers=headers)
        assert caught.value.status == status, path
    # browsers: the token in the query
    ws = await gw.http.ws_connect(gw.url(f"/v1/agents/a1/ws?token={TOKENS['a1']}"))
    assert (await receive_json(ws))["type"] == "hello"
    await ws.close()
    # plain HTTP on the socket path: 426 with the error shape
    response = await gw.request("GET", "/v1/agents/a1/ws", "a1")
    assert response.status == 426
    assert (await response.json())["error"]["code"] == "upgrade_required"


# ---------------------------------------------------------------------------- messages


async def test_session_actions_over_the_socket_with_ack_refs(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    sid = await gw.offer("a1", vendor="pbx", channel="chat")
    offered = await receive_until(ws, "session.offered")
    assert offered["alert"] is True and "focus" not in offered
    assert gw.runtime.engine.focused_session("a1") is None  # an offer never steals focus

    ack = await request_ws(ws, {"type": "accept", "session_id": sid, "ref": 1})
    assert ack["type"] == "ack" and ack["ref"] == 1 and ack["session"]["state"] == "active"
    ack = await request_ws(ws, {"type": "focus", "session_id": sid, "ref": "f"})
    assert ack["session"]["focused"] is True
    ack = await request_ws(ws, {"type": "note", "session_id": sid, "text": "vip", "ref": "n"})
    assert [n["text"] for n in ack["session"]["notes"]] == ["vip"]
    ack = await request_ws(ws, {"type": "confirm_account", "session_id": sid, "account_id": "acct-1", "ref": "c"})
    assert ack["session"]["account"] == {"state": "confirmed", "id": "acct-1"}
    ack = await request_ws(ws, {"type": "reset_account", "session_id": sid, "ref": "r"})
    assert ack["session"]["account"]["state"] == "unidentified"
    ack = await request_ws(ws, {"type": "send", "session_id": sid, "text": "hello", "ref": "s"})
    assert ack["type"] == "ack"
    ack = await request_ws(ws, {"type": "focus", "session_id": None, "ref": "f0"})
    assert ack == {"type": "ack", "ref": "f0", "session": None}
    assert gw.runtime.engine.focused_session("a1") is None

    # transfer (consult) to a2: the ack carries the target
    ack = await request_ws(ws, {"type": "transfer", "session_id": sid, "to_agent": "a2", "mode": "consult", "ref": "t"})
    assert ack["type"] == "ack" and ack["target"]["agent_id"] == "a2" and ack["target"]["state"] == "offered"
    assert ack["session"]["state"] == "active"  # consult: the source stays until the target accepts

    manual = await request_ws(ws, {"type": "new_session", "label": "follow-up", "ref": "m"})
    assert manual["session"]["channel"] == "manual" and manual["session"]["label"] == "follow-up"
    ack = await request_ws(ws, {"type": "end", "session_id": manual["session"]["id"], "ref": "e"})
    assert ack["session"]["state"] in ("wrap_up", "closed")
    second = await gw.offer("a1", vendor="pbx")
    ack = await request_ws(ws, {"type": "decline", "session_id": second, "ref": "d"})
    assert ack["session"]["outcome"] == "declined"
    assert await request_ws(ws, {"type": "ping", "ref": "p"}) == {"type": "pong", "ref": "p"}
    ack = await request_ws(ws, {"type": "presence", "state": "not_ready", "reason": "break", "ref": "pr"})
    assert ack["type"] == "ack"
    assert gw.runtime.engine.agent("a1")["presence"] == {"state": "not_ready", "reason": "break"}
    await ws.close()


async def test_bad_messages_get_errors_and_the_socket_stays_open(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    theirs = await gw.offer("a2")
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"

    await ws.send_str("{not json")
    error = await receive_json(ws)
    assert error["type"] == "error" and error["ref"] is None and error["code"] == "invalid_request"

    await ws.send_str("[1, 2]")
    assert (await receive_json(ws))["code"] == "invalid_request"
    await ws.send_bytes(b"\x00\x01")
    assert (await receive_json(ws))["code"] == "invalid_request"

    cases = [
        ({"type": "dance", "ref": "u"}, "unknown_message_type", "type"),
        ({"ref": "nt"}, "invalid_request", "type"),
        ({"type": "accept", "ref": "m"}, "invalid_request", "session_id"),
        ({"type": "accept", "session_id": "x", "extra": 1, "ref": "x"}, "invalid_request", "extra"),
        ({"type": "presence", "state": "asleep", "ref": "ps"}, "invalid_request", "state"),
        ({"type": "note", "session_id": "x", "text": "", "ref": "nt2"}, "invalid_request", "text"),
        ({"type": "accept", "session_id": "nope", "ref": "nf"}, "session_not_found", None),
        ({"type": "accept", "session_id": theirs, "ref": "fb"}, "forbidden", None),
        (
            {"type": "transfer", "session_id": theirs, "to_agent": "a1", "mode": "sideways", "ref": "tm"},
            "invalid_request",
            "mode",
        ),
    ]
    for message, code, field in cases:
        reply = await request_ws(ws, message)
        assert reply["type"] == "error", message
        assert reply["code"] == code and reply["ref"] == message["ref"], reply
        assert reply.get("field") == field, reply
        assert reply["message"]
    # a ref of the wrong type is an error too, not echoed
    await ws.send_json({"type": "ping", "ref": {"x": 1}})
    reply = await receive_json(ws)
    assert reply["type"] == "error" and reply["ref"] is None and reply["field"] == "ref"
    # still open and working; a2's session untouched
    assert await request_ws(ws, {"type": "ping", "ref": "alive"}) == {"type": "pong", "ref": "alive"}
    assert gw.runtime.engine.session(theirs).state.value == "offered"
    assert not ws.closed
    await ws.close()


async def test_oversized_message_closes_the_socket(gw: Gateway) -> None:
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    await ws.send_str(json.dumps({"type": "note", "session_id": "x", "text": "y" * (70 * 1024)}))
    msg = await asyncio.wait_for(ws.receive(), 3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)


async def test_focus_and_end_fill_the_record(gw: Gateway) -> None:
    await gw.ready("a1")
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    sid = await gw.offer("a1", channel="voice")
    await request_ws(ws, {"type": "accept", "session_id": sid, "ref": 1})
    await request_ws(ws, {"type": "focus", "session_id": sid, "ref": 2})
    await gw.advance(12)
    await request_ws(ws, {"type": "end", "session_id": sid, "ref": 3})
    await gw.advance(30)
    closed = await receive_until(ws, "session.closed")
    assert closed["session"]["id"] == sid
    record = await gw.json("GET", f"/v1/sessions/{sid}", "a1")
    # still focused through the wrap-up: focus runs until the session closes
    assert (record["handle_ms"], record["focus_ms"], record["wrap_ms"]) == (12000, 42000, 30000)
    await ws.close()


# ---------------------------------------------------------------------------- the socket's writer


async def test_the_desktop_socket_declines_compression(gw: Gateway) -> None:
    """A browser asks for permessage-deflate: the desktop socket goes on uncompressed (zlib's
    state would cost ~95 KB per desktop), and works as usual."""
    ws = await gw.ws("a1", compress=15)
    assert ws.compress == 0
    assert "Sec-WebSocket-Extensions" not in ws._response.headers
    assert (await receive_json(ws))["type"] == "hello"
    assert await request_ws(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    await ws.close()


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "deflate"])
async def test_every_message_arrives_in_order_whatever_its_size(gw: Gateway, compress: int) -> None:
    """Messages queued in the same turn go out together (one write on a plain connection,
    frame by frame through aiohttp's compressor on a deflate one): every one arrives, whole
    and in order, across the three frame-length encodings (< 126, < 64 KiB, larger). The
    desktop socket is never compressed; the supervisor stream is when its client asks."""
    if compress:
        ws = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"), compress=compress)
        assert ws.compress == compress  # (the stream took it)

        def send(message: dict[str, Any]) -> None:
            gw.runtime.bus.publish(message)
    else:
        ws = await gw.ws("a1")
        assert (await receive_json(ws))["type"] == "hello"

        def send(message: dict[str, Any]) -> None:
            gw.runtime.hub.send("a1", message)

    sizes = [0, 1, 100, 125, 126, 127, 1000, 65_535, 65_536, 70_000, 3]
    for burst in range(3):
        for n, size in enumerate(sizes):  # one turn: all queued before the writer runs
            send({"type": "chat.message", "n": burst * 100 + n, "text": "é" * (size // 2)})
    for burst in range(3):
        for n, size in enumerate(sizes):
            msg = await receive_json(ws)
            assert (msg["n"], len(msg["text"])) == (burst * 100 + n, size // 2)
    assert await request_ws(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    await ws.close()


async def test_an_idle_socket_keeps_nothing_of_what_it_sent(gw: Gateway) -> None:
    """Once sent, a message (and its encoding) is not kept by the socket's writer while it
    waits for the next one: memory per idle desktop (P4) does not carry its last hello."""

    class Message(dict[str, Any]):  # a dict that can be watched (weakref)
        pass

    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    message = Message(type="chat.message", text="x" * 5000)
    gone = weakref.ref(message)
    gw.runtime.hub.send("a1", message)
    del message
    assert (await receive_json(ws))["text"] == "x" * 5000
    await asyncio.sleep(0.05)  # the writer is back waiting (nothing else sent meanwhile)
    gc.collect()
    assert gone() is None
    await ws.close()


async def test_an_idle_desktop_socket_runs_no_task_of_its_own(gw: Gateway) -> None:
    """Memory per connected desktop (P4): an open, idle desktop socket keeps only aiohttp's
    own tasks (the connection's and its request handler's); its writer is woken by the
    outbox, it does not wait in a task (a task, its coroutine frames, an event and its
    waiters per socket were ~3 KB of each desktop's cost). Messages still go out in order."""
    sockets = []
    before = len(asyncio.all_tasks())
    for agent_id in ("a1", "a2", "a3", "a1", "a2", "a3"):
        ws = await gw.ws(agent_id)
        assert (await receive_json(ws))["type"] == "hello"
        sockets.append(ws)
    await asyncio.sleep(0.05)  # anything started by the connects has settled
    added = len(asyncio.all_tasks()) - before
    assert added <= 2 * len(sockets), f"{added} tasks for {len(sockets)} idle sockets"
    for n in range(3):
        gw.runtime.hub.send("a2", {"type": "chat.message", "n": n})
    for ws in (sockets[1], sockets[4]):
        assert [(await receive_json(ws))["n"] for _ in range(3)] == [0, 1, 2]
    for ws in sockets:
        await ws.close()


async def test_an_open_desktop_socket_keeps_nothing_of_its_hello(gw: Gateway) -> None:
    """The agent's snapshot sent in ``hello`` is not held while the socket stays open
    (memory per connected desktop, P4: it was kept by the handler for the socket's life)."""
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"  # (nothing of the client's copy kept)
    await asyncio.sleep(0.05)
    gc.collect()
    bodies = [o for o in gc.get_objects() if isinstance(o, dict) and o.get("id") == "a1" and "desktop_connected" in o]
    assert bodies == []
    assert await request_ws(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    await ws.close()


async def test_a_desktop_that_stops_reading_is_cut_off_after_the_send_timeout(gw: Gateway) -> None:
    """A connection whose peer reads nothing fills up; once the writer has waited
    ``ws_send_timeout_s`` for it to drain, the connection is dropped and the socket
    unregistered (the grace period starts), while other desktops go on."""
    await gw.ready("a1", "a2")
    gw.api.settings.ws_send_timeout_s = 0.3
    gw.api.settings.ws_queue_size = 100_000
    address = urlsplit(gw.base)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        f"GET /v1/agents/a1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKENS['a1']}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 101"), head
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 1)
    big = "x" * 1_000_000
    for _ in range(64):  # far more than the kernel's socket buffers hold; never read
        gw.runtime.hub.send("a1", {"type": "chat.message", "text": big})
        await asyncio.sleep(0)
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0, timeout=10)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False
    fast = await gw.ws("a2")
    assert (await receive_json(fast))["type"] == "hello"
    await fast.close()
    writer.close()


# ---------------------------------------------------------------------------- slow desktops


async def test_a_slow_desktop_is_dropped_and_others_keep_getting_offers(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    gw.api.settings.ws_queue_size = 2
    gw.api.settings.ws_close_timeout_s = 0.2
    slow = await gw.ws("a1")  # never reads
    gw.api.settings.ws_queue_size = 256
    fast = await gw.ws("a2")
    assert (await receive_json(fast))["type"] == "hello"

    # three offers in one engine step: three messages at once for a1's outbox of two
    events = [gw.event("offer", channel="chat", agent_id="a1") for _ in range(3)]
    await gw.runtime.act(lambda e: [e.handle_event(ev) for ev in events])
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False  # grace period started

    loop = asyncio.get_running_loop()
    started = loop.time()
    sid = await gw.offer("a2")
    offered = await receive_until(fast, "session.offered")
    assert offered["session"]["id"] == sid
    assert loop.time() - started < 1.0

    # the slow client finds the socket closed as too slow once it reads (after the hello)
    seen = []
    while True:
        msg = await asyncio.wait_for(slow.receive(), 3)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        seen.append(json.loads(msg.data)["type"])
    assert seen in ([], ["hello"])
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    if msg.type is aiohttp.WSMsgType.CLOSE:
        assert msg.data == CLOSE_TOO_SLOW
    # the sessions survive: a reconnect gets them in hello
    again = await gw.ws("a1")
    hello = await receive_json(again)
    assert len(hello["agent"]["sessions"]) == 3
    await again.close()
    await fast.close()


async def test_shutdown_closes_sockets_going_away(gw: Gateway) -> None:
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    await gw.api.close_sockets()
    msg = await asyncio.wait_for(ws.receive(), 3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)


# ---------------------------------------------------------------------------- never mute


async def test_a_lone_surrogate_gets_an_error_and_the_socket_keeps_talking(gw: Gateway) -> None:
    """Issue 6 item 6: ``{"type":"ping","ref":"\\ud800"}`` left the socket mute for good."""
    await gw.ready("a1")
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    for raw in (
        '{"type":"ping","ref":"\\ud800"}',
        '{"type":"note","session_id":"x","text":"a\\udfffb","ref":"n"}',
        '{"type":"ping","\\ud83d":1}',
    ):
        await ws.send_str(raw)
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_request", error
        assert error["ref"] is None and error["field"] == "body"
        assert "Unicode" in error["message"]
        assert await request_ws(ws, {"type": "ping", "ref": "alive"}) == {"type": "pong", "ref": "alive"}
    # valid surrogate pairs (an emoji) are fine and echoed as they came
    assert await request_ws(ws, {"type": "ping", "ref": "\U0001f600"}) == {"type": "pong", "ref": "\U0001f600"}
    sid = await gw.offer("a1")
    assert (await receive_until(ws, "session.offered"))["session"]["id"] == sid
    await ws.close()


async def test_a_socket_whose_sender_dies_is_closed_and_unregistered(gw: Gateway) -> None:
    """If the writer of a socket stops for any reason, the socket must not stay open and
    registered (a desktop shown as connected that never sees an offer)."""
    await gw.ready("a1")
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    # a message the writer cannot serialize (a bug elsewhere): it must not silently skip it
    gw.runtime.hub.send("a1", {"type": "session.updated", "session": object()})
    msg = await asyncio.wait_for(ws.receive(), 3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.INTERNAL_ERROR, msg
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False
    # a reconnect gets a fresh hello and the offers
    again = await gw.ws("a1")
    assert (await receive_json(again))["type"] == "hello"
    sid = await gw.offer("a1")
    assert (await receive_until(again, "session.offered"))["session"]["id"] == sid
    await again.close()


async def test_a_message_that_cannot_be_utf8_is_still_sent(gw: Gateway) -> None:
    """A lone surrogate that reached an outgoing message (from anywhere) goes out escaped,
    instead of killing the socket's writer."""
    ws = await gw.ws("a1")
    assert (await receive_json(ws))["type"] == "hello"
    gw.runtime.hub.send("a1", {"type": "chat.message", "text": "x\ud800y"})
    msg = await receive_json(ws)
    assert msg == {"type": "chat.message", "text": "x\ud800y"}
    assert await request_ws(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    await ws.close()
