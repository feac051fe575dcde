"""P3: the cost of one routing decision, the Engine alone (pure, :class:`ManualClock`, no I/O).

``python -m gateway.bench.routing SPEC_PATH OUT_PATH`` (a separate process, so that one
size's heap does not disturb the next). For each agent count: every agent ready, in two of
four queues, a blended profile (voice 1, chat 4, email 2, 6 sessions); the agents are first
filled to one session each on average (steady occupancy), then each step offers one more
interaction of a mixed channel to a queue (timed: ``Engine.handle_event``) and ends the
oldest one (untimed), so occupancy stays flat. The figure is the median per-decision time
of batches of 1,000 (or as many as there are agents), and the ratio of the largest size's to the smallest's.
Beside it: the same in the process's CPU time (a shared machine's load inflates the wall
time, not the CPU time), and (not part of the figure) what ``take_changes()`` and ``drain()`` then cost per
decision (the journal rows, session objects and event bodies the decisions left to build),
and how much of a decision is the choice proper (eligibility, pick, reservation, index
upkeep) rather than bookkeeping (:func:`choice_part`).
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.engine import Engine, offers, slots
from gateway.events import Channel, Event, EventType

T0 = 1_700_000_000.0
QUEUES = ("q0", "q1", "q2", "q3")
MIX = (Channel.CHAT, Channel.CHAT, Channel.EMAIL, Channel.VOICE, Channel.CHAT)
BATCH = 1000


def config(agents: int) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},
            "capacity_profiles": {
                "blended": {
                    "max_sessions": 6,
                    "channels": {"voice": 1, "chat": 4, "email": 2},
                    "offer_timeout_s": {"chat": 86_400, "voice": 86_400, "email": 86_400},
                }
            },
            "queues": [{"name": q, "policy": "longest_idle" if i % 2 else "least_busy"} for i, q in enumerate(QUEUES)],
            "agents": [
                {"id": f"a{n:06d}", "profile": "blended", "queues": [QUEUES[n % 4], QUEUES[(n + 1) % 4]]}
                for n in range(agents)
            ],
        }
    )


AT = datetime.fromtimestamp(T0, tz=timezone.utc)


def offer(n: int) -> Event:
    """The ``n``-th offer: a mixed channel, to one of the four queues."""
    return Event(
        vendor="crm",
        event_id=f"o{n}",
        type=EventType.OFFER,
        channel=MIX[n % len(MIX)],
        interaction_id=f"i{n}",
        queue=QUEUES[n % 4],
        occurred_at=AT,
    )


def end(interaction: str) -> Event:
    return Event(
        vendor="crm", event_id=f"e{interaction}", type=EventType.END, interaction_id=interaction, occurred_at=AT
    )


def steady(agents: int, new_id: Callable[[], str] | None = None) -> tuple[Engine, deque[str]]:
    """Every agent ready, then filled to one session each on average (mixed channels): the
    engine and the interactions open, oldest first (offers ``o0`` .. ``o{agents-1}``)."""
    engine = Engine(config(agents), clock=ManualClock(T0), new_id=new_id)
    for agent_id in engine.agent_ids():
        engine.set_presence(agent_id, "ready")
    engine.take_changes()
    engine.drain()
    open_ids: deque[str] = deque()
    for counter in range(agents):
        engine.handle_event(offer(counter))
        open_ids.append(f"i{counter}")
        if (counter + 1) % BATCH == 0:
            engine.take_changes()
            engine.drain()
    engine.take_changes()
    engine.drain()
    return engine, open_ids


def measure(agents: int, decisions: int) -> dict[str, Any]:
    t_setup = time.perf_counter()
    engine, open_ids = steady(agents)  # (setup_s: building the engine and filling it)
    setup_s = time.perf_counter() - t_setup
    counter = agents
    batch = min(BATCH, agents)
    per_batch: list[float] = []
    after: list[float] = []
    cpu_batch: list[float] = []
    assigned = 0
    perf = time.perf_counter
    cpu = time.process_time
    gc.collect()
    gc.disable()
    try:
        for _ in range(max(1, decisions // batch)):
            events = [offer(counter + k) for k in range(batch)]
            ends = [end(open_ids.popleft()) for _ in range(batch)]
            c0 = cpu()
            t0 = perf()
            for event in events:
                decision = engine.handle_event(event)
                if decision.kind == "assigned":
                    assigned += 1
            t1 = perf()
            cpu_batch.append((cpu() - c0) / batch)
            per_batch.append((t1 - t0) / batch)
            # what the runtime adds before the journal: the changes (journal rows) and the
            # notices (session objects, event bodies), built from what the decisions left
            engine.take_changes()
            engine.drain()
            after.append((perf() - t1) / batch)
            for k in range(batch):
                open_ids.append(f"i{counter + k}")
            counter += batch
            for event in ends:
                engine.handle_event(event)
            engine.take_changes()
            engine.drain()
    finally:
        gc.enable()
    n = len(per_batch) * batch
    choice_us, choice_share = choice_part(engine, open_ids, counter, batch, max(1, decisions // batch))
    return {
        "agents": agents,
        "decisions": n,
        "assigned": assigned,
        "us_median": statistics.median(per_batch) * 1e6,
        #: the same in CPU time of this process (what the machine's load does not inflate)
        "us_cpu_median": statistics.median(cpu_batch) * 1e6,
        #: take_changes() + drain() after the batch, per decision (not part of the figure)
        "us_changes_median": statistics.median(after) * 1e6,
        "us_min": min(per_batch) * 1e6,
        #: the choice proper (see choice_part), per decision, and its share of handle_event
        "us_choice_median": choice_us,
        "choice_share": choice_share,
        "setup_s": setup_s,
    }


def choice_part(engine: Engine, open_ids: deque[str], counter: int, batch: int, batches: int) -> tuple[float, float]:
    """The routing choice proper apart from the bookkeeping around it, in more batches of
    the same traffic after the timed ones (not part of the figure): the time spent in
    ``offers.select`` (the eligibility index's best agent, and the reservation on it) and
    in ``slots.refresh`` called outside it (the index's upkeep after the offer changed the
    agent's idle time and load), against the whole ``handle_event`` in the same batches.
    The rest of a decision is bookkeeping: the de-duplication, the interaction, the
    session, its offer timer, the decision and the records for the notices and the journal.

    Measured by wrapping those two functions (two clock reads per call, ~0.1 us, counted in
    the choice): the median per-decision time of the choice, and its share of the decision.
    """
    select, refresh = offers.select, slots.refresh
    perf = time.perf_counter
    spent = [0.0]
    inside = [False]

    def timed_select(*args: Any, **kwargs: Any) -> str | None:
        t0 = perf()
        inside[0] = True
        try:
            return select(*args, **kwargs)
        finally:
            inside[0] = False
            spent[0] += perf() - t0

    def timed_refresh(*args: Any, **kwargs: Any) -> None:
        if inside[0]:
            refresh(*args, **kwargs)
            return
        t0 = perf()
        try:
            refresh(*args, **kwargs)
        finally:
            spent[0] += perf() - t0

    per_batch: list[float] = []
    shares: list[float] = []
    gc.disable()
    try:
        for _ in range(batches):
            events = [offer(counter + k) for k in range(batch)]
            ends = [end(open_ids.popleft()) for _ in range(batch)]
            offers.select, slots.refresh = timed_select, timed_refresh
            try:
                spent[0] = 0.0
                t0 = perf()
                for event in events:
                    engine.handle_event(event)
                total = perf() - t0
            finally:
                offers.select, slots.refresh = select, refresh
            per_batch.append(spent[0] / batch)
            shares.append(spent[0] / total)
            engine.take_changes()
            engine.drain()
            for k in range(batch):
                open_ids.append(f"i{counter + k}")
            counter += batch
            for event in ends:
                engine.handle_event(event)
            engine.take_changes()
            engine.drain()
    finally:
        gc.enable()
    return statistics.median(per_batch) * 1e6, statistics.median(shares)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as f:
        spec = json.load(f)
    result = measure(int(spec["agents"]), int(spec["decisions"]))
    with open(args[1], "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
