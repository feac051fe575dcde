"""Schemathesis against ``/openapi.json`` of a live gateway process.

Two passes of the ``schemathesis`` CLI (a fixed seed, bounded examples): one with the
supervisor token (coverage, fuzzing and stateful phases), a lighter one with an agent's
token (fuzzing and stateful). Path
parameters are pinned to things that exist (the agent, an open session, the vendor) so
that the generated requests reach the handlers instead of stopping at 404. Checks:
``not_a_server_error`` (no 5xx, whatever the input) and ``response_schema_conformance``
(every documented response's body matches its schema). Any failure fails the test with
schemathesis' own report of it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import GatewayFactory
from .live import LiveClient, sha, sqlite_url

pytestmark = pytest.mark.asyncio

VENDOR = "crm"
SECRET = "schemathesis-webhook-secret-0123"
TOKENS = {"supervisor": "st-supervisor-token", "a1": "st-a1-token", "a2": "st-a2-token"}
CHECKS = "not_a_server_error,response_schema_conformance"
SEED = 20240501
#: the schemathesis CLI (installed next to this interpreter)
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


def gateway_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"])},
        "store": {"url": sqlite_url(tmp_path / "st.db")},
        "capacity_profiles": {"std": {"max_sessions": 6, "reserved_inbound": 1, "wrap_up_s": {"voice": 5}}},
        "queues": [{"name": "support"}],
        "agents": [
            {"id": a, "name": a.upper(), "profile": "std", "queues": ["support"], "token_sha256": sha(TOKENS[a])}
            for a in ("a1", "a2")
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }


def pinned(agent_id: str, session_id: str) -> str:
    """A schemathesis.toml that pins the path parameters to existing objects."""
    return f"""
[[operations]]
include-path-regex = "^/v1/agents/"
parameters = {{ "path.id" = "{agent_id}" }}

[[operations]]
include-path-regex = "^/v1/sessions/"
parameters = {{ "path.id" = "{session_id}" }}

[[operations]]
include-path-regex = "^/v1/vendors/"
parameters = {{ "path.vendor" = "{VENDOR}" }}
"""


async def prepare(client: LiveClient) -> dict[str, str]:
    """Both agents ready, each with open sessions in several states; returns a session per agent."""
    sessions = {}
    for agent_id in ("a1", "a2"):
        await client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})
        ids = []
        for n, channel in enumerate(("chat", "voice", "email")):
            status, body = await client.webhook(
                {
                    "event_id": f"{agent_id}-{n}",
                    "type": "offer",
                    "channel": channel,
                    "interaction_id": f"{agent_id}-i{n}",
                    "agent_id": agent_id,
                    "customer": {"name": "Jo"},
                }
            )
            assert status == 200 and body["decision"] == "assigned", body
            ids.append(body["session_id"])
        await client.ok("POST", f"/v1/sessions/{ids[0]}/accept", agent_id)
        await client.ok("POST", f"/v1/sessions/{ids[1]}/accept", agent_id)
        await client.ok("POST", f"/v1/sessions/{ids[1]}/end", agent_id)  # voice: in wrap-up
        sessions[agent_id] = ids[0]
    return sessions


def run_schemathesis(
    base: str, token: str, config: Path, cwd: Path, *, phases: str, max_examples: int
) -> subprocess.CompletedProcess[str]:
    command = [
        *SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        # one worker: hypothesis compiles code in threads, which CPython 3.11 does not always survive
        "--workers",
        "1",
        # no client-side rate limit: schemathesis sends well under the API's 50 requests/s
        # per token here, and a 429 would be a documented answer anyway
        "--request-timeout",
        "10",
        "--no-color",
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=150)


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(gateway_config(tmp_path), name="schemathesis").start()
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        sessions = await prepare(client)

    # the supervisor reaches everything: every phase; the agent pass is lighter (its
    # authorization paths: its own agent and session, 403 on reports)
    passes = [
        ("supervisor", "a1", sessions["a1"], "coverage,fuzzing,stateful", 12),
        ("a2", "a2", sessions["a2"], "fuzzing,stateful", 8),
    ]
    for who, agent_id, session_id, phases, max_examples in passes:
        config = tmp_path / f"schemathesis-{who}.toml"
        config.write_text(pinned(agent_id, session_id))
        done = await asyncio.to_thread(
            run_schemathesis, proc.base, TOKENS[who], config, tmp_path, phases=phases, max_examples=max_examples
        )
        report = done.stdout[-12000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"schemathesis ({who} token) failed:\n{report}"
        assert " passed" in done.stdout and "Test cases:" in done.stdout, report
        assert proc.running, proc.stderr()[-3000:]
    # the server logged no unexpected failure while being fuzzed
    assert not proc.log_events("request_failed"), proc.log_events("request_failed")[:3]
    assert not proc.log_events("webhook_internal_error")
