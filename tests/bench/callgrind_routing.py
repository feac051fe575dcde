"""P3's decision loop under ``valgrind --tool=callgrind``: instructions per routing decision.

Not a test; on a shared, noisy machine instruction counts are repeatable where times are
not. The same engine, agents and traffic as :mod:`gateway.bench.routing` (P3); only the
timed part (``Engine.handle_event`` of each offer, and with ``--full`` also the
``take_changes()`` and ``drain()`` that follow each batch, i.e. what the runtime adds
before the journal) runs inside ``functools.reduce``, so that callgrind collects it alone::

    valgrind --tool=callgrind --toggle-collect=functools_reduce --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python tests/bench/callgrind_routing.py 1000 2000 [--full]
    callgrind_annotate /tmp/cg.out | head -30     # "PROGRAM TOTALS" / decisions = Ir per decision

With ``--choice`` only the choice proper is collected: ``offers.select`` (the index's best
agent and the reservation) and ``slots.refresh`` when select does not call it (the index's
upkeep after the offer), each run inside ``functools.reduce`` (the rest of a decision is
bookkeeping). Without valgrind it prints the per-decision time of the same loop (for a quick check).
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.bench.routing import BATCH, end, offer, steady
from gateway.engine import offers, slots
from gateway.events import Event


def wrap_choice(active: list[bool]) -> None:
    """Run ``offers.select`` and ``slots.refresh`` (when not called by select) inside
    ``functools.reduce`` while ``active[0]``, so that ``--toggle-collect=functools_reduce``
    counts only them."""
    select, refresh = offers.select, slots.refresh
    inside = [False]

    def collected_select(*args: Any) -> str | None:
        if not active[0]:
            return select(*args)
        inside[0] = True
        try:
            return functools.reduce(lambda _acc, _x: select(*args), (None,), None)
        finally:
            inside[0] = False

    def collected_refresh(*args: Any) -> None:
        if inside[0] or not active[0]:
            refresh(*args)
        else:
            functools.reduce(lambda _acc, _x: refresh(*args), (None,), None)

    offers.select = collected_select  # type: ignore[assignment]
    slots.refresh = collected_refresh  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", type=int)
    parser.add_argument("decisions", type=int)
    parser.add_argument("--full", action="store_true", help="also take_changes() and drain() per batch")
    parser.add_argument(
        "--choice",
        action="store_true",
        help="collect only the choice proper: offers.select, and slots.refresh outside it (the index's upkeep)",
    )
    args = parser.parse_args()
    ids = iter(range(1, 1 << 62))
    engine, open_ids = steady(args.agents, new_id=lambda: f"s{next(ids)}")
    counter = args.agents
    batch = min(BATCH, args.agents)
    active = [False]
    if args.choice:
        wrap_choice(active)

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
        if args.choice:  # (the collected part is inside select and refresh: see wrap_choice)
            active[0] = True
            for event in events:
                step(None, event)
            active[0] = False
        else:
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
