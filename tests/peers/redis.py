"""A private redis-server (a real Redis) on 127.0.0.1 and a free port, in a temporary
directory, started in the foreground and stopped by its PID (apt never starts services here).

``appendonly=True`` keeps the data across :meth:`RedisServer.restart` (the append-only file
in the directory, fsync'd at every write), as a production Redis holding the gateway's
counters must be configured; the default keeps nothing on disk (``--save ''``).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import require

__all__ = ["RedisServer"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; :meth:`stop` and :meth:`start` keep its port and directory."""

    def __init__(self, directory: Path, *, appendonly: bool = False, password: str | None = None) -> None:
        self.binary = require("redis-server", "redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / f"redis-{self.starts}.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log()
                raise AssertionError(f"redis-server exited with {self.proc.returncode}: {err}{log[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"redis-server did not answer within {timeout} s:\n{self.log()[-2000:]}")

    def _answers(self) -> bool:
        """A PING answered (+PONG, or -NOAUTH: it is up and wants the password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def log(self) -> str:
        path = self.directory / f"redis-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID and wait (SIGKILL if it does not end in 10 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            if proc is not None and proc.stderr:
                proc.stderr.close()
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL by PID: the server vanishes mid-flight."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self.stop()
