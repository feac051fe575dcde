"""A synthetic day replayed under a larger max_sessions: what capacity buys."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.events import Channel
from gateway.replay import Model, OnReject, alternatives, compare, load_journal

from .synthetic import DAY_START, Offer, record_day

AGENTS = ("a1", "a2", "a3", "a4")


def day_config() -> dict[str, object]:
    return {
        "store": {"url": "memory://"},
        "capacity_profiles": {"std": {"max_sessions": 3, "offer_timeout_s": {"chat": 30}}},
        "queues": [{"name": "support"}],
        "agents": [{"id": a, "name": a, "profile": "std", "queues": ["support"]} for a in AGENTS],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": "day-secret-0123456789abcdef"}],
    }


def day_offers() -> list[Offer]:
    """8 hours; every agent is offered a chat every 100 s (targeted, as a vendor's ACD does),
    each handled 200..600 s: up to 7 at once, so 3 sessions are far too few and 8 enough."""
    offers = []
    for k in range(8 * 36):
        for i, agent in enumerate(AGENTS):
            handle = 200 + (k * 37 + i * 53) % 401
            offers.append(Offer(DAY_START + 100 * k + 7 * i, Channel.CHAT, float(handle), agent_id=agent))
    return offers


def test_a_larger_max_sessions_removes_every_agent_at_capacity_rejection(tmp_path: Path) -> None:
    raw = day_config()
    config = GatewayConfig.model_validate(raw)
    db = tmp_path / "day.db"
    record_day(config, day_offers(), db)
    recording = load_journal(db)
    assert len(recording.interactions) == 8 * 36 * 4
    scenarios = alternatives(
        yaml.safe_load(yaml.safe_dump(raw)),
        overrides=[],
        assignments=["capacity_profiles.std.max_sessions=8"],
    )
    began = time.perf_counter()
    result = compare(recording, config, scenarios)
    took = time.perf_counter() - began
    recorded, replayed, roomy = result.summaries
    assert result.fidelity.exact, result.fidelity.mismatches[:3]
    assert recorded.rejections["agent_at_capacity"] > 300
    assert replayed.rejections == recorded.rejections
    assert roomy.name == "std.max_sessions=8"
    assert roomy.rejections.get("agent_at_capacity", 0) == 0
    assert roomy.handled == roomy.customers == 8 * 36 * 4
    # agents hold more at once: time with 4+ sessions appears, and is within capacity
    assert sum(roomy.occupancy_total()[4:]) > 0.2 and len(roomy.occupancy_total()) == 9
    assert took < 60  # three runs of an 8-hour day (1152 offers): seconds, not hours


def test_rejected_customers_who_retry_come_back_and_are_counted_once(tmp_path: Path) -> None:
    raw = day_config()
    config = GatewayConfig.model_validate(raw)
    db = tmp_path / "day.db"
    record_day(config, day_offers()[:200], db)
    recording = load_journal(db)
    drop = compare(recording, config, [], Model()).summaries[1]
    retry = compare(recording, config, [], Model(on_reject=OnReject.parse("retry:120:3"))).summaries[2]
    assert drop.rejected > 0 and drop.retries == 0
    assert retry.retries > 0 and retry.customers == drop.customers == 200
    assert retry.handled > drop.handled
    assert retry.handled + retry.rejected + retry.abandoned + retry.open == retry.customers


def test_a_slowdown_lengthens_the_sessions_taken_beside_others(tmp_path: Path) -> None:
    raw = day_config()
    config = GatewayConfig.model_validate(raw)
    db = tmp_path / "day.db"
    record_day(config, day_offers()[:200], db)
    recording = load_journal(db)
    result = compare(recording, config, [], Model(slowdown=0.5))
    recorded, replayed, slowed = result.summaries
    assert slowed.name == "replayed (slowdown 0.5)"
    assert replayed.handle_p50_s == recorded.handle_p50_s
    assert slowed.handle_p50_s is not None and recorded.handle_p50_s is not None
    assert slowed.handle_p50_s > recorded.handle_p50_s
    # each session lasts (1 + 0.5 * others held at accept) times its recorded handle time
    recorded_handle = {
        s["interaction_id"]: s["ended_at"] - s["accepted_at"] for s in recording.sessions if s.get("ended_at")
    }
    for s in result.results[-1].sessions:
        if s.get("ended_at") is not None and s["interaction_id"] in recorded_handle:
            ratio = (s["ended_at"] - s["accepted_at"]) / recorded_handle[s["interaction_id"]]
            assert ratio in (pytest.approx(1.0), pytest.approx(1.5), pytest.approx(2.0))
    # more time per session, so more agent_at_capacity rejections than recorded
    assert slowed.rejections["agent_at_capacity"] > recorded.rejections["agent_at_capacity"]
