"""The agent desktop (/desk) and the wallboard (/board) in real Chromium, against a real
gateway process with a SQLite journal and a real HTTP receiver as the vendor's callback.

One scenario, step by step, as an agent and a supervisor would live it: sign in, go ready,
two chats and a call offered by signed webhooks (alerting, never taking the focus), accept
them, switch tabs (the records' focus times match the time each tab was in front), a
customer message in a tab in the background (badge), a reply typed in the box (reaches the
vendor's callback URL), a manual session refused while only the reserved session is free
(the exact reason shown), the board's counts after each step, a rejection under its reason,
a waiting interaction under its queue, a record opened from the board, the day's CSV, and a
gateway restart the desk and the board recover from by themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.records.report import REPORT_COLUMNS
from tests.integration.live import GatewayProcess, LiveClient, free_port, sha, sqlite_url, write_config

pytestmark = pytest.mark.asyncio

AGENT_TOKEN = "desk-agent-token-a1"
COLLEAGUE_TOKEN = "desk-agent-token-a2"
SUPERVISOR_TOKEN = "desk-supervisor-token"
SECRET = "desk-webhook-secret-0123456789"
VENDOR = "crm"
#: the focus time of a record may differ from the time its tab was in front by this much
FOCUS_TOLERANCE_MS = 150


class Receiver:
    """The vendor's callback endpoint: a real HTTP server that checks each signature."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = request.headers["X-Gateway-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
        assert request.headers["X-Gateway-Signature"] == f"sha256={expected}"
        self.bodies.append(json.loads(raw))
        self.arrived.set()
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cti-callbacks", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def wait_for(self, action: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for body in self.bodies:
                if body["action"] == action:
                    return body
            left = deadline - time.monotonic()
            assert left > 0, f"no {action!r} callback within {timeout} s: {self.bodies}"
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass


def config(tmp_path: Path, port: int, callback_port: int) -> dict[str, Any]:
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "supervisor_token_sha256": sha(SUPERVISOR_TOKEN),
            "access_log": True,  # every request logged: the test checks no token is
            "desktop_grace_s": 60,
        },
        "store": {"url": sqlite_url(tmp_path / "gateway.db")},
        "capacity_profiles": {
            "desk": {
                "max_sessions": 4,
                "reserved_inbound": 1,
                "channels": {"voice": 1, "chat": 3, "email": 2, "manual": 2},
                "offer_timeout_s": {"voice": 120, "chat": 120, "email": 120},
                "wrap_up_s": {"voice": 30},
            }
        },
        "queues": [{"name": "support"}, {"name": "sales", "on_full": "wait", "max_wait_s": 600}],
        "agents": [
            {"id": "a1", "name": "Ada", "profile": "desk", "queues": ["support"], "token_sha256": sha(AGENT_TOKEN)},
            {
                "id": "a2",
                "name": "Grace",
                "profile": "desk",
                "queues": ["support", "sales"],
                "token_sha256": sha(COLLEAGUE_TOKEN),
            },
        ],
        "vendors": [
            {
                "name": VENDOR,
                "adapter": "webhook",
                "secret": SECRET,
                "callback_url": f"http://127.0.0.1:{callback_port}/cti-callbacks",
                "callback_backoff_s": 0.1,
            }
        ],
    }


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, receiver: Receiver) -> AsyncIterator[GatewayProcess]:
    port = free_port()
    path = write_config(tmp_path / "gateway.yaml", config(tmp_path, port, receiver.port))
    process = GatewayProcess(["run", "--config", str(path)], port=port, cwd=tmp_path, log_dir=tmp_path)
    process.start()
    yield process
    process.stop()


async def set_visibility(page: Any, visibility: str) -> float:
    """Make the page hidden or visible as the browser does when another window covers it;
    returns the page's clock (``performance.now()``) at that moment."""
    now: float = await page.evaluate(
        """(visibility) => {
            Object.defineProperty(document, "visibilityState", {value: visibility, configurable: true});
            Object.defineProperty(document, "hidden", {value: visibility === "hidden", configurable: true});
            const at = performance.now();
            document.dispatchEvent(new Event("visibilitychange"));
            return at;
        }""",
        visibility,
    )
    return now


