"""Benchmark of the SQLite journal: sequential commits vs concurrent committers (group commit).

Not a test (pytest collects ``test_*.py`` only). Run it on the target machine, on the disk
the journal will live on (fsync cost depends entirely on the storage)::

    .venv/bin/python tests/bench/bench_journal.py                # both synchronous modes
    .venv/bin/python tests/bench/bench_journal.py --dir /var/lib/cti-gateway --mode FULL

Each commit carries what one routed offer writes: a session state dict (with its public
record), its interaction and the inbound event, about 2.5 KB of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.persistence import Changes
from gateway.records import SqliteJournal

T0 = 1_700_000_000.0


def offer_changes(n: int) -> Changes:
    sid = f"s{n}"
    record = {
        "id": sid,
        "agent_id": f"a{n % 50}",
        "channel": "chat",
        "state": "offered",
        "vendor": "crm",
        "interaction_id": f"i{n}",
        "queue": "support",
        "customer": {"address": "+4930123456", "name": "Customer Name"},
        "subject": "Order 4711 " + "x" * 200,
        "label": "Chat: Customer Name",
        "profile": "chat",
        "account": {"state": "unidentified", "id": None},
        "offered_at": "2023-11-14T22:13:20.000Z",
        "accepted_at": None,
        "ended_at": None,
        "closed_at": None,
        "handle_ms": None,
        "wrap_ms": None,
        "focus_ms": 0,
        "outcome": None,
        "notes": [],
        "transferred_from": None,
        "transferred_to": None,
        "focused": False,
        "flagged": False,
    }
    state = {
        **{k: v for k, v in record.items() if k not in ("focused",)},
        "offered_at": T0 + n,
        "units": 1,
        "focused_since": None,
        "focus_ms_closed": 0,
        "deadline": T0 + n + 30,
        "record": record,
    }
    interaction = {
        "vendor": "crm",
        "interaction_id": f"i{n}",
        "channel": "chat",
        "offer_event_id": f"e{n}",
        "queue": "support",
        "phase": "offered",
        "holder": sid,
        "created_at": T0 + n,
        "done_at": None,
        "customer": record["customer"],
        "subject": record["subject"],
        "excluded": [],
        "decisions": [],
    }
    event = {
        "vendor": "crm",
        "event_id": f"e{n}",
        "at": T0 + n,
        "type": "offer",
        "interaction_id": f"i{n}",
        "event": {"event_id": f"e{n}", "type": "offer", "channel": "chat", "text": "hello " * 40},
        "decision": {"kind": "assigned", "agent_id": record["agent_id"], "session_id": sid},
    }
    return Changes(sessions=[state], interactions=[interaction], events=[event], meta={"idle_seq": n})


async def sequential(journal: SqliteJournal, count: int, offset: int) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for n in range(offset, offset + count):
        t = time.perf_counter()
        await journal.commit(offer_changes(n))
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - started, latencies


async def concurrent(journal: SqliteJournal, tasks: int, per_task: int, offset: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def committer(k: int) -> None:
        for j in range(per_task):
            t = time.perf_counter()
            await journal.commit(offer_changes(offset + j * tasks + k))
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(committer(k) for k in range(tasks)))
    return time.perf_counter() - started, latencies


def describe(label: str, count: int, elapsed: float, latencies: list[float], transactions: int) -> str:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return (
        f"  {label:<28} {count / elapsed:>9,.0f} commits/s   {transactions:>6} transactions   "
        f"{count / max(transactions, 1):>6.1f} commits/transaction   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
    )


async def run(mode: str, directory: Path, args: argparse.Namespace) -> None:
    path = directory / f"bench-{mode.lower()}.db"
    async with SqliteJournal(path, synchronous=mode, commit_timeout_s=120, max_pending=100_000) as journal:  # type: ignore[arg-type]
        print(f"synchronous={mode}")
        await sequential(journal, 200, 10_000_000)  # warm-up
        before = journal.stats.transactions
        elapsed, lat = await sequential(journal, args.sequential, 0)
        seq_rate = args.sequential / elapsed
        print(describe("sequential (1 committer)", args.sequential, elapsed, lat, journal.stats.transactions - before))
        before = journal.stats.transactions
        total = args.tasks * args.per_task
        elapsed, lat = await concurrent(journal, args.tasks, args.per_task, 1_000_000)
        print(
            describe(f"concurrent ({args.tasks} committers)", total, elapsed, lat, journal.stats.transactions - before)
        )
        print(
            f"  group commit speed-up: x{(total / elapsed) / seq_rate:.1f}; largest batch {journal.stats.largest_batch}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database (default: a temp dir)")
    parser.add_argument("--mode", choices=["NORMAL", "FULL", "both"], default="both")
    parser.add_argument("--sequential", type=int, default=2000, help="commits by one committer")
    parser.add_argument("--tasks", type=int, default=100, help="concurrent committers")
    parser.add_argument("--per-task", type=int, default=100, help="commits per concurrent committer")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir))
    try:
        print(f"database dir {directory}; python {sys.version.split()[0]}; cpus {os.cpu_count()}")
        for mode in ["NORMAL", "FULL"] if args.mode == "both" else [args.mode]:
            asyncio.run(run(mode, directory, args))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
