"""Helpers for tests against a real gateway process (``python -m gateway run``).

:class:`GatewayProcess` starts the server as a subprocess on a free loopback port, waits
for ``/readyz``, and kills it (SIGKILL) or stops it (SIGTERM). Its stdout and stderr go to
one file per start (never to a pipe nobody reads), so the listen line and the JSON log
lines of every start can be read back. The ``gateway_process`` fixture of
``tests/integration/conftest.py`` kills whatever is still running at teardown.

:class:`LiveClient` is an aiohttp client for the REST API and the signed vendor webhook;
it retries a request that was answered 429 ``rate_limited`` (the API limits every token to
50 requests/s), so bulk checks do not trip over the limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from adapters.webhook import signed_headers

ROOT = Path(__file__).resolve().parents[2]

#: how long a gateway may take to start (imports, journal restore) on a slow CI machine
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def sqlite_url(path: Path) -> str:
    """``sqlite:////absolute/path.db`` for an absolute path."""
    return f"sqlite:///{path.absolute()}"


class GatewayProcess:
    """One gateway server process, (re)startable on the same config and database."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        cwd: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.cwd = cwd
        self.log_dir = log_dir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path: Path | None = None
        self.stderr_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> GatewayProcess:
        assert not self.running, "already running"
        self.starts += 1
        self.stdout_path = self.log_dir / f"gateway-{self.port}-{self.starts}.out"
        self.stderr_path = self.log_dir / f"gateway-{self.port}-{self.starts}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self.args],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll ``/readyz`` until it answers 200; fail with the server's stderr if it exits."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the gateway exited with {self.proc.returncode} while starting:\n{self.stderr()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"the gateway was not ready within {timeout} s (last: {last}):\n{self.stderr()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (fails if it does not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the gateway did not exit within {timeout} s of SIGTERM") from None

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Teardown: make sure no server is left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a kill -9 that did not work
                pass

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of the current start whose ``event`` is ``name``."""
        found = []
        for line in self.stderr().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
        return found


# ---------------------------------------------------------------------------- HTTP client


class LiveClient:
    """REST calls with bearer tokens, and signed webhook posts, against one gateway."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base: str,
        *,
        tokens: Mapping[str, str],
        vendor: str,
        secret: str,
    ) -> None:
        self.http = http
        self.base = base
        self.tokens = dict(tokens)
        self.vendor = vendor
        self.secret = secret

    def headers(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    async def call(
        self, method: str, path: str, who: str | None = None, *, json_body: Any = None, retries: int = 200
    ) -> tuple[int, Any]:
        """``(status, parsed JSON body)``; a 429 is retried after a short pause."""
        for _ in range(retries):
            async with self.http.request(
                method, self.base + path, headers=self.headers(who), json=json_body
            ) as response:
                raw = await response.read()
                if response.status == 429:
                    await asyncio.sleep(0.1)
                    continue
                body = json.loads(raw) if raw else None
                return response.status, body
        raise AssertionError(f"{method} {path}: still rate limited after {retries} tries")

    async def ok(
        self, method: str, path: str, who: str | None = None, *, json_body: Any = None, status: int = 200
    ) -> Any:
        got, body = await self.call(method, path, who, json_body=json_body)
        assert got == status, (method, path, got, body)
        return body

    def signed(self, raw: bytes, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        return signed_headers(secret or self.secret, int(time.time()) if timestamp is None else timestamp, raw)

    async def post_raw(self, raw: bytes, headers: Mapping[str, str], *, vendor: str | None = None) -> tuple[int, Any]:
        url = f"{self.base}/v1/vendors/{vendor or self.vendor}/events"
        async with self.http.post(url, data=raw, headers=dict(headers)) as response:
            body = await response.read()
            try:
                return response.status, json.loads(body)
            except ValueError:
                return response.status, body.decode(errors="replace")

    async def webhook(self, event: Mapping[str, Any], **kwargs: Any) -> tuple[int, Any]:
        """Sign and post one event; ``(status, body)``."""
        raw = json.dumps(dict(event)).encode()
        return await self.post_raw(raw, self.signed(raw, **kwargs))
