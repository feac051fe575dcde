"""The REST API of DESIGN section 6, and :func:`setup_api` which mounts it with both WebSockets.

=======================================  =================================================
``GET  /v1/agents``                      supervisor: every agent object; agent: colleagues'
                                         ``id``, ``name``, ``presence``, ``free_capacity``
``GET  /v1/agents/{id}``                 the agent object (own agent, or supervisor)
``PUT  /v1/agents/{id}/presence``        ``{"state", "reason"?}`` -> the agent object
``PUT  /v1/agents/{id}/focus``           ``{"session_id": id | null}`` -> the agent object
``POST /v1/agents/{id}/sessions``        manual session ``{"label"?}`` -> 201 session;
                                         capacity refusal 409 with the reason as code
``POST /v1/sessions/{id}/{action}``      accept, decline, end, focus, transfer, note,
                                         confirm_account, reset_account, send -> the session
                                         (transfer: ``{"session", "target"}``)
``GET  /v1/sessions/{id}``               the session record (engine, else journal)
``GET  /v1/reports/sessions``            ``?from=&to=&format=json|csv`` (supervisor)
``GET  /healthz`` ``/readyz`` ``/metrics`` ``/openapi.json``  open, no token
``GET  /v1/agents/{id}/ws``              agent desktop WebSocket (:mod:`.agent_ws`)
``GET  /v1/events/ws``                   supervisor event stream (:mod:`.events_ws`)
=======================================  =================================================

Focus: ``POST /v1/sessions/{id}/focus`` focuses that session (the agent's previously
focused one is left). To leave every session (the desktop shows none) use
``PUT /v1/agents/{id}/focus`` with ``{"session_id": null}`` (or the WebSocket ``focus``
message with ``session_id: null``); the same PUT with an id focuses that session.

Every error is ``{"error": {"code", "message", ...}}``: the middleware installed here turns
:class:`~gateway.errors.GatewayError` into its status (:func:`.errors.status_for`), aiohttp's
404/405 into ``not_found`` / ``method_not_allowed``, and anything unexpected into 500
``internal_error`` (logged, no traceback to the client). It wraps every route of the
application, the vendor webhooks included.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import hdrs, web

from gateway import commands
from gateway.commands import Command
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.persistence import session_record
from gateway.records.report import report_rows, to_csv, to_json
from gateway.runtime import Runtime

from ..vendors import ENDPOINTS
from . import agent_ws, events_ws
from .auth import ApiError, Principal
from .context import API, ApiContext, ApiSettings
from .desktop_socket import DesktopDoor
from .errors import error_response, json_error
from .models import (
    BodyProblem,
    ConfirmAccountBody,
    FocusBody,
    NewSessionBody,
    NoteBody,
    PresenceBody,
    SendBody,
    SessionBody,
    TransferBody,
    parse_json,
    validate,
)
from .openapi import VendorRoute, build_openapi

__all__ = ["error_middleware", "read_body", "setup_api"]

log = structlog.get_logger("cti_gateway.api")

#: a request body must arrive within this (a trickling client gets 408 ``request_timeout``)
BODY_TIMEOUT_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: codes for aiohttp's own HTTP errors (unknown route, wrong method ...)
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# ============================================================================ errors


def _api_error_response(exc: GatewayError) -> web.Response:
    if isinstance(exc, ApiError):
        body = exc.to_dict()
        code, message = str(body.pop("code")), str(body.pop("message"))
        response = json_error(exc.status, code, message, **body)
        response.headers.update(exc.headers)
        return response
    return error_response(exc)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{"error": {"code", "message"}}``; never a traceback."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return _api_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        code = _HTTP_CODES.get(exc.status, "http_error" if exc.status < 500 else "internal_error")
        message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        if exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        response = json_error(exc.status, code, message)
        for header in (hdrs.ALLOW, hdrs.RETRY_AFTER, hdrs.WWW_AUTHENTICATE):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return json_error(500, "internal_error", "the gateway failed to process the request")


def _bad_request(problem: BodyProblem) -> ApiError:
    return ApiError(400, "invalid_request", problem.message, field=problem.field)


# ============================================================================ bodies


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (413 ``body_too_large`` beyond, chunked included)."""
    too_large = ApiError(413, "body_too_large", f"the body is larger than {limit} bytes", limit=limit)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.content.iter_chunked(16 * 1024):
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the body did not arrive in time") from None
    return b"".join(chunks)


async def _body(request: web.Request, model: type[Any], ctx: ApiContext) -> Any:
    """The request body validated as ``model``; an empty body counts as ``{}``."""
    raw = await read_body(request, ctx.settings.max_body_bytes)
    try:
        data = parse_json(raw) if raw.strip() else {}
        return validate(model, data)
    except BodyProblem as problem:
        raise _bad_request(problem) from None


