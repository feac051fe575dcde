"""A gateway on a real SQLite journal when input is hostile or the journal fails.

The gateway runs in-process (:func:`gateway.app.build_app` on a real HTTP port, with a
:class:`SqliteJournal` on a file under ``tmp_path``); the journal is made to fail the way it
does in production: a second, plain ``sqlite3`` connection holds the database's write lock
(as another process would), and data that SQLite cannot store is handed to it. Checked:

* bad input is refused 400 ``invalid_event`` naming the field, before the engine sees it
  (lone surrogates, deep nesting, non-finite numbers, timestamps out of range), and the
  gateway goes on working;
* a change the journal cannot store fails its own caller only (not the writes queued with
  or after it) and is undone; an engine failure half-way is undone too: a 5xx leaves the
  state as it was;
* nothing is answered before it is journaled, a ``duplicate`` included, and a duplicate of
  an event whose write failed does not claim success;
* after a transient journal error the gateway recovers by itself within a second of the
  database being writable again, and ``/readyz`` says not ready while it is not.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.webhook import signed_headers
from gateway.app import RUNTIME, build_app
from gateway.clock import ManualClock
from gateway.errors import GatewayError
from gateway.records import SqliteJournal
from gateway.runtime import Runtime
from tests.api.conftest import T0, VENDOR, WEBHOOK_SECRET, auth, make_config

pytestmark = pytest.mark.asyncio


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock (as another process could) until the block ends."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


@dataclass
class Live:
    app: web.Application
    base: str
    http: aiohttp.ClientSession
    clock: ManualClock
    db: Path

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    async def post_raw(self, raw: bytes) -> tuple[int, Any]:
        headers = signed_headers(WEBHOOK_SECRET, int(self.clock.now()), raw)
        async with self.http.post(f"{self.base}/v1/vendors/{VENDOR}/events", data=raw, headers=headers) as response:
            return response.status, await response.json()

    async def webhook(self, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.post_raw(json.dumps(body).encode())

    async def call(self, method: str, path: str, who: str = "supervisor", body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, headers=auth(who), json=body) as response:
            return response.status, await response.json()

    async def readyz(self) -> tuple[int, Any]:
        async with self.http.get(self.base + "/readyz") as response:
            return response.status, await response.json()


async def start(tmp_path: Path, *, busy_timeout_s: float = 5.0, name: str = "gw.db") -> tuple[web.AppRunner, Live]:
    clock = ManualClock(T0)
    db = tmp_path / name
    journal = SqliteJournal(db, busy_timeout_s=busy_timeout_s)
    app = build_app(make_config(), clock=clock, journal=journal)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    http = aiohttp.ClientSession()
    return runner, Live(app=app, base=f"http://{host}:{port}", http=http, clock=clock, db=db)


async def stop(runner: web.AppRunner, live: Live) -> None:
    await live.http.close()
    await runner.cleanup()


@pytest_asyncio.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Live]:
    runner, live = await start(tmp_path)
    yield live
    await stop(runner, live)


@pytest_asyncio.fixture
async def touchy(tmp_path: Path) -> AsyncIterator[Live]:
    """A gateway whose journal gives up on a held lock after 0.2 s (a transient error)."""
    runner, live = await start(tmp_path, busy_timeout_s=0.2)
    yield live
    await stop(runner, live)


def offer(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "offer",
        "channel": "chat",
        "interaction_id": f"i-{event_id}",
        "agent_id": "a1",
        **fields,
    }


async def ready(live: Live, *agents: str) -> None:
    for agent in agents:
        status, body = await live.call("PUT", f"/v1/agents/{agent}/presence", agent, {"state": "ready"})
        assert status == 200, body


async def assert_healthy(live: Live, event_id: str) -> str:
    """A normal offer is assigned and ``/readyz`` is ready; returns the session id."""
    status, body = await live.webhook(offer(event_id))
    assert (status, body["decision"]) == (200, "assigned"), body
    status, checks = await live.readyz()
    assert status == 200, checks
    return str(body["session_id"])


# ---------------------------------------------------------------------------- A1: bad input


BAD_BODIES = [
    # (raw JSON text, field named in the answer)
    (r'{"attributes": {"note": "\ud800"}}', "attributes.note"),
    (r'{"attributes": {"list": ["ok", {"x": "a\udfffb"}]}}', "attributes.list.1.x"),
    (r'{"attributes": {"\ud800key": 1}}', "attributes.\\ud800key"),
    (r'{"customer": {"name": "\udc00"}}', "customer.name"),
    (r'{"subject": "x\ud800"}', "subject"),
    (r'{"text": "\ud83d"}', "text"),
    (r'{"x_added_by_vendor": {"k": "\udbff"}}', "x_added_by_vendor.k"),  # unknown fields are ignored, not this
    (r'{"attributes": {"n": 1e999}}', "attributes.n"),
    (r'{"attributes": {"n": -1e400}}', "attributes.n"),
    ('{"attributes": ' + '{"a": ' * 600 + "1" + "}" * 600 + "}", "attributes"),
    ('{"attributes": {"deep": ' + "[" * 40 + "]" * 40 + "}}", "attributes.deep"),
    ('{"occurred_at": "9999-12-31T23:59:59-23:59"}', "occurred_at"),
    ('{"occurred_at": "0001-01-01T00:00:00+01:00"}', "occurred_at"),
]


@pytest.mark.parametrize(("extra", "field"), BAD_BODIES, ids=[f for _, f in BAD_BODIES])
async def test_bad_input_is_refused_400_naming_the_field_and_changes_nothing(gw: Live, extra: str, field: str) -> None:
    await ready(gw, "a1")
    base = json.dumps(offer("bad"))[:-1]  # the same offer, with the bad field added
    status, body = await gw.post_raw((base + ", " + extra[1:]).encode())
    assert status == 400, body
    assert body["error"]["code"] == "invalid_event"
    assert body["error"]["field"].startswith(field), body
    # nothing of it reached the engine: the same event id, fixed, is a fresh offer
    status, body = await gw.webhook(offer("bad"))
    assert (status, body["decision"]) == (200, "assigned"), body
    assert gw.runtime.ready


async def test_a_lone_surrogate_does_not_poison_the_journal(gw: Live, tmp_path: Path) -> None:
    """The field report: one such offer made every later request 503 while /readyz said ready."""
    await ready(gw, "a1", "a2")
    raw = json.dumps(offer("poison", attributes={"note": "\ud800"})).encode()  # json escapes it: \ud800
    assert b"\\ud800" in raw
    status, body = await gw.post_raw(raw)
    assert (status, body["error"]["code"], body["error"]["field"]) == (400, "invalid_event", "attributes.note")
    sid = await assert_healthy(gw, "after")
    status, _ = await gw.call("POST", f"/v1/sessions/{sid}/accept", "a1")
    assert status == 200
    status, agent = await gw.call("PUT", "/v1/agents/a2/presence", "a2", {"state": "not_ready", "reason": "break"})
    assert status == 200, agent


async def test_an_integer_beyond_64_bits_is_journaled_and_restored_exactly(tmp_path: Path) -> None:
    """Valid JSON that orjson cannot write (an integer beyond 64 bits) takes the standard
    library's path: it is assigned (no journal failure, no rebuild), and the journal gives
    back the same integer, not a float (orjson reads such integers as floats)."""
    runner, gw = await start(tmp_path)
    big = 2**70 + 1
    try:
        await ready(gw, "a1")
        status, body = await gw.webhook(offer("big", attributes={"account": big, "list": [big, -big]}))
        assert (status, body["decision"]) == (200, "assigned"), body
        assert gw.runtime.ready and gw.runtime.recoveries == 0
    finally:
        await stop(runner, gw)
    async with SqliteJournal(gw.db) as journal:
        snapshot = await journal.load(since=0)
    (event,) = [e for e in snapshot.events if e["event_id"] == "big"]
    attributes = event["event"]["attributes"]
    assert attributes == {"account": big, "list": [big, -big]}
    assert type(attributes["account"]) is int


# ---------------------------------------------------------------------------- A1: the safety net


async def test_a_change_the_journal_cannot_store_fails_its_caller_only_and_is_undone(tmp_path: Path) -> None:
    """Input checks are the first line; behind them, data that cannot be stored (here a note
    with a lone surrogate handed to the engine directly) must fail only its own caller, be
    undone, and never block the writes queued with it or after it."""
    runner, gw = await start(tmp_path)
    try:
        await ready(gw, "a1", "a2")
        sid = await assert_healthy(gw, "e1")
        status, _ = await gw.call("POST", f"/v1/sessions/{sid}/accept", "a1")
        assert status == 200
        runtime = gw.runtime

        good = asyncio.create_task(runtime.act(lambda e: e.set_presence("a2", "not_ready", "lunch")))
        await asyncio.sleep(0)  # its change is queued first
        with pytest.raises(GatewayError) as info:
            await runtime.act(lambda e: e.note(sid, "bad \ud800 text"))
        assert info.value.code == "invalid_request" and "surrogate" in info.value.message
        await good  # queued with the bad change: written and acknowledged all the same
        # the gateway rebuilds its state from the journal and goes on by itself
        await settle(lambda: runtime.ready)
        status, record = await gw.call("GET", f"/v1/sessions/{sid}", "a1")
        assert status == 200 and record["state"] == "active" and record["notes"] == [], record
        status, record = await gw.call("POST", f"/v1/sessions/{sid}/note", "a1", {"text": "a good note"})
        assert status == 200 and [n["text"] for n in record["notes"]] == ["a good note"], record
        await assert_healthy(gw, "e2")
        status, agent = await gw.call("GET", "/v1/agents/a2")
        assert agent["presence"] == {"state": "not_ready", "reason": "lunch"}
    finally:
        await stop(runner, gw)

    # all of it is in the journal: a restart shows the same
    runner, gw = await start(tmp_path)
    try:
        status, record = await gw.call("GET", f"/v1/sessions/{sid}", "a1")
        assert [n["text"] for n in record["notes"]] == ["a good note"], record
        status, agent = await gw.call("GET", "/v1/agents/a2")
        assert agent["presence"] == {"state": "not_ready", "reason": "lunch"}
        status, body = await gw.webhook(offer("e2"))
        assert body["decision"] == "duplicate", body
    finally:
        await stop(runner, gw)


async def test_an_engine_failure_half_way_answers_500_and_changes_nothing(gw: Live) -> None:
    await ready(gw, "a1")
    runtime = gw.runtime

    def half_way(engine: Any) -> None:
        engine.set_presence("a2", "ready")  # changed ...
        raise RuntimeError("an engine bug")  # ... then failed

    with pytest.raises(RuntimeError):
        await runtime.act(half_way)
    await settle(lambda: runtime.ready)
    status, agent = await gw.call("GET", "/v1/agents/a2")
    assert agent["presence"]["state"] == "offline", agent  # undone
    # the same through HTTP: a 500 from a REST call leaves nothing behind
    await assert_healthy(gw, "after")


# ---------------------------------------------------------------------------- A3: duplicates


async def test_a_duplicate_is_answered_only_once_the_original_is_journaled(gw: Live) -> None:
    await ready(gw, "a1")
    with write_lock(gw.db):  # the journal cannot commit (it waits up to busy_timeout 5 s)
        first = asyncio.create_task(gw.webhook(offer("twice")))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(gw.webhook(offer("twice")))
        await asyncio.sleep(0.3)
        assert not first.done()
        assert not second.done(), "a duplicate was answered before the original was durable"
    status, original = await first
    assert (status, original["decision"]) == (200, "assigned"), original
    status, duplicate = await second
    assert status == 200
    assert duplicate == {**original, "decision": "duplicate", "first_decision": "assigned"}


async def test_a_duplicate_of_an_event_whose_write_failed_does_not_claim_success(touchy: Live) -> None:
    await ready(touchy, "a1")
    with write_lock(touchy.db):  # held longer than the journal waits: the write fails
        first = asyncio.create_task(touchy.webhook(offer("lost")))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(touchy.webhook(offer("lost")))
        (status1, body1), (status2, body2) = await asyncio.gather(first, second)
    assert (status1, body1["error"]["code"]) == (503, "not_ready"), body1
    assert (status2, body2["error"]["code"]) == (503, "not_ready"), body2
    # the event was never journaled: once the journal is back, a resend is a fresh decision
    await settle(lambda: touchy.runtime.ready, timeout=2.0)
    status, body = await touchy.webhook(offer("lost"))
    assert (status, body["decision"]) == (200, "assigned"), body


# ---------------------------------------------------------------------------- A4: transient errors


async def test_a_transient_journal_error_heals_by_itself_and_readyz_tells_the_truth(touchy: Live) -> None:
    await ready(touchy, "a1", "a2", "a3")
    with write_lock(touchy.db):
        status, body = await touchy.webhook(offer("during", agent_id="a1"))
        assert (status, body["error"]["code"]) == (503, "not_ready"), body
        status, checks = await touchy.readyz()
        assert status == 503 and checks["error"]["checks"]["store"] == "down", checks
        assert "locked" in checks["error"]["checks"]["store_error"], checks
        async with touchy.http.get(touchy.base + "/metrics") as response:
            assert "cti_gateway_journal_up 0.0" in await response.text()
        await asyncio.sleep(0.5)
        status, checks = await touchy.readyz()  # still locked: still not ready
        assert status == 503, checks
    released = time.monotonic()
    # nobody polls /readyz now: the gateway must notice by itself
    while True:
        status, body = await touchy.webhook(offer(f"probe-{time.monotonic_ns()}", agent_id="a2"))
        if status == 200:
            break
        assert status == 503, body
        assert time.monotonic() - released < 1.0, "still refusing a second after the journal came back"
        await asyncio.sleep(0.05)
    assert body["decision"] == "assigned"
    status, checks = await touchy.readyz()
    assert status == 200, checks
    async with touchy.http.get(touchy.base + "/metrics") as response:
        metrics = await response.text()
    assert "cti_gateway_journal_up 1.0" in metrics and "cti_gateway_state_rebuilds_total 1.0" in metrics
    # the refused offer changed nothing: it is a fresh decision now
    status, body = await touchy.webhook(offer("during", agent_id="a1"))
    assert (status, body["decision"]) == (200, "assigned"), body


async def settle(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_desktop_connected_through_a_journal_failure_keeps_working(touchy: Live) -> None:
    """The state is rebuilt from the journal as a restart would, but a desktop still connected
    stays connected: no grace period starts, it keeps its focus and gets the next offer."""
    await ready(touchy, "a1")
    sid = await assert_healthy(touchy, "before")
    async with touchy.http.ws_connect(touchy.base + "/v1/agents/a1/ws", headers=auth("a1")) as ws:
        hello = await ws.receive_json(timeout=3)
        assert hello["type"] == "hello"
        status, _ = await touchy.call("POST", f"/v1/sessions/{sid}/accept", "a1")
        assert status == 200
        status, _ = await touchy.call("POST", f"/v1/sessions/{sid}/focus", "a1")
        assert status == 200
        with write_lock(touchy.db):
            status, body = await touchy.webhook(offer("during"))
            assert status == 503, body
        await settle(lambda: touchy.runtime.ready, timeout=2.0)
        assert touchy.runtime.recoveries == 1
        status, agent = await touchy.call("GET", "/v1/agents/a1")
        assert agent["desktop_connected"] is True, agent
        assert [s["focused"] for s in agent["sessions"] if s["id"] == sid] == [True], agent
        # long past the desktop grace period (60 s): the agent is still ready, not offline
        touchy.clock.advance(120)
        await touchy.runtime.act(lambda e: e.tick())
        status, agent = await touchy.call("GET", "/v1/agents/a1")
        assert agent["presence"]["state"] == "ready", agent
        status, body = await touchy.webhook(offer("after"))
        assert (status, body["decision"]) == (200, "assigned"), body
        while True:
            message = await ws.receive_json(timeout=3)
            if message["type"] == "session.offered":
                break
        assert message["session"]["id"] == body["session_id"]


async def test_a_call_cancelled_while_its_write_fails_leaves_no_trace(touchy: Live) -> None:
    """An adapter task cancelled mid-request (its connection dropped) must not leave the
    engine holding a change whose write then failed: the state is taken from the journal."""
    runtime = touchy.runtime
    with write_lock(touchy.db):
        call = asyncio.create_task(runtime.act(lambda e: e.set_presence("a2", "ready")))
        await asyncio.sleep(0.05)  # the change is queued, the journal waits for the lock
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not runtime.ready
        await asyncio.sleep(0.6)  # the write gives up on the lock (after 0.2 s): it failed
    await settle(lambda: runtime.ready, timeout=2.0)
    status, agent = await touchy.call("GET", "/v1/agents/a2")
    assert agent["presence"]["state"] == "offline", agent
