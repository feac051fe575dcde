"""The webhook vendor through the whole gateway: what reaches the vendor by callback, what the
gateway says when it cannot, and vendors' unknown event fields (issue 6 items 10 and 15).

A real gateway (:func:`gateway.app.build_app`, memory journal, manual clock) on a free
loopback port; the vendor's callback URL is a second real aiohttp server that checks every
signature.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from structlog.testing import capture_logs

import gateway.app
from adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from gateway.app import build_app
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.records.memory import MemoryJournal

from .conftest import T0, VENDOR, WEBHOOK_SECRET, Gateway, auth, make_config, receive_until

pytestmark = pytest.mark.asyncio

Logs = list[MutableMapping[str, Any]]


class Receiver:
    """The vendor's callback endpoint: keeps every notice whose signature is right."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []
        self.bad: list[bytes] = []
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = int(request.headers[TIMESTAMP_HEADER])
        if request.headers.get(SIGNATURE_HEADER) != sign(WEBHOOK_SECRET, timestamp, raw):
            self.bad.append(raw)
            return web.json_response({}, status=401)
        async with self.arrived:
            self.notices.append(json.loads(raw))
            self.arrived.notify_all()
        return web.json_response({})

    async def notice(self, action: str, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for notice in self.notices:
                if notice["action"] == action and all(notice["data"].get(k) == v for k, v in match.items()):
                    return notice
            return None

        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    with capture_logs() as entries:
        monkeypatch.setattr(gateway.app, "log", structlog.get_logger(gateway.app.__name__))
        yield entries


Start = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start(http: aiohttp.ClientSession) -> AsyncIterator[Start]:
    """Start a gateway whose webhook vendor has the given extra settings."""
    runners: list[web.AppRunner] = []

    async def run(**vendor_settings: Any) -> Gateway:
        config = make_config().model_dump(mode="json", exclude_none=True)
        config["vendors"][0].update(vendor_settings)
        clock = ManualClock(T0)
        app = build_app(GatewayConfig.model_validate(config), clock=clock, journal=MemoryJournal())
        runner = web.AppRunner(app, shutdown_timeout=5.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return Gateway(app=app, base=f"http://{host}:{port}", http=http, clock=clock)

    yield run
    for runner in reversed(runners):
        await runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield hooks, f"http://{host}:{port}/hooks"
    await runner.cleanup()


async def chat_offer(gw: Gateway, event_id: str, **fields: Any) -> dict[str, Any]:
    body = {"event_id": event_id, "type": "offer", "channel": "chat", "interaction_id": f"i-{event_id}", **fields}
    response = await gw.webhook(body)
    answer: dict[str, Any] = await response.json()
    return answer


# ---------------------------------------------------------------------------- item 10: callbacks


async def test_with_a_callback_url_transfers_work_and_every_action_reaches_the_vendor_signed(
    start: Start, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    gw = await start(callback_url=url, callback_backoff_s=0.01)
    await gw.ready("a1", "a2")
    answer = await chat_offer(gw, "e1", agent_id="a1")
    sid = answer["session_id"]
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    accepted = await hooks.notice("accepted", session_id=sid)
    assert accepted["interaction_id"] == "i-e1" and accepted["data"]["agent_id"] == "a1"

    await gw.json("POST", f"/v1/sessions/{sid}/send", "a1", json={"text": "one moment"})
    reply = await hooks.notice("reply", session_id=sid)
    assert reply["data"]["text"] == "one moment"

    # the shipped webhook can transfer now: no vendor_unsupported
    target = await gw.json("POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2"})
    moved = await hooks.notice("transferred", from_session_id=sid)
    assert moved["data"] == {
        "agent_id": "a2",
        "session_id": target["target"]["id"],
        "mode": "blind",
        "from_agent_id": "a1",
        "from_session_id": sid,
    }
    new_sid = moved["data"]["session_id"]
    await gw.json("POST", f"/v1/sessions/{new_sid}/accept", "a2")
    await gw.json("POST", f"/v1/sessions/{new_sid}/end", "a2")
    ended = await hooks.notice("ended", session_id=new_sid)
    assert ended["data"]["agent_id"] == "a2"

    # a late decision: a targeted offer that times out goes back as a rejection
    late = await chat_offer(gw, "e2", agent_id="a1")
    assert late["decision"] == "assigned"
    await gw.advance(31)
    decision = await hooks.notice("decision", decision="rejected")
    assert (decision["event_id"], decision["data"]) == ("e2", {"decision": "rejected", "reason": "offer_timeout"})
    assert hooks.bad == []

    ready = await gw.json("GET", "/readyz")
    assert ready["warnings"] == []
    assert ready["vendors"][VENDOR]["can_transfer"] is True
    assert ready["vendors"][VENDOR]["callbacks"]["state"] == "ok"


async def test_without_a_callback_url_one_start_warning_and_readyz_say_what_does_not_reach_the_vendor(
    start: Start, logs: Logs
) -> None:
    gw = await start()
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "vendor_warning" and warning["vendor"] == VENDOR
    for words in ("callback_url", "transfers are refused", "late decisions", "chat replies"):
        assert words in warning["warning"]

    ready = await gw.json("GET", "/readyz")
    assert ready["status"] == "ready"  # a warning, not a reason to be unready
    assert ready["warnings"] == [f"{VENDOR}: {warning['warning']}"]
    assert ready["vendors"][VENDOR]["can_transfer"] is False

    # what is not sent is counted, not silently dropped
    await gw.ready("a1", "a2")
    sid = (await chat_offer(gw, "e1", agent_id="a1"))["session_id"]
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    await gw.json("POST", f"/v1/sessions/{sid}/send", "a1", json={"text": "hi"})
    response = await gw.request("POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2"})
    assert response.status == 409 and (await response.json())["error"]["code"] == "vendor_unsupported"
    await gw.runtime.act(lambda engine: None)  # let the vendor sender catch up
    for _ in range(100):
        callbacks = (await gw.json("GET", "/readyz"))["vendors"][VENDOR]["callbacks"]
        if callbacks["not_sent"] == {"accepted": 1, "reply": 1}:
            break
        await asyncio.sleep(0.01)
    assert callbacks == {"state": "off", "not_sent": {"accepted": 1, "reply": 1}}


async def test_an_unreachable_callback_url_never_blocks_nor_makes_the_gateway_unready(start: Start) -> None:
    gw = await start(callback_url="http://127.0.0.1:9/nobody", callback_backoff_s=0.01, callback_max_attempts=2)
    await gw.ready("a1", "a2")
    sid = (await chat_offer(gw, "e1", agent_id="a1"))["session_id"]
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    for _ in range(300):
        callbacks = (await gw.json("GET", "/readyz"))["vendors"][VENDOR]["callbacks"]
        if callbacks["given_up"] == 1:
            break
        await asyncio.sleep(0.01)
    assert callbacks["state"] == "failing" and callbacks["last_problem"]
    ready = await gw.json("GET", "/readyz")
    assert ready["status"] == "ready" and ready["adapters"] == {VENDOR: "up"}
    await gw.json("POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2"})
    assert (await chat_offer(gw, "e2", queue="support"))["decision"] == "assigned"


