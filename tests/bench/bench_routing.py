"""Benchmark of routing: the decision cost of the Engine alone, and webhook throughput end to end.

Not a test (pytest collects ``test_*.py`` only); it prints figures and asserts no timing::

    .venv/bin/python tests/bench/bench_routing.py                  # both parts
    .venv/bin/python tests/bench/bench_routing.py --skip-e2e --agents 100,1000,10000,50000
    .venv/bin/python tests/bench/bench_routing.py --skip-engine --e2e-rate 3000 --e2e-count 6000

1. **Engine alone** (pure, :class:`ManualClock`, no I/O): N agents (100, 1,000, 10,000) all
   ready in ONE queue; untargeted chat offers are routed in batches, each batch ended again
   so the agents never fill up. Timed: ``Engine.handle_event(offer)`` per decision, and the
   same plus ``take_changes()`` / ``drain()`` (what the runtime adds per call before the
   journal). The index keeps the agents with room sorted per (queue, channel), so a decision
   should cost O(log N): the figure that matters is the ratio of the per-decision time at
   the largest N to that at the smallest, measured in the same run (a scan of all agents
   would make it about N_max / N_min).

2. **End to end**: a real gateway process (SQLite journal, group commit) on a free
   loopback port, agents ready, then :func:`gateway.simulate.simulate` sends signed
   webhook offers (and their ends) as fast as ``--e2e-rate`` allows: events/s answered and
   the answer latency percentiles, once at a moderate rate and once flat out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.events import Channel, Event, EventType
from gateway.simulate import SimulateOptions, simulate

T0 = 1_700_000_000.0
BATCH = 1000
POLICIES = ("longest_idle", "least_busy")


# ============================================================================ 1. the engine alone


def engine_config(agents: int, policy: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},
            "capacity_profiles": {"wide": {"max_sessions": 64, "offer_timeout_s": {"chat": 3600}}},
            "queues": [{"name": "q", "policy": policy}],
            "agents": [{"id": f"a{n:05d}", "profile": "wide", "queues": ["q"]} for n in range(agents)],
        }
    )


def build_events(count: int) -> tuple[list[Event], list[Event]]:
    at = datetime.fromtimestamp(T0, tz=timezone.utc)
    offers = [
        Event(
            vendor="crm",
            event_id=f"o{n}",
            type=EventType.OFFER,
            channel=Channel.CHAT,
            interaction_id=f"i{n}",
            queue="q",
            occurred_at=at,
        )
        for n in range(count)
    ]
    ends = [
        Event(vendor="crm", event_id=f"e{n}", type=EventType.END, interaction_id=f"i{n}", occurred_at=at)
        for n in range(count)
    ]
    return offers, ends


def bench_engine(agents: int, policy: str, offers: list[Event], ends: list[Event]) -> dict[str, float]:
    started = time.perf_counter()
    engine = Engine(engine_config(agents, policy), clock=ManualClock(T0))
    for agent_id in engine.agent_ids():
        engine.set_presence(agent_id, "ready")
    engine.take_changes()
    engine.drain()
    setup_s = time.perf_counter() - started

    decide = with_diff = 0.0
    perf = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for start in range(0, len(offers), BATCH):
            t0 = perf()
            for event in offers[start : start + BATCH]:
                engine.handle_event(event)
            t1 = perf()
            engine.take_changes()
            engine.drain()
            t2 = perf()
            decide += t1 - t0
            with_diff += t2 - t0
            for event in ends[start : start + BATCH]:  # untimed: free the slots again
                engine.handle_event(event)
            engine.take_changes()
            engine.drain()
    finally:
        gc.enable()
    assigned = sum(1 for s in engine.sessions.values() if s.outcome is not None)
    assert assigned == len(offers), (assigned, len(offers))  # every offer was assigned (and ended)
    n = len(offers)
    return {"setup_s": setup_s, "us": decide / n * 1e6, "us_diff": with_diff / n * 1e6, "per_s": n / decide}


def run_engine(sizes: list[int], count: int) -> None:
    print(
        f"\n1. Routing decisions, Engine alone (pure, ManualClock): {count:,} untargeted chat offers "
        f"per size into ONE queue, in batches of {BATCH} (each batch ended again)"
    )
    offers, ends = build_events(count)
    header = f"{'policy':<13}{'agents':>8}{'decisions/s':>14}{'us/decision':>13}{'+ journal diff':>16}{'setup':>9}"
    print(header)
    print("-" * len(header))
    for policy in POLICIES:
        results = {}
        for size in sizes:
            r = bench_engine(size, policy, offers, ends)
            results[size] = r
            print(
                f"{policy:<13}{size:>8,}{r['per_s']:>14,.0f}{r['us']:>13.1f}{r['us_diff']:>16.1f}{r['setup_s']:>8.2f}s"
            )
        small, large = min(sizes), max(sizes)
        ratio = results[large]["us"] / results[small]["us"]
        print(
            f"{policy:<13}per-decision time at {large:,} vs {small:,} agents: {ratio:.2f}x "
            f"(agents x{large // small:,}; a scan of all agents would be ~{large // small:,}x)"
        )


# ============================================================================ 2. end to end


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SECRET = "bench-webhook-secret-0123456789"
SUPERVISOR = "bench-supervisor-token"


def e2e_config(directory: Path, port: int, agents: int) -> Path:
    sha = hashlib.sha256(SUPERVISOR.encode()).hexdigest()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "supervisor_token_sha256": sha},
        "store": {"url": f"sqlite:///{directory / 'bench.db'}"},
        "capacity_profiles": {"blended": {"max_sessions": 8, "channels": {"voice": 1}}},
        "queues": [{"name": "support"}, {"name": "sales", "policy": "least_busy"}],
        "agents": [{"id": f"b{n:03d}", "profile": "blended", "queues": ["support", "sales"]} for n in range(agents)],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the gateway did not become ready")


def put_ready(base: str, agent_id: str) -> None:
    request = urllib.request.Request(
        f"{base}/v1/agents/{agent_id}/presence",
        data=b'{"state": "ready"}',
        method="PUT",
        headers={"Authorization": f"Bearer {SUPERVISOR}", "Content-Type": "application/json"},
    )
    for _ in range(100):
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(0.1)


def print_run(label: str, summary: Any) -> None:
    d = summary.as_dict()
    lat = d["latency_ms"]
    print(
        f"{label:<22}{d['offers']['answered']:>7,} offers{d['offers_per_s']:>7,.0f} offers/s"
        f"{d['events_per_s']:>7,.0f} events/s   "
        f"p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f} ms   "
        f"ends {d['ends']['answered']:,}   decisions {d['decisions']} {d['rejected'] or ''}  "
        f"errors {d['errors'] or 'none'}"
    )


async def e2e_runs(base: str, args: argparse.Namespace) -> None:
    common: dict[str, Any] = {
        "url": base,
        "vendor": "crm",
        "secret": SECRET,
        "queues": ["support", "sales"],
        "channels": {"chat": 3.0, "email": 1.0, "voice": 1.0},
        "seed": 1,
    }
    # hold times short enough that the agents' 8 sessions each rarely fill up
    moderate = await simulate(
        SimulateOptions(
            rate=args.e2e_moderate_rate,
            count=args.e2e_moderate_count,
            concurrency=64,
            hold=0.5,
            run_id="moderate",
            **common,
        )
    )
    print_run(f"at {args.e2e_moderate_rate:,.0f}/s offered", moderate)
    flat_out = await simulate(
        SimulateOptions(
            rate=args.e2e_rate,
            count=args.e2e_count,
            concurrency=args.e2e_concurrency,
            hold=0.05,
            run_id="flat",
            **common,
        )
    )
    print_run(f"at {args.e2e_rate:,.0f}/s offered", flat_out)


def run_e2e(args: argparse.Namespace) -> None:
    print(
        f"\n2. End to end: signed webhook offers (and their ends) to a live gateway process "
        f"({args.e2e_agents} agents, SQLite journal, group commit) with `simulate`"
    )
    with tempfile.TemporaryDirectory(prefix="cti-bench-") as tmp:
        port = free_port()
        config = e2e_config(Path(tmp), port, args.e2e_agents)
        base = f"http://127.0.0.1:{port}"
        with open(Path(tmp) / "gateway.err", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(config), "--log-level", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=tmp,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            wait_ready(base, proc)
            for n in range(args.e2e_agents):
                put_ready(base, f"b{n:03d}")
            asyncio.run(e2e_runs(base, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="100,1000,10000", help="agent counts of part 1 (comma-separated)")
    parser.add_argument("--offers", type=int, default=20_000, help="offers per agent count in part 1")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--e2e-agents", type=int, default=50)
    parser.add_argument("--e2e-moderate-rate", type=float, default=200.0)
    parser.add_argument("--e2e-moderate-count", type=int, default=1000)
    parser.add_argument("--e2e-rate", type=float, default=5000.0, help="offered rate of the flat-out run")
    parser.add_argument("--e2e-count", type=int, default=4000)
    parser.add_argument("--e2e-concurrency", type=int, default=64)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs")
    if not args.skip_engine:
        run_engine(sorted(int(n) for n in args.agents.split(",")), args.offers)
    if not args.skip_e2e:
        run_e2e(args)


if __name__ == "__main__":
    main()
