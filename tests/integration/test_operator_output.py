"""What ``cti-gateway run`` shows its operator (issue 6 item 14), on real processes: the
start banner with the real webhook URL, the loud warning about the shipped sample
credentials on a non-loopback address, the optional access log, a quiet clean shutdown and
one line (no traceback) when the gateway cannot start."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .conftest import GatewayFactory
from .live import ROOT, LiveClient, sqlite_url

SAMPLE_SECRET = "crm-hooks-sample-secret"
SAMPLE_TOKENS = {"supervisor": "supervisor-sample", "a1001": "agent-a1001-sample", "a1002": "agent-a1002-sample"}


def shipped(tmp_path: Path, **server: Any) -> dict[str, Any]:
    """The shipped config/gateway.yaml (sample credentials and all), on a store in tmp_path."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    config["server"] = {**config["server"], **server}
    config["store"] = {"url": sqlite_url(tmp_path / "ops.db")}
    return config


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.asyncio
async def test_on_all_addresses_with_the_sample_credentials_it_warns_loudly_and_logs_requests(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    # 0.0.0.0 is only listened on: every request of the test goes to 127.0.0.1
    proc = gateway_process(shipped(tmp_path, host="0.0.0.0", access_log=True), name="exposed").start()
    url_host = socket.gethostname()
    assert (
        f"  vendor crm-hooks (webhook): POST http://{url_host}:{proc.port}/v1/vendors/crm-hooks/events"
        in proc.stdout().splitlines()
    )
    err = proc.stderr()
    assert "!! WARNING: listening on 0.0.0.0, reachable from other hosts, with the PUBLIC SAMPLE CREDENTIALS" in err
    [warning] = proc.log_events("sample_credentials_exposed")
    assert warning["level"] == "warning"
    assert warning["settings"] == [
        "server.supervisor_token_sha256 (supervisor-sample)",
        "agents[a1001].token_sha256 (agent-a1001-sample)",
        "agents[a1002].token_sha256 (agent-a1002-sample)",
        "vendors[crm-hooks].secret (the sample secret)",
    ]

    # the access log: method, path (never the query: it may carry a token), status
    with urllib.request.urlopen(f"{proc.base}/healthz?token=query-token-never-logged", timeout=5) as response:
        assert response.status == 200
    async with aiohttp.ClientSession() as http:
        client = LiveClient(http, proc.base, tokens=SAMPLE_TOKENS, vendor="crm-hooks", secret=SAMPLE_SECRET)
        offer = {"event_id": "e1", "type": "offer", "channel": "chat", "interaction_id": "i1", "queue": "support"}
        status, body = await client.webhook(offer)
        assert (status, body["reason"]) == (409, "no_agent_available")

    # a request is logged once its response is sent: wait for the lines (bounded)
    def logged(path: str) -> bool:
        return any(r["path"] == path for r in proc.log_events("http_request"))

    deadline = time.monotonic() + 10
    while not logged("/v1/vendors/crm-hooks/events") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    requests = proc.log_events("http_request")
    assert any(r["method"] == "GET" and r["path"] == "/healthz" and r["status"] == 200 for r in requests)
    assert any(r["path"] == "/v1/vendors/crm-hooks/events" and r["status"] == 409 for r in requests)
    assert "query-token-never-logged" not in proc.stderr()
    # the rejection's reason is in the log
    [routed] = proc.log_events("event_routed")
    assert (routed["decision"], routed["reason"], routed["vendor"]) == ("rejected", "no_agent_available", "crm-hooks")


@pytest.mark.asyncio
async def test_on_loopback_no_warning_no_access_log_and_a_clean_shutdown_is_quiet(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(shipped(tmp_path), name="local").start()
    lines = proc.stdout().splitlines()
    assert lines[0].startswith("cti-gateway ") and f"listening on http://127.0.0.1:{proc.port} " in lines[0]
    assert f"  vendor crm-hooks (webhook): POST http://127.0.0.1:{proc.port}/v1/vendors/crm-hooks/events" in lines
    with urllib.request.urlopen(f"{proc.base}/healthz", timeout=5) as response:
        assert response.status == 200
    assert proc.terminate() == 0
    entries = json_lines(proc.stderr())
    assert "WARNING" not in proc.stderr() and not proc.log_events("sample_credentials_exposed")
    assert not proc.log_events("http_request")  # the access log is off by default
    shutdown = entries[[e["event"] for e in entries].index("shutting_down") :]
    assert [e for e in shutdown if e["level"] in ("warning", "error", "critical")] == []
    assert proc.log_events("vendor_stopped") and proc.log_events("stopped")


def test_a_store_that_cannot_be_opened_is_one_line_not_a_traceback(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    config = shipped(tmp_path)
    config["store"] = {"url": sqlite_url(tmp_path / "a-file" / "sub" / "g.db")}
    proc = gateway_process(config, name="nostore").start(wait=False)
    assert proc.wait_exit() == 1
    assert "Traceback" not in proc.stderr()
    problems = [line for line in proc.stderr().splitlines() if not line.startswith("{")]
    directory = tmp_path / "a-file" / "sub"
    assert problems == [
        f"cti-gateway: cannot start: cannot create the journal directory {directory}: "
        f"[Errno 20] Not a directory: '{directory}'"
    ]
