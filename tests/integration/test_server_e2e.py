"""The gateway end to end, as users run it: ``python -m gateway run`` as a real process, real
HTTP and WebSocket clients, the real clock, the SQLite journal.

The same behaviour is tested in-process, with a manual clock and finer cases, in
``tests/api`` (REST, desktop socket) and ``tests/adapters`` (the webhook); here it is the
whole process: the shipped config out of the box, a bad config's exit status, the desktop
flow with real elapsed times in the record, a crash with a desktop reconnecting, every
rejection reason (late ones through the vendor's callback URL), and refused webhooks that
must leave no trace.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

from .conftest import GatewayFactory
from .live import ROOT, LiveClient, free_port, sha, sqlite_url

pytestmark = pytest.mark.asyncio

VENDOR = "crm"
SECRET = "e2e-webhook-secret-0123456789"
TOKENS = {
    "supervisor": "e2e-supervisor-token",
    **{a: f"e2e-{a}-token" for a in ("d1", "r1", "r2", "r3", "r4")},
}
ZERO = {"sessions": 0, "units": 0, "voice": 0, "chat": 0, "email": 0, "manual": 0}
WRAP_S = 1.0


def config(tmp_path: Path, *, callback_url: str | None = None) -> dict[str, Any]:
    vendor: dict[str, Any] = {"name": VENDOR, "adapter": "webhook", "secret": SECRET}
    if callback_url is not None:
        vendor.update(callback_url=callback_url, callback_backoff_s=0.05, callback_timeout_s=2)
    long = {"voice": 600, "chat": 600, "email": 600}
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": 600},
        "store": {"url": sqlite_url(tmp_path / "e2e.db")},
        "capacity_profiles": {
            "desk": {"max_sessions": 4, "reserved_inbound": 1, "offer_timeout_s": long, "wrap_up_s": {"chat": WRAP_S}},
            "small": {"max_sessions": 2, "channels": {"voice": 1}, "offer_timeout_s": long},
            "quick": {"max_sessions": 2, "offer_timeout_s": {"voice": 0.5, "chat": 600, "email": 600}},
        },
        "queues": [
            {"name": "help"},
            {"name": "busy", "on_full": "reject"},
            {"name": "hold", "on_full": "wait", "max_wait_s": 0.5},
        ],
        "agents": [
            {"id": "d1", "name": "Desk", "profile": "desk", "queues": ["help"], "token_sha256": sha(TOKENS["d1"])},
            {
                "id": "r1",
                "name": "R1",
                "profile": "small",
                "queues": ["busy", "hold"],
                "token_sha256": sha(TOKENS["r1"]),
            },
            {"id": "r2", "name": "R2", "profile": "quick", "token_sha256": sha(TOKENS["r2"])},
            {"id": "r3", "name": "R3", "profile": "small", "token_sha256": sha(TOKENS["r3"])},
            {"id": "r4", "name": "R4", "profile": "small", "token_sha256": sha(TOKENS["r4"])},
        ],
        "vendors": [vendor],
    }


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def client_for(http: aiohttp.ClientSession, base: str) -> LiveClient:
    return LiveClient(http, base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)


def offer(event_id: str, channel: str = "chat", **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "offer", "channel": channel, "interaction_id": f"i-{event_id}", **fields}


# ---------------------------------------------------------------------------- desktop socket helpers


class Desktop:
    """An agent desktop: a WebSocket whose notices are kept while waiting for acks."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, client: LiveClient, agent_id: str) -> Desktop:
        ws = await http.ws_connect(f"{client.base}/v1/agents/{agent_id}/ws", headers=client.headers(agent_id))
        return cls(ws)

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def until(self, type_: str, timeout: float = 5.0, **session: Any) -> dict[str, Any]:
        """Skip messages until one of ``type_`` whose ``session`` has the given fields."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            if message["type"] == type_ and all(message.get("session", {}).get(k) == v for k, v in session.items()):
                return message

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a message with a ref; return its ack (an error fails). Notices meanwhile are kept."""
        await self.ws.send_json(message)
        deadline = time.monotonic() + 5.0
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            reply: dict[str, Any] = json.loads(msg.data)
            if reply["type"] in ("ack", "error") and reply.get("ref") == message["ref"]:
                assert reply["type"] == "ack", reply
                return reply
            self.backlog.append(reply)

    async def close(self) -> None:
        await self.ws.close()


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------- the run command


