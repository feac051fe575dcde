"""Crash safety of a real gateway process: SIGKILL under load loses nothing and leaks nothing.

The gateway runs as ``python -m gateway run --config <tmp>.yaml`` on a SQLite journal. A
client streams signed webhook offers (targeted, to a ``reject`` queue and to a ``wait``
queue), vendor ``end`` events, and REST accepts, ends and manual sessions from a dozen
concurrent workers, and the server is SIGKILLed after N answers (several N, with requests
in flight). After each restart on the same config and database:

* every event that was answered (200/409) is resent: the answer must be ``duplicate``
  repeating the first answer exactly (so it was journaled before it was acknowledged),
  and the resends change nothing. A quarter of the events are sent twice at once (a
  vendor's retry racing the first copy), and an answer to either copy counts: a
  ``duplicate`` answer too must survive the kill. One cycle kills the server the moment a
  copy is answered ``duplicate`` while its first copy still waits for its answer;
* per agent, ``in_use`` (sessions, units and each channel) equals its open sessions;
  presence is what it was; the restore log's ``open_sessions`` / ``waiting`` agree;
* every session of an answered assignment exists (``GET /v1/sessions/{id}``) and is in
  exactly the state the answered actions put it in (an action cut off by the kill allows
  the state before or after it); every open session is one the client knows of or can
  explain (a queued interaction assigned later, a manual session whose creation was cut
  off); no interaction has two open sessions;
* events whose answer was cut off are resent too: a ``duplicate`` proves they were
  journaled (and their effect is checked like an answered one), anything else is a fresh
  decision taken now.

A second test stops the gateway with SIGTERM (a desktop socket open, requests just made):
it exits 0 within seconds and a restart restores the open sessions exactly. A third sends a
second SIGTERM while the graceful shutdown waits for a request: the process ends at once
(it used to hang forever on the journal's threads) and loses nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import GatewayFactory
from .live import GatewayProcess, LiveClient, sha, sqlite_url

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

VENDOR = "crm"
SECRET = "crash-test-webhook-secret-0123"
AGENTS = ("a1", "a2", "a3", "a4", "a5")
TOKENS = {"supervisor": "crash-supervisor-token", **{a: f"crash-{a}-token" for a in AGENTS}}
CHANNELS = ("voice", "chat", "email", "manual")
INBOUND = ("voice", "chat", "email")
UNITS = {
    "std": {"voice": 2, "chat": 1, "email": 2, "manual": 1},
    "exclusive": {"voice": 3, "chat": 1, "email": 1, "manual": 1},
}
PROFILE_OF = {"a1": "std", "a2": "std", "a3": "std", "a4": "std", "a5": "exclusive"}
#: long enough that no offer, wrap-up or queue timer fires during the test: every state
#: change is one the client made (voice sessions stay in wrap-up once ended)
LONG = 3600
OCCUPYING = ("offered", "active", "wrap_up")
CAPACITY_REASONS = {"agent_at_capacity", "channel_at_capacity", "agent_offline", "agent_not_ready"}

#: (answers, then delay in s, also at an early duplicate) per cycle after which the server
#: is SIGKILLed (one restart each); the delays move the kill around the server's commit
#: cycle, so that some requests are journaled but not yet answered when it dies. "Early
#: duplicate": kill at once when a resent copy is answered ``duplicate`` before the first
#: copy got its answer (an acknowledgement the first copy's commit must already back).
KILL_AFTER = ((40, 0.0, False), (6, 0.002, False), (90, 0.001, False), (25, 0.004, False), (300, 0.0, True))
#: share of webhook events sent twice at once
RESEND_SHARE = 0.25
#: presence changes made between cycles (before cycle i)
PRESENCE_PLAN: dict[int, dict[str, str]] = {
    1: {"a4": "not_ready"},
    2: {"a4": "ready", "a5": "offline"},  # offline withdraws a5's offers
    3: {"a5": "ready"},
}
WORKERS = 12


def crash_config(db: Path) -> dict[str, Any]:
    timeouts = {c: LONG for c in INBOUND}
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": LONG},
        "store": {"url": sqlite_url(db)},
        "capacity_profiles": {
            "std": {
                "max_sessions": 5,
                "reserved_inbound": 1,
                "channels": {"voice": 1, "chat": 4, "email": 2, "manual": 2},
                "units": UNITS["std"],
                "max_units": 6,
                "offer_timeout_s": timeouts,
                "wrap_up_s": {"voice": LONG},
            },
            "exclusive": {
                "max_sessions": 3,
                "units": UNITS["exclusive"],
                "max_units": 3,
                "offer_timeout_s": timeouts,
                "wrap_up_s": {"voice": LONG},
            },
        },
        "queues": [
            {"name": "support", "policy": "longest_idle", "on_full": "reject"},
            {"name": "sales", "policy": "least_busy", "on_full": "wait", "max_wait_s": LONG},
        ],
        "agents": [
            {
                "id": a,
                "name": a.upper(),
                "profile": PROFILE_OF[a],
                "queues": ["support", "sales"] if PROFILE_OF[a] == "std" else ["support"],
                "token_sha256": sha(TOKENS[a]),
            }
            for a in AGENTS
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }


# ============================================================================ the client's model


def after_end(channel: str) -> str:
    """The state an active session is in right after it ends (voice has a long wrap-up)."""
    return "wrap_up" if channel == "voice" else "closed"


@dataclass
class Tracked:
    """A session the client knows of, and the state its answered actions put it in."""

    sid: str
    agent: str
    channel: str
    interaction: str | None  # None: manual
    state: str
    #: the state an action whose answer was cut off would have put it in
    pending: str | None = None
    #: an action is in flight (one at a time per session)
    busy: bool = False

    def possible(self) -> set[str]:
        return {self.state} | ({self.pending} if self.pending else set())


@dataclass
class Model:
    rng: random.Random
    ids: Any = field(default_factory=lambda: itertools.count(1))
    #: event_id -> (event, status, first answer body), for every answered webhook event
    answered: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    #: event_id -> event, for webhook events whose answer was cut off by a kill
    unknown: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, Tracked] = field(default_factory=dict)
    #: interactions answered (or proven journaled) ``queued``
    queued: set[str] = field(default_factory=set)
    #: agent -> manual session creations whose answer was cut off
    manual_unknown: Counter[str] = field(default_factory=Counter)
    presence: dict[str, str] = field(default_factory=lambda: dict.fromkeys(AGENTS, "ready"))
    problems: list[str] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    #: events sent twice at once; acknowledged only by a duplicate answer; early-duplicate kills
    resent: int = 0
    acked_by_duplicate: int = 0
    early_duplicate_kills: int = 0

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def apply_offer(self, event: dict[str, Any], status: int, body: dict[str, Any]) -> None:
        """Record the first answer to an offer (answered now, or proven journaled)."""
        kind = body.get("decision")
        self.decisions[kind if kind != "rejected" else f"rejected:{body.get('reason')}"] += 1
        if status == 200 and kind == "assigned":
            self.sessions[body["session_id"]] = Tracked(
                body["session_id"], body["agent_id"], event["channel"], event["interaction_id"], "offered"
            )
        elif status == 200 and kind == "queued":
            self.queued.add(event["interaction_id"])
        elif not (status == 409 and kind == "rejected" and body.get("reason")):
            self.problems.append(f"offer {event['event_id']}: unexpected answer {status} {body}")

    def apply_vendor_end(self, event: dict[str, Any], status: int, body: dict[str, Any]) -> None:
        if (status, body) != (200, {"decision": "accepted"}):
            self.problems.append(f"end {event['event_id']}: unexpected answer {status} {body}")
            return
        for tracked in self.sessions.values():
            if tracked.interaction == event["interaction_id"] and tracked.state in ("offered", "active"):
                tracked.state = "closed" if tracked.state == "offered" else after_end(tracked.channel)
                tracked.pending = None

    def candidates(self, state: str) -> list[Tracked]:
        return [t for t in self.sessions.values() if t.state == state and not t.busy and t.pending is None]


# ============================================================================ traffic


class Killed(Exception):
    """The request was cut off by the kill."""


def first_of(duplicate: dict[str, Any]) -> dict[str, Any]:
    """The first answer that a ``duplicate`` answer repeats."""
    return {k: v for k, v in duplicate.items() if k != "first_decision"} | {"decision": duplicate["first_decision"]}


def status_of(first: dict[str, Any]) -> int:
    return 409 if first["decision"] == "rejected" else 200


async def traffic(
    client: LiveClient, model: Model, proc: GatewayProcess, kill_after: int, delay: float, early_duplicate: bool = False
) -> int:
    """Run the workers until ``kill_after`` answers, then SIGKILL the server ``delay`` s later
    (other workers' requests are in flight); with ``early_duplicate`` also the moment a
    resent copy is answered ``duplicate`` before its first copy. Returns the number of answers."""
    answered = 0
    stop = asyncio.Event()
    killed = asyncio.Event()

    def kill() -> None:
        stop.set()
        proc.kill()
        killed.set()

    def done_one() -> None:
        nonlocal answered
        answered += 1
        if answered == kill_after:
            if delay:
                asyncio.get_running_loop().call_later(delay, kill)
            else:
                kill()

    async def guarded(call: Awaitable[tuple[int, Any]]) -> tuple[int, Any]:
        try:
            return await call
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            if not killed.is_set():
                model.problems.append(f"request failed before the kill: {exc!r}")
                kill()
            raise Killed from exc

    async def send(event: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Post ``event`` (a share of them twice at once); the acknowledged first answer, or
        None when every copy was cut off. A ``duplicate`` answer acknowledges too: it says
        what the first answer was."""
        copies = 2 if model.rng.random() < RESEND_SHARE else 1
        model.resent += copies - 1
        answers: list[tuple[int, Any]] = []

        async def one() -> None:
            status, body = await guarded(client.webhook(event))
            if early_duplicate and not answers and body.get("decision") == "duplicate" and not killed.is_set():
                model.early_duplicate_kills += 1
                kill()
            answers.append((status, body))
            done_one()

        results = await asyncio.gather(*(one() for _ in range(copies)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Killed):
                raise result
        firsts = [(s, b) for s, b in answers if b.get("decision") != "duplicate"]
        duplicates = [(s, b) for s, b in answers if b.get("decision") == "duplicate"]
        if len(firsts) > 1:
            model.problems.append(f"{event['event_id']}: two copies were both decided: {firsts}")
        if firsts:
            status, first = firsts[0]
            for answer in duplicates:
                if answer != (200, duplicate_of(first)):
                    model.problems.append(f"{event['event_id']}: resend answered {answer}, first {first}")
            return status, first
        if duplicates:
            model.acked_by_duplicate += 1
            status, duplicate = duplicates[0]
            if status != 200:
                model.problems.append(f"{event['event_id']}: duplicate answered {status} {duplicate}")
            first = first_of(duplicate)
            return status_of(first), first
        return None

    async def offer() -> None:
        rng = model.rng
        event: dict[str, Any] = {
            "event_id": model.next_id("ev"),
            "type": "offer",
            "channel": rng.choices(INBOUND, weights=(1, 4, 2))[0],
            "interaction_id": model.next_id("int"),
            "customer": {"name": f"Customer {rng.randrange(1000)}"},
        }
        where = rng.random()
        if where < 0.4:
            event["agent_id"] = rng.choice(AGENTS) if rng.random() > 0.05 else "ghost"
        else:
            event["queue"] = "support" if where < 0.7 else "sales"
        got = await send(event)
        if got is None:
            model.unknown[event["event_id"]] = event
            return
        model.answered[event["event_id"]] = (event, *got)
        model.apply_offer(event, *got)

    async def vendor_end(tracked: Tracked) -> None:
        event = {"event_id": model.next_id("ev"), "type": "end", "interaction_id": tracked.interaction}
        tracked.busy = True
        tracked.pending = "closed" if tracked.state == "offered" else after_end(tracked.channel)
        got = await send(event)
        if got is None:
            model.unknown[event["event_id"]] = event
            return
        tracked.busy = False
        model.answered[event["event_id"]] = (event, *got)
        model.apply_vendor_end(event, *got)

    async def action(tracked: Tracked, name: str, to_state: str) -> None:
        tracked.busy = True
        tracked.pending = to_state
        try:
            status, body = await guarded(client.call("POST", f"/v1/sessions/{tracked.sid}/{name}", tracked.agent))
        except Killed:
            return
        tracked.busy = False
        tracked.pending = None
        if status == 200 and body.get("state") == to_state:
            tracked.state = to_state
        else:
            model.problems.append(f"{name} {tracked.sid}: unexpected answer {status} {body}")
        done_one()

    async def manual() -> None:
        agent = model.rng.choice(AGENTS)
        try:
            status, body = await guarded(client.call("POST", f"/v1/agents/{agent}/sessions", agent, json_body={}))
        except Killed:
            model.manual_unknown[agent] += 1
            return
        if status == 201 and body.get("state") == "active":
            model.sessions[body["id"]] = Tracked(body["id"], agent, "manual", None, "active")
        elif not (status == 409 and body["error"]["code"] in CAPACITY_REASONS):
            model.problems.append(f"manual session on {agent}: unexpected answer {status} {body}")
        done_one()

    def choose() -> Callable[[], Awaitable[None]]:
        """Pick the next operation and claim its session synchronously (no two workers race)."""
        rng = model.rng
        roll = rng.random()
        if roll < 0.17 and (offered := model.candidates("offered")):
            tracked = rng.choice(offered)
            tracked.busy = True
            return lambda: action(tracked, "accept", "active")
        if roll < 0.32 and (active := model.candidates("active")):
            tracked = rng.choice(active)
            tracked.busy = True
            return lambda: action(tracked, "end", after_end(tracked.channel))
        if roll < 0.42:
            live = [t for t in model.candidates("offered") + model.candidates("active") if t.interaction]
            if live:
                tracked = rng.choice(live)
                tracked.busy = True
                return lambda: vendor_end(tracked)
        if roll < 0.47:
            return manual
        return offer

    async def worker() -> None:
        while not stop.is_set():
            await choose()()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    assert not proc.running
    return answered


# ============================================================================ checks after a restart


def check_counters(agents: dict[str, dict[str, Any]]) -> None:
    for agent_id, agent in agents.items():
        sessions = agent["sessions"]
        assert all(s["state"] in OCCUPYING for s in sessions), (agent_id, sessions)
        by_channel = Counter(s["channel"] for s in sessions)
        expected = {
            "sessions": len(sessions),
            "units": sum(UNITS[PROFILE_OF[agent_id]][s["channel"]] for s in sessions),
            **{c: by_channel[c] for c in CHANNELS},
        }
        assert agent["in_use"] == expected, (agent_id, agent["in_use"], expected)


async def snapshot(client: LiveClient) -> dict[str, dict[str, Any]]:
    body = await client.ok("GET", "/v1/agents", "supervisor")
    agents = {a["id"]: a for a in body["agents"]}
    assert sorted(agents) == sorted(AGENTS)
    # the single-agent view says the same
    for agent_id in AGENTS:
        one = await client.ok("GET", f"/v1/agents/{agent_id}", "supervisor")
        assert one["in_use"] == agents[agent_id]["in_use"], agent_id
        assert [s["id"] for s in one["sessions"]] == [s["id"] for s in agents[agent_id]["sessions"]], agent_id
    return agents


def summary(agents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        a: (agent["presence"], agent["in_use"], sorted((s["id"], s["state"]) for s in agent["sessions"]))
        for a, agent in agents.items()
    }


def duplicate_of(first: dict[str, Any]) -> dict[str, Any]:
    return {**first, "decision": "duplicate", "first_decision": first["decision"]}


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(run(call) for call in calls))


async def verify_restart(client: LiveClient, model: Model, proc: GatewayProcess) -> dict[str, int]:
    """Every check of the module docstring; then bring the model in step with the server."""
    restored = proc.log_events("restored")
    assert len(restored) == 1, proc.stderr()[-2000:]
    agents = await snapshot(client)

    # capacity counters equal the open sessions; presence survived; the restore log agrees
    check_counters(agents)
    for agent_id, agent in agents.items():
        assert agent["presence"]["state"] == model.presence[agent_id], agent_id
        assert agent["desktop_connected"] is False
    open_sessions = {s["id"]: s for agent in agents.values() for s in agent["sessions"]}
    assert restored[0]["open_sessions"] == len(open_sessions)

    # every answered event: a resend is a duplicate repeating the first answer ...
    answered = list(model.answered.values())
    replies = await gather_limited([lambda e=event: client.webhook(e) for event, _, _ in answered])
    wrong = [
        (event["event_id"], first, reply)
        for (event, _status, first), reply in zip(answered, replies, strict=True)
        if reply != (200, duplicate_of(first))
    ]
    assert not wrong, f"{len(wrong)} answered events were not journaled as answered, e.g. {wrong[:3]}"
    # ... and changes nothing
    assert summary(await snapshot(client)) == summary(agents)

    # events cut off by the kill: a duplicate proves they were journaled before the crash
    cut_off = list(model.unknown.values())
    model.unknown.clear()
    replies = await gather_limited([lambda e=event: client.webhook(e) for event in cut_off])
    fresh: list[tuple[dict[str, Any], int, dict[str, Any]]] = []
    journaled = 0
    for event, (status, body) in zip(cut_off, replies, strict=True):
        if body.get("decision") == "duplicate":
            journaled += 1
            assert status == 200, body
            first = first_of(body)
            model.answered[event["event_id"]] = (event, status_of(first), first)
            if event["type"] == "offer":
                model.apply_offer(event, status_of(first), first)
            else:
                model.apply_vendor_end(event, 200, first)
        else:
            fresh.append((event, status, body))

    # every known session is where its actions put it (as of the snapshot)
    async def record(tracked: Tracked) -> tuple[int, Any]:
        return await client.call("GET", f"/v1/sessions/{tracked.sid}", tracked.agent)

    tracked_all = list(model.sessions.values())
    records = await gather_limited([lambda t=t: record(t) for t in tracked_all])
    for tracked, (status, body) in zip(tracked_all, records, strict=True):
        assert status == 200, (tracked, status, body)
        assert (body["agent_id"], body["channel"], body["interaction_id"]) == (
            tracked.agent,
            tracked.channel,
            tracked.interaction,
        ), (tracked, body)
        if tracked.sid in open_sessions:
            state = open_sessions[tracked.sid]["state"]
            assert open_sessions[tracked.sid]["agent_id"] == tracked.agent
        else:
            # not open at the snapshot: its record must say closed (else it leaked out of the counters)
            state = body["state"]
            assert state == "closed", (tracked, body)
        assert state in tracked.possible(), (tracked, state, body)
        if state in ("active", "wrap_up"):
            assert body["accepted_at"] is not None, body

    # every open session is explained, and no interaction has two
    by_interaction = Counter(s["interaction_id"] for s in open_sessions.values() if s["interaction_id"])
    assert all(n == 1 for n in by_interaction.values()), by_interaction.most_common(3)
    unexplained_manual: Counter[str] = Counter()
    for sid, session in open_sessions.items():
        if sid in model.sessions:
            continue
        if session["channel"] == "manual":
            unexplained_manual[session["agent_id"]] += 1
        else:
            assert session["interaction_id"] in model.queued and session["queue"] == "sales", session
    for agent_id, count in unexplained_manual.items():
        assert count <= model.manual_unknown[agent_id], (agent_id, count, model.manual_unknown)

    # the restored waiting list is exactly the queued interactions nobody got yet
    with_session = {t.interaction for t in model.sessions.values()} | set(by_interaction)
    assert restored[0]["waiting"] == len(model.queued - with_session)

    # now bring the model in step: fresh decisions, then the server's view of every session
    for event, status, body in fresh:
        model.answered[event["event_id"]] = (event, status, body)
        if event["type"] == "offer":
            model.apply_offer(event, status, body)
        else:
            model.apply_vendor_end(event, status, body)
    await sync(client, model)
    return {"journaled_cut_off": journaled, "fresh_cut_off": len(fresh), "open": len(open_sessions)}


async def sync(client: LiveClient, model: Model) -> None:
    """Take the server's current sessions as the model's truth (after the checks)."""
    agents = await snapshot(client)
    check_counters(agents)
    current = {s["id"]: s for agent in agents.values() for s in agent["sessions"]}
    for sid, tracked in model.sessions.items():
        tracked.busy = False
        tracked.pending = None
        tracked.state = current[sid]["state"] if sid in current else "closed"
    for sid, session in current.items():
        if sid not in model.sessions:
            model.sessions[sid] = Tracked(
                sid, session["agent_id"], session["channel"], session["interaction_id"], session["state"]
            )
    model.manual_unknown.clear()


# ============================================================================ the tests


async def test_sigkill_under_load_loses_nothing_and_leaks_nothing(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(crash_config(tmp_path / "gateway.db"), name="crash")
    proc.start()
    model = Model(rng=random.Random(20240501))
    timeout = aiohttp.ClientTimeout(total=20)
    stats: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=timeout) as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        for agent_id in AGENTS:
            agent = await client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})
            assert agent["presence"]["state"] == "ready"

    for cycle, (kill_after, delay, early_duplicate) in enumerate(KILL_AFTER):
        # a fresh client session per cycle: pooled connections die with the server
        async with aiohttp.ClientSession(timeout=timeout) as http:
            client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
            for agent_id, state in PRESENCE_PLAN.get(cycle, {}).items():
                await client.ok("PUT", f"/v1/agents/{agent_id}/presence", "supervisor", json_body={"state": state})
                model.presence[agent_id] = state
            if cycle in PRESENCE_PLAN:
                await sync(client, model)  # going offline withdrew that agent's offers
            answers = await traffic(client, model, proc, kill_after, delay, early_duplicate)
            assert not model.problems, model.problems[:5]
            assert answers >= kill_after or early_duplicate

        proc.start()  # same config, same database
        async with aiohttp.ClientSession(timeout=timeout) as http:
            client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
            stats.append({"cycle": cycle, "answers": answers, **await verify_restart(client, model, proc)})
            assert not model.problems, model.problems[:5]

    # the run really covered what it claims to
    assert proc.starts == len(KILL_AFTER) + 1
    kinds = {k.split(":")[0] for k in model.decisions}
    assert {"assigned", "queued", "rejected"} <= kinds, model.decisions
    assert sum(1 for t in model.sessions.values() if t.state in ("active", "wrap_up", "closed")) > 5
    assert model.resent > 20, model.resent
    print(
        "crash cycles:",
        stats,
        "decisions:",
        dict(model.decisions),
        f"resent {model.resent}, acknowledged only by a duplicate {model.acked_by_duplicate},"
        f" killed at an early duplicate {model.early_duplicate_kills}",
    )


