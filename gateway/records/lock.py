"""The single-writer guard of an SQLite journal: one gateway process per journal file.

Two gateways writing one journal would each keep their own capacity counters in memory and
together put an agent above its caps. So a :class:`~gateway.records.SqliteJournal` takes an
exclusive ``flock`` on a lock file next to the database (``gateway.db.lock``) before it
touches the database, and holds it until it closes. The lock file also carries a note (pid,
host, since when, the command) so that the second gateway can name the first one.

Stale locks cannot block: ``flock`` locks belong to the open file, and the kernel drops them
when the process that holds them ends, however it ends (SIGKILL included). The file itself
stays (deleting it would let two processes lock two different files of the same name); its
note is rewritten by the next holder. ``flock`` works between processes of one machine; a
journal on a network file system shared by several machines is not supported (SQLite's
own locking is unreliable there too): use a shared store for several machines.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ._common import JournalUnavailable

__all__ = ["JournalLock", "JournalLocked", "lock_path"]


class JournalLocked(JournalUnavailable):
    """Another process holds the journal (``run`` exits with this one-line message)."""

    code = "journal_locked"
    retryable = False


def lock_path(db: Path) -> Path:
    """The lock file of the journal ``db``: ``gateway.db`` -> ``gateway.db.lock``."""
    return db.with_name(db.name + ".lock")


def _describe(note: dict[str, Any]) -> str:
    parts = []
    if note.get("pid"):
        parts.append(f"pid {note['pid']}")
    if note.get("host"):
        parts.append(f"on {note['host']}")
    if note.get("since"):
        parts.append(f"since {note['since']}")
    if note.get("command"):
        parts.append(f"({note['command']})")
    return " ".join(parts) or "a process that left no note yet"


class JournalLock:
    """An exclusive lock on ``lock_path(db)``, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`JournalLocked` naming the holder. Idempotent."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise JournalUnavailable(f"cannot create the journal's lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self._read_note(fd))
            os.close(fd)
            raise JournalLocked(
                f"the journal {self.db} is in use by another gateway: {holder}; "
                "stop it first, or give this one another store.url (one gateway per SQLite journal)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise JournalUnavailable(f"cannot lock {self.path}: {exc}") from exc
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["cti-gateway", *sys.argv[1:]])[:200],
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
        except OSError:  # the note is a courtesy; the lock is what counts
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays, see the module doc). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no note of a process that is gone
        except OSError:  # pragma: no cover - best effort
            pass
        os.close(fd)  # closing the file drops the flock

    @staticmethod
    def _read_note(fd: int) -> dict[str, Any]:
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            note = json.loads(text)
        except (OSError, ValueError):
            return {}
        return note if isinstance(note, dict) else {}