async def test_the_shipped_config_runs_out_of_the_box(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    port = free_port()
    # no --config: config/gateway.yaml of the working directory; its store creates ./data
    proc = gateway_process(args=["run", "--port", str(port)], port=port, cwd=tmp_path)
    proc.start()
    first = proc.stdout().splitlines()[0]
    assert first == (
        f"cti-gateway {version('cti-gateway')} listening on http://127.0.0.1:{port} "
        "(config config/gateway.yaml, store sqlite:///data/gateway.db)"
    )
    assert (tmp_path / "data" / "gateway.db").is_file()
    async with http.get(f"{proc.base}/healthz") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}

    # the README's quick start, with the sample credentials from the config's comments
    client = LiveClient(
        http,
        proc.base,
        tokens={"ada": "agent-a1001-sample", "supervisor": "supervisor-sample"},
        vendor="crm-hooks",
        secret="crm-hooks-sample-secret",
    )
    await client.ok("PUT", "/v1/agents/a1001/presence", "ada", json_body={"state": "ready"})
    status, body = await client.webhook(
        {
            "event_id": "e-1",
            "type": "offer",
            "channel": "chat",
            "interaction_id": "chat-1",
            "queue": "support",
            "customer": {"name": "Jo"},
        }
    )
    assert status == 200 and body["decision"] == "assigned" and body["agent_id"] == "a1001", body
    agent = await client.ok("GET", "/v1/agents/a1001", "supervisor")
    assert agent["in_use"]["chat"] == 1 and agent["sessions"][0]["label"] == "Chat: Jo"

    # the shipped install can transfer (issue 6 item 10): its vendor has a callback URL,
    # where nothing listens; the callbacks fail, are retried and logged, and block nothing
    assert proc.log_events("vendor_warning") == []
    sid = body["session_id"]
    client.tokens["grace"] = "agent-a1002-sample"
    await client.ok("PUT", "/v1/agents/a1002/presence", "grace", json_body={"state": "ready"})
    await client.ok("POST", f"/v1/sessions/{sid}/accept", "ada")
    moved = await client.ok("POST", f"/v1/sessions/{sid}/transfer", "ada", json_body={"to_agent": "a1002"})
    assert moved["target"]["agent_id"] == "a1002" and moved["target"]["state"] == "offered"
    deadline = time.monotonic() + 10
    while not proc.log_events("callback_down"):
        assert time.monotonic() < deadline, proc.stderr()[-2000:]
        await asyncio.sleep(0.05)
    ready = await client.ok("GET", "/readyz")
    assert ready["status"] == "ready" and ready["vendors"]["crm-hooks"]["callbacks"]["state"] == "failing"
    assert await asyncio.to_thread(proc.terminate) == 0


async def test_a_bad_config_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "server: {port: 8080, colour: blue}\ncapacity_profiles:\n  p: {max_sessions: 0}\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "run", "--config", "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        "bad.yaml:1: server.colour: unknown key",
        "bad.yaml:3: capacity_profiles.p.max_sessions: input should be greater than or equal to 1",
    ]
    assert "listening" not in done.stdout
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------- the desktop flow