# ---------------------------------------------------------------------------- item 15: unknown fields


async def test_unknown_event_fields_are_ignored_and_counted_per_vendor(gw: Gateway) -> None:
    await gw.ready("a1")
    answer = await chat_offer(gw, "u1", queue="support", colour="red", customer={"name": "Jo", "vip": True})
    assert answer["decision"] == "assigned"
    session = await gw.json("GET", f"/v1/sessions/{answer['session_id']}", "supervisor")
    assert session["customer"] == {"address": None, "name": "Jo"}
    text = await (await gw.request("GET", "/metrics")).text()
    assert f'cti_gateway_event_unknown_fields_total{{vendor="{VENDOR}"}} 2.0' in text


async def test_a_strict_vendor_refuses_unknown_fields(start: Start) -> None:
    gw = await start(strict=True)
    response = await gw.webhook(
        {"event_id": "s1", "type": "offer", "channel": "chat", "interaction_id": "i", "queue": "support", "x": 1}
    )
    body = await response.json()
    assert response.status == 400 and (body["error"]["code"], body["error"]["field"]) == ("invalid_event", "x")


async def test_the_supervisor_sees_a_late_decision_notice_too(start: Start, receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    gw = await start(callback_url=url)
    ws = await gw.http.ws_connect(gw.url("/v1/events/ws"), headers=auth("supervisor"))
    await gw.ready("a1")
    await chat_offer(gw, "e1", agent_id="a1")
    await gw.advance(31)
    notice = await receive_until(ws, "vendor.notice", action="decision")
    assert notice["data"] == {"decision": "rejected", "reason": "offer_timeout"}
    await hooks.notice("decision")
    await ws.close()