# ============================================================================ query parameters

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_UNIX = re.compile(r"^-?\d{1,15}(\.\d{1,9})?$")
#: the largest length of a from/to value (longer: 400)
MAX_TIME_CHARS = 64
_EPOCH = datetime(1970, 1, 1)


def parse_time(field: str, value: str) -> float:
    """RFC 3339 (with offset) or Unix seconds -> epoch seconds; 400 ``invalid_request`` else."""
    problem = ApiError(
        400,
        "invalid_request",
        f"{field}: expected RFC 3339 (e.g. 2024-05-01T08:00:00Z) or Unix seconds",
        field=field,
    )
    text = value.strip()
    if len(text) > MAX_TIME_CHARS:
        raise problem
    if _UNIX.match(text):
        return float(text)
    match = _RFC3339.match(text)
    if match is None:
        raise problem
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float(match.group(7)) if match.group(7) else 0.0
    leap = second == 60  # RFC 3339 allows a leap second
    try:
        naive = datetime(year, month, day, hour, minute, 59 if leap else second)
    except ValueError:
        raise problem from None
    zone = match.group(8)
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise problem
        offset = timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    # naive arithmetic: no overflow at year 1 or 9999 with offsets
    return (naive - _EPOCH - offset).total_seconds() + fraction + (1 if leap else 0)


