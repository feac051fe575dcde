"""The operator's log lines (issue 6 item 14): decisions with their reason, assignments with
agent and session, session steps and presence changes at info, a quiet clean shutdown."""

from __future__ import annotations

import re
import subprocess
import sys
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


#: a child process: configure the logs (``sys.argv[1]``: json or console), log one line with
#: a traceback through structlog and one through the standard library (as aiohttp does)
_LOG_A_FAILURE = """
import logging, sys
import structlog
from gateway.logs import configure
configure("info", sys.argv[1])
try:
    raise ValueError("the failure")
except ValueError:
    structlog.get_logger("cti_gateway.test").exception("handler_failed", vendor="crm")
    logging.getLogger("aiohttp.server").exception("Error handling request")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "pygments")), flush=True)
"""


def _log_lines(fmt: str, *, rich_first: bool) -> tuple[str, str]:
    """The child's stderr (timestamps blanked) and the rich/pygments modules it had loaded.
    ``rich_first``: rich is imported before structlog (structlog then uses it if it can);
    otherwise structlog is imported as ``cti-gateway`` does (:func:`gateway.logs.import_structlog`)."""
    # one line either way: the tracebacks' line numbers stay the same
    prelude = "import rich\n" if rich_first else "from gateway.logs import import_structlog; import_structlog()\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + _LOG_A_FAILURE, fmt], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", done.stderr), done.stdout.strip()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_log_lines_are_the_same_whether_rich_is_there_or_not(fmt: str) -> None:
    """``cti-gateway`` imports structlog without ``rich`` (2.7 MB of modules it never needs);
    the lines operators see, tracebacks included (structlog's and aiohttp's, through the
    standard library), are what they are with ``rich`` loaded: plain text (a standard-library
    record's traceback was a ``<traceback object at 0x...>`` in the JSON line before)."""
    with_rich, loaded = _log_lines(fmt, rich_first=True)
    without_rich, not_loaded = _log_lines(fmt, rich_first=False)

    assert "rich" in loaded and not_loaded == "[]"
    assert without_rich == with_rich
    assert without_rich.count("Traceback (most recent call last):") == 2  # both tracebacks, plain text
    assert without_rich.count("ValueError: the failure") == 2
    assert "<traceback object" not in without_rich
