"""Login, subscription, refusals, stalls and settings of the ESL adapter (a FakeHost
stands in for the gateway; the socket peer is the scripted event socket)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from adapters.base import Health
from adapters.freeswitch_esl import FreeswitchEslAdapter, FreeswitchEslConfig
from adapters.freeswitch_esl import adapter as adapter_module
from adapters.freeswitch_esl import client as client_module

from ..conftest import FakeHost, Logs, events_named
from .peer import EslPeer

PASSWORD = "link-ClueCon"


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[EslPeer]:
    server = EslPeer(PASSWORD, seed=5)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def esl_logs(logs: Logs, monkeypatch: pytest.MonkeyPatch) -> Logs:
    import structlog

    for module in (adapter_module, client_module):
        monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
    import adapters.connection

    monkeypatch.setattr(adapters.connection, "log", structlog.get_logger("adapters.connection"))
    return logs


def make(peer: EslPeer, host: FakeHost, **settings: Any) -> FreeswitchEslAdapter:
    config = FreeswitchEslConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": peer.port,
            "password": PASSWORD,
            "agent_map": {"1001@default": "a1"},
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
            **settings,
        }
    )
    return FreeswitchEslAdapter("fs", config, host)


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_auth_ok_subscribes_resyncs_and_reports_up(peer: EslPeer, host: FakeHost) -> None:
    adapter = make(peer, host)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        assert peer.auth_attempts == 1
        assert peer.subscriptions == ["event plain CHANNEL_HANGUP_COMPLETE HEARTBEAT CUSTOM callcenter::info"]
        assert peer.commands("show channels as json")
        await peer.wait_status("1001@default", "Available")
        host.unavailable["a1"] = "agent_not_ready"
        adapter.agents_changed({"a1", "not-mapped"})
        await peer.wait_status("1001@default", "On Break")
        adapter.agents_changed({"a1"})  # no change: nothing sent
        await asyncio.sleep(0.1)
        assert peer.status_log == [("1001@default", "Available"), ("1001@default", "On Break")]
    finally:
        await adapter.stop()
    assert adapter.health is Health.DOWN


@pytest.mark.asyncio
async def test_event_json(peer: EslPeer, host: FakeHost) -> None:
    """With event_format json the adapter subscribes to JSON events and reads them."""
    adapter = make(peer, host, event_format="json")
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        assert peer.subscriptions[0].startswith("event json ")
        headers = peer.headers(
            "CUSTOM",
            **{
                "Event-Subclass": "callcenter::info",
                "CC-Action": "agent-offering",
                "CC-Agent": "1001@default",
                "CC-Queue": "support@default",
                "CC-Member-UUID": "m-json",
                "CC-Member-Session-UUID": "call-json",
                "CC-Member-CID-Number": "+4930999",
            },
        )
        body = json.dumps(headers).encode()
        await peer.send(b"Content-Length: %d\nContent-Type: text/event-json\n\n%s" % (len(body), body))
        await until(lambda: host.submitted)
        [event] = host.submitted
        assert (event.type.value, event.interaction_id, event.agent_id) == ("offer", "call-json", "a1")
        assert event.customer is not None and event.customer.address == "+4930999"
    finally:
        await adapter.stop()


@pytest.mark.asyncio
async def test_auth_failure_is_logged_and_retried_never_up(peer: EslPeer, host: FakeHost, esl_logs: Logs) -> None:
    adapter = make(peer, host, password="wrong-password")
    await adapter.start()
    try:
        await until(lambda: peer.auth_attempts >= 3)
        assert adapter.health is Health.DOWN
        assert Health.UP not in host.health_states()
        [lost] = events_named(esl_logs, "vendor_link_lost")  # logged once, not per retry
        assert "authentication refused: -ERR invalid" in lost["error"]
        assert "wrong-password" not in repr(esl_logs)
        assert not host.submitted
    finally:
        await adapter.stop()


@pytest.mark.asyncio
async def test_rude_rejection_is_an_auth_failure(host: FakeHost, esl_logs: Logs) -> None:
    async def reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b"Access Denied, go away.\n"
        writer.write(b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reject, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = FreeswitchEslConfig(host="127.0.0.1", port=port, password=PASSWORD, reconnect_initial_s=0.05)  # type: ignore[arg-type]
    adapter = FreeswitchEslAdapter("fs", config, host)
    await adapter.start()
    try:
        await until(lambda: events_named(esl_logs, "vendor_link_lost"))
        assert "Access Denied" in events_named(esl_logs, "vendor_link_lost")[0]["error"]
        assert adapter.health is Health.DOWN
    finally:
        await adapter.stop()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_stall_is_detected_and_the_link_reconnects(peer: EslPeer, host: FakeHost) -> None:
    """No bytes for keepalive_s: `api status`; no answer within command_timeout_s: the
    connection is dropped and a new one made."""
    adapter = make(peer, host, keepalive_s=0.2, command_timeout_s=0.3)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        await until(lambda: peer.commands("status"))  # pinged when silent, answered: still the same link
        assert adapter.link.connects == 1
        peer.answer_status = False  # the switch stalls (TCP up, nothing answers)
        await until(lambda: adapter.link.connects == 2, timeout=5)
        assert len(peer.server.connections) >= 2
    finally:
        await adapter.stop()


@pytest.mark.asyncio
async def test_heartbeats_keep_a_quiet_link_from_pinging(peer: EslPeer, host: FakeHost) -> None:
    adapter = make(peer, host, keepalive_s=0.3)
    await adapter.start()
    try:
        await until(lambda: adapter.health is Health.UP)
        pings = len(peer.commands("status"))
        for _ in range(8):
            await peer.heartbeat()
            await asyncio.sleep(0.1)
        assert len(peer.commands("status")) == pings
    finally:
        await adapter.stop()


@pytest.mark.asyncio
async def test_a_refused_connection_is_retried(host: FakeHost) -> None:
    peer = EslPeer(PASSWORD)
    await peer.start()
    port = peer.port
    await peer.stop()
    adapter = make(peer, host)
    await adapter.start()
    try:
        await until(lambda: adapter.link.failures >= 2)
        assert adapter.health is Health.DOWN
        peer.server.port = port
        await peer.start()
        await until(lambda: adapter.health is Health.UP)
    finally:
        await adapter.stop()
        await peer.stop()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"host": "not a host"}, "host"),
        ({"host": "999.1.1.1"}, "host"),
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"password": ""}, "password"),
        ({"password": "two\nlines"}, "password"),
        ({"agent_map": {"1001 @default": "a1"}}, "agent_map"),
        ({"agent_map": {"1001@default": "a'1"}}, "agent_map"),
        ({"transfer_context": "a b"}, "transfer_context"),
        ({"on_reject": "explode"}, "on_reject"),
        ({"event_format": "xml"}, "event_format"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_settings_are_validated(settings: dict[str, Any], field: str) -> None:
    data = {"host": "127.0.0.1", "password": "ClueCon", **settings}
    with pytest.raises(ValidationError) as raised:
        FreeswitchEslConfig.model_validate(data)
    assert field in str(raised.value)
    assert "two\nlines" not in str(raised.value)


def test_settings_defaults_and_references() -> None:
    config = FreeswitchEslConfig.model_validate(
        {
            "host": "fs1.example.net",
            "password": "ClueCon",
            "agent_map": {"1001@default": "a1"},
            "queue_map": {"support@default": "support"},
            "transfer_destinations": {"a2": "1002"},
        }
    )
    assert config.port == 8021 and config.on_reject == "hangup" and config.event_format == "plain"
    assert "ClueCon" not in repr(config)
    assert sorted(config.references()) == [
        (("agent_map", "1001@default"), "agent", "a1"),
        (("queue_map", "support@default"), "queue", "support"),
        (("transfer_destinations", "a2"), "agent", "a2"),
    ]
    assert FreeswitchEslConfig.model_validate({"host": "::1", "password": "x"}).host == "::1"
