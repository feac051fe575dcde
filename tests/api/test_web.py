"""What ``gateway.web`` serves besides the pages' behaviour (tested in Chromium, tests/web):
the pages and their assets with a strict Content-Security-Policy, nothing outside the
package reachable through ``/ui/``, and the reads the pages need (``/v1/whoami``,
``/v1/profiles``, ``/v1/queues``) with the same access rules as the rest of the API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from gateway import serve
from gateway.app import build_app
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.records.memory import MemoryJournal
from gateway.web import CSP

from .conftest import T0, Gateway, make_config

pytestmark = pytest.mark.asyncio

WEB = Path(__file__).resolve().parents[2] / "gateway" / "web"


@pytest_asyncio.fixture
async def wgw() -> AsyncIterator[Gateway]:
    """The API tests' gateway, with ``sales`` a ``wait`` queue that a2 and a3 serve."""
    raw = make_config().model_dump(mode="json")
    raw["queues"].append({"name": "sales", "on_full": "wait", "max_wait_s": 120})
    for agent in raw["agents"]:
        if agent["id"] != "a1":
            agent["queues"].append("sales")
    config = GatewayConfig.model_validate(raw)
    clock = ManualClock(T0)
    app = build_app(config, clock=clock, journal=MemoryJournal())
    runner, limiter = await serve.start(app, config.server, host="127.0.0.1", port=0, shutdown_timeout=5.0)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(app=app, base=f"http://{host}:{port}", http=http, clock=clock, limiter=limiter)
    finally:
        await runner.cleanup()


async def test_pages_and_assets_carry_a_strict_content_security_policy(wgw: Gateway) -> None:
    for path, marker in [("/desk", "/ui/desk/desk.js"), ("/board", "/ui/board/board.js")]:
        response = await wgw.request("GET", path)
        assert response.status == 200
        assert response.content_type == "text/html"
        text = await response.text()
        assert marker in text
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    policy = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"  # nothing inline
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    for asset, kind in [
        ("/ui/desk/desk.js", "text/javascript"),
        ("/ui/board/board.css", "text/css"),
        ("/ui/common/gateway.js", "text/javascript"),
    ]:
        response = await wgw.request("GET", asset)
        assert response.status == 200 and response.content_type == kind, asset
        assert response.headers["Content-Security-Policy"] == CSP


async def test_nothing_outside_the_pages_folders_is_served(wgw: Gateway) -> None:
    for path in [
        "/ui/desk/index.html",  # the page only at its route
        "/ui/desk/nope.js",
        "/ui/web/__init__.py",
        "/ui/desk/..%2f__init__.py",
        "/ui/desk/../../app.py",
        "/ui/common/%2e%2e/__init__.py",
        "/desk/desk.js",
    ]:
        response = await wgw.request("GET", path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


async def test_the_pages_have_no_inline_script_or_style_and_load_nothing_from_elsewhere() -> None:
    for page in WEB.glob("*/*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page  # every script is a file
        assert "<style" not in html and " style=" not in html, page
        assert not re.search(r"\son[a-z]+=", html), page  # no inline handlers
        assert not re.search(r"(src|href)=\"(https?:)?//", html), page
    for source in [*WEB.glob("*/*.js"), *WEB.glob("*/*.css")]:
        text = source.read_text()
        assert not re.search(r"https?://", text), source  # no CDN, no external request
        assert "innerHTML" not in text and "eval(" not in text, source


async def test_whoami_profiles_and_queues_follow_the_access_rules(wgw: Gateway) -> None:
    assert await wgw.json("GET", "/v1/whoami", "a1") == {"kind": "agent", "agent_id": "a1", "name": "A1"}
    assert await wgw.json("GET", "/v1/whoami", "supervisor") == {"kind": "supervisor", "agent_id": None, "name": None}
    for path in ("/v1/whoami", "/v1/profiles", "/v1/queues"):
        body = await wgw.json("GET", path, None, status=401)
        assert body["error"]["code"] == "unauthorized"
        response = await wgw.request("GET", path, headers={"Authorization": "Bearer not-a-token"})
        assert response.status == 401

    mine = await wgw.json("GET", "/v1/profiles", "a1")
    assert mine == {
        "profiles": {
            "std": {
                "max_sessions": 3,
                "reserved_inbound": 1,
                "max_units": 3,
                "channels": {"voice": 3, "chat": 3, "email": 3, "manual": 3},
                "units": {"voice": 1, "chat": 1, "email": 1, "manual": 1},
                "offer_timeout_s": {"voice": 20, "chat": 30, "email": 120},
                "wrap_up_s": {"voice": 30, "chat": 0, "email": 0, "manual": 0},
            }
        }
    }
    assert set((await wgw.json("GET", "/v1/profiles", "supervisor"))["profiles"]) == {"std"}

    # an agent learns the queue names (transfer targets), not who waits in them
    assert await wgw.json("GET", "/v1/queues", "a1") == {"queues": [{"name": "support"}, {"name": "sales"}]}
    empty = await wgw.json("GET", "/v1/queues", "supervisor")
    assert [(q["name"], q["waiting"], q["longest_wait_ms"]) for q in empty["queues"]] == [
        ("support", [], 0),
        ("sales", [], 0),
    ]


async def test_queues_show_what_waits_and_for_how_long(wgw: Gateway) -> None:
    # nobody serving sales is ready: a chat and an e-mail wait, the first for longer
    first = wgw.event("offer", interaction="w-1", channel="chat", queue="sales")
    await wgw.runtime.act(lambda e: e.handle_event(first))
    await wgw.advance(5)
    await wgw.runtime.act(
        lambda e: e.handle_event(wgw.event("offer", interaction="w-2", channel="email", queue="sales", priority=3))
    )
    await wgw.advance(2)
    body = await wgw.json("GET", "/v1/queues", "supervisor")
    sales = {q["name"]: q for q in body["queues"]}["sales"]
    assert sales["longest_wait_ms"] == 7000
    assert sorted((w["interaction_id"], w["channel"], w["priority"], w["waiting_ms"]) for w in sales["waiting"]) == [
        ("w-1", "chat", 0, 7000),
        ("w-2", "email", 3, 2000),
    ]
    # a2 becomes ready: the waiting ones are offered, the queue empties
    await wgw.ready("a2")
    body = await wgw.json("GET", "/v1/queues", "supervisor")
    assert {q["name"]: len(q["waiting"]) for q in body["queues"]} == {"support": 0, "sales": 0}
