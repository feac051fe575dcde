"""A private PostgreSQL server (a real one) on 127.0.0.1 and a free port, in a temporary
directory, started in the foreground and stopped by its PID (apt never starts services here;
the system cluster stays down and untouched).

``initdb`` and ``postgres`` refuse to run as root: both run as the ``postgres`` user (the
Debian package creates it), in a directory of their own under /tmp (pytest's ``tmp_path``
is not reachable by another user). The superuser ``postgres`` has a password
(scram-sha-256 over TCP), so the gateway's URL really carries one; :meth:`execute` runs
SQL as that superuser (to create the gateway's role and database as the README says).
:meth:`stop` then :meth:`start` keep the port, the directory and the data.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "postgres_bin"]

SUPERUSER_PASSWORD = "pg-test-superuser"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; without one the test fails in CI
    (every real-peer test runs there) and is skipped elsewhere."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    message = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
    if not found:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("the postgres user is missing (the postgresql package creates it)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One postgres process (the postmaster); :meth:`stop` and :meth:`start` keep its port and data."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        if os.geteuid() != 0:  # pragma: no cover - the tests and CI run as root here
            pytest.skip("starting PostgreSQL as the postgres user needs root")
        self.user = pwd.getpwnam("postgres")
        self.directory = Path(tempfile.mkdtemp(prefix="cti-pg-"))
        os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self.data = self.directory / "data"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        pwfile = self.directory / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"{args[0]} exited with {result.returncode}: {result.stderr.decode(errors='replace')}")

    def url(self, user: str = "postgres", password: str = SUPERUSER_PASSWORD, database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.directory / f"pg-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 30.0) -> PostgresServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.directory / f"pg-{self.starts}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=40",
                ],
                user=self.user.pw_uid,
                group=self.user.pw_gid,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"postgres did not accept connections within {timeout} s:\n{self.log()[-3000:]}")

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0

    def execute(self, *statements: str) -> None:
        """Run SQL as the superuser over the Unix socket (``psql``; stops at the first error)."""
        args = [str(self.bin / "psql"), "-h", str(self.directory), "-p", str(self.port), "-U", "postgres"]
        args += ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-X", "-q"]
        for statement in statements:
            args += ["-c", statement]
        self._run(*args)

    def stop(self, mode: str = "fast") -> None:
        """Shut down by PID and wait: ``fast`` (SIGINT: sessions cut, a clean checkpoint) or
        ``immediate`` (SIGQUIT: everything quits at once, crash recovery at the next start);
        SIGKILL if it does not end in 20 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal({"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove(self) -> None:
        """Stop and delete the directory (data included)."""
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory)
