"""A private Postfix instance (a real MTA) in a temporary directory, relaying every mail to
one SMTP port on loopback, with fast retries for tests.

It listens on no port (``master_service_disable = inet``): mail enters through its own
``sendmail -C DIR`` and leaves through its ``smtp`` client to ``relayhost``. Needs root
(Postfix's master starts as root, as in CI). ``queue()`` lists what it still holds, with the
reason each mail was deferred (``postqueue -p``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

from . import require

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
master_service_disable = inet
relayhost = [127.0.0.1]:{port}
smtp_tls_security_level = none
smtp_dns_support_level = disabled
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
queue_run_delay = 1s
minimal_backoff_time = 2s
maximal_backoff_time = 3s
"""


class Postfix:
    def __init__(self, directory: Path, relay_port: int) -> None:
        self.dir = directory
        self.relay_port = relay_port
        self.postfix = require("postfix", "postfix")
        self.started = False

    def _run(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(args, input=stdin, capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            log = (self.dir / "maillog").read_text(errors="replace")[-2000:] if (self.dir / "maillog").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()} {log}")
        return done.stdout.decode(errors="replace")

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("a private Postfix instance needs root (CI runs as root)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        (self.dir / "queue").mkdir(exist_ok=True)
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postfix")
        shutil.copy("/etc/postfix/master.cf", self.dir / "master.cf")
        (self.dir / "main.cf").write_text(MAIN_CF.format(dir=self.dir, port=self.relay_port))
        self._run("postconf", "-c", str(self.dir), "-F", "*/*/chroot = n")
        self._run(self.postfix, "-c", str(self.dir), "check")
        self._run(self.postfix, "-c", str(self.dir), "start")
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.started = False
            subprocess.run([self.postfix, "-c", str(self.dir), "stop"], capture_output=True, timeout=30, check=False)

    def submit(self, message: bytes, sender: str, *recipients: str) -> None:
        self._run("sendmail", "-C", str(self.dir), "-f", sender, *recipients, stdin=message)

    def queue(self) -> str:
        """``postqueue -p``: what Postfix still holds, with each deferral's reason."""
        return self._run("postqueue", "-c", str(self.dir), "-p")

    @staticmethod
    def queue_ids(listing: str) -> set[str]:
        """The distinct queue IDs in a ``postqueue -p`` listing. One mail can be listed twice
        while Postfix moves it from the deferred to the active queue (``ID*`` and ``ID``),
        so count IDs, never the "N Requests" trailer."""
        return set(re.findall(r"^([0-9A-F]{6,})[*!]?\s+\d+\s", listing, flags=re.MULTILINE))

    def flush(self) -> None:
        self._run("postqueue", "-c", str(self.dir), "-f")

    async def until_queue(self, predicate: object, timeout: float = 30.0) -> str:
        """Poll ``postqueue -p`` until ``predicate(text)`` holds; returns the listing."""
        assert callable(predicate)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            listing = await asyncio.to_thread(self.queue)
            if predicate(listing):
                return listing
            if loop.time() > deadline:
                raise AssertionError(f"Postfix's queue never matched within {timeout} s:\n{listing}")
            await asyncio.sleep(0.3)
