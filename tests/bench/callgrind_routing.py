"""P3's decision loop under ``valgrind --tool=callgrind``: instructions per routing decision.

Not a test; on a shared, noisy machine instruction counts are repeatable where times are
not. The same engine, agents and traffic as :mod:`gateway.bench.routing` (P3); only the
timed part (``Engine.handle_event`` of each offer, and with ``--full`` also the
``take_changes()`` and ``drain()`` that follow each batch, i.e. what the runtime adds
before the journal) runs inside ``functools.reduce``, so that callgrind collects it alone::

    valgrind --tool=callgrind --toggle-collect=functools_reduce --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python tests/bench/callgrind_routing.py 1000 2000 [--full]
    callgrind_annotate /tmp/cg.out | head -30     # "PROGRAM TOTALS" / decisions = Ir per decision

Without valgrind it prints the per-decision time of the same loop (for a quick check).
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.bench.routing import BATCH, end, offer, steady
from gateway.events import Event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", type=int)
    parser.add_argument("decisions", type=int)
    parser.add_argument("--full", action="store_true", help="also take_changes() and drain() per batch")
    args = parser.parse_args()
    ids = iter(range(1, 1 << 62))
    engine, open_ids = steady(args.agents, new_id=lambda: f"s{next(ids)}")
    counter = args.agents
    batch = min(BATCH, args.agents)

    def step(_acc: None, event: Event | None) -> None:
        if event is None:
            engine.take_changes()
            engine.drain()
        else:
            engine.handle_event(event)

    elapsed = 0.0
    n = 0
    gc.collect()
    gc.disable()
    for _ in range(max(1, args.decisions // batch)):
        events: list[Event | None] = [offer(counter + k) for k in range(batch)]
        if args.full:
            events.append(None)
        ends = [end(open_ids.popleft()) for _ in range(batch)]
        t0 = time.perf_counter()
        functools.reduce(step, events, None)
        elapsed += time.perf_counter() - t0
        n += batch
        for k in range(batch):
            open_ids.append(f"i{counter + k}")
        counter += batch
        for event in ends:
            engine.handle_event(event)
        engine.take_changes()
        engine.drain()
    gc.enable()
    print(f"{n} decisions, {elapsed / n * 1e6:.1f} us per decision{' (with take_changes/drain)' if args.full else ''}")


if __name__ == "__main__":
    main()