async def focused_soon(client: LiveClient, session_id: str, timeout: float = 5.0) -> None:
    """Wait until the gateway holds the session as focused (the desk's message is on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        record = await client.ok("GET", f"/v1/sessions/{session_id}", "a1")
        if record["focused"]:
            return
        assert time.monotonic() < deadline, f"session {session_id} was not focused within {timeout} s: {record}"
        await asyncio.sleep(0.02)


async def focus_of(client: LiveClient, session_id: str) -> int:
    """The session's focus time, read once the gateway has it unfocused (then it is final)."""
    deadline = time.monotonic() + 5.0
    while True:
        record = await client.ok("GET", f"/v1/sessions/{session_id}", "a1")
        if not record["focused"]:
            focus_ms: int = record["focus_ms"]
            return focus_ms
        assert time.monotonic() < deadline, f"session {session_id} still focused: {record}"
        await asyncio.sleep(0.02)


async def test_an_agent_day_on_the_desk_and_the_board(
    browser: Any, gateway: GatewayProcess, receiver: Receiver, artifacts: Path
) -> None:
    base = gateway.base
    outside: list[str] = []
    problems: list[str] = []

    async def new_page() -> Any:
        context = await browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
        page = await context.new_page()
        page.set_default_timeout(10_000)
        page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        return page

    async with aiohttp.ClientSession() as http:
        client = LiveClient(
            http,
            base,
            tokens={"a1": AGENT_TOKEN, "supervisor": SUPERVISOR_TOKEN},
            vendor=VENDOR,
            secret=SECRET,
        )

        async def offer(event_id: str, channel: str, interaction: str, name: str, **extra: Any) -> tuple[int, Any]:
            return await client.webhook(
                {
                    "event_id": event_id,
                    "type": "offer",
                    "channel": channel,
                    "interaction_id": interaction,
                    "customer": {"name": name, "address": f"{name.lower()}@example.com"},
                    "subject": f"{name}'s question",
                    **extra,
                }
            )

        # ------------------------------------------------------------ sign in (board, desk)
        board = await new_page()
        await board.goto(f"{base}/board")
        await board.fill("#token", SUPERVISOR_TOKEN)
        await board.click("#signin-form button")
        await board.wait_for_selector("body[data-conn=online]")
        a1_row = board.locator("tr[data-agent=a1]")
        await a1_row.locator("[data-testid=presence]", has_text="offline").wait_for()

        desk = await new_page()
        await desk.goto(f"{base}/desk")
        await desk.fill("#token", AGENT_TOKEN)
        await desk.click("#signin-form button")
        await desk.wait_for_selector("body[data-conn=online]")
        assert desk.url == f"{base}/desk"  # the token never goes into the URL
        assert await desk.evaluate("Object.values(sessionStorage)") == [AGENT_TOKEN]
        assert await desk.text_content("#agent-name") == "Ada (a1)"

        # ------------------------------------------------------------ ready
        await desk.select_option("#presence", "ready")
        await desk.wait_for_selector("body[data-presence=ready]")
        await a1_row.locator("[data-testid=presence]", has_text="ready").wait_for()

        # ------------------------------------------------------------ two chats and a call, offered
        ids: dict[str, str] = {}
        for event_id, channel, interaction, name in [
            ("e-c1", "chat", "chat-1", "Jo"),
            ("e-c2", "chat", "chat-2", "Kim"),
            ("e-v1", "voice", "call-1", "Lee"),
        ]:
            status, body = await offer(event_id, channel, interaction, name, queue="support")
            assert status == 200 and body["decision"] == "assigned" and body["agent_id"] == "a1", body
            ids[interaction] = body["session_id"]
        c1, c2, v1 = ids["chat-1"], ids["chat-2"], ids["call-1"]
        for sid in (c1, c2, v1):
            await desk.wait_for_selector(f"#tab-{sid}[data-state=offered] [data-testid=offer-badge]")
        # alerted (a chime per offer), never focused: no tab was brought to the front
        assert await desk.get_attribute("body", "data-chimes") == "3"
        assert await desk.locator("[role=tab][aria-selected=true]").count() == 0
        assert await desk.title() == "(3) Desk · cti-gateway"
        await desk.screenshot(path=str(artifacts / "desk-offers.png"))
        await desk.locator("[data-testid=in-use]", has_text="Sessions 3 / 4").wait_for()
        await a1_row.locator("[data-testid=in-use]", has_text="3 / 4").wait_for()
        await a1_row.locator("[data-testid=use-chat]", has_text="2/3").wait_for()
        await a1_row.locator("[data-testid=use-voice]", has_text="1/1").wait_for()

        # ------------------------------------------------------------ accept each, then switch tabs
        async def front(sid: str) -> float:
            await desk.click(f"#tab-{sid}")
            return time.monotonic()

        async def accept(sid: str) -> float:
            await desk.click(f"#panel-{sid} [data-testid=accept]")
            await desk.wait_for_selector(f"#tab-{sid}[data-state=active]")
            return time.monotonic()

        await front(c1)
        # the offer's countdown is shown while it waits for an answer
        assert "answer within" in (await desk.text_content(f"#panel-{c1} [data-testid=countdown]") or "")
        await accept(c1)  # in front and accepted: focused (the desk sends focus once the accept is acked)
        await focused_soon(client, c1)
        await front(c2)  # an offered tab in front: no session focused
        await accept(c2)
        await front(v1)
        await accept(v1)

        # The timed part. When each tab came to the front is taken in the page (a capture
        # listener of the test's own sees every click on a tab); the page is hidden and shown
        # as when another window comes in front. Baseline: the focus times while hidden.
        await set_visibility(desk, "hidden")
        await asyncio.sleep(0.2)
        baseline = {sid: await focus_of(client, sid) for sid in (c1, c2, v1)}
        await asyncio.sleep(0.3)  # hidden: counts for nobody
        await desk.evaluate(
            """() => {
                window.__fronts = [];
                document.addEventListener("click", (event) => {
                    const tab = event.target.closest("[role=tab]");
                    if (tab) window.__fronts.push([tab.dataset.session, performance.now()]);
                }, true);
            }"""
        )
        shown = await set_visibility(desk, "visible")  # v1's tab is in front again
        await asyncio.sleep(0.3)
        await front(c1)
        await asyncio.sleep(0.6)
        await front(c2)
        await asyncio.sleep(0.4)
        await front(v1)
        await asyncio.sleep(0.3)
        hidden = await set_visibility(desk, "hidden")
        fronts = await desk.evaluate("window.__fronts")
        assert [sid for sid, _ in fronts] == [c1, c2, v1]
        (_, k1), (_, k2), (_, k3) = fronts
        expected_ms = {v1: (k1 - shown) + (hidden - k3), c1: k2 - k1, c2: k3 - k2}
        await asyncio.sleep(0.3)
        measured_ms = {sid: await focus_of(client, sid) - baseline[sid] for sid in (c1, c2, v1)}
        for sid in (c1, c2, v1):
            assert abs(measured_ms[sid] - expected_ms[sid]) <= FOCUS_TOLERANCE_MS, (sid, measured_ms, expected_ms)
        await set_visibility(desk, "visible")
        await desk.wait_for_function(
            f"fetch('/v1/agents/a1', {{headers: {{Authorization: 'Bearer ' + sessionStorage.getItem("
            f"'cti-gateway.token.desk')}}}}).then(r => r.json()).then(a => a.sessions.some(s => s.id === '{v1}' "
            "&& s.focused))",
        )

        # ------------------------------------------------------------ a customer writes in a background tab
        status, _ = await client.webhook(
            {"event_id": "e-m1", "type": "message", "interaction_id": "chat-1", "text": "are you there?"}
        )
        assert status == 200
        badge = desk.locator(f"#tab-{c1} [data-testid=unread-badge]")
        await badge.wait_for()
        assert await badge.text_content() == "1"
        assert await desk.locator(f"#tab-{v1} [data-testid=unread-badge]").count() == 0
        await front(c1)
        await badge.wait_for(state="detached")
        await desk.locator(f"#panel-{c1} [data-testid=transcript]", has_text="are you there?").wait_for()

        # ------------------------------------------------------------ the reply reaches the vendor
        await desk.fill(f"#panel-{c1} [data-testid=reply]", "one moment please")
        await desk.press(f"#panel-{c1} [data-testid=reply]", "Enter")
        reply = await receiver.wait_for("reply")
        assert reply["interaction_id"] == "chat-1"
        assert reply["data"]["text"] == "one moment please" and reply["data"]["session_id"] == c1
        await desk.locator(f"#panel-{c1} [data-testid=transcript]", has_text="one moment please").wait_for()
        assert await desk.input_value(f"#panel-{c1} [data-testid=reply]") == ""

        # ------------------------------------------------------------ notes and the account, on this session only
        await desk.fill(f"#panel-{c1} [data-testid=note]", "wants a refund")
        await desk.click(f"#panel-{c1} [data-testid=add-note]")
        await desk.locator(f"#panel-{c1} [data-testid=notes]", has_text="wants a refund").wait_for()
        await desk.fill(f"#panel-{c1} [data-testid=account-id]", "C-1001")
        await desk.click(f"#panel-{c1} [data-testid=confirm-account]")
        await desk.locator(f"#panel-{c1} [data-testid=account]", has_text="confirmed C-1001").wait_for()
        record = await client.ok("GET", f"/v1/sessions/{c1}", "a1")
        assert [n["text"] for n in record["notes"]] == ["wants a refund"]
        assert record["account"] == {"state": "confirmed", "id": "C-1001"}
        assert (await client.ok("GET", f"/v1/sessions/{c2}", "a1"))["notes"] == []
        await desk.click(f"#panel-{c1} [data-testid=reset-account]")
        await desk.locator(f"#panel-{c1} [data-testid=account]", has_text="unidentified").wait_for()

        # ------------------------------------------------------------ manual session: only the reserved one is free
        await desk.locator("[data-testid=reserved]", has_text="only reserved free").wait_for()
        await desk.click("#new-session")
        await desk.locator("#notice", has_text="New session refused: agent_at_capacity").wait_for()
        assert await desk.locator("[role=tab]").count() == 3

        # ------------------------------------------------------------ the board: a rejection under its reason
        status, body = await offer("e-v2", "voice", "call-2", "Max", agent_id="a1")
        assert status == 409 and body["reason"] == "channel_at_capacity", body
        rejected = board.locator("#decisions tr[data-decision=rejected][data-reason=channel_at_capacity]")
        await rejected.locator("[data-testid=count]", has_text="1").wait_for()
        assigned = board.locator("#decisions tr[data-decision=assigned]")
        assert await assigned.locator("[data-testid=count]").text_content() == "3"
        # an interaction waiting in a queue (its only agent is offline)
        status, body = await offer("e-s1", "chat", "chat-9", "Sam", queue="sales")
        assert status == 200 and body["decision"] == "queued", body
        await board.locator("#queues tr[data-queue=sales] [data-testid=waiting]", has_text="1").wait_for()
        assert await board.text_content("#queues tr[data-queue=support] [data-testid=waiting]") == "0"
        await a1_row.locator("[data-testid=in-use]", has_text="3 / 4").wait_for()
        # the event stream, filtered
        await board.fill("#filter", "channel_at_capacity")
        await board.locator("#events li").first.wait_for()
        assert all("channel_at_capacity" in t for t in await board.locator("#events li").all_text_contents())
        # a session's record, opened from its link
        await a1_row.locator(f"a[data-session='{c1}']").click()
        await board.locator("[data-testid=record]", has_text='"interaction_id": "chat-1"').wait_for()
        await board.click("#record button")
        # the day's report
        async with board.expect_download() as download_info:
            await board.click("[data-testid=report]")
        download = await download_info.value
        csv_path = artifacts / "report.csv"
        await download.save_as(csv_path)
        lines = csv_path.read_text().splitlines()
        assert lines[0] == ",".join(REPORT_COLUMNS)

        await desk.screenshot(path=str(artifacts / "desk.png"))
        await board.fill("#filter", "")
        await board.screenshot(path=str(artifacts / "board.png"))

        assert not outside, f"the pages requested something outside the gateway: {outside}"
        assert not problems, f"errors in the browser console: {problems}"

        # ------------------------------------------------------------ the gateway restarts
        assert gateway.terminate() == 0
        await desk.wait_for_selector("body:not([data-conn=online])")
        await board.wait_for_selector("body:not([data-conn=online])")
        gateway.start()
        await desk.wait_for_selector("body[data-conn=online]", timeout=20_000)
        for sid in (c1, c2, v1):
            await desk.wait_for_selector(f"#tab-{sid}[data-state=active]")
        assert await desk.locator("[role=tab]").count() == 3
        assert await desk.get_attribute(f"#tab-{c1}", "aria-selected") == "true"
        await desk.locator(f"#panel-{c1} [data-testid=transcript]", has_text="one moment please").wait_for()
        await board.wait_for_selector("body[data-conn=online]", timeout=20_000)
        await a1_row.locator("[data-testid=in-use]", has_text="3 / 4").wait_for()
        await board.locator("#queues tr[data-queue=sales] [data-testid=waiting]", has_text="1").wait_for()
        # focus came back with the desktop: the tab in front is the focused session again
        await focused_soon(client, c1)
        await desk.screenshot(path=str(artifacts / "desk-after-restart.png"))

        # ------------------------------------------------------------ keyboard: tabs switch by keys
        await desk.keyboard.press("Alt+2")
        assert await desk.get_attribute(f"#tab-{c2}", "aria-selected") == "true"
        assert await desk.evaluate("document.activeElement.id") == f"tab-{c2}"
        await desk.keyboard.press("ArrowRight")  # within the tab strip
        assert await desk.get_attribute(f"#tab-{v1}", "aria-selected") == "true"
        await desk.keyboard.press("Home")
        assert await desk.get_attribute(f"#tab-{c1}", "aria-selected") == "true"
        await desk.keyboard.press("Alt+ArrowRight")
        assert await desk.get_attribute(f"#tab-{c2}", "aria-selected") == "true"
        await focused_soon(client, c2)  # a tab brought forward by key is focused like a click

        # ------------------------------------------------------------ a blind transfer to a colleague with room
        status, _ = await client.call("PUT", "/v1/agents/a2/presence", "supervisor", json_body={"state": "ready"})
        assert status == 200
        # Grace serves sales: the chat waiting there goes to her at once, the board follows
        await board.locator("#queues tr[data-queue=sales] [data-testid=waiting]", has_text="0").wait_for()
        a2_row = board.locator("tr[data-agent=a2]")
        await a2_row.locator("[data-testid=in-use]", has_text="1 / 4").wait_for()
        target = desk.locator(f"#panel-{c2} [data-testid=transfer-target]")
        await target.click()
        await target.locator("option[value='agent:a2']").wait_for(state="attached")
        await target.select_option("agent:a2")
        await desk.click(f"#panel-{c2} [data-testid=transfer]")
        await desk.wait_for_selector(f"#tab-{c2}", state="detached")  # blind: the session ended here
        transferred = await receiver.wait_for("transferred")
        assert transferred["interaction_id"] == "chat-2" and transferred["data"]["agent_id"] == "a2"
        await a2_row.locator("[data-testid=in-use]", has_text="2 / 4").wait_for()
        await a1_row.locator("[data-testid=in-use]", has_text="2 / 4").wait_for()

        # ------------------------------------------------------------ the call ends: wrap-up countdown
        await desk.keyboard.press("Alt+2")
        assert await desk.get_attribute(f"#tab-{v1}", "aria-selected") == "true"
        await desk.click(f"#panel-{v1} [data-testid=end]")
        await desk.wait_for_selector(f"#tab-{v1}[data-state=wrap_up]")
        countdown = desk.locator(f"#panel-{v1} [data-testid=countdown]")
        await countdown.filter(has_text="wrap-up").wait_for()
        assert 25 <= int((await countdown.text_content() or "").split()[-2]) <= 30
        await a1_row.locator("[data-testid=in-use]", has_text="2 / 4").wait_for()  # wrap-up keeps the slot

        # ------------------------------------------------------------ not ready, with a reason
        await desk.fill("#presence-reason", "coaching")
        await desk.select_option("#presence", "not_ready")
        await a1_row.locator("[data-testid=presence]", has_text="not ready (coaching)").wait_for()
        await desk.wait_for_selector("body[data-presence=not_ready]")

    assert not outside, f"the pages requested something outside the gateway: {outside}"
    # while the gateway was down the browser itself reported each refused reconnect; nothing else
    others = [p for p in problems if "net::ERR_CONNECTION_REFUSED" not in p]
    assert not others, f"errors in the browser console: {others}"
    logs = (tmp := gateway.stderr()) + "".join(
        p.read_text(errors="replace") for p in gateway.log_dir.glob("gateway-*.err")
    )
    assert tmp and AGENT_TOKEN not in logs and SUPERVISOR_TOKEN not in logs
    assert "/desk" in logs  # the access log did log the requests (without their query strings)


