"""Contract driver of the generic JSON webhook: a signing HTTP client, and an HTTP receiver
for the signed callbacks that carry late decisions."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adapters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers
from gateway.events import Channel

from ..harness import VENDOR, ContractGateway

SECRET = "contract-webhook-secret-0123456789"


class WebhookDriver:
    adapter: ClassVar[str] = "webhook"
    channel: ClassVar[Channel] = Channel.CHAT
    connection_based: ClassVar[bool] = False
    supports_queue: ClassVar[bool] = True

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.callbacks: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._callback_port = 0
        self._base = ""

    async def start_peer(self, tmp_path: Path) -> None:
        async def receive(request: web.Request) -> web.Response:
            raw = await request.read()
            timestamp = request.headers.get(TIMESTAMP_HEADER, "")
            expected = sign(SECRET, int(timestamp), raw) if timestamp.isdigit() else ""
            if not expected or not hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, "")):
                return web.Response(status=401)
            self.callbacks.append(json.loads(raw))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/callback", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._callback_port = self._runner.addresses[0][1]

    async def stop_peer(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def settings(self) -> dict[str, Any]:
        return {"secret": SECRET, "callback_url": f"http://127.0.0.1:{self._callback_port}/callback"}

    def bind(self, gateway: ContractGateway) -> None:
        self._base = gateway.base

    def interaction_id(self, ref: str) -> str:
        return f"wh-{ref}"

    async def _post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self._base}/v1/vendors/{VENDOR}/events",
                data=raw,
                headers=signed_headers(SECRET, int(time.time()), raw),
            ) as response,
        ):
            return response.status, await response.json()

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        body: dict[str, Any] = {
            "event_id": f"offer-{ref}-{next(self._ids)}",
            "type": "offer",
            "channel": self.channel.value,
            "interaction_id": self.interaction_id(ref),
        }
        if agent is not None:
            body["agent_id"] = agent
        else:
            body["queue"] = "support"
        self.answers[ref] = await self._post(body)

    async def _callback_for(self, ref: str, want: dict[str, Any], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.callbacks:
                if body.get("interaction_id") == self.interaction_id(ref) and all(
                    body.get("data", {}).get(k) == v for k, v in want.items()
                ):
                    return True
            await asyncio.sleep(0.02)
        return False

    async def rejected_at_vendor(self, ref: str) -> bool:
        status, body = self.answers.get(ref, (0, {}))
        if status == 409 and body.get("decision") == "rejected":
            return True
        return await self._callback_for(ref, {"decision": "rejected"}, timeout=1.0)

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        status, body = self.answers.get(ref, (0, {}))
        if status == 200 and body.get("decision") == "assigned" and body.get("agent_id") == agent:
            return True
        return await self._callback_for(ref, {"decision": "assigned", "agent_id": agent})

    async def end(self, ref: str) -> None:
        status, body = await self._post(
            {"event_id": f"end-{ref}-{next(self._ids)}", "type": "end", "interaction_id": self.interaction_id(ref)}
        )
        assert status == 200, (status, body)

    async def outage(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def recover(self) -> None:  # pragma: no cover - not connection based
        raise NotImplementedError

    async def garbage(self) -> None:
        async with aiohttp.ClientSession() as http:
            for raw in (b"{not json", b"\xff\xfe", b'{"type": "offer"}', b"[]"):
                async with http.post(
                    f"{self._base}/v1/vendors/{VENDOR}/events",
                    data=raw,
                    headers=signed_headers(SECRET, int(time.time()), raw),
                ) as response:
                    assert 400 <= response.status < 500, response.status


DRIVER = WebhookDriver
