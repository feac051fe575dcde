"""The supervisor event stream against a live server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .conftest import TOKENS, Gateway, auth, receive_json, receive_until

pytestmark = pytest.mark.asyncio


async def test_supervisor_stream_sees_events_decisions_and_session_changes(gw: Gateway) -> None:
    ws = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"))
    await gw.ready("a1")
    presence = await receive_until(ws, "agent.presence")
    assert presence == {"type": "agent.presence", "agent_id": "a1", "state": "ready", "reason": None}
    sid = await gw.offer("a1")
    changed = await receive_until(ws, "session.changed")
    assert changed["transition"] == "offered" and changed["session"]["id"] == sid
    routed = await receive_until(ws, "event.routed")
    assert routed["decision"] == {"decision": "assigned", "agent_id": "a1", "session_id": sid}
    await ws.send_json({"type": "ping", "ref": 7})
    assert await receive_until(ws, "pong") == {"type": "pong", "ref": 7}
    await ws.send_json({"type": "accept", "session_id": sid, "ref": 8})
    error = await receive_until(ws, "error")
    assert error["code"] == "read_only" and error["ref"] == 8
    await ws.close()
    await asyncio.sleep(0.05)
    assert len(gw.runtime.bus) == 0


async def test_only_the_supervisor_may_open_the_stream(gw: Gateway) -> None:
    for headers, status in (({}, 401), (auth("a1"), 403)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=headers)
        assert caught.value.status == status
    ws = await gw.http.ws_connect(gw.url(f"/v1/events/ws?token={TOKENS['supervisor']}"))
    await ws.close()


async def test_a_slow_stream_subscriber_is_dropped(gw: Gateway) -> None:
    gw.api.settings.ws_queue_size = 2
    gw.api.settings.ws_close_timeout_s = 0.2
    slow = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"))
    gw.api.settings.ws_queue_size = 256
    fast = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"))
    assert len(gw.runtime.bus) == 2
    # three presence notices in one engine step, for an outbox of two
    await gw.runtime.act(lambda e: [e.set_presence(a, "ready") for a in ("a1", "a2", "a3")])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while len(gw.runtime.bus) != 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert (await receive_json(fast))["type"] == "agent.presence"
    msg = await asyncio.wait_for(slow.receive(), 3)
    while msg.type is aiohttp.WSMsgType.TEXT:
        msg = await asyncio.wait_for(slow.receive(), 3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    await fast.close()


async def test_the_stream_carries_every_normalized_event_in_full_with_its_decision(gw: Gateway) -> None:
    """DESIGN section 6: the supervisor stream carries the event itself, not a summary."""
    ws = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"))
    await gw.ready("a1")
    offer = {
        "event_id": "full-1",
        "type": "offer",
        "channel": "chat",
        "interaction_id": "chat-full",
        "queue": "support",
        "priority": 7,
        "customer": {"address": "+4930123456", "name": "Jo"},
        "subject": "Invoice 42",
        "text": "hello there",
        "occurred_at": "2023-11-14T22:13:20Z",
        "attributes": {"account_id": "C-1", "tier": {"level": "gold"}},
    }
    response = await gw.webhook(offer)
    assert response.status == 200
    routed = await receive_until(ws, "event.routed", event_id="full-1")
    sid = routed["decision"]["session_id"]
    assert routed["decision"] == {"decision": "assigned", "agent_id": "a1", "session_id": sid}
    assert routed["event"] == {
        **offer,
        "vendor": "crm",
        "agent_id": None,
    }
    # a chat message: its text and customer reach the stream too, and so does a duplicate
    message = {
        "event_id": "full-2",
        "type": "message",
        "interaction_id": "chat-full",
        "text": "are you there?",
        "customer": {"name": "Jo"},
        "occurred_at": "2023-11-14T22:13:21Z",
    }
    assert (await gw.webhook(message)).status == 200
    routed = await receive_until(ws, "event.routed", event_id="full-2")
    assert routed["event"]["text"] == "are you there?"
    assert routed["event"]["customer"] == {"address": None, "name": "Jo"}
    assert routed["event"]["occurred_at"] == "2023-11-14T22:13:21Z"
    assert routed["decision"] == {"decision": "accepted"}
    assert (await gw.webhook(message)).status == 200
    duplicate = await receive_until(ws, "event.routed", event_id="full-2")
    assert duplicate["decision"]["decision"] == "duplicate" and duplicate["event"]["text"] == "are you there?"
    await ws.close()
