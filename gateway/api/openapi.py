"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

It describes every REST path (the vendor webhook included) with its request and response
schemas. It is checked against the live server (schemathesis in CI; tests in
``tests/api``): keep it in step with :mod:`.routes`, :mod:`.models`,
:meth:`gateway.sessions.Session.as_dict`, :meth:`gateway.engine.Engine.agent` and
:mod:`gateway.records.report`. The two WebSockets are not REST operations; they are
described under the top-level ``x-websockets`` extension.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway import __version__ as _version
from gateway.engine import MAX_NOTE_CHARS
from gateway.records.report import REPORT_COLUMNS
from gateway.web.openapi import web_paths

from .models import MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_REASON_CHARS, MAX_SEND_CHARS, NOT_BLANK

__all__ = ["build_openapi"]

CHANNELS = ["voice", "chat", "email", "manual"]
INBOUND_CHANNELS = ["voice", "chat", "email"]
SESSION_STATES = ["offered", "active", "wrap_up", "closed"]
OUTCOMES = ["completed", "declined", "expired", "abandoned", "transferred"]
PRESENCE = ["ready", "not_ready", "offline"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    """``schema`` or null (JSON Schema 2020-12 / OpenAPI 3.1)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


_ID = _string(minLength=1, maxLength=MAX_ID_CHARS)
_TIME = _string(format="date-time")
_MS = {"type": "integer", "minimum": 0}


def _object(
    properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = False, **extra: Any
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _schemas() -> dict[str, Schema]:
    counts = {name: _MS for name in ("sessions", "units", *CHANNELS)}
    session_props: dict[str, Schema] = {
        "id": _string(),
        "agent_id": _string(),
        "channel": _string(enum=CHANNELS),
        "state": _string(enum=SESSION_STATES),
        "vendor": _nullable(_string(description="null for manual sessions")),
        "interaction_id": _nullable(_string()),
        "queue": _nullable(_string()),
        "customer": _nullable(_ref("Customer")),
        "subject": _nullable(_string()),
        "label": _string(description="tab title"),
        "profile": _string(description="desktop start screen for this channel"),
        "account": _ref("Account"),
        "offered_at": _TIME,
        "accepted_at": _nullable(_TIME),
        "ended_at": _nullable(_TIME),
        "closed_at": _nullable(_TIME),
        "handle_ms": _nullable({**_MS, "description": "accepted -> ended"}),
        "wrap_ms": _nullable({**_MS, "description": "ended -> closed"}),
        "focus_ms": {**_MS, "description": "sum of the focused intervals"},
        "outcome": _nullable(_string(enum=OUTCOMES)),
        "notes": {"type": "array", "items": _ref("Note")},
        "transferred_from": _nullable(_string(description="the session this one was transferred from")),
        "transferred_to": _nullable(_string(description="the session this one was transferred to")),
        "focused": {"type": "boolean"},
        "flagged": {"type": "boolean", "description": "active while the agent's desktop is gone past its grace period"},
    }
    report_types: dict[str, Schema] = {
        "session_id": _string(),
        "interaction_id": _nullable(_string()),
        "vendor": _nullable(_string()),
        "channel": _string(enum=CHANNELS),
        "agent_id": _string(),
        "queue": _nullable(_string()),
        "offered_at": _nullable(_TIME),
        "accepted_at": _nullable(_TIME),
        "ended_at": _nullable(_TIME),
        "closed_at": _nullable(_TIME),
        "handle_ms": _nullable(_MS),
        "wrap_ms": _nullable(_MS),
        "focus_ms": _nullable(_MS),
        "outcome": _nullable(_string(enum=OUTCOMES)),
        "account_id": _nullable(_string()),
        "transferred_from": _nullable(_string()),
        "transferred_to": _nullable(_string()),
    }
    assert tuple(report_types) == REPORT_COLUMNS, "the report schema drifted from REPORT_COLUMNS"
    decision_extra = {
        "agent_id": _string(),
        "session_id": _string(),
        "reason": _string(),
        "first_decision": _string(enum=["assigned", "rejected", "queued", "accepted"]),
    }
    return {
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": _string(description="stable, for programs (e.g. unauthorized, session_not_found)"),
                        "message": _string(description="for humans"),
                        "field": _string(description="the field at fault, for invalid requests"),
                    },
                    ["code", "message"],
                )
            },
            ["error"],
        ),
        "Customer": _object({"address": _nullable(_string()), "name": _nullable(_string())}),
        "Account": _object(
            {"state": _string(enum=["unidentified", "identified", "confirmed"]), "id": _nullable(_string())},
            ["state", "id"],
        ),
        "Note": _object({"text": _string(), "at": _TIME}, ["text", "at"]),
        "Session": _object(
            session_props, list(session_props), description="one slot of one agent holding one interaction"
        ),
        "Presence": _object({"state": _string(enum=PRESENCE), "reason": _nullable(_string())}, ["state", "reason"]),
        "InUse": _object(counts, list(counts), description="occupying sessions and units, in total and per channel"),
        "FreeCapacity": _object(
            {c: _MS for c in CHANNELS},
            CHANNELS,
            description="how many more sessions of each channel the agent could take now, presence aside",
        ),
        "Agent": _object(
            {
                "id": _string(),
                "name": _string(),
                "profile": _string(description="capacity profile name"),
                "queues": {"type": "array", "items": _string()},
                "presence": _ref("Presence"),
                "in_use": _ref("InUse"),
                "desktop_connected": {"type": "boolean"},
                "sessions": {"type": "array", "items": _ref("Session"), "description": "open sessions"},
            },
            ["id", "name", "profile", "queues", "presence", "in_use", "desktop_connected", "sessions"],
        ),
        "Colleague": _object(
            {
                "id": _string(),
                "name": _string(),
                "presence": _ref("Presence"),
                "free_capacity": _ref("FreeCapacity"),
            },
            ["id", "name", "presence", "free_capacity"],
            description="what an agent token sees of every agent (for transfers)",
        ),
        "AgentList": _object(
            {
                "agents": {
                    "type": "array",
                    "items": {"anyOf": [_ref("Agent"), _ref("Colleague")]},
                    "description": "supervisor token: Agent objects; agent token: Colleague objects",
                }
            },
            ["agents"],
        ),
        "TransferResult": _object(
            {"session": _ref("Session"), "target": _ref("Session")},
            ["session", "target"],
            description="the source session after the transfer and the target's offered session",
        ),
        "ReportRow": _object(report_types, list(report_types)),
        "Report": _object({"sessions": {"type": "array", "items": _ref("ReportRow")}}, ["sessions"]),
        "Health": _object({"status": _string(enum=["ok"])}, ["status"]),
        "Ready": _object(
            {
                "status": _string(enum=["ready"]),
                "ready": {"type": "boolean"},
                "store": _string(enum=["up", "down"]),
                "adapters": {"type": "object", "additionalProperties": _string(enum=["up", "down"])},
                "accepting": {"type": "boolean"},
                "vendors": {
                    "type": "object",
                    "description": "per vendor: adapter, channels, health, can_reject, can_transfer and "
                    "the adapter's own details (the webhook: callbacks, strict)",
                    "additionalProperties": {"type": "object"},
                },
                "warnings": {
                    "type": "array",
                    "items": _string(),
                    "description": "what vendors' settings leave out, e.g. a webhook without callback_url",
                },
            },
            ["status", "ready", "store", "adapters", "accepting", "vendors", "warnings"],
        ),
        # ---- request bodies (unknown keys are errors)
        "PresenceBody": _object(
            {"state": _string(enum=PRESENCE), "reason": _nullable(_string(maxLength=MAX_REASON_CHARS))},
            ["state"],
            closed=True,
        ),
        "FocusBody": _object(
            {"session_id": _nullable(_ID)},
            ["session_id"],
            closed=True,
            description="a session of the agent to focus, or null to leave every session",
        ),
        "NewSessionBody": _object({"label": _nullable(_string(maxLength=MAX_LABEL_CHARS))}, closed=True),
        "SessionActionBody": _object({}, closed=True, description="no fields: the session is in the path"),
        "TransferBody": _object(
            {
                "to_agent": _nullable(_ID),
                "to_queue": _nullable(_ID),
                "mode": _string(enum=["blind", "consult"], default="blind"),
            },
            closed=True,
            description="exactly one of to_agent and to_queue",
            oneOf=[
                {"required": ["to_agent"], "properties": {"to_agent": _ID, "to_queue": {"type": "null"}}},
                {"required": ["to_queue"], "properties": {"to_queue": _ID, "to_agent": {"type": "null"}}},
            ],
        ),
        "NoteBody": _object(
            {"text": _string(minLength=1, maxLength=MAX_NOTE_CHARS, pattern=NOT_BLANK)},
            ["text"],
            closed=True,
        ),
        "SendBody": _object(
            {"text": _string(minLength=1, maxLength=MAX_SEND_CHARS, pattern=NOT_BLANK)},
            ["text"],
            closed=True,
        ),
        "ConfirmAccountBody": _object(
            {"account_id": _nullable(_ID)},
            closed=True,
            description="account_id: the account to confirm (default: the identified one)",
        ),
        # ---- the generic webhook
        "WebhookEvent": _object(
            {
                "event_id": _ID,
                "type": _string(enum=["offer", "message", "update", "end"]),
                "channel": _nullable(_string(enum=INBOUND_CHANNELS, description="required on offer")),
                "interaction_id": _ID,
                "agent_id": _nullable(_ID),
                "queue": _nullable(_ID),
                "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "default": 0},
                "customer": _nullable(
                    _object(
                        {
                            "address": _nullable(_string(maxLength=512)),
                            "name": _nullable(_string(maxLength=512)),
                        },
                        closed=True,
                    )
                ),
                "subject": _nullable(_string(maxLength=4096)),
                "text": _nullable(_string(maxLength=65536)),
                "occurred_at": _nullable({**_TIME, "description": "default: the time of receipt"}),
                "attributes": {"type": "object", "description": "free-form; account_id identifies the account"},
            },
            ["event_id", "type", "interaction_id"],
            closed=True,
            description="an offer names an agent_id (targeted) or a queue (untargeted)",
        ),
        "Decision": _object(
            {"decision": _string(enum=["assigned", "queued", "accepted", "duplicate"]), **decision_extra},
            ["decision"],
            description=(
                "assigned: agent_id and session_id; duplicate: the first answer repeated, with first_decision"
            ),
        ),
        "Rejection": _object(
            {"decision": _string(enum=["rejected"]), "reason": _string()},
            ["decision", "reason"],
        ),
    }


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    return _json(_ref("Error"), description, headers)


_STD_ERRORS: dict[str, Schema] = {
    "400": _error(
        "invalid_request: malformed JSON, an unknown or invalid field (error.field names it), or an illegal action"
    ),
    "401": _error(
        "unauthorized: no or unknown bearer token",
        {"WWW-Authenticate": {"schema": _string(), "description": "Bearer"}},
    ),
    "403": _error("forbidden: another agent's agent or session, or a supervisor-only path"),
    "404": _error("unknown_agent / session_not_found / unknown_queue"),
    "408": _error("request_timeout: the body did not arrive in time"),
    "409": _error("the session is not in a state for this action, or capacity refused it (code = reason)"),
    "413": _error("body_too_large: the body exceeds 64 KiB"),
    "429": _error(
        "rate_limited: too many requests for this token",
        {"Retry-After": {"schema": _string(), "description": "seconds"}},
    ),
    "503": _error("not_ready: the gateway takes no requests now (store down, starting, shutting down)"),
    "default": _error("any other error"),
}


def _errors(*codes: str) -> dict[str, Schema]:
    return {code: _STD_ERRORS[code] for code in (*codes, "default")}


def _path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": _string(), "description": description}


_AGENT_ID = _path_param("id", "agent id")
_SESSION_ID = _path_param("id", "session id")


def _body(name: str, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


_SESSION_ACTIONS: dict[str, tuple[str, bool, str, str]] = {
    # action: (body schema, body required, summary, response schema)
    "accept": ("SessionActionBody", False, "Accept an offered session", "Session"),
    "decline": ("SessionActionBody", False, "Decline an offered session: re-routed or rejected", "Session"),
    "end": ("SessionActionBody", False, "End an active session (into wrap-up, or closed)", "Session"),
    "focus": ("SessionActionBody", False, "Focus this session (the agent's previously focused one is left)", "Session"),
    "transfer": ("TransferBody", True, "Transfer an active session to an agent or a queue", "TransferResult"),
    "note": ("NoteBody", True, "Add a note to the session's record", "Session"),
    "confirm_account": ("ConfirmAccountBody", False, "Confirm the session's account", "Session"),
    "reset_account": ("SessionActionBody", False, "Reset the session's account to unidentified", "Session"),
    "send": ("SendBody", True, "Send a chat reply to the customer", "Session"),
}


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json(_ref("Health"), "alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the store answers, every adapter is up, requests are taken",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": _json(_ref("Ready"), "ready"),
                    "503": _error("not_ready; error.checks holds the individual checks"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (open: scrapers usually carry no token; aggregates only)",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": _string()}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
        "/v1/agents": {
            "get": {
                "operationId": "listAgents",
                "summary": "Agents: full objects for the supervisor; id, name, presence and free capacity for agents",
                "tags": ["agents"],
                "responses": {"200": _json(_ref("AgentList"), "the agents"), **_errors("401", "429")},
            }
        },
        "/v1/agents/{id}": {
            "parameters": [_AGENT_ID],
            "get": {
                "operationId": "getAgent",
                "summary": "One agent: presence, open sessions, capacity in use",
                "tags": ["agents"],
                "responses": {"200": _json(_ref("Agent"), "the agent"), **_errors("401", "403", "404", "429")},
            },
        },
        "/v1/agents/{id}/presence": {
            "parameters": [_AGENT_ID],
            "put": {
                "operationId": "setPresence",
                "summary": "Set the agent's presence (going offline withdraws its offered sessions)",
                "tags": ["agents"],
                "requestBody": _body("PresenceBody"),
                "responses": {
                    "200": _json(_ref("Agent"), "the agent after the change"),
                    **_errors("400", "401", "403", "404", "408", "413", "429", "503"),
                },
            },
        },
        "/v1/agents/{id}/focus": {
            "parameters": [_AGENT_ID],
            "put": {
                "operationId": "setFocus",
                "summary": "Focus one of the agent's sessions, or none (session_id null)",
                "tags": ["agents"],
                "requestBody": _body("FocusBody"),
                "responses": {
                    "200": _json(_ref("Agent"), "the agent after the change"),
                    **_errors("400", "401", "403", "404", "408", "409", "413", "429", "503"),
                },
            },
        },
        "/v1/agents/{id}/sessions": {
            "parameters": [_AGENT_ID],
            "post": {
                "operationId": "newSession",
                "summary": "Start a manual session (created active and focused)",
                "tags": ["agents"],
                "requestBody": _body("NewSessionBody", required=False),
                "responses": {
                    "201": _json(_ref("Session"), "the new session"),
                    "409": _error(
                        "refused by capacity: error.code is the rejection reason (agent_offline, "
                        "channel_at_capacity, agent_at_capacity)"
                    ),
                    **_errors("400", "401", "403", "404", "408", "413", "429", "503"),
                },
            },
        },
        "/v1/sessions/{id}": {
            "parameters": [_SESSION_ID],
            "get": {
                "operationId": "getSession",
                "summary": "The session's record (open or closed)",
                "tags": ["sessions"],
                "responses": {
                    "200": _json(_ref("Session"), "the session record"),
                    **_errors("401", "403", "404", "429", "503"),
                },
            },
        },
        "/v1/reports/sessions": {
            "get": {
                "operationId": "sessionReport",
                "summary": "Session records with handling and focus times (supervisor)",
                "tags": ["reports"],
                "parameters": [
                    {
                        "name": name,
                        "in": "query",
                        "required": False,
                        "description": f"{what} (offered_at); RFC 3339 with offset, or Unix seconds; absent: unbounded",
                        "schema": {
                            "anyOf": [
                                _string(format="date-time", maxLength=64),
                                _string(pattern=r"^-?[0-9]{1,15}(\.[0-9]{1,9})?$"),
                                _string(maxLength=0, description="empty: unbounded"),
                            ]
                        },
                    }
                    for name, what in (("from", "start, inclusive"), ("to", "end, exclusive"))
                ]
                + [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "description": "json (default; also when empty) or csv",
                        "schema": _string(enum=["json", "csv", ""], default="json"),
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the report; CSV columns: " + ",".join(REPORT_COLUMNS),
                        "content": {
                            "application/json": {"schema": _ref("Report")},
                            "text/csv": {"schema": _string()},
                        },
                    },
                    **_errors("400", "401", "403", "429", "503"),
                },
            }
        },
        "/v1/vendors/{vendor}/events": {
            "parameters": [_path_param("vendor", "the vendor's name in the configuration")],
            "post": {
                "operationId": "webhookEvent",
                "summary": "Generic JSON webhook: one normalized event in, the decision out",
                "tags": ["vendors"],
                "security": [],
                "parameters": [
                    {
                        "name": "X-Gateway-Timestamp",
                        "in": "header",
                        "required": True,
                        "description": "Unix seconds; more than 300 s away is refused (replay)",
                        "schema": _string(pattern=r"^[0-9]{1,15}$"),
                    },
                    {
                        "name": "X-Gateway-Signature",
                        "in": "header",
                        "required": True,
                        "description": (
                            'sha256=<hex HMAC-SHA256 of "<X-Gateway-Timestamp>.<raw body>"> under the vendor secret'
                        ),
                        "schema": _string(pattern=r"^sha256=[0-9a-fA-F]{64}$"),
                    },
                ],
                "requestBody": _body("WebhookEvent"),
                "responses": {
                    "200": _json(_ref("Decision"), "assigned, queued, duplicate, or a non-offer event accepted"),
                    "409": _json(_ref("Rejection"), "rejected, with the reason (or a duplicate of a rejection)"),
                    "400": _error("invalid_event: error.field names the field at fault"),
                    "401": _error("bad_signature: wrong or missing signature, stale or future timestamp"),
                    "404": _error("unknown_vendor"),
                    "408": _STD_ERRORS["408"],
                    "413": _STD_ERRORS["413"],
                    "503": _STD_ERRORS["503"],
                    "default": _STD_ERRORS["default"],
                },
            },
        },
    }
    for action, (schema, required, summary, result) in _SESSION_ACTIONS.items():
        paths[f"/v1/sessions/{{id}}/{action}"] = {
            "parameters": [_SESSION_ID],
            "post": {
                "operationId": f"session_{action}",
                "summary": summary,
                "tags": ["sessions"],
                "requestBody": _body(schema, required=required),
                "responses": {
                    "200": _json(
                        _ref(result), "the session after the action" if result == "Session" else "source and target"
                    ),
                    **_errors("400", "401", "403", "404", "408", "409", "413", "429", "503"),
                },
            },
        }
    return paths


_WEBSOCKETS = {
    "/v1/agents/{id}/ws": {
        "summary": "Agent desktop WebSocket (the agent's own token; not the supervisor)",
        "first_message": {"type": "hello", "agent": "Agent"},
        "client_messages": {
            "presence": ["state", "reason?"],
            "accept": ["session_id"],
            "decline": ["session_id"],
            "end": ["session_id"],
            "focus": ["session_id (null: none)"],
            "new_session": ["label?"],
            "transfer": ["session_id", "to_agent | to_queue", "mode (blind|consult)"],
            "note": ["session_id", "text"],
            "confirm_account": ["session_id", "account_id?"],
            "reset_account": ["session_id"],
            "send": ["session_id", "text"],
            "ping": [],
        },
        "replies": {
            "ack": ["ref", "session? (after the action)", "target? (transfer)"],
            "error": ["ref", "code", "message", "field?"],
            "pong": ["ref"],
        },
        "server_messages": [
            "hello",
            "session.offered (alert: true)",
            "session.opened",
            "session.updated",
            "session.closed",
            "chat.message (session_id, text, sender customer|agent, customer | agent_id, at, "
            "alert: true unless that session is focused, replay: true for history)",
            "agent.presence",
        ],
        "close_codes": {"1001": "server shutting down", "1009": "message too big (64 KiB)", "4008": "too slow"},
    },
    "/v1/events/ws": {
        "summary": "Supervisor stream of every normalized event, decision and session change (supervisor token)",
        "server_messages": [
            "event.routed (vendor, event_id, event_type, interaction_id, channel, event: the whole "
            "normalized event, decision)",
            "session.changed",
            "agent.presence",
            "vendor.notice",
        ],
        "client_messages": {"ping": []},
        "close_codes": {"1001": "server shutting down", "4008": "too slow"},
    },
}


_DOCUMENT: dict[str, Any] | None = None


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document (a fresh deep copy each call)."""
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = {
            "openapi": "3.1.0",
            "info": {
                "title": "cti-gateway",
                "version": _version,
                "description": (
                    "Routes inbound calls, chats and e-mails from contact-center systems to "
                    'multi-session agents. Errors are {"error": {"code", "message"}}. '
                    "Agents use their own token and see only their own agent and sessions; the "
                    "supervisor token reads everything and may act for any agent."
                ),
            },
            "servers": [{"url": "/"}],
            "tags": [
                {"name": "agents"},
                {"name": "sessions"},
                {"name": "reports"},
                {"name": "vendors"},
                {"name": "operations"},
                {"name": "pages"},
            ],
            "security": [{"bearer": []}, {"token_query": []}],
            "paths": {**_paths(), **web_paths()},
            "components": {
                "schemas": _schemas(),
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"},
                    "token_query": {
                        "type": "apiKey",
                        "in": "query",
                        "name": "token",
                        "description": "?token=<token>, for browsers' WebSockets (may end up in access logs)",
                    },
                },
            },
            "x-websockets": _WEBSOCKETS,
        }
    return copy.deepcopy(_DOCUMENT)