async def test_sigterm_exits_0_quickly_and_a_restart_restores_open_sessions_exactly(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(crash_config(tmp_path / "gateway.db"), name="graceful")
    proc.start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        for agent_id in ("a1", "a2"):
            await client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})
        await client.ok("PUT", "/v1/agents/a3/presence", "a3", json_body={"state": "not_ready", "reason": "lunch"})
        sids = []
        for n, (channel, target) in enumerate(
            [("chat", "a1"), ("voice", "a1"), ("email", "a2"), ("chat", "a2"), ("chat", "a1"), ("email", "a1")]
        ):
            status, body = await client.webhook(
                {
                    "event_id": f"g{n}",
                    "type": "offer",
                    "channel": channel,
                    "interaction_id": f"gi{n}",
                    "agent_id": target,
                }
            )
            assert status == 200 and body["decision"] == "assigned", body
            sids.append(body["session_id"])
        status, body = await client.webhook(
            {"event_id": "g-queued", "type": "offer", "channel": "chat", "interaction_id": "gq", "queue": "sales"}
        )
        assert (status, body["decision"]) == (200, "assigned")  # a2 has room
        # active, focused, in wrap-up (voice), with a note; one stays offered; a manual one
        for sid, who in ((sids[0], "a1"), (sids[1], "a1"), (sids[2], "a2")):
            await client.ok("POST", f"/v1/sessions/{sid}/accept", who)
        await client.ok("POST", f"/v1/sessions/{sids[0]}/note", "a1", json_body={"text": "call back at 5"})
        await client.ok("POST", f"/v1/sessions/{sids[1]}/end", "a1")
        await client.ok("POST", f"/v1/sessions/{sids[2]}/focus", "a2")
        await client.ok("POST", "/v1/agents/a2/sessions", "a2", json_body={"label": "callback"}, status=201)
        before = await snapshot(client)
        check_counters(before)

        # a desktop is connected while the gateway stops: it must not hold the shutdown up
        ws = await http.ws_connect(f"{proc.base}/v1/agents/a1/ws", headers=client.headers("a1"))
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello"
        loop = asyncio.get_running_loop()
        started = loop.time()
        status_code = await asyncio.to_thread(proc.terminate, 10.0)
        took = loop.time() - started
        assert status_code == 0, proc.stderr()[-3000:]
        assert took < 5.0, took
        closed = await ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING), closed
        await ws.close()

    proc.start()
    assert proc.log_events("restored")[0]["open_sessions"] == sum(len(a["sessions"]) for a in before.values())
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        after = await snapshot(client)
    check_counters(after)

    def stable(agents: dict[str, dict[str, Any]]) -> dict[str, Any]:
        # focus_ms of the focused session keeps running; everything else must be identical
        return {
            a: {
                **{k: v for k, v in agent.items() if k not in ("sessions", "desktop_connected")},
                "sessions": sorted(
                    ({k: v for k, v in s.items() if k != "focus_ms"} for s in agent["sessions"]), key=lambda s: s["id"]
                ),
            }
            for a, agent in agents.items()
        }

    assert stable(after) == stable(before)
    for agent_id, agent in after.items():
        old_focus = {s["id"]: s["focus_ms"] for s in before[agent_id]["sessions"]}
        for session in agent["sessions"]:
            assert session["focus_ms"] >= old_focus[session["id"]]
    assert after["a3"]["presence"] == {"state": "not_ready", "reason": "lunch"}
    assert [s["state"] for s in after["a1"]["sessions"]].count("wrap_up") == 1


