"""Administration endpoints: ``POST /v1/admin/reload`` (what ``cti-gateway reload`` calls).

Needs the supervisor token, and answers loopback clients only unless
``server.remote_admin`` is true (403 ``forbidden`` otherwise). An optional JSON body
``{"config": PATH}`` names the file the caller validated: if it is not the file the gateway
runs on, 409 ``config_mismatch`` and nothing changes (the gateway only ever reads its own
file). Answers:

* 200 ``{"generation", "changes": {kind: [names]}, "needs_restart": [...], "agents_retiring": [...]}``;
* 422 ``invalid_config`` with ``problems`` (``file:line: field: message``): nothing changed;
* 409 ``reload_conflict`` (several instances on one store): another reload was applied to
  the shared log first; this one changed nothing anywhere (check the file, reload again);
* 503 ``not_ready`` (the journal did not take the change: nothing changed) and
  ``reload_unavailable`` when the gateway was started without a file.
"""

from __future__ import annotations

import ipaddress
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.reload import Reloader, ReloadFailed

from .context import ApiContext
from .errors import json_error

__all__ = ["ADMIN_REQUEST_MODELS", "ADMIN_RESPONSE_MODELS", "AdminApi", "ReloadBody", "Reloaded"]


class ReloadBody(BaseModel):
    """``POST /v1/admin/reload``: optional; names the file the caller validated."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(default=None, description="must be the file the gateway runs on")


class Reloaded(BaseModel):
    """A reload was applied: what changed, by kind, and the settings that need a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int = Field(description="reloads applied so far (kept across restarts)")
    changes: dict[str, list[str]] = Field(
        description="agents_added, agents_removed, agents_changed, tokens_changed, profiles_changed, "
        "queues_added/removed/changed, vendors_added/removed/changed, server_changed, needs_restart "
        "(kinds with nothing are left out)"
    )
    needs_restart: list[str] = Field(description="settings that changed but apply only after a restart")
    agents_retiring: list[str] = Field(description="removed agents that finish their open sessions first")


ADMIN_REQUEST_MODELS: tuple[type[BaseModel], ...] = (ReloadBody,)
ADMIN_RESPONSE_MODELS: tuple[type[BaseModel], ...] = (Reloaded,)

#: the body names a path at most
MAX_BODY_BYTES = 8192


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class AdminApi:
    def __init__(self, ctx: ApiContext, reloader: Reloader) -> None:
        self.ctx = ctx
        self.reloader = reloader

    async def reload(self, request: web.Request) -> web.StreamResponse:
        if not self.reloader.config.server.remote_admin and not _loopback(request.remote):
            return json_error(
                403, "forbidden", "administration answers loopback clients only (server.remote_admin: false)"
            )
        self.ctx.authenticate(request).require_supervisor()
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return json_error(413, "body_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return json_error(400, "invalid_request", "the body is not JSON")
            path = body.get("config") if isinstance(body, dict) else None
            if path is not None and not isinstance(path, str):
                return json_error(400, "invalid_request", "config: a file path (string)")
            if path is not None and not self.reloader.same_file(path):
                return json_error(
                    409,
                    "config_mismatch",
                    f"the gateway runs on {self.reloader.path}, not {path}: it reloads its own file only",
                )
        try:
            result = await self.reloader.reload()
        except ReloadFailed as exc:
            if exc.problems:
                return json_error(422, "invalid_config", exc.message, problems=exc.problems)
            status = {"not_ready": 503, "reload_unavailable": 503, "reload_conflict": 409}.get(exc.code, 500)
            return json_error(status, exc.code, exc.message)
        return web.json_response(result.as_dict())
