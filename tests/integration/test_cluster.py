"""Several gateway processes on one real redis-server (``store: redis://``) and one real
PostgreSQL (records): allocation storms spread over the instances, an instance SIGKILLed
in the middle of one, Redis restarted mid-run.

Every instance applies the same ordered log, so the caps hold whichever instance received
an offer, a resend through another instance is a ``duplicate`` with the first answer, and
any instance serves any desktop.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers.postgres import PostgresServer
from tests.peers.redis import RedisServer

from .conftest import GatewayFactory
from .live import GatewayProcess, LiveClient, sha

SECRET = "cluster-webhook-secret-0123456789"
SUPERVISOR = "sup-token-cluster"
AGENTS = ("a1", "a2", "a3", "a4", "a5")
# per agent: 1 voice, 2 chat, 3 sessions in all (so chat + voice = 3 fills max_sessions)
CAPS = {"voice": 1, "chat": 2}
MAX_SESSIONS = 3


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def cluster_config(redis_url: str, records_url: str) -> dict[str, Any]:
    return {
        "store": {"url": redis_url, "claim_idle_s": 1.0},
        "records": {"url": records_url},
        "server": {
            "desktop_grace_s": 600,
            "rate_limit_per_s": 100_000,
            "rate_limit_burst": 100_000,
            "supervisor_token_sha256": sha(SUPERVISOR),
        },
        "capacity_profiles": {
            "std": {
                "max_sessions": MAX_SESSIONS,
                "channels": CAPS,
                "offer_timeout_s": {"voice": 600, "chat": 600},
            }
        },
        "queues": [{"name": "support"}],
        "agents": [
            {"id": a, "name": a.upper(), "profile": "std", "queues": ["support"], "token_sha256": sha(f"tok-{a}")}
            for a in AGENTS
        ],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
    }


def offer(event_id: str, agent: str, channel: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "offer",
        "interaction_id": f"i-{event_id}",
        "channel": channel,
        "agent_id": agent,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
    }


def start_cluster(gateway_process: GatewayFactory, config: dict[str, Any], n: int) -> list[GatewayProcess]:
    procs = [gateway_process(config, name=f"gw{i}") for i in range(n)]
    for proc in procs:
        proc.start(wait=False)
    for proc in procs:
        proc.wait_ready()
    return procs


def client(http: aiohttp.ClientSession, proc: GatewayProcess) -> LiveClient:
    tokens = {"sup": SUPERVISOR, **{a: f"tok-{a}" for a in AGENTS}}
    return LiveClient(http, proc.base, tokens=tokens, vendor="crm", secret=SECRET)


async def post_until_answered(clients: list[LiveClient], event: dict[str, Any], first: int) -> tuple[int, Any]:
    """Post to ``clients[first]``; on a 503 or a connection error (the instance is down or
    restarting) resend, to the next instance, as a vendor would."""
    deadline = time.monotonic() + 60
    i = first
    while True:
        try:
            status, body = await clients[i % len(clients)].webhook(event)
        except (aiohttp.ClientError, OSError):
            status, body = 0, None
        if status not in (0, 503):
            return status, body
        assert time.monotonic() < deadline, f"{event['event_id']}: never answered ({status} {body})"
        i += 1
        await asyncio.sleep(0.05)


async def set_ready(clients: list[LiveClient]) -> None:
    for n, agent in enumerate(AGENTS):
        await clients[n % len(clients)].ok("PUT", f"/v1/agents/{agent}/presence", agent, json_body={"state": "ready"})


def check_storm(events: list[dict[str, Any]], answers: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Caps filled exactly per agent and channel; every other offer has its exact reason."""
    assigned: collections.Counter[tuple[str, str]] = collections.Counter()
    per_agent: collections.Counter[str] = collections.Counter()
    for event in events:
        body = answers[event["event_id"]]
        decision = body["decision"]
        if decision == "assigned":
            assigned[(event["agent_id"], event["channel"])] += 1
            per_agent[event["agent_id"]] += 1
    for agent in AGENTS:
        # 1 voice + 2 chat = 3 = max_sessions: every channel's cap is reachable
        assert assigned[(agent, "voice")] == CAPS["voice"], (agent, assigned)
        assert assigned[(agent, "chat")] == CAPS["chat"], (agent, assigned)
        assert per_agent[agent] == MAX_SESSIONS
    for event in events:
        body = answers[event["event_id"]]
        if body["decision"] != "assigned":
            assert body["decision"] == "rejected", body
            # the channel's cap reached (or the agent full, which here coincides with it)
            assert body["reason"] in ("channel_at_capacity", "agent_at_capacity"), body
    return dict(assigned)


