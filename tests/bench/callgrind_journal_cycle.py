"""P1's engine and journal work per offer/accept/end cycle under ``valgrind --tool=callgrind``.

Not a test. One cycle is what the gateway does for P1's three messages apart from HTTP and
WebSockets: the engine call (an offer with a customer and a subject to a queue of 100
agents, the agent's accept, its end), then for each of the three ``take_changes()``,
``drain()`` (the notices' session objects and event bodies), the journal's ``prepare`` (rows
checked and encoded) and, every ``batch`` commits, the SQLite transaction that writes them
(a WAL file in a temporary directory, ``synchronous=NORMAL``), as the group commit does.
Only the measured cycles run inside ``functools.reduce``, so callgrind collects them alone::

    valgrind --tool=callgrind --toggle-collect=functools_reduce --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python tests/bench/callgrind_journal_cycle.py 300
    callgrind_annotate /tmp/cg.out | grep "PROGRAM TOTALS"     # Ir / 300 = instructions per cycle

Another source tree: ``PYTHONPATH=/tmp/tree`` (a ``git archive`` of it). Without valgrind it
prints the CPU time of each part per cycle (noisy on a shared machine) and the rows and
bytes written.
"""

from __future__ import annotations

import functools
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import Channel, Customer, Event, EventType
from gateway.records import _common
from gateway.records import sqlite as journal_sqlite

T0 = 1_700_000_000.0
CHANNELS = (Channel.CHAT, Channel.CHAT, Channel.CHAT, Channel.EMAIL, Channel.VOICE)


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    config = GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},
            "capacity_profiles": {"blended": {"max_sessions": 8, "channels": {"voice": 1}}},
            "queues": [{"name": "support"}, {"name": "sales", "policy": "least_busy"}],
            "agents": [{"id": f"b{n:05d}", "profile": "blended", "queues": ["support", "sales"]} for n in range(100)],
        }
    )
    clock = ManualClock(T0)
    engine = Engine(config, clock=clock)
    for agent_id in engine.agent_ids():
        engine.set_presence(agent_id, "ready")
    engine.take_changes()
    engine.drain()
    work = Path(tempfile.mkdtemp(prefix="journal-cycle-"))
    conn = sqlite3.connect(work / "journal.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in journal_sqlite._SCHEMA:
        conn.execute(statement)
    spent = dict.fromkeys(("engine", "take_changes", "drain", "prepare", "write"), 0.0)
    totals = {"rows": 0, "bytes": 0, "pending": 0}
    merged = [_common.Merged()]
    cpu = time.process_time

    def step(call: Callable[[], Any]) -> Any:
        c0 = cpu()
        result = call()
        c1 = cpu()
        changes = engine.take_changes()
        c2 = cpu()
        engine.drain()
        c3 = cpu()
        rows = _common.prepare(changes)
        c4 = cpu()
        merged[0].add(rows)
        totals["pending"] += 1
        if totals["pending"] >= batch:
            journal_sqlite._write_rows(conn, merged[0])
            totals["rows"] += merged[0].row_count()
            merged[0], totals["pending"] = _common.Merged(), 0
        c5 = cpu()
        for name, took in zip(spent, (c1 - c0, c2 - c1, c3 - c2, c4 - c3, c5 - c4), strict=True):
            spent[name] += took
        tables = (rows.sessions, rows.interactions, rows.agents, rows.events, rows.meta)
        totals["bytes"] += sum(len(row[-1]) for table in tables for row in table)
        return result

    def cycle(acc: None, n: int) -> None:
        clock.advance(0.01)
        event = Event(
            vendor="crm",
            event_id=f"o{n}",
            type=EventType.OFFER,
            channel=CHANNELS[n % len(CHANNELS)],
            interaction_id=f"i{n}",
            queue=("support", "sales")[n % 2],
            customer=Customer(name=f"Customer {n}", address=f"+49301234{n % 10000:04d}"),
            subject="Order 4711",
            occurred_at=datetime.fromtimestamp(T0 + n, tz=timezone.utc),
        )
        decision = step(lambda: engine.handle_event(event))
        session_id, agent_id = decision.session_id, decision.agent_id
        clock.advance(0.01)
        step(lambda: engine.accept(session_id, actor=agent_id))
        clock.advance(0.01)
        step(lambda: engine.end(session_id, actor=agent_id))

    for n in range(200):  # warm-up: caches, the first rows of each table
        cycle(None, n)
    spent = dict.fromkeys(spent, 0.0)
    totals.update(rows=0, bytes=0)
    gc.collect()
    try:
        functools.reduce(cycle, range(200, 200 + cycles), None)
    finally:
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    parts = " ".join(f"{name} {took / cycles * 1e6:.1f}" for name, took in spent.items())
    print(
        f"{parts} -> {sum(spent.values()) / cycles * 1e6:.1f} us CPU per cycle; "
        f"{totals['rows'] / cycles:.2f} rows and {totals['bytes'] / cycles:.0f} bytes written per cycle"
    )


if __name__ == "__main__":
    main()
