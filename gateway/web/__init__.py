"""The browser pages the gateway serves itself: the agent desktop ``/desk`` and the
supervisor wallboard ``/board`` (plain ES modules and CSS under this package, no build
step), plus the two small read endpoints they need beside the REST API:

=======================================  =================================================
``GET /desk``, ``GET /board``            the pages (HTML, no token: they sign in themselves)
``GET /ui/{file}``                       their scripts, styles and the alert sound's code
``GET /v1/profiles``                     capacity profiles: caps, timeouts (agent: its own)
``GET /v1/queues``                       queues; supervisor: waiting interactions, longest wait
``GET /v1/whoami``                       who the token is: ``{"kind", "agent_id", "name"}``
=======================================  =================================================

Every page and asset is answered with a strict Content-Security-Policy (``default-src
'self'``; no inline script or style, no framing, no external request), ``nosniff`` and
``no-referrer``. Assets are looked up in a fixed table built at start from the files of
this package: a request can never name a path outside it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from gateway.api.context import API
from gateway.events import Channel

__all__ = ["CSP", "setup_web"]

#: the policy of every page and asset: same origin only, nothing inline, no framing
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

#: the page routes -> the HTML file served for them
PAGES = {"/desk": "desk/index.html", "/board": "board/index.html"}


def _assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the pages' folders: ``"desk/desk.js"`` -> (bytes, content type)."""
    root = resources.files(__package__)
    found: dict[str, tuple[bytes, str]] = {}
    for folder in ("desk", "board", "common"):
        for entry in root.joinpath(folder).iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if entry.is_file() and suffix in _TYPES:
                found[f"{folder}/{entry.name}"] = (entry.read_bytes(), _TYPES[suffix])
    return found


def _answer(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response


def setup_web(app: web.Application) -> None:
    """Mount the pages, their assets and ``/v1/profiles`` / ``/v1/queues`` (after ``setup_api``)."""
    assets = _assets()

    def page(name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return _answer(*assets[name])

        return handler

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["file"])
        if found is None or found[1] == "text/html":
            raise web.HTTPNotFound()
        return _answer(*found)

    async def profiles(request: web.Request) -> web.Response:
        ctx = request.app[API]
        principal = ctx.authenticate(request)
        config = ctx.runtime.engine.config
        names = (
            list(config.capacity_profiles)
            if principal.is_supervisor
            else [a.profile for a in config.agents if a.id == principal.agent_id]
        )
        body = {}
        for name in names:
            profile = config.capacity_profiles[name]
            body[name] = {
                "max_sessions": profile.max_sessions,
                "reserved_inbound": profile.reserved_inbound,
                "max_units": profile.unit_limit,
                "channels": {c.value: profile.cap(c) for c in Channel},
                "units": {c.value: profile.weight(c) for c in Channel},
                "offer_timeout_s": {c.value: profile.offer_timeout(c) for c in Channel if c is not Channel.MANUAL},
                "wrap_up_s": {c.value: profile.wrap_up(c) for c in Channel},
            }
        return web.json_response({"profiles": body})

    async def queues(request: web.Request) -> web.Response:
        ctx = request.app[API]
        principal = ctx.authenticate(request)
        engine = ctx.runtime.engine
        config = engine.config
        if not principal.is_supervisor:
            return web.json_response({"queues": [{"name": q.name} for q in config.queues]})
        now = engine.clock.now()
        waiting: dict[str, list[dict[str, Any]]] = {q.name: [] for q in config.queues}
        for key in engine.waiting():
            interaction = engine.interactions.get(key)
            if interaction is None or interaction.target_agent is not None or interaction.queue not in waiting:
                continue  # held for one agent (a vendor that cannot take a rejection): not a queue's
            waiting[interaction.queue].append(
                {
                    "vendor": interaction.vendor,
                    "interaction_id": interaction.interaction_id,
                    "channel": interaction.channel.value,
                    "priority": interaction.priority,
                    "waiting_ms": max(0, round((now - interaction.created_at) * 1000)),
                }
            )
        body = [
            {
                "name": q.name,
                "policy": q.policy.value,
                "on_full": q.on_full.value,
                "waiting": waiting[q.name],
                "longest_wait_ms": max((w["waiting_ms"] for w in waiting[q.name]), default=0),
            }
            for q in config.queues
        ]
        return web.json_response({"queues": body})

    async def whoami(request: web.Request) -> web.Response:
        ctx = request.app[API]
        principal = ctx.authenticate(request)
        if principal.is_supervisor:
            return web.json_response({"kind": "supervisor", "agent_id": None, "name": None})
        names = {a.id: a.name for a in ctx.runtime.engine.config.agents}
        return web.json_response(
            {"kind": "agent", "agent_id": principal.agent_id, "name": names.get(principal.agent_id or "")}
        )

    for path, name in PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/ui/{file:(desk|board|common)/[A-Za-z0-9_.-]+}", asset)
    app.router.add_get("/v1/profiles", profiles)
    app.router.add_get("/v1/queues", queues)
    app.router.add_get("/v1/whoami", whoami)