async def test_the_desktop_flow_fills_the_record_with_real_times(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = gateway_process(config(tmp_path)).start()
    client = client_for(http, proc.base)
    desk = await Desktop.connect(http, client, "d1")
    hello = await desk.receive()
    assert hello["type"] == "hello" and hello["agent"]["sessions"] == []
    assert hello["agent"]["presence"]["state"] == "offline" and hello["agent"]["desktop_connected"] is True
    await desk.ask({"type": "presence", "state": "ready", "ref": "p"})

    # the offer alerts the desktop and takes no focus
    status, decision = await client.webhook(offer("flow-1", customer={"name": "Jo"}, queue="help"))
    assert status == 200 and decision["decision"] == "assigned" and decision["agent_id"] == "d1", decision
    sid = decision["session_id"]
    offered = await desk.until("session.offered", id=sid)
    assert offered["alert"] is True and "focus" not in offered
    assert offered["session"]["focused"] is False and offered["session"]["state"] == "offered"
    assert offered["session"]["label"] == "Chat: Jo"

    t_accept = time.monotonic()
    accepted = await desk.ask({"type": "accept", "session_id": sid, "ref": 1})
    t_accepted = time.monotonic()
    assert accepted["session"]["state"] == "active" and accepted["session"]["focused"] is False

    t_focus = time.monotonic()
    focused = await desk.ask({"type": "focus", "session_id": sid, "ref": 2})
    t_focused = time.monotonic()
    assert focused["session"]["focused"] is True
    await asyncio.sleep(0.4)

    # a manual session is created active and focused: the chat leaves the focus
    t_manual = time.monotonic()
    manual = await desk.ask({"type": "new_session", "label": "callback", "ref": 3})
    t_manualled = time.monotonic()
    assert manual["session"]["channel"] == "manual" and manual["session"]["state"] == "active"
    assert manual["session"]["focused"] is True
    await desk.until("session.updated", id=sid, focused=False)
    await asyncio.sleep(0.2)

    t_end = time.monotonic()
    ended = await desk.ask({"type": "end", "session_id": sid, "ref": 4})
    t_ended = time.monotonic()
    assert ended["session"]["state"] == "wrap_up" and ended["session"]["outcome"] == "completed"
    closed = await desk.until("session.closed", timeout=WRAP_S + 5, id=sid)
    assert closed["session"]["state"] == "closed"

    record = await client.ok("GET", f"/v1/sessions/{sid}", "d1")
    assert (record["state"], record["outcome"], record["channel"]) == ("closed", "completed", "chat")
    margin = 10  # ms: clock reads on either side, rounding
    # handle time: accepted -> ended, as the record's own timestamps say and as the client saw it
    # (the stamps are truncated to ms, handle_ms is rounded: they agree within 1.5 ms)
    assert abs(record["handle_ms"] - 1000 * (epoch(record["ended_at"]) - epoch(record["accepted_at"]))) < 2
    assert 1000 * (t_end - t_accepted) - margin <= record["handle_ms"] <= 1000 * (t_ended - t_accept) + margin
    # wrap-up: the timer fires at its deadline exactly
    assert record["wrap_ms"] == WRAP_S * 1000
    assert abs(epoch(record["closed_at"]) - epoch(record["ended_at"]) - WRAP_S) < 0.002
    # focus: from the focus to the manual session taking it
    assert 1000 * (t_manual - t_focused) - margin <= record["focus_ms"] <= 1000 * (t_manualled - t_focus) + margin
    assert record["focus_ms"] < record["handle_ms"]

    report = await client.ok("GET", "/v1/reports/sessions", "supervisor")
    row = next(r for r in report["sessions"] if r["session_id"] == sid)
    for column in ("handle_ms", "focus_ms", "wrap_ms"):
        assert row[column] == record[column], column
    agent = await client.ok("GET", "/v1/agents/d1", "d1")
    assert [(s["channel"], s["focused"]) for s in agent["sessions"]] == [("manual", True)]
    await desk.close()


async def test_after_a_crash_the_reconnecting_desktop_gets_hello_with_its_open_sessions(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = gateway_process(config(tmp_path)).start()
    client = client_for(http, proc.base)
    desk = await Desktop.connect(http, client, "d1")
    assert (await desk.receive())["type"] == "hello"
    await desk.ask({"type": "presence", "state": "ready", "ref": "p"})
    _, first = await client.webhook(offer("crash-1", agent_id="d1", customer={"name": "Ann"}))
    _, second = await client.webhook(offer("crash-2", "email", agent_id="d1", subject="Invoice"))
    await desk.ask({"type": "accept", "session_id": first["session_id"], "ref": 1})
    await desk.ask({"type": "focus", "session_id": first["session_id"], "ref": 2})

    proc.kill()
    gone = await desk.ws.receive(timeout=5)
    assert gone.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), gone
    await desk.close()
    proc.start()

    again = await Desktop.connect(http, client, "d1")
    hello = await again.receive()
    assert hello["type"] == "hello"
    agent = hello["agent"]
    assert agent["presence"]["state"] == "ready" and agent["desktop_connected"] is True
    sessions = {s["id"]: s for s in agent["sessions"]}
    assert {sid: (s["state"], s["focused"]) for sid, s in sessions.items()} == {
        first["session_id"]: ("active", True),
        second["session_id"]: ("offered", False),
    }
    assert sessions[second["session_id"]]["subject"] == "Invoice"
    assert agent["in_use"] == {**ZERO, "sessions": 2, "units": 2, "chat": 1, "email": 1}
    # the restored sessions work: end one, accept the other
    ended = await again.ask({"type": "end", "session_id": first["session_id"], "ref": 3})
    assert ended["session"]["state"] == "wrap_up"
    accepted = await again.ask({"type": "accept", "session_id": second["session_id"], "ref": 4})
    assert accepted["session"]["state"] == "active"
    await again.close()


async def test_focus_time_never_counts_the_downtime_or_a_missing_desktop(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Issue 6 item 8: "2.3 s became 6.9 s across a 2 s stop". Focus time counts only while a
    desktop is connected; a stop (SIGTERM) or a crash (SIGKILL) never adds to it."""
    proc = gateway_process(config(tmp_path)).start()
    client = client_for(http, proc.base)

    async def focus_ms(sid: str) -> int:
        record = await client.ok("GET", f"/v1/sessions/{sid}", "d1")
        assert record["focused"] is True
        return int(record["focus_ms"])

    desk = await Desktop.connect(http, client, "d1")
    assert (await desk.receive())["type"] == "hello"
    await desk.ask({"type": "presence", "state": "ready", "ref": "p"})
    sid = (await desk.ask({"type": "new_session", "ref": "n"}))["session"]["id"]
    await asyncio.sleep(1.0)
    before_stop = await focus_ms(sid)
    assert before_stop >= 900
    assert proc.terminate() == 0
    stopped = time.monotonic()
    await desk.close()
    await asyncio.sleep(1.5)  # the downtime
    proc.start()
    down = time.monotonic() - stopped
    after_stop = await focus_ms(sid)
    # counted until the desktop was closed by the shutdown, none of the downtime
    assert before_stop <= after_stop < before_stop + 500, (before_stop, after_stop, down)
    await asyncio.sleep(0.5)  # no desktop: nothing counts
    assert await focus_ms(sid) == after_stop

    desk = await Desktop.connect(http, client, "d1")
    hello = await desk.receive()
    assert [s["focused"] for s in hello["agent"]["sessions"]] == [True]
    await asyncio.sleep(1.0)
    before_kill = await focus_ms(sid)
    assert before_kill >= after_stop + 900
    proc.kill()
    await desk.close()
    await asyncio.sleep(1.0)
    proc.start()
    after_kill = await focus_ms(sid)
    # a crash loses at most the last focus checkpoint's worth (5 s), never adds the downtime
    assert before_kill - 5500 <= after_kill <= before_kill + 200, (before_kill, after_kill)
    await asyncio.sleep(0.3)
    assert await focus_ms(sid) == after_kill


# ---------------------------------------------------------------------------- decisions


class Receiver:
    """The vendor's callback URL: records the signed late notices."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = int(request.headers[TIMESTAMP_HEADER])
        assert request.headers[SIGNATURE_HEADER] == sign(SECRET, timestamp, raw)
        self.notices.append(json.loads(raw))
        self.arrived.set()
        return web.json_response({"ok": True})

    async def decision_for(self, event_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for notice in self.notices:
                if notice["action"] == "decision" and notice["event_id"] == event_id:
                    return notice
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield hooks, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def test_every_rejection_reason_with_its_status_and_duplicates(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    proc = gateway_process(config(tmp_path, callback_url=url)).start()
    client = client_for(http, proc.base)
    for agent_id in ("r1", "r2"):
        await client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})
    await client.ok("PUT", "/v1/agents/r4/presence", "r4", json_body={"state": "not_ready"})

    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    cases = [
        # r1 (small: 2 sessions, 1 voice) takes a call and a chat, then nothing fits
        (offer("e1", "voice", agent_id="r1"), 200, "assigned"),
        (offer("e2", "voice", agent_id="r1"), 409, "channel_at_capacity"),
        (offer("e3", "chat", agent_id="r1"), 200, "assigned"),
        (offer("e4", "email", agent_id="r1"), 409, "agent_at_capacity"),
        (offer("e5", agent_id="ghost"), 409, "unknown_agent"),
        (offer("e6", agent_id="r3"), 409, "agent_offline"),
        (offer("e7", agent_id="r4"), 409, "agent_not_ready"),
        (offer("e8", queue="busy"), 409, "no_agent_available"),
        (offer("e9", queue="hold"), 200, "queued"),  # later: queue_timeout
        (offer("e10", "voice", agent_id="r2"), 200, "assigned"),  # later: offer_timeout
    ]
    for event, status, expected in cases:
        got, body = await client.webhook(event)
        answers[event["event_id"]] = (got, body)
        if status == 409:
            assert (got, body) == (409, {"decision": "rejected", "reason": expected}), event
        else:
            assert got == 200 and body["decision"] == expected, (event, body)
    assert answers["e1"][1]["agent_id"] == "r1" and answers["e10"][1]["agent_id"] == "r2"

    # late decisions reach the vendor's callback URL (signed), with the offer's event id
    timeout_notice = await hooks.decision_for("e10")
    assert timeout_notice["interaction_id"] == "i-e10"
    assert timeout_notice["data"] == {"decision": "rejected", "reason": "offer_timeout"}
    queue_notice = await hooks.decision_for("e9")
    assert queue_notice["data"] == {"decision": "rejected", "reason": "queue_timeout"}
    r2 = await client.ok("GET", "/v1/agents/r2", "supervisor")
    assert r2["in_use"] == ZERO and r2["sessions"] == []

    # a manual session refused by capacity: 409 with the reason as the error code
    status, body = await client.call("POST", "/v1/agents/r1/sessions", "r1", json_body={})
    assert status == 409 and body["error"]["code"] == "agent_at_capacity", body
    # a webhook vendor with a callback URL can transfer: the vendor hears of it there
    sid = answers["e1"][1]["session_id"]
    await client.ok("POST", f"/v1/sessions/{sid}/accept", "r1")
    moved = await client.ok("POST", f"/v1/sessions/{sid}/transfer", "r1", json_body={"to_agent": "r2"})
    assert moved["target"]["agent_id"] == "r2"
    deadline = time.monotonic() + 5
    while not [n for n in hooks.notices if n["action"] == "transferred"]:
        assert time.monotonic() < deadline, hooks.notices
        await asyncio.sleep(0.02)
    [transferred] = [n for n in hooks.notices if n["action"] == "transferred"]
    assert transferred["data"]["from_session_id"] == sid and transferred["data"]["agent_id"] == "r2"

    # duplicates: 200 with the first answer (even of a rejection, or of a decision since
    # overtaken), and nothing changes
    before = await client.ok("GET", "/v1/agents", "supervisor")
    for event, _status, _expected in cases:
        status, body = await client.webhook(event)
        first = answers[event["event_id"]][1]
        assert (status, body) == (200, {**first, "decision": "duplicate", "first_decision": first["decision"]})
    # a duplicate is decided by event id alone, whatever the body says now
    status, body = await client.webhook(offer("e2", "chat", agent_id="r2"))
    assert (status, body) == (
        200,
        {"decision": "duplicate", "first_decision": "rejected", "reason": "channel_at_capacity"},
    )
    assert await client.ok("GET", "/v1/agents", "supervisor") == before


async def test_refused_webhooks_change_nothing(
    gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = gateway_process(config(tmp_path)).start()
    client = client_for(http, proc.base)
    await client.ok("PUT", "/v1/agents/d1/presence", "d1", json_body={"state": "ready"})
    event = offer("x1", agent_id="d1")
    raw = json.dumps(event).encode()
    now = int(time.time())

    def signed(body: bytes, **kwargs: Any) -> dict[str, str]:
        return client.signed(body, **kwargs)

    oversize = json.dumps({**event, "text": "x" * (64 * 1024)}).encode()
    cases: list[tuple[str, bytes, dict[str, str], str, int, str, str | None]] = [
        ("wrong secret", raw, signed(raw, secret="not-the-secret-0123456789"), VENDOR, 401, "bad_signature", None),
        ("stale timestamp", raw, signed(raw, timestamp=now - 400), VENDOR, 401, "bad_signature", None),
        ("future timestamp", raw, signed(raw, timestamp=now + 400), VENDOR, 401, "bad_signature", None),
        ("unsigned", raw, {"Content-Type": "application/json"}, VENDOR, 401, "bad_signature", None),
        ("signed another body", raw, signed(raw + b" "), VENDOR, 401, "bad_signature", None),
        ("oversize", oversize, signed(oversize), VENDOR, 413, "body_too_large", None),
        ("malformed", raw[:-1], signed(raw[:-1]), VENDOR, 400, "invalid_event", "body"),
        ("no channel", json.dumps({**event, "channel": None}).encode(), {}, VENDOR, 400, "invalid_event", "channel"),
        (
            "bad priority",
            json.dumps({**event, "priority": 5000}).encode(),
            {},
            VENDOR,
            400,
            "invalid_event",
            "priority",
        ),
        ("unknown vendor", raw, signed(raw), "nobody", 404, "unknown_vendor", None),
    ]
    for name, body, headers, vendor, status, code, field in cases:
        got, answer = await client.post_raw(body, headers or signed(body), vendor=vendor)
        assert got == status and answer["error"]["code"] == code, (name, got, answer)
        if field is not None:
            assert answer["error"]["field"] == field, (name, answer)
        agent = await client.ok("GET", "/v1/agents/d1", "supervisor")
        assert agent["in_use"] == ZERO and agent["sessions"] == [], name

    # none of them used up the event id: signed properly, it is a first answer, not a duplicate
    status, answer = await client.webhook(event)
    assert status == 200 and answer["decision"] == "assigned", answer
    agent = await client.ok("GET", "/v1/agents/d1", "supervisor")
    assert agent["in_use"] == {**ZERO, "sessions": 1, "units": 1, "chat": 1}
    assert re.fullmatch(r"[0-9a-f]{32}", answer["session_id"])
