"""One gateway per SQLite journal, and a taken port caught before the journal is touched
(issue 11 item 1), with two real gateway processes.

Two gateways on one journal each keep their own counters and together put an agent above
its caps: the second one must refuse to start, naming the first. A lock left by a process
that died (SIGKILL) must not block the next start. A gateway whose port is taken must say
so (and by whom) without creating, locking or opening its journal.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.records import JournalLocked, SqliteJournal

from .conftest import GatewayFactory
from .live import sha, sqlite_url

SECRET = "single-writer-secret"


def config(db: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha("sup")},
        "store": {"url": sqlite_url(db)},
        "capacity_profiles": {"std": {"max_sessions": 2, "channels": {"voice": 1, "chat": 2}}},
        "agents": [{"id": "a1", "profile": "std", "token_sha256": sha("a1-token")}],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
    }


def problems(stderr: str) -> list[str]:
    """The lines a person reads (not the JSON log lines)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def test_a_second_gateway_on_the_same_journal_refuses_naming_the_first_and_a_dead_ones_lock_does_not_block(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    db = tmp_path / "gateway.db"
    first = gateway_process(config(db), name="first").start()
    assert first.proc is not None
    second = gateway_process(config(db), name="second").start(wait=False)
    assert second.wait_exit() == 1
    err = second.stderr()
    assert "Traceback" not in err
    [line] = problems(err)
    assert line.startswith(
        f"cti-gateway: cannot start: the journal {db} is in use by another gateway: "
        f"pid {first.proc.pid} on {socket.gethostname()} since 20"
    ), line
    assert "stop it first, or give this one another store.url" in line
    assert first.running  # the first one is untouched and still serves
    first.wait_ready(5)

    # SIGKILL leaves the lock file behind, but the kernel dropped its lock: no stale lock
    first.kill()
    assert (tmp_path / "gateway.db.lock").exists()
    second.start()
    assert second.proc is not None
    # and now the roles are swapped: the restarted first one is refused, naming the second
    first.start(wait=False)
    assert first.wait_exit() == 1
    [line] = problems(first.stderr())
    assert f"is in use by another gateway: pid {second.proc.pid} on " in line
    assert second.terminate() == 0
    first.start()  # a graceful stop released it too
    assert first.terminate() == 0


def test_a_taken_port_is_one_line_naming_the_holder_and_the_journal_is_never_touched(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    holder = gateway_process(config(tmp_path / "holder.db"), name="holder").start()
    assert holder.proc is not None
    db = tmp_path / "fresh" / "gateway.db"
    late = gateway_process(config(db), name="late", port=holder.port).start(wait=False)
    assert late.wait_exit() == 1
    err = late.stderr()
    assert "Traceback" not in err
    assert problems(err) == [
        f"cti-gateway: cannot start: cannot listen on 127.0.0.1:{holder.port}: the port is in use by "
        f"pid {holder.proc.pid} ({problems_command(holder.proc.pid)}); stop it or choose another port (--port)"
    ]
    # checked before the journal: no directory, no database, no lock file were created
    assert not (tmp_path / "fresh").exists()
    # and on the holder's own journal the port is what is reported (the lock is never reached)
    again = gateway_process(config(tmp_path / "holder.db"), name="again", port=holder.port).start(wait=False)
    assert again.wait_exit() == 1
    [line] = problems(again.stderr())
    assert f"cannot listen on 127.0.0.1:{holder.port}: the port is in use by pid {holder.proc.pid} " in line
    holder.wait_ready(5)


def problems_command(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    text = " ".join(part.decode() for part in raw.split(b"\0") if part)
    return (text[:120] + "...") if len(text) > 120 else text


def test_a_port_held_by_a_foreign_listener_is_reported_too(gateway_process: GatewayFactory, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        db = tmp_path / "g.db"
        proc = gateway_process(config(db), name="foreign", port=port).start(wait=False)
        assert proc.wait_exit() == 1
        [line] = problems(proc.stderr())
        expected = f"cti-gateway: cannot start: cannot listen on 127.0.0.1:{port}: the port is in use by pid "
        assert line.startswith(expected), line
        assert not db.exists()


@pytest.mark.asyncio
async def test_two_journals_on_one_file_in_one_process_are_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = SqliteJournal(path)
    await first.open()
    second = SqliteJournal(path)
    with pytest.raises(JournalLocked, match=r"is in use by another gateway: pid \d+ on "):
        await second.open()
    with sqlite3.connect(path) as conn:  # refused before it touched the database
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    await first.close()
    assert (tmp_path / "j.db.lock").read_text() == ""  # no note of a holder that is gone
    await second.open()
    try:
        assert await second.ping()
    finally:
        await second.close()