async def test_offer_sound_can_be_muted_and_a_declined_offer_shows_on_the_board(
    browser: Any, gateway: GatewayProcess, receiver: Receiver
) -> None:
    base = gateway.base
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    # counts the tones the page plays (added before the page's own scripts run)
    await context.add_init_script(
        """(() => {
            window.__tones = 0;
            const original = AudioContext.prototype.createOscillator;
            AudioContext.prototype.createOscillator = function () {
                window.__tones += 1;
                return original.call(this);
            };
        })()"""
    )
    desk = await context.new_page()
    desk.set_default_timeout(10_000)
    board = await context.new_page()
    board.set_default_timeout(10_000)
    await board.goto(f"{base}/board")
    await board.fill("#token", SUPERVISOR_TOKEN)
    await board.click("#signin-form button")
    await board.wait_for_selector("body[data-conn=online]")
    await desk.goto(f"{base}/desk")
    await desk.fill("#token", AGENT_TOKEN)
    await desk.click("#signin-form button")  # a user gesture: the page may play sound from now on
    await desk.wait_for_selector("body[data-conn=online]")
    await desk.select_option("#presence", "ready")
    await desk.wait_for_selector("body[data-presence=ready]")

    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, base, tokens={"a1": AGENT_TOKEN}, vendor=VENDOR, secret=SECRET)

        async def offer(n: int) -> str:
            status, body = await client.webhook(
                {
                    "event_id": f"e-{n}",
                    "type": "offer",
                    "channel": "chat",
                    "interaction_id": f"chat-{n}",
                    "agent_id": "a1",
                    "customer": {"name": f"Customer {n}"},
                }
            )
            assert status == 200 and body["decision"] == "assigned", body
            sid: str = body["session_id"]
            await desk.wait_for_selector(f"#tab-{sid}[data-state=offered]")
            return sid

        first = await offer(1)
        assert await desk.evaluate("window.__tones") == 2  # the chime: two tones
        await desk.click("#mute")
        assert await desk.get_attribute("#mute", "aria-pressed") == "true"
        await offer(2)
        assert await desk.get_attribute("body", "data-chimes") == "2"  # alerted ...
        assert await desk.evaluate("window.__tones") == 2  # ... in silence
        assert await desk.locator("[data-testid=offer-badge]").count() == 2

        # decline the first offer from its tab: it goes away, the vendor hears offer_timeout
        await desk.click(f"#tab-{first}")
        await desk.click(f"#panel-{first} [data-testid=decline]")
        await desk.wait_for_selector(f"#tab-{first}", state="detached")
        decision = await receiver.wait_for("decision")
        assert decision["interaction_id"] == "chat-1"
        assert decision["data"] == {"decision": "rejected", "reason": "offer_timeout"}
        row = board.locator("#decisions tr[data-decision=rejected][data-reason=offer_timeout]")
        await row.locator("[data-testid=count]", has_text="1").wait_for()
        await board.locator("tr[data-agent=a1] [data-testid=in-use]", has_text="1 / 4").wait_for()
    await context.close()
