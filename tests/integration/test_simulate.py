"""``cti-gateway simulate`` against a live gateway process (both run as real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.simulate import SimulateError, check_url, parse_channel_mix, percentile

from .conftest import GatewayFactory
from .live import LiveClient, sha, sqlite_url, write_config

VENDOR = "crm"
SECRET = "simulate-webhook-secret-0123"
AGENTS = ("s1", "s2", "s3")
TOKENS = {"supervisor": "sim-supervisor-token", **{a: f"sim-{a}-token" for a in AGENTS}}
ZERO = {"sessions": 0, "units": 0, "voice": 0, "chat": 0, "email": 0, "manual": 0}
PROGRESS = re.compile(
    r"simulate slow: +(?P<elapsed>[\d.]+) s: (?P<sent>\d+)/(?P<planned>\d+) sent, (?P<assigned>\d+) assigned, "
    r"(?P<rejected>\d+) rejected, (?P<queued>\d+) queued, (?P<ended>\d+) ended, (?P<errors>\d+) errors, "
    r"(?P<rate>[\d.]+) offers/s"
)
REASONS = {"agent_at_capacity", "channel_at_capacity", "no_agent_available", "queue_timeout", "agent_not_ready"}


def gateway_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"])},
        "store": {"url": sqlite_url(tmp_path / "sim.db")},
        "capacity_profiles": {"three": {"max_sessions": 3, "channels": {"voice": 1}}},
        "queues": [{"name": "support"}, {"name": "sales", "on_full": "wait", "max_wait_s": 30}],
        "agents": [
            {
                "id": a,
                "name": a.upper(),
                "profile": "three",
                "queues": ["support", "sales"],
                "token_sha256": sha(TOKENS[a]),
            }
            for a in AGENTS
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }


def simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )


async def run_simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(simulate, *args, env=env)


async def agents_in_use(client: LiveClient) -> dict[str, dict[str, int]]:
    body = await client.ok("GET", "/v1/agents", "supervisor")
    return {a["id"]: a["in_use"] for a in body["agents"]}


@pytest.mark.asyncio
async def test_a_run_from_the_config_answers_every_offer_and_ends_what_it_opened(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path)
    proc = gateway_process(config, name="sim").start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        for agent_id in AGENTS:
            await client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})

        # URL, vendor, secret and the queues all come from the gateway's own config file
        done = await run_simulate(
            "--config",
            str(tmp_path / "sim.yaml"),
            "--count",
            "60",
            "--rate",
            "150",
            "--hold",
            "0.2",
            "--channel",
            "chat=3,email=1",
            "--channel",
            "voice",
            "--seed",
            "7",
            "--json",
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["url"] == proc.base and summary["vendor"] == VENDOR
        assert summary["offers"] == {"planned": 60, "sent": 60, "answered": 60}
        assert summary["errors"] == {}
        decisions = summary["decisions"]
        assert sum(decisions.values()) == 60 and set(decisions) <= {"assigned", "rejected", "queued"}
        assert decisions.get("assigned", 0) > 0
        assert sum(summary["rejected"].values()) == decisions.get("rejected", 0)
        assert set(summary["rejected"]) <= REASONS
        # every assigned or queued interaction was ended again
        opened = decisions.get("assigned", 0) + decisions.get("queued", 0)
        assert summary["ends"] == {"sent": opened, "answered": opened}
        latency = summary["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert summary["offers_per_s"] > 0 and summary["elapsed_s"] >= summary["offer_phase_s"]

        # nothing is left open: every counter is back to zero (no wrap-up in this profile)
        assert await agents_in_use(client) == dict.fromkeys(AGENTS, ZERO)
        report = await client.ok("GET", "/v1/reports/sessions", "supervisor")
        assert len(report["sessions"]) >= decisions.get("assigned", 0)
        assert all(row["closed_at"] for row in report["sessions"])


@pytest.mark.asyncio
async def test_targeted_runs_duplicates_errors_and_the_text_summary(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(gateway_config(tmp_path), name="sim").start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        await client.ok("PUT", "/v1/agents/s1/presence", "s1", json_body={"state": "ready"})
        flags = [
            "--url",
            proc.base + "/",
            "--vendor",
            VENDOR,
            "--agent",
            "s1",
            "--count",
            "10",
            "--rate",
            "200",
            "--channel",
            "chat",
            "--no-end",
            "--run-id",
            "fixed",
        ]

        # the secret from the environment; the text summary
        done = await run_simulate(*flags, env={"CTI_WEBHOOK_SECRET": SECRET})
        assert done.returncode == 0, (done.stdout, done.stderr)
        lines = done.stdout.splitlines()
        assert lines[0].startswith(f"simulate fixed: 10/10 offers answered by {proc.base} (vendor {VENDOR})")
        assert "  decisions: rejected 7, assigned 3" in lines
        assert "  rejected:  agent_at_capacity 7" in lines
        assert "  ends:      0 sent, 0 answered" in lines
        assert any(line.startswith("  latency:   p50 ") and " p99 " in line for line in lines)
        assert "  errors:    none" in lines
        assert (await agents_in_use(client))["s1"] == {**ZERO, "sessions": 3, "units": 3, "chat": 3}

        # the same run id again: every offer is a duplicate and nothing changes
        done = await run_simulate(*flags, "--json", "--secret", SECRET)
        assert done.returncode == 0, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["decisions"] == {"duplicate": 10}
        assert summary["rejected"] == {"agent_at_capacity": 7}  # the first answers
        assert (await agents_in_use(client))["s1"] == {**ZERO, "sessions": 3, "units": 3, "chat": 3}

        # a wrong secret: every offer is an error, the exit status says so
        done = await run_simulate(*flags, "--json", "--secret", "not-the-secret-at-all", "--run-id", "other")
        assert done.returncode == 1, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["errors"] == {"HTTP 401 bad_signature": 10}
        assert summary["offers"] == {"planned": 10, "sent": 10, "answered": 0}
        assert summary["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}

        # progress while it runs: a line a second on stderr, the summary alone on stdout
        slow = [*flags[:-1], "slow", "--count", "25", "--rate", "10"]
        done = await run_simulate(*slow, "--json", "--secret", SECRET)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert json.loads(done.stdout)["decisions"] == {"rejected": 25}  # s1 is full
        progress = [PROGRESS.fullmatch(line) for line in done.stderr.splitlines()]
        assert len(progress) >= 2 and all(progress), done.stderr
        sent = [int(match["sent"]) for match in progress if match]
        rejected = [int(match["rejected"]) for match in progress if match]
        assert sent == sorted(sent) and rejected == sorted(rejected) and 0 < sent[0] < 25
        assert all(match["planned"] == "25" and float(match["rate"]) > 0 for match in progress if match)
        done = await run_simulate(*slow[:-4], "--count", "3", "--rate", "100", "--secret", SECRET, "--quiet")
        assert done.returncode == 0 and done.stderr == "", done.stderr

        # something answers, but not as a gateway (a wrong path): exit 3, nothing sent
        done = await run_simulate("--url", proc.base + "/v1", *flags[2:], "--secret", SECRET)
        assert done.returncode == 3 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"simulate: {proc.base}/v1 answered GET /healthz with HTTP 404, not 200: is it a cti-gateway (check --url)?"
        ]


@pytest.mark.asyncio
async def test_bounds_and_the_loopback_rule(tmp_path: Path) -> None:
    # refused before anything is sent (10.0.0.1 would time out if it were tried)
    started = time.monotonic()
    done = await run_simulate("--url", "http://10.0.0.1:8080", "--secret", SECRET, "--vendor", VENDOR, "--queue", "q")
    assert done.returncode == 2
    assert "refusing to send simulated traffic to 10.0.0.1: not a loopback address" in done.stderr
    assert "--allow-remote" in done.stderr and done.stdout == ""
    assert time.monotonic() - started < 30

    base = ["--url", "http://127.0.0.1:9", "--secret", SECRET, "--vendor", VENDOR]
    bad = [
        (["--queue", "q", "--count", "0"], "--count must be 1..1000000"),
        (["--queue", "q", "--rate", "0"], "--rate must be > 0"),
        (["--queue", "q", "--duration", "7200"], "--duration must be > 0 and <= 3600 s"),
        (["--queue", "q", "--channel", "fax"], "unknown channel 'fax'"),
        ([], "name at least one --queue or --agent"),
    ]
    for extra, message in bad:
        done = await run_simulate(*base, *extra)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
    done = await run_simulate(
        "--url", "http://127.0.0.1:9", "--vendor", VENDOR, "--queue", "q", env={"CTI_WEBHOOK_SECRET": ""}
    )
    assert done.returncode == 2 and "secret is required" in done.stderr

    # a config with a bad line: its problems, exit 2
    write_config(tmp_path / "bad.yaml", {"capacity_profiles": {"p": {"max_sessions": 1, "colour": 1}}})
    done = await run_simulate("--config", str(tmp_path / "bad.yaml"))
    assert done.returncode == 2 and "bad.yaml:4: capacity_profiles.p.colour: unknown key" in done.stderr

    # nobody listening on the port: one clear line, exit 3, nothing sent, no traceback
    started = time.monotonic()
    done = await run_simulate(*base, "--queue", "q", "--count", "3", "--rate", "100", "--json")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "simulate: the gateway at http://127.0.0.1:9 is not reachable: connection refused "
        "(is `cti-gateway run` started, on this port?)"
    ]
    assert time.monotonic() - started < 30


def test_helpers() -> None:
    assert parse_channel_mix([]) == {"voice": 1.0, "chat": 2.0, "email": 1.0}
    assert parse_channel_mix(["chat=3,voice=0.5", "EMAIL"]) == {"chat": 3.0, "voice": 0.5, "email": 1.0}
    with pytest.raises(SimulateError):
        parse_channel_mix(["chat=0"])
    with pytest.raises(SimulateError):
        parse_channel_mix(["chat=x"])
    for url in ("http://127.0.0.1:8080/", "http://localhost", "https://[::1]:8443", "http://127.8.9.10"):
        assert check_url(url, allow_remote=False) == url.rstrip("/")
    for url in ("http://example.com", "http://10.1.2.3", "http://[2001:db8::1]"):
        with pytest.raises(SimulateError, match="not a loopback address"):
            check_url(url, allow_remote=False)
        assert check_url(url, allow_remote=True) == url
    for url in ("ftp://127.0.0.1", "127.0.0.1:8080", "http://127.0.0.1/?x=1"):
        with pytest.raises(SimulateError):
            check_url(url, allow_remote=True)
    assert percentile([], 50) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert percentile([7.0], 99) == 7.0
