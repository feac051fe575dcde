"""A synthetic recorded day: an engine driven on a ManualClock, journaled to a real SQLite
journal exactly as a running gateway journals it (the engine's own change sets).

Agents are ready all day (in configuration order); every offer an agent gets is accepted
``accept_s`` later and ended by the agent ``handle`` seconds after that.

    python -m tests.replay.synthetic config/gateway.yaml /tmp/day.db   # the README's example
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.config_loader import load_config
from gateway.engine import Engine
from gateway.events import Channel, Event, EventType
from gateway.persistence import Changes
from gateway.records.sqlite import SqliteJournal
from gateway.replay import vendor_capabilities_of

DAY_START = 1_764_576_000.0  # 2025-12-01T08:00:00Z


@dataclass(frozen=True)
class Offer:
    at: float
    channel: Channel
    handle_s: float
    queue: str | None = None
    agent_id: str | None = None


def record_day(config: GatewayConfig, offers: list[Offer], path: Path, *, accept_s: float = 3.0) -> None:
    """Play ``offers`` through an engine under ``config``; journal everything to ``path``."""
    clock = ManualClock(min(o.at for o in offers) - 60)
    ids = itertools.count(1)
    engine = Engine(
        config,
        clock=clock,
        new_id=lambda: f"s-{next(ids):06d}",
        vendor_capabilities=vendor_capabilities_of(config),
    )
    vendor = config.vendors[0].name
    todo: list[tuple[float, int, Callable[[], object]]] = []
    seq = itertools.count()
    handle: dict[str, float] = {}
    changes = Changes()
    for agent in config.agents:
        engine.set_presence(agent.id, "ready")
    for n, offer in enumerate(offers):
        event = Event(
            vendor=vendor,
            event_id=f"ev-{n}",
            type=EventType.OFFER,
            interaction_id=f"i-{n}",
            channel=offer.channel,
            queue=offer.queue,
            agent_id=offer.agent_id,
            occurred_at=datetime.fromtimestamp(offer.at, tz=timezone.utc),
        )
        handle[event.interaction_id] = offer.handle_s
        heapq.heappush(todo, (offer.at, next(seq), lambda e=event: engine.handle_event(e)))
    seen: set[str] = set()

    def accept_then_end(session_id: str, handle_s: float) -> None:
        if engine.sessions[session_id].state.value != "offered":
            return
        engine.accept(session_id)
        heapq.heappush(todo, (clock.now() + handle_s, next(seq), lambda: engine.end(session_id)))

    while True:
        deadline = engine.next_deadline()
        if deadline is not None and deadline > DAY_START + 10 * 86_400:
            deadline = None
        if not todo and deadline is None:
            break
        if todo and (deadline is None or todo[0][0] < deadline):
            at, _n, action = heapq.heappop(todo)
            clock.set(max(at, clock.now()))
            action()
        else:
            assert deadline is not None
            clock.set(max(deadline, clock.now()))
            engine.tick()
        engine.drain()
        step = engine.take_changes()
        changes.extend(step)
        for row in step.sessions:
            if row["id"] not in seen and row["state"] == "offered":
                seen.add(row["id"])
                heapq.heappush(
                    todo,
                    (
                        clock.now() + accept_s,
                        next(seq),
                        lambda s=row["id"], h=handle[row["interaction_id"]]: accept_then_end(s, h),
                    ),
                )

    async def write() -> None:
        async with SqliteJournal(path) as journal:
            await journal.commit(changes)

    asyncio.run(write())


def sample_day(config: GatewayConfig, *, hours: float = 8.0, seed: int = 7) -> list[Offer]:
    """A day on the shipped sample config: chats, calls and e-mails to its queues, busier
    around 11:00 and 15:00."""
    rng = random.Random(seed)
    queues = [q.name for q in config.queues]
    offers: list[Offer] = []
    t = DAY_START
    while t < DAY_START + hours * 3600:
        hour = (t - DAY_START) / 3600
        rate = 1 / 90 * (1.0 + 1.5 * max(0.0, 1 - abs(hour - 3) / 1.5) + 1.2 * max(0.0, 1 - abs(hour - 7) / 1.5))
        t += rng.expovariate(rate)
        channel = rng.choices([Channel.CHAT, Channel.VOICE, Channel.EMAIL], weights=[6, 2, 2])[0]
        handle = {Channel.CHAT: 420.0, Channel.VOICE: 240.0, Channel.EMAIL: 600.0}[channel] * rng.uniform(0.5, 1.5)
        offers.append(Offer(t, channel, handle, queue=rng.choice(queues)))
    return offers


if __name__ == "__main__":  # pragma: no cover - the README's example
    sample = load_config(sys.argv[1])
    record_day(sample, sample_day(sample), Path(sys.argv[2]))
