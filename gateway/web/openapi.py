"""The OpenAPI description of what :mod:`gateway.web` serves (merged into ``/openapi.json``).

The answers of ``/v1/whoami``, ``/v1/profiles`` and ``/v1/queues`` are described by the
pydantic models below; :mod:`gateway.api.openapi` puts their JSON Schemas in
``components/schemas`` (``tests/api/test_response_models.py`` checks real answers against them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from gateway.config import OnFull, QueuePolicy
from gateway.events import Channel
from gateway.web import _TYPES as ASSET_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Whoami(_Out):
    """Who the token is: the supervisor (agent_id and name null), or which agent."""

    kind: Literal["agent", "supervisor"]
    agent_id: str | None
    name: str | None


class ProfileView(_Out):
    """A capacity profile with every cap and timeout resolved (per channel)."""

    max_sessions: int
    reserved_inbound: int
    max_units: int
    channels: dict[Channel, int]
    units: dict[Channel, int]
    offer_timeout_s: dict[Channel, float]
    wrap_up_s: dict[Channel, float]


class ProfileList(_Out):
    profiles: dict[str, ProfileView] = Field(description="by name")


class Waiting(_Out):
    vendor: str
    interaction_id: str
    channel: Channel
    priority: int
    waiting_ms: NonNegativeInt


class QueueView(_Out):
    """A queue as the supervisor sees it, with what waits in it."""

    name: str
    policy: QueuePolicy
    on_full: OnFull
    waiting: list[Waiting]
    longest_wait_ms: NonNegativeInt


class QueueName(_Out):
    """A queue as an agent sees it: its name."""

    name: str


class QueueList(_Out):
    queues: list[QueueView | QueueName] = Field(description="supervisor: QueueView objects; agent: QueueName objects")


#: the answers of the reads below (their components in ``/openapi.json``)
WEB_MODELS: tuple[type[BaseModel], ...] = (Whoami, ProfileList, QueueList)


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
                        "content": {
                            t: {"schema": {"type": "string"}} for t in ASSET_TYPES.values() if t != "text/html"
                        },
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
                    "200": _json(_ref(Whoami), "the principal"),
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
                    "200": _json(_ref(ProfileList), "profiles by name"),
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
                    "200": _json(_ref(QueueList), "the queues (agents: names only)"),
                    **_errors("401", "429"),
                },
            }
        },
    }
