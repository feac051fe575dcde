"""Parallel offers end to end (issue 13 part 2): a real gateway process (``python -m gateway
run``, SQLite journal), real desktop WebSockets, a real signed webhook vendor with its
callback URL. Several desktops accept one parallel offer at the same moment: exactly one
wins, the others see their offer closed ``withdrawn`` and their slots free, and the vendor
hears one decision naming the winner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from .conftest import GatewayFactory
from .live import LiveClient, free_port, sha, sqlite_url
from .test_server_e2e import SECRET, Desktop, Receiver

pytestmark = pytest.mark.asyncio

VENDOR = "crm"
AGENTS = ("p1", "p2", "p3", "p4")
TOKENS = {"supervisor": "parallel-supervisor-token", **{a: f"parallel-{a}-token" for a in AGENTS}}
ZERO = {"sessions": 0, "units": 0, "voice": 0, "chat": 0, "email": 0, "manual": 0}


def config(tmp_path: Path, callback_url: str) -> dict[str, Any]:
    long = {"voice": 600, "chat": 600, "email": 600}
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": 600},
        "store": {"url": sqlite_url(tmp_path / "parallel.db")},
        "capacity_profiles": {"desk": {"max_sessions": 2, "offer_timeout_s": long}},
        "queues": [{"name": "vip", "policy": "offer_all", "offer_to": 3, "on_full": "reject"}],
        "agents": [
            {"id": a, "name": a.upper(), "profile": "desk", "queues": ["vip"], "token_sha256": sha(TOKENS[a])}
            for a in AGENTS
        ],
        "vendors": [
            {
                "name": VENDOR,
                "adapter": "webhook",
                "secret": SECRET,
                "callback_url": callback_url,
                "callback_backoff_s": 0.05,
                "callback_timeout_s": 2,
            }
        ],
    }


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest_asyncio.fixture
async def vendor_hooks() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hooks, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def answer(desk: Desktop, message: dict[str, Any]) -> dict[str, Any]:
    """Send a message with a ref; return its ack or error (notices meanwhile are kept)."""
    await desk.ws.send_json(message)
    deadline = time.monotonic() + 5.0
    while True:
        msg = await desk.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        reply: dict[str, Any] = json.loads(msg.data)
        if reply["type"] in ("ack", "error") and reply.get("ref") == message["ref"]:
            return reply
        desk.backlog.append(reply)


async def notices_until(hooks: Receiver, done: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, hooks.notices
        await asyncio.sleep(0.02)


async def test_several_desktops_accept_at_once_exactly_one_wins(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, vendor_hooks: tuple[Receiver, str]
) -> None:
    hooks, url = vendor_hooks
    proc = gateway_process(config(tmp_path, url)).start()
    client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
    desks: dict[str, Desktop] = {}
    for agent in AGENTS:  # ready in this order: p1 has been idle longest
        desks[agent] = await Desktop.connect(http, client, agent)
        assert (await desks[agent].receive())["type"] == "hello"
        await desks[agent].ask({"type": "presence", "state": "ready", "ref": "ready"})

    # the offer goes to the three longest idle at once; the vendor hears "queued" for now
    status, body = await client.webhook(
        {"event_id": "vip-1", "type": "offer", "channel": "chat", "interaction_id": "chat-vip-1", "queue": "vip"}
    )
    assert (status, body) == (200, {"decision": "queued"}), body
    offered = {a: (await desks[a].until("session.offered", interaction_id="chat-vip-1")) for a in ("p1", "p2", "p3")}
    for message in offered.values():
        assert message["alert"] is True and message["session"]["state"] == "offered"
    sessions = {a: m["session"]["id"] for a, m in offered.items()}
    agents = {a["id"]: a for a in (await client.ok("GET", "/v1/agents", "supervisor"))["agents"]}
    for agent in ("p1", "p2", "p3"):  # the slot is held on every agent offered
        assert agents[agent]["in_use"] == {**ZERO, "sessions": 1, "units": 1, "chat": 1}, agents[agent]
    assert agents["p4"]["in_use"] == ZERO and agents["p4"]["sessions"] == []

    # all three accept at the same moment
    replies = await asyncio.gather(
        *(answer(desks[a], {"type": "accept", "session_id": sessions[a], "ref": f"take-{a}"}) for a in sessions)
    )
    by_agent = dict(zip(sessions, replies, strict=True))
    winners = [a for a, reply in by_agent.items() if reply["type"] == "ack"]
    assert len(winners) == 1, by_agent
    [winner] = winners
    assert by_agent[winner]["session"]["state"] == "active"
    losers = [a for a in sessions if a != winner]
    for agent in losers:
        assert by_agent[agent]["type"] == "error" and by_agent[agent]["code"] == "session_not_offered", by_agent
        closed = await desks[agent].until("session.closed", id=sessions[agent])
        assert closed["session"]["outcome"] == "withdrawn" and closed["session"]["state"] == "closed"
        record = await client.ok("GET", f"/v1/sessions/{sessions[agent]}", agent)
        assert (record["state"], record["outcome"], record["accepted_at"]) == ("closed", "withdrawn", None)

    # counts are exact: the winner holds one chat, the others nothing
    agents = {a["id"]: a for a in (await client.ok("GET", "/v1/agents", "supervisor"))["agents"]}
    assert agents[winner]["in_use"] == {**ZERO, "sessions": 1, "units": 1, "chat": 1}
    for agent in (*losers, "p4"):
        assert agents[agent]["in_use"] == ZERO, agents[agent]

    # the vendor got one decision, naming the winner (then the accept)
    def about(action: str) -> list[dict[str, Any]]:
        return [n for n in hooks.notices if n["action"] == action and n["interaction_id"] == "chat-vip-1"]

    await notices_until(hooks, lambda: about("decision") and about("accepted"))
    [decision] = about("decision")
    assert decision["event_id"] == "vip-1"
    assert decision["data"] == {"decision": "assigned", "agent_id": winner, "session_id": sessions[winner]}
    [accepted] = about("accepted")
    assert accepted["data"]["agent_id"] == winner
    # a re-sent offer gets its first answer
    status, body = await client.webhook(
        {"event_id": "vip-1", "type": "offer", "channel": "chat", "interaction_id": "chat-vip-1", "queue": "vip"}
    )
    assert (status, body) == (200, {"decision": "duplicate", "first_decision": "queued"})

    # a second parallel offer that everybody declines is rejected by the queue (on_full: reject),
    # through the callback, once
    status, body = await client.webhook(
        {"event_id": "vip-2", "type": "offer", "channel": "chat", "interaction_id": "chat-vip-2", "queue": "vip"}
    )
    assert (status, body) == (200, {"decision": "queued"})
    declined: set[str] = set()
    while True:
        out = [
            s
            for agent in AGENTS
            for s in (await client.ok("GET", f"/v1/agents/{agent}", agent))["sessions"]
            if s["interaction_id"] == "chat-vip-2" and s["state"] == "offered"
        ]
        if not out:
            break
        for session in out:
            await desks[session["agent_id"]].ask({"type": "decline", "session_id": session["id"], "ref": session["id"]})
            declined.add(session["agent_id"])
    assert declined == set(AGENTS)  # three at once, then the one left in a new round
    # the winner ends its chat: the callbacks go out in order, so once that one is in, every
    # decision about vip-2 is too
    await desks[winner].ask({"type": "end", "session_id": sessions[winner], "ref": "end"})
    await notices_until(hooks, lambda: about("ended"))
    assert [n["data"] for n in hooks.notices if n.get("event_id") == "vip-2"] == [
        {"decision": "rejected", "reason": "no_agent_available"}
    ]
    agents = {a["id"]: a for a in (await client.ok("GET", "/v1/agents", "supervisor"))["agents"]}
    assert all(agents[a]["in_use"] == ZERO for a in AGENTS), agents
    for desk in desks.values():
        await desk.close()
