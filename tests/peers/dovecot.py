"""A private Dovecot (a real IMAP server) in a temporary directory: one user with a
Maildir, IMAP on 127.0.0.1 and a free port, no TLS; mail delivered with ``dovecot-lda``.

Dovecot's master starts as root (as in CI); mail files belong to uid/gid 65534. The
instance lives under /tmp (not pytest's 0700 tmp_path, which its unprivileged processes
could not enter) and is removed on :meth:`Dovecot.stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import require

USER = "gw"
PASSWORD = "gw-imap-secret-123"
LDA = "/usr/lib/dovecot/dovecot-lda"

CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={dir}/mail/%u
}}
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Dovecot:
    def __init__(self) -> None:
        self.binary = require("dovecot", "dovecot-imapd")
        self.dir = Path(tempfile.mkdtemp(prefix="cti-dovecot-"))
        self.dir.chmod(0o755)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "dovecot.conf"

    @property
    def maildir(self) -> Path:
        return self.dir / "mail" / USER / "Maildir"

    def start(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir(exist_ok=True)
        shutil.chown(self.dir / "mail", 65534, 65534)
        (self.dir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::\n")
        self.conf.write_text(CONF.format(dir=self.dir, port=self.port))
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf), "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not start: {self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self, *, keep: bool = False) -> None:
        """Stop the server and every process it started, as a crash or a lost machine would
        (``keep``: leave its files, to start it again). Dovecot's master alone leaves the
        ``imap`` process of a connected client running: those are killed too."""
        if self.process is not None:
            children = _descendants(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # its children (imap, imap-login) follow the master; wait until the port is free
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                except OSError:
                    break
                time.sleep(0.05)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def deliver(self, message: bytes, sender: str = "customer@c.test") -> None:
        """Deliver one message into the user's INBOX with dovecot-lda (as an MTA would)."""
        done = subprocess.run(
            [LDA, "-c", str(self.conf), "-d", USER, "-f", sender],
            input=message,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dovecot-lda failed ({done.returncode}): {done.stderr.decode()} {self.log()[-1000:]}")

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""