def _time_param(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    return parse_time(name, value)


# ============================================================================ the API


class RestApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.runtime: Runtime = ctx.runtime
        #: the document, with the vendor routes it was built for
        self._openapi: tuple[tuple[VendorRoute, ...], dict[str, Any]] | None = None

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    def _now(self) -> float:
        return self.runtime.clock.now()

    def auth(self, request: web.Request) -> Principal:
        return self.ctx.authenticate(request)

    # ------------------------------------------------------------------ agents

    async def list_agents(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        engine = self.engine
        if principal.is_supervisor:
            agents = [engine.agent(agent_id) for agent_id in engine.agent_ids()]
        else:
            agents = []
            for agent_id in engine.agent_ids():
                full = engine.agent(agent_id, with_sessions=False)
                agents.append(
                    {
                        "id": full["id"],
                        "name": full["name"],
                        "presence": full["presence"],
                        "free_capacity": engine.free_capacity(agent_id),
                    }
                )
        return web.json_response({"agents": agents})

    async def get_agent(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        agent_id = request.match_info["id"]
        principal.require_agent(agent_id)
        return web.json_response(self.engine.agent(agent_id))

    async def put_presence(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        agent_id = request.match_info["id"]
        principal.require_agent(agent_id)
        body: PresenceBody = await _body(request, PresenceBody, self.ctx)
        agent = await self.runtime.act(commands.presence(agent_id, body.state, body.reason, principal.actor))
        return web.json_response(agent)

    async def put_focus(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        agent_id = request.match_info["id"]
        principal.require_agent(agent_id)
        body: FocusBody = await _body(request, FocusBody, self.ctx)
        focused = await self.runtime.act(commands.focus(agent_id, body.session_id, principal.actor))
        return web.json_response(focused["agent"])

    async def post_session(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        agent_id = request.match_info["id"]
        principal.require_agent(agent_id)
        body: NewSessionBody = await _body(request, NewSessionBody, self.ctx)
        session = await self.runtime.act(commands.new_session(agent_id, body.label, principal.actor))
        return web.json_response(session, status=201)

    # ------------------------------------------------------------------ sessions

    def session_action(self, model: type[Any], command: Callable[[str, Any, str | None], Command]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            principal = self.auth(request)
            session_id = request.match_info["id"]
            body = await _body(request, model, self.ctx)
            action = command(session_id, body, principal.actor)
            result = await self.runtime.act_on_session(action)
            if action.name == "focus":  # the focused session (the command also gives its agent)
                result = result["session"]
            return web.json_response(result)

        return handler

    async def get_session(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        session_id = request.match_info["id"]
        session = self.engine.sessions.get(session_id)
        if session is not None:
            if not principal.may_act_for(session.agent_id):
                raise ApiError(403, "forbidden", f"session {session_id} is not agent {principal.agent_id}'s")
            return web.json_response(session.as_dict(self._now()))
        state = await self.runtime.records.record(session_id)
        if state is None:
            raise ApiError(404, "session_not_found", f"no session {session_id!r}")
        record = session_record(state)
        if not principal.may_act_for(str(record.get("agent_id"))):
            raise ApiError(403, "forbidden", f"session {session_id} is not agent {principal.agent_id}'s")
        return web.json_response(record)

    # ------------------------------------------------------------------ reports

    async def report(self, request: web.Request) -> web.Response:
        principal = self.auth(request)
        principal.require_supervisor()
        fmt = request.query.get("format") or "json"  # empty: the default, like from= and to=
        if fmt not in ("json", "csv"):
            raise ApiError(400, "invalid_request", "format: json or csv", field="format")
        start = _time_param(request, "from")
        end = _time_param(request, "to")
        rows = report_rows(await self.runtime.records.records(start=start, end=end))
        if fmt == "csv":
            return web.Response(
                text=to_csv(rows),
                content_type="text/csv",
                charset="utf-8",
                headers={hdrs.CONTENT_DISPOSITION: 'attachment; filename="sessions.csv"'},
            )
        return web.json_response({"sessions": to_json(rows)})

    # ------------------------------------------------------------------ operations

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            checks = await asyncio.wait_for(self.runtime.check_ready(), 5.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("readiness_check_failed", error=repr(exc))
            return json_error(503, "not_ready", f"the readiness check failed: {type(exc).__name__}")
        if checks.get("ready"):
            return web.json_response({"status": "ready", **checks})
        down = [name for name, health in checks.get("adapters", {}).items() if health != "up"]
        reasons = []
        if checks.get("store") != "up":
            reasons.append("store down")
        if checks.get("records") != "up" and checks.get("store") == "up":
            reasons.append("records store down")
        if not checks.get("accepting"):
            reasons.append("not taking requests")
        if down:
            reasons.append("adapters down: " + ", ".join(sorted(down)))
        return json_error(503, "not_ready", "; ".join(reasons) or "not ready", checks=checks)

    async def metrics(self, request: web.Request) -> web.Response:
        metrics = self.runtime.metrics
        metrics.refresh_gauges(self.engine)
        await self.runtime.refresh_metrics()
        return web.Response(body=metrics.render(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        # the vendors' own routes change with a reload: the document follows them
        endpoints = request.app.get(ENDPOINTS)
        served = tuple(endpoints.served()) if endpoints is not None else ()
        if self._openapi is None or self._openapi[0] != served:
            self._openapi = (served, build_openapi(served))
        return web.json_response(self._openapi[1])


# ============================================================================ session actions


#: action name -> (body model, command); POST /v1/sessions/{id}/{action}
SESSION_ACTIONS: dict[str, tuple[type[Any], Callable[[str, Any, str | None], Command]]] = {
    "accept": (SessionBody, lambda sid, body, actor: commands.accept(sid, actor)),
    "decline": (SessionBody, lambda sid, body, actor: commands.decline(sid, actor)),
    "end": (SessionBody, lambda sid, body, actor: commands.end(sid, actor)),
    "focus": (SessionBody, lambda sid, body, actor: commands.focus(None, sid, actor)),
    "transfer": (
        TransferBody,
        lambda sid, body, actor: commands.transfer(sid, body.to_agent, body.to_queue, body.mode, actor),
    ),
    "note": (NoteBody, lambda sid, body, actor: commands.note(sid, body.text, actor)),
    "confirm_account": (
        ConfirmAccountBody,
        lambda sid, body, actor: commands.confirm_account(sid, body.account_id, actor),
    ),
    "reset_account": (SessionBody, lambda sid, body, actor: commands.reset_account(sid, actor)),
    "send": (SendBody, lambda sid, body, actor: commands.send(sid, body.text, actor)),
}


# ============================================================================ mounting


def setup_api(app: web.Application, runtime: Runtime, *, settings: ApiSettings | None = None) -> ApiContext:
    """Mount the REST API, both WebSockets and the error middleware on ``app``.

    The vendor webhook routes are the adapters' (mounted by :func:`gateway.app.build_app`);
    the error middleware wraps them too. Returns the shared context, also at ``app[API]``.
    """
    ctx = ApiContext(runtime, settings)
    app[API] = ctx
    app.middlewares.insert(0, error_middleware)
    app.on_shutdown.append(ctx.close_sockets)

    rest = RestApi(ctx)
    router = app.router
    router.add_get("/healthz", rest.healthz)
    router.add_get("/readyz", rest.readyz)
    router.add_get("/metrics", rest.metrics)
    router.add_get("/openapi.json", rest.openapi)

    router.add_get("/v1/agents", rest.list_agents)
    router.add_get("/v1/agents/{id}", rest.get_agent)
    router.add_put("/v1/agents/{id}/presence", rest.put_presence)
    router.add_put("/v1/agents/{id}/focus", rest.put_focus)
    router.add_post("/v1/agents/{id}/sessions", rest.post_session)
    agent_socket = agent_ws.AgentSocket(ctx)
    router.add_get("/v1/agents/{id}/ws", agent_socket.handle)
    ctx.desktop_door = DesktopDoor(ctx, agent_socket, None)

    router.add_get("/v1/sessions/{id}", rest.get_session)
    for action, (model, call) in SESSION_ACTIONS.items():
        router.add_post(f"/v1/sessions/{{id}}/{action}", rest.session_action(model, call))

    router.add_get("/v1/reports/sessions", rest.report)
    router.add_get("/v1/events/ws", events_ws.EventStream(ctx).handle)
    return ctx
