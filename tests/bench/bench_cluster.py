"""Throughput of an allocation storm on 1, 2 and 3 gateway instances on one Redis (with
PostgreSQL records), next to one embedded gateway (SQLite), on this machine.

Not a test (pytest collects ``test_*.py`` only); it prints figures and asserts no timing::

    .venv/bin/python -m tests.bench.bench_cluster [--offers 2000] [--concurrency 100]

Each run starts the servers afresh (redis-server with ``appendonly yes``,
``appendfsync always``; PostgreSQL; the gateways as ``cti-gateway run`` processes), makes
the agents ready, then posts the signed webhook offers (targeted, spread over the agents and
over the instances round robin) with ``--concurrency`` in flight, and reports offers/s
answered. The load generator runs on the same 2 cores as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.live import GatewayProcess, LiveClient, free_port, sha, sqlite_url, write_config
from tests.peers.postgres import PostgresServer
from tests.peers.redis import RedisServer

SECRET = "bench-webhook-secret-0123456789"
AGENTS = [f"a{n}" for n in range(20)]


def config(store: str, records: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "store": {"url": store},
        "server": {"desktop_grace_s": 600, "rate_limit_per_s": 100_000, "rate_limit_burst": 100_000},
        "capacity_profiles": {"std": {"max_sessions": 8, "offer_timeout_s": {"chat": 600, "voice": 600}}},
        "queues": [{"name": "support"}],
        "agents": [
            {"id": a, "name": a, "profile": "std", "queues": ["support"], "token_sha256": sha(f"tok-{a}")}
            for a in AGENTS
        ],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
    }
    if records:
        body["records"] = {"url": records}
    return body


async def storm(procs: list[GatewayProcess], offers: int, concurrency: int) -> float:
    tokens = {a: f"tok-{a}" for a in AGENTS}
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        clients = [LiveClient(http, p.base, tokens=tokens, vendor="crm", secret=SECRET) for p in procs]
        for n, agent in enumerate(AGENTS):
            await clients[n % len(clients)].ok(
                "PUT", f"/v1/agents/{agent}/presence", agent, json_body={"state": "ready"}
            )
        events = [
            {
                "event_id": f"b{n}",
                "type": "offer",
                "interaction_id": f"i{n}",
                "channel": rng.choice(("chat", "voice")),
                "agent_id": rng.choice(AGENTS),
                "occurred_at": "2026-12-01T12:00:00Z",
            }
            for n in range(offers)
        ]
        gate = asyncio.Semaphore(concurrency)

        async def post(n: int, event: dict[str, Any]) -> None:
            async with gate:
                status, body = await clients[n % len(clients)].webhook(event)
                assert status in (200, 409), (status, body)

        started = time.perf_counter()
        await asyncio.gather(*(post(n, e) for n, e in enumerate(events)))
        return offers / (time.perf_counter() - started)


def run(instances: int | None, offers: int, concurrency: int, pg: PostgresServer | None) -> float:
    work = Path(tempfile.mkdtemp(prefix="cti-bench-"))
    redis: RedisServer | None = None
    procs: list[GatewayProcess] = []
    try:
        if instances is None:  # the embedded default
            cfg = config(sqlite_url(work / "gateway.db"), None)
            count = 1
        else:
            assert pg is not None
            redis = RedisServer(work / "redis", appendonly=True).start()
            name = f"bench_{instances}_{int(time.time())}"
            pg.execute(f"CREATE DATABASE {name}")
            cfg = config(redis.url, pg.url(database=name))
            count = instances
        for n in range(count):
            port = free_port()
            cfg = {**cfg, "server": {**cfg["server"], "host": "127.0.0.1", "port": port}}
            path = write_config(work / f"gw{n}.yaml", cfg)
            procs.append(GatewayProcess(["run", "--config", str(path)], port=port, cwd=work, log_dir=work))
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_ready()
        return asyncio.run(storm(procs, offers, concurrency))
    finally:
        for proc in procs:
            proc.stop()
        if redis is not None:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    pg = PostgresServer().start()
    try:
        print(f"{args.offers} targeted offers, {args.concurrency} in flight")
        rate = run(None, args.offers, args.concurrency, None)
        print(f"embedded (SQLite), 1 process: {rate:7.0f} offers/s")
        for instances in (1, 2, 3):
            rate = run(instances, args.offers, args.concurrency, pg)
            print(f"redis + postgresql, {instances} instance(s): {rate:7.0f} offers/s")
    finally:
        pg.remove()


if __name__ == "__main__":
    main()
