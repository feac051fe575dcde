"""The operator's log lines (issue 6 item 14): decisions with their reason, assignments with
agent and session, session steps and presence changes at info, a quiet clean shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

import gateway.oplog
import gateway.runtime
from gateway.app import build_app
from gateway.clock import ManualClock
from gateway.records.memory import MemoryJournal

from .conftest import T0, Gateway, make_config

Logs = list[dict[str, Any]]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    """Captured log entries, context variables merged (fresh loggers: capture works even if
    structlog was configured with ``cache_logger_on_first_use`` earlier)."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        monkeypatch.setattr(gateway.oplog, "log", structlog.get_logger("cti_gateway.ops"))
        monkeypatch.setattr(gateway.runtime, "log", structlog.get_logger("cti_gateway.runtime"))
        yield entries


def named(entries: Logs, event: str, **match: Any) -> Logs:
    return [e for e in entries if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


@pytest.mark.asyncio
async def test_rejections_log_their_reason_and_assignments_their_agent_and_session(gw: Gateway, logs: Logs) -> None:
    response = await gw.webhook(
        {"event_id": "e1", "type": "offer", "channel": "chat", "interaction_id": "i1", "queue": "support"}
    )
    assert response.status == 409
    [rejected] = named(logs, "event_routed", event_id="e1")
    assert rejected["log_level"] == "info"
    assert rejected["decision"] == "rejected" and rejected["reason"] == "no_agent_available"
    assert (rejected["vendor"], rejected["interaction_id"], rejected["channel"]) == ("crm", "i1", "chat")

    await gw.ready("a1")
    [presence] = named(logs, "agent_presence", agent_id="a1")
    assert presence["log_level"] == "info" and presence["state"] == "ready"

    body = {"event_id": "e2", "type": "offer", "channel": "chat", "interaction_id": "i2", "queue": "support"}
    assert (await gw.webhook(body)).status == 200
    [assigned] = named(logs, "event_routed", event_id="e2")
    assert assigned["decision"] == "assigned" and assigned["agent_id"] == "a1"
    session_id = assigned["session_id"]
    assert session_id
    [offered] = named(logs, "session_changed", transition="offered")
    assert offered["log_level"] == "info"
    assert (offered["session_id"], offered["agent_id"], offered["interaction_id"]) == (session_id, "a1", "i2")

    # a resend: the first answer, said so
    assert (await gw.webhook(body)).status == 200
    duplicate = named(logs, "event_routed", event_id="e2", decision="duplicate")
    assert duplicate and duplicate[0]["first_decision"] == "assigned" and duplicate[0]["session_id"] == session_id

    # lifecycle steps at info, focus at debug
    await gw.json("POST", f"/v1/sessions/{session_id}/accept", "a1")
    await gw.json("POST", f"/v1/sessions/{session_id}/end", "a1")
    steps = {e["transition"]: e["log_level"] for e in named(logs, "session_changed", session_id=session_id)}
    assert steps["accepted"] == "info" and steps["closed"] == "info"
    assert steps.get("focused", "debug") == "debug"
    closed = named(logs, "session_changed", session_id=session_id, transition="closed")[0]
    assert closed["outcome"] == "completed" and closed["state"] == "closed"


@pytest.mark.asyncio
async def test_a_decision_made_later_is_logged_with_its_reason(gw: Gateway, logs: Logs) -> None:
    await gw.ready("a1")
    session_id = await gw.offer("a1", channel="voice")  # targeted: nobody else may take it
    await gw.advance(21)  # the voice offer expires unanswered
    [expired] = named(logs, "session_changed", session_id=session_id, transition="expired")
    assert expired["log_level"] == "info" and expired["outcome"] == "expired" and expired["agent_id"] == "a1"
    [late] = named(logs, "late_decision")
    assert late["log_level"] == "info"
    assert (late["decision"], late["reason"], late["vendor"]) == ("rejected", "offer_timeout", "crm")
    assert late["interaction_id"] == expired["interaction_id"]


@pytest.mark.asyncio
async def test_a_clean_shutdown_logs_no_warning(logs: Logs) -> None:
    app = build_app(make_config(), clock=ManualClock(T0), journal=MemoryJournal())
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    started = len(logs)
    await runner.cleanup()
    shutdown = logs[started:]
    assert named(shutdown, "vendor_stopped", vendor="crm") and not named(shutdown, "vendor_down")
    assert [e for e in shutdown if e["log_level"] in ("warning", "error", "critical")] == []