async def in_use_matches_open_sessions(c: LiveClient) -> None:
    for agent in AGENTS:
        body = await c.ok("GET", f"/v1/agents/{agent}", "sup")
        open_sessions = [s for s in body["sessions"] if s["state"] in ("offered", "active", "wrap_up")]
        assert body["in_use"]["sessions"] == len(open_sessions), body
        assert body["in_use"]["voice"] == sum(1 for s in open_sessions if s["channel"] == "voice")
        assert body["in_use"]["chat"] == sum(1 for s in open_sessions if s["channel"] == "chat")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_allocation_storm_over_three_instances_fills_every_cap_exactly(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    procs = start_cluster(gateway_process, cluster_config(redis_server.url, postgres_url), 3)
    rng = random.Random(11)
    events = [offer(f"e{n}", rng.choice(AGENTS), rng.choice(("voice", "chat"))) for n in range(1000)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=150)) as http:
        clients = [client(http, p) for p in procs]
        await set_ready(clients)
        started = time.monotonic()
        replies = await asyncio.gather(*(post_until_answered(clients, e, n) for n, e in enumerate(events)))
        elapsed = time.monotonic() - started
        # 200 assigned, 409 rejected (the webhook's answers)
        assert all(status == (200 if body["decision"] == "assigned" else 409) for status, body in replies), [
            r for r in replies if r[0] not in (200, 409)
        ][:3]
        answers = {e["event_id"]: body for e, (_status, body) in zip(events, replies, strict=True)}
        check_storm(events, answers)
        print(f"\nstorm: 1000 offers over 3 instances in {elapsed:.2f} s ({1000 / elapsed:.0f}/s)")
        # idempotency is global: every offer resent through another instance is a
        # duplicate carrying the first answer
        for n, event in enumerate(events[:200]):
            status, body = await clients[(n + 1) % 3].webhook(event)
            assert status in (200, 409) and body["decision"] == "duplicate", body
            first = answers[event["event_id"]]
            assert body["first_decision"] == first["decision"]
            assert body.get("session_id") == first.get("session_id")
            assert body.get("reason") == first.get("reason")
        # every instance holds the same state
        views = [await c.ok("GET", "/v1/agents", "sup") for c in clients]
        assert views[0] == views[1] == views[2]
        for c in clients:
            await in_use_matches_open_sessions(c)
        # the records reached PostgreSQL: every event with its decision, every session
        assigned = {body["session_id"] for body in answers.values() if body["decision"] == "assigned"}
        await records_reach_postgres(postgres_url, len(events), assigned)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigkill_of_one_instance_mid_storm_loses_nothing_it_acknowledged(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    procs = start_cluster(gateway_process, cluster_config(redis_server.url, postgres_url), 3)
    victim = procs[0]
    rng = random.Random(7)
    events = [offer(f"k{n}", rng.choice(AGENTS), rng.choice(("voice", "chat"))) for n in range(600)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        clients = [client(http, p) for p in procs]
        await set_ready(clients)
        # a desktop of a1 on the victim
        ws = await http.ws_connect(f"{victim.base}/v1/agents/a1/ws", headers={"Authorization": "Bearer tok-a1"})
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "hello"
        acked: dict[str, Any] = {}

        async def send_to_victim(event: dict[str, Any]) -> None:
            try:
                status, body = await clients[0].webhook(event)
            except (aiohttp.ClientError, OSError):
                return
            if status in (200, 409):
                acked[event["event_id"]] = body

        async def kill_mid_storm() -> None:
            # once it has answered some: the rest of its requests are in flight when it dies
            while len(acked) < 40:
                await asyncio.sleep(0.005)
            await asyncio.get_running_loop().run_in_executor(None, victim.kill)

        first_half = [send_to_victim(e) for e in events[:300]]
        await asyncio.gather(*first_half, kill_mid_storm())
        assert not victim.running
        assert 40 <= len(acked) < 300, "the victim must die mid-storm (some answered, some not)"
        survivors = clients[1:]
        # everything again (the unanswered first half included) through the survivors
        replies = await asyncio.gather(*(post_until_answered(survivors, e, n) for n, e in enumerate(events)))
        answers: dict[str, Any] = {}
        for event, (status, body) in zip(events, replies, strict=True):
            assert status in (200, 409), body
            if body["decision"] == "duplicate":
                # acknowledged before (or answered while the victim died): the first answer
                answers[event["event_id"]] = {**body, "decision": body["first_decision"]}
            else:
                assert event["event_id"] not in acked, f"{event['event_id']} was acknowledged, then lost"
                answers[event["event_id"]] = body
        for event_id, body in acked.items():
            first = answers[event_id]
            assert (first["decision"], first.get("session_id"), first.get("reason")) == (
                body["decision"],
                body.get("session_id"),
                body.get("reason"),
            )
        check_storm(events, answers)
        await ws.close()
        # the desktop moves to a survivor and gets a correct hello (its sessions included)
        ws2 = await http.ws_connect(f"{procs[1].base}/v1/agents/a1/ws", headers={"Authorization": "Bearer tok-a1"})
        hello2 = await ws2.receive_json(timeout=10)
        assert hello2["type"] == "hello"
        mine = {e["event_id"] for e in events if e["agent_id"] == "a1"}
        expected = {answers[e]["session_id"] for e in mine if answers[e]["decision"] == "assigned"}
        assert {s["id"] for s in hello2["agent"]["sessions"]} == expected
        await ws2.close()
        for c in survivors:
            await in_use_matches_open_sessions(c)
        assigned = {body["session_id"] for body in answers.values() if body["decision"] == "assigned"}
        await records_reach_postgres(postgres_url, len(events), assigned)
        # the victim's pending entries were finished by a survivor: nothing stays pending
        deadline = time.monotonic() + 30
        while True:
            pending = await _pending(redis_server)
            if pending == 0:
                break
            assert time.monotonic() < deadline, f"{pending} entries still pending"
            await asyncio.sleep(0.2)
        # /metrics of a survivor: the store is up, nothing left to apply
        metrics = await (await http.get(f"{procs[1].base}/metrics")).text()
        assert "cti_gateway_store_up 1.0" in metrics
        assert "cti_gateway_log_lag_entries 0.0" in metrics


async def records_reach_postgres(url: str, events: int, sessions: set[str]) -> None:
    """PostgreSQL holds (within a deadline) exactly ``events`` events and these sessions."""
    import asyncpg

    deadline = time.monotonic() + 30
    connection = await asyncpg.connect(url)
    try:
        while True:
            stored_events = await connection.fetchval("SELECT count(*) FROM events")
            stored = {row["id"] for row in await connection.fetch("SELECT id FROM sessions")}
            if stored_events == events and stored == sessions:
                return
            assert time.monotonic() < deadline, (stored_events, events, len(stored), len(sessions))
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def _pending(redis_server: RedisServer) -> int:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        info = await client.xpending("cti:log", "effects")
        return int(info["pending"])
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_redis_restarted_mid_run_answers_503_then_recovers_with_nothing_lost_or_doubled(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    procs = start_cluster(gateway_process, cluster_config(redis_server.url, postgres_url), 2)
    events = [offer(f"r{n}", AGENTS[n % len(AGENTS)], ("voice", "chat")[n % 2]) for n in range(60)]
    async with aiohttp.ClientSession() as http:
        clients = [client(http, p) for p in procs]
        await set_ready(clients)
        answers: dict[str, Any] = {}
        for n, event in enumerate(events[:20]):
            status, body = await clients[n % 2].webhook(event)
            assert status in (200, 409), body
            answers[event["event_id"]] = body
        redis_server.stop()
        status, body = await clients[0].webhook(events[20])
        assert status == 503 and body["error"]["code"] == "not_ready", body
        ready = await http.get(f"{procs[1].base}/readyz")
        assert ready.status == 503
        assert (await ready.json())["error"]["checks"]["store"] == "down"
        redis_server.start()
        for n, event in enumerate(events[20:], start=20):
            status, body = await post_until_answered(clients, event, n)
            assert status in (200, 409), body
            answers[event["event_id"]] = body
        for proc in procs:
            proc.wait_ready()
            assert len(proc.log_events("store_unreachable")) == 1
            assert len(proc.log_events("store_recovered")) == 1
        # nothing lost: every offer answered before the restart is a duplicate now, with its answer
        for n, event in enumerate(events):
            status, body = await clients[(n + 1) % 2].webhook(event)
            assert status in (200, 409) and body["decision"] == "duplicate", body
            assert body["first_decision"] == answers[event["event_id"]]["decision"]
        # nothing doubled: the caps hold, counters equal open sessions on both
        views = [await c.ok("GET", "/v1/agents", "sup") for c in clients]
        assert views[0] == views[1]
        for c in clients:
            await in_use_matches_open_sessions(c)
        assigned = {body["session_id"] for body in answers.values() if body["decision"] == "assigned"}
        await records_reach_postgres(postgres_url, len(events), assigned)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own (stopped and started: not the session's shared one)."""
    server = PostgresServer()
    try:
        server.start()
        server.execute("CREATE DATABASE cti_outage")
        yield server
    finally:
        server.remove()


async def answered_503_records_down(c: LiveClient, event: dict[str, Any], answers: dict[str, Any]) -> bool:
    """Post ``event``: True when answered 503 ``not_ready`` because the records store is
    down; an offer taken before the instance saw the outage is kept in ``answers``."""
    status, body = await c.webhook(event)
    if status == 503:
        assert body["error"]["code"] == "not_ready", body
        assert body["error"]["message"].startswith("records store down"), body
        return True
    assert status in (200, 409), body
    answers[event["event_id"]] = body
    return False


@pytest.mark.slow
@pytest.mark.asyncio
async def test_postgres_stopped_and_started_answers_503_then_recovers_with_nothing_lost_or_doubled(
    gateway_process: GatewayFactory, redis_server: RedisServer, own_postgres: PostgresServer
) -> None:
    records_url = own_postgres.url(database="cti_outage")
    procs = start_cluster(gateway_process, cluster_config(redis_server.url, records_url), 2)
    events = [offer(f"p{n}", AGENTS[n % len(AGENTS)], ("voice", "chat")[n % 2]) for n in range(80)]
    async with aiohttp.ClientSession() as http:
        clients = [client(http, p) for p in procs]
        await set_ready(clients)
        answers: dict[str, Any] = {}
        for n, event in enumerate(events[:20]):
            status, body = await clients[n % 2].webhook(event)
            assert status in (200, 409), body
            answers[event["event_id"]] = body
        await records_reach_postgres(records_url, 20, {b["session_id"] for b in answers.values() if "session_id" in b})
        own_postgres.stop()
        # each instance notices (a write failed, or its ping) and then answers 503 not_ready
        # to vendors (so they retry) and to desktops; an offer taken before it noticed is
        # acknowledged, and must reach PostgreSQL once it is back
        n = 20
        for i, c in enumerate(clients):
            deadline = time.monotonic() + 20
            while not await answered_503_records_down(c, events[n], answers):
                n += 1
                taking = f"instance {i} still takes offers with PostgreSQL stopped"
                assert time.monotonic() < deadline and n < len(events) - 10, taking
                await asyncio.sleep(0.05)
            status, body = await c.call("PUT", "/v1/agents/a1/presence", "a1", json_body={"state": "ready"})
            assert status == 503 and body["error"]["code"] == "not_ready", body
            ready = await http.get(f"{procs[i].base}/readyz")
            assert ready.status == 503
            assert (await ready.json())["error"]["checks"]["records"] == "down"
        own_postgres.start()
        # no restart: the instances take offers again by themselves
        for k, event in enumerate(events[n:], start=n):
            status, body = await post_until_answered(clients, event, k)
            assert status in (200, 409), body
            answers[event["event_id"]] = body
        for proc in procs:
            proc.wait_ready()
            assert len(proc.log_events("records_unreachable")) == 1
            assert len(proc.log_events("records_recovered")) == 1
        assert len(answers) == len(events)
        # nothing lost: every offer answered is a duplicate now, with its first answer
        for k, event in enumerate(events):
            status, body = await clients[(k + 1) % 2].webhook(event)
            assert status in (200, 409) and body["decision"] == "duplicate", body
            assert body["first_decision"] == answers[event["event_id"]]["decision"]
        # nothing doubled: the caps hold, counters equal open sessions on both
        views = [await c.ok("GET", "/v1/agents", "sup") for c in clients]
        assert views[0] == views[1]
        for c in clients:
            await in_use_matches_open_sessions(c)
        # PostgreSQL holds every acknowledged event and session once (written before the
        # outage, or kept and written after it)
        assigned = {body["session_id"] for body in answers.values() if body["decision"] == "assigned"}
        await records_reach_postgres(records_url, len(events), assigned)


def test_check_config_and_run_agree_on_a_redis_store_and_never_print_its_password(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    """The same URL passes check-config and is taken by run, which (Redis not there) refuses
    to start with one line naming the server without its password."""
    import subprocess
    import sys

    from .live import free_port, write_config

    dead = free_port()  # nothing listens there
    config = cluster_config(f"redis://:s3cret-redis-pw@127.0.0.1:{dead}/0", "postgresql://cti:pw@127.0.0.1:1/cti")
    path = write_config(tmp_path / "cluster.yaml", config)
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "s3cret" not in checked.stdout + checked.stderr
    proc = gateway_process(config, name="refused")
    proc.start(wait=False)
    assert proc.wait_exit(timeout=60) == 1
    lines = [line for line in proc.stderr().splitlines() if line.startswith("cti-gateway:")]
    assert lines == [
        f"cti-gateway: cannot start: the shared store redis://127.0.0.1:{dead}/0 is unreachable (ConnectionError)"
    ], proc.stderr()
    assert "s3cret" not in proc.stderr() + proc.stdout()
