"""The gateway side of the adapter contract suite: a real gateway in the test's event loop.

:class:`ContractGateway` runs :func:`gateway.app.build_app` on a free loopback port with a
SQLite journal in the test's temporary directory and the system clock, configured with two
agents and one queue (below) and the one vendor the driver describes. Tests read the
gateway's state through the runtime and wait for it with :meth:`ContractGateway.until`.

The fixed set-up every driver can rely on:

* agents ``a1`` and ``a2`` (tokens ``a1-token-0123456789`` ...), profile ``contract``:
  3 sessions, at most 1 voice, 2 chats, 2 e-mails; both made ``ready`` by the fixture;
* queue ``support`` (``on_full: wait``, ``max_wait_s: 60``), both agents in it;
* queue ``solo`` (``on_full: reject``), ``a1`` alone: for vendors that offer only to a
  queue (an IMAP inbox), "offer to a1" is an offer to ``solo``;
* the vendor ``VENDOR`` with the driver's adapter and settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import RUNTIME, build_app
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.runtime import Runtime
from gateway.sessions import Session

VENDOR = "vendor-under-test"
AGENTS = ("a1", "a2")
TOKENS = {a: f"{a}-token-0123456789" for a in AGENTS} | {"supervisor": "sup-token-0123456789"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def contract_config(adapter: str, settings: dict[str, Any], db: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": 600},
            "store": {"url": f"sqlite:///{db}"},
            "capacity_profiles": {
                "contract": {"max_sessions": 3, "channels": {"voice": 1, "chat": 2, "email": 2}},
            },
            "queues": [
                {"name": "support", "on_full": "wait", "max_wait_s": 60},
                # for vendors that can offer only to a queue: a1 alone, refusing when a1 is full
                {"name": "solo", "on_full": "reject"},
            ],
            "agents": [
                {
                    "id": a,
                    "name": a.upper(),
                    "profile": "contract",
                    "queues": ["support", "solo"] if a == "a1" else ["support"],
                    "token_sha256": sha(TOKENS[a]),
                }
                for a in AGENTS
            ],
            "vendors": [{"name": VENDOR, "adapter": adapter, **settings}],
        }
    )


@dataclass
class ContractGateway:
    config: GatewayConfig
    base_dir: Path
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    base: str = ""
    port: int = 0
    #: the file the config was read from, if any (then a reload can re-read it)
    config_path: Path | None = None

    async def start(self) -> None:
        self.app = build_app(self.config, base_dir=self.base_dir, config_path=self.config_path)
        self.runner = web.AppRunner(self.app, shutdown_timeout=5.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.port = port
        self.base = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.runner = self.app = None

    async def restart(self) -> None:
        """Stop (graceful) and start again on the same port and journal: state is restored."""
        await self.stop()
        await self.start()

    @property
    def runtime(self) -> Runtime:
        assert self.app is not None, "the gateway is not running"
        return self.app[RUNTIME]

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    async def ready(self, *agents: str) -> None:
        for agent_id in agents or AGENTS:
            await self.runtime.act(lambda e, a=agent_id: e.set_presence(a, "ready"))

    def sessions_of(self, interaction_id: str) -> list[Session]:
        """Every session (open or recently closed) of the vendor's interaction, oldest first."""
        found = [s for s in self.engine.sessions.values() if s.vendor == VENDOR and s.interaction_id == interaction_id]
        return sorted(found, key=lambda s: s.offered_at)

    def health(self) -> str:
        return self.runtime.adapters[VENDOR].health.value

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(self.base + "/readyz") as response:
            return response.status, await response.json()

    async def until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Wait until ``condition()`` is truthy (returns it) or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
            await asyncio.sleep(0.02)
