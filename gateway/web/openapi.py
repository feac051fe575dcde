"""The OpenAPI description of what :mod:`gateway.web` serves (merged into ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_PER_CHANNEL_INT = {"type": "object", "additionalProperties": {"type": "integer"}}
_PER_CHANNEL_NUM = {"type": "object", "additionalProperties": {"type": "number"}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    texts = {
        "401": "unauthorized: no or unknown bearer token",
        "429": "rate_limited: too many requests for this token",
    }
    return {code: _json(_ERROR, texts[code]) for code in codes}


_PAGE = {
    "description": "the page (HTML, served with a strict Content-Security-Policy); it signs in by itself",
    "content": {"text/html": {"schema": {"type": "string"}}},
}

_PROFILE = {
    "type": "object",
    "required": ["max_sessions", "reserved_inbound", "max_units", "channels", "units", "offer_timeout_s", "wrap_up_s"],
    "properties": {
        "max_sessions": {"type": "integer"},
        "reserved_inbound": {"type": "integer"},
        "max_units": {"type": "integer"},
        "channels": _PER_CHANNEL_INT,
        "units": _PER_CHANNEL_INT,
        "offer_timeout_s": _PER_CHANNEL_NUM,
        "wrap_up_s": _PER_CHANNEL_NUM,
    },
}

_WAITING = {
    "type": "object",
    "required": ["vendor", "interaction_id", "channel", "priority", "waiting_ms"],
    "properties": {
        "vendor": {"type": "string"},
        "interaction_id": {"type": "string"},
        "channel": {"type": "string"},
        "priority": {"type": "integer"},
        "waiting_ms": {"type": "integer", "minimum": 0},
    },
}

_QUEUE = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "policy": {"type": "string"},
        "on_full": {"type": "string"},
        "waiting": {"type": "array", "items": _WAITING},
        "longest_wait_ms": {"type": "integer", "minimum": 0},
    },
}


def web_paths() -> dict[str, Any]:
    """Paths of the pages, their assets and the three reads they need."""
    return {
        "/desk": {
            "get": {
                "operationId": "deskPage",
                "summary": "The agent desktop (browser page)",
                "tags": ["pages"],
                "security": [],
                "responses": {"200": _PAGE},
            }
        },
        "/board": {
            "get": {
                "operationId": "boardPage",
                "summary": "The supervisor wallboard (browser page)",
                "tags": ["pages"],
                "security": [],
                "responses": {"200": _PAGE},
            }
        },
        "/ui/{file}": {
            "parameters": [
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "desk/..., board/... or common/...: a script or style sheet of the pages",
                }
            ],
            "get": {
                "operationId": "pageAsset",
                "summary": "A script or style sheet of the pages (same Content-Security-Policy)",
                "tags": ["pages"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    "404": _json(_ERROR, "not_found: no such file"),
                },
            },
        },
        "/v1/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "Who the token is: the supervisor, or which agent",
                "tags": ["agents"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["kind", "agent_id", "name"],
                            "properties": {
                                "kind": {"enum": ["agent", "supervisor"]},
                                "agent_id": {"type": ["string", "null"]},
                                "name": {"type": ["string", "null"]},
                            },
                        },
                        "the principal",
                    ),
                    **_errors("401", "429"),
                },
            }
        },
        "/v1/profiles": {
            "get": {
                "operationId": "listProfiles",
                "summary": "Capacity profiles with every cap and timeout resolved (an agent: its own profile only)",
                "tags": ["agents"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["profiles"],
                            "properties": {"profiles": {"type": "object", "additionalProperties": _PROFILE}},
                        },
                        "profiles by name",
                    ),
                    **_errors("401", "429"),
                },
            }
        },
        "/v1/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Queues; for the supervisor with the interactions waiting in each and the longest wait",
                "tags": ["agents"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["queues"],
                            "properties": {"queues": {"type": "array", "items": _QUEUE}},
                        },
                        "the queues (agents: names only)",
                    ),
                    **_errors("401", "429"),
                },
            }
        },
    }