async def test_a_second_sigterm_during_the_shutdown_ends_the_process_at_once_and_loses_nothing(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(crash_config(tmp_path / "gateway.db"), name="twice")
    proc.start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        await client.ok("PUT", "/v1/agents/a1/presence", "a1", json_body={"state": "ready"})
        status, body = await client.webhook(
            {"event_id": "t1", "type": "offer", "channel": "chat", "interaction_id": "ti1", "agent_id": "a1"}
        )
        assert status == 200 and body["decision"] == "assigned"
        await client.ok("POST", f"/v1/sessions/{body['session_id']}/accept", "a1")
        before = summary(await snapshot(client))

    # a webhook whose body never completes keeps the graceful shutdown waiting (up to its body timeout)
    with socket.create_connection(("127.0.0.1", proc.port)) as held:
        held.sendall(
            b"POST /v1/vendors/crm/events HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n"
            b"X-Gateway-Timestamp: %d\r\nX-Gateway-Signature: sha256=00\r\n\r\n{" % int(time.time())
        )
        await asyncio.sleep(0.2)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not proc.log_events("shutting_down"):
            assert time.monotonic() < deadline, proc.stderr()[-2000:]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert proc.running  # still shutting down gracefully: the request holds it
        proc.proc.send_signal(signal.SIGTERM)
        status_code = await asyncio.to_thread(proc.wait_exit, 5.0)
    assert status_code == 128 + signal.SIGTERM
    assert proc.log_events("forced_exit")

    proc.start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        assert summary(await snapshot(client)) == before
