"""The generic JSON webhook adapter against real HTTP peers (DESIGN section 6).

The adapter's routes run in a real aiohttp server on a free loopback port, mounted under
``/v1/vendors/{vendor}``; requests come from a real aiohttp client. Late notices go to a
second real server that checks their signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from adapters.base import DeliveryError, Health
from adapters.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookAdapter,
    WebhookConfig,
    sign,
    signed_headers,
)
from gateway.errors import ActionError, GatewayError, InvalidEvent
from gateway.events import Channel, EventType
from gateway.notices import Decision, DecisionKind, ToVendor, VendorAction

from .conftest import T0, FakeHost, Logs, events_named

SECRET = "0123456789abcdef-webhook-secret"
VENDOR = "crm-hooks"
PATH = f"/v1/vendors/{VENDOR}/events"
LIMIT = 64 * 1024

Client = TestClient[web.Request, web.Application]

OFFER: dict[str, Any] = {
    "event_id": "ev-1",
    "type": "offer",
    "channel": "chat",
    "interaction_id": "chat-42",
    "queue": "support",
    "customer": {"address": "+4930123456", "name": "Grace"},
    "subject": "Invoice",
}


def encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def mount(app: web.Application, adapter: WebhookAdapter) -> None:
    for route in adapter.routes():
        app.router.add_route(route.method, f"/v1/vendors/{adapter.vendor}{route.path}", route.handler)


@pytest_asyncio.fixture
async def make_gateway(host: FakeHost) -> AsyncIterator[Callable[..., Awaitable[tuple[WebhookAdapter, Client]]]]:
    """Start a webhook adapter (settings as keyword arguments) behind a real server."""
    started: list[tuple[WebhookAdapter, Client]] = []

    async def make(**settings: Any) -> tuple[WebhookAdapter, Client]:
        config = WebhookConfig.model_validate({"secret": SECRET, **settings})
        adapter = WebhookAdapter(VENDOR, config, host)
        app = web.Application()
        mount(app, adapter)
        client = TestClient(TestServer(app))
        await client.start_server()
        await adapter.start()
        started.append((adapter, client))
        return adapter, client

    yield make
    for adapter, client in reversed(started):
        await adapter.stop()
        await client.close()


@pytest_asyncio.fixture
async def client(make_gateway: Callable[..., Awaitable[tuple[WebhookAdapter, Client]]]) -> Client:
    _, test_client = await make_gateway()
    return test_client


async def post(
    client: Client,
    body: bytes | Any = OFFER,
    *,
    secret: str = SECRET,
    timestamp: float = T0,
    headers: Mapping[str, str | None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a signed body (a dict is JSON-encoded); ``headers`` overrides (None removes)."""
    raw = body if isinstance(body, bytes) else encode(body)
    sent: dict[str, str] = signed_headers(secret, int(timestamp), raw)
    for name, value in (headers or {}).items():
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    async with client.post(PATH, data=raw, headers=sent) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


def assert_error(answer: tuple[int, dict[str, Any]], status: int, code: str) -> dict[str, Any]:
    got_status, body = answer
    error: dict[str, Any] = body["error"]
    assert (got_status, error["code"]) == (status, code), body
    assert isinstance(error["message"], str) and error["message"]
    return error


# -- decisions ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_assigned_offer_is_200_with_the_decision(client: Client, host: FakeHost) -> None:
    status, body = await post(client)

    assert status == 200
    assert body == {"decision": "assigned", "agent_id": "a1", "session_id": "s1"}
    [event] = host.submitted
    assert (event.vendor, event.event_id, event.type, event.channel) == (VENDOR, "ev-1", EventType.OFFER, Channel.CHAT)
    assert (event.interaction_id, event.queue, event.subject) == ("chat-42", "support", "Invoice")
    assert event.customer is not None and event.customer.name == "Grace"
    assert event.occurred_at.timestamp() == T0  # defaults to the time of receipt


@pytest.mark.asyncio
async def test_rejected_offer_is_409_with_the_reason(client: Client, host: FakeHost) -> None:
    host.answer = Decision(DecisionKind.REJECTED, reason="agent_at_capacity")

    assert await post(client) == (409, {"decision": "rejected", "reason": "agent_at_capacity"})


@pytest.mark.asyncio
async def test_duplicate_is_200_and_repeats_the_first_answer(client: Client, host: FakeHost) -> None:
    first = Decision(DecisionKind.ASSIGNED, agent_id="a2", session_id="s9")
    host.answer = Decision(DecisionKind.DUPLICATE, original=first)

    assert await post(client) == (
        200,
        {"decision": "duplicate", "first_decision": "assigned", "agent_id": "a2", "session_id": "s9"},
    )


@pytest.mark.asyncio
async def test_duplicate_of_a_rejection_is_200_with_the_reason(client: Client, host: FakeHost) -> None:
    host.answer = Decision(DecisionKind.DUPLICATE, original=Decision(DecisionKind.REJECTED, reason="agent_offline"))

    assert await post(client) == (
        200,
        {"decision": "duplicate", "first_decision": "rejected", "reason": "agent_offline"},
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["message", "update", "end"])
async def test_non_offer_event_is_accepted_200(client: Client, host: FakeHost, kind: str) -> None:
    host.answer = Decision(DecisionKind.ACCEPTED)
    body = {"event_id": f"ev-{kind}", "type": kind, "interaction_id": "chat-42", "text": "hello"}

    assert await post(client, body) == (200, {"decision": "accepted"})
    [event] = host.submitted
    assert (event.type.value, event.channel, event.text) == (kind, None, "hello")


@pytest.mark.asyncio
async def test_queued_is_200(client: Client, host: FakeHost) -> None:
    host.answer = Decision(DecisionKind.QUEUED)

    assert await post(client) == (200, {"decision": "queued"})


@pytest.mark.asyncio
async def test_occurred_at_is_taken_from_the_body(client: Client, host: FakeHost) -> None:
    status, _ = await post(client, {**OFFER, "occurred_at": "2023-11-14T22:10:00+01:00"})

    assert status == 200
    assert host.submitted[0].occurred_at.isoformat() == "2023-11-14T21:10:00+00:00"


@pytest.mark.asyncio
async def test_log_lines_and_the_host_see_vendor_interaction_and_event(
    client: Client, host: FakeHost, logs: Logs
) -> None:
    await post(client)

    bound = {"vendor": VENDOR, "interaction_id": "chat-42", "event_id": "ev-1"}
    assert host.contexts[0].items() >= bound.items()
    [line] = events_named(logs, "webhook_event")
    assert line.items() >= {**bound, "decision": "assigned", "status": 200}.items()


# -- signature and timestamp -------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()

    assert sign(SECRET, 1_700_000_000, b"{}") == f"sha256={expected}"
    assert signed_headers(SECRET, 1_700_000_000, b"{}") == {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: f"sha256={expected}",
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("skew", [-300, 300, 0, 299])
async def test_timestamps_up_to_300_s_away_are_accepted(client: Client, host: FakeHost, skew: int) -> None:
    status, _ = await post(client, timestamp=T0 + skew)

    assert status == 200
    assert len(host.submitted) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
async def test_stale_and_future_timestamps_are_401(client: Client, host: FakeHost, skew: int) -> None:
    error = assert_error(await post(client, timestamp=T0 + skew), 401, "bad_signature")

    assert "300" in error["message"]
    assert host.submitted == []


@pytest.mark.asyncio
async def test_tolerance_is_configurable(make_gateway: Any, host: FakeHost) -> None:
    _, client = await make_gateway(tolerance_s=10)

    assert (await post(client, timestamp=T0 - 10))[0] == 200
    assert_error(await post(client, timestamp=T0 - 11), 401, "bad_signature")


@pytest.mark.asyncio
async def test_wrong_secret_is_401(client: Client, host: FakeHost) -> None:
    assert_error(await post(client, secret="another-secret-of-16+chars"), 401, "bad_signature")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_body_changed_after_signing_is_401(client: Client, host: FakeHost) -> None:
    signed = signed_headers(SECRET, int(T0), encode(OFFER))
    tampered = encode({**OFFER, "queue": "vip"})

    assert_error(await post(client, tampered, headers=signed), 401, "bad_signature")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_timestamp_header_must_be_the_signed_one(client: Client, host: FakeHost) -> None:
    assert_error(await post(client, headers={TIMESTAMP_HEADER: str(int(T0) + 1)}), 401, "bad_signature")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_uppercase_hex_signature_is_accepted(client: Client, host: FakeHost) -> None:
    raw = encode(OFFER)
    signature = "sha256=" + sign(SECRET, int(T0), raw).removeprefix("sha256=").upper()

    assert (await post(client, raw, headers={SIGNATURE_HEADER: signature}))[0] == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({SIGNATURE_HEADER: None}, id="no-signature"),
        pytest.param({TIMESTAMP_HEADER: None}, id="no-timestamp"),
        pytest.param({SIGNATURE_HEADER: None, TIMESTAMP_HEADER: None}, id="neither"),
        pytest.param({SIGNATURE_HEADER: ""}, id="empty-signature"),
        pytest.param({SIGNATURE_HEADER: "sha256=zz"}, id="not-hex"),
        pytest.param({SIGNATURE_HEADER: "sha1=" + "0" * 40}, id="other-algorithm"),
        pytest.param({SIGNATURE_HEADER: "0" * 64}, id="no-prefix"),
        pytest.param({TIMESTAMP_HEADER: "soon"}, id="timestamp-words"),
        pytest.param({TIMESTAMP_HEADER: "1700000000.0"}, id="timestamp-float"),
        pytest.param({TIMESTAMP_HEADER: "-1700000000"}, id="timestamp-negative"),
        pytest.param({TIMESTAMP_HEADER: ""}, id="timestamp-empty"),
        pytest.param({TIMESTAMP_HEADER: "9" * 40}, id="timestamp-huge"),
    ],
)
async def test_missing_or_garbled_headers_are_401(
    client: Client, host: FakeHost, headers: dict[str, str | None]
) -> None:
    assert_error(await post(client, headers=headers), 401, "bad_signature")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_signature_is_checked_before_the_json(client: Client, host: FakeHost) -> None:
    assert_error(await post(client, b"{not json", secret="another-secret-of-16+chars"), 401, "bad_signature")


# -- body size -----------------------------------------------------------------------------


def padded_offer(size: int) -> bytes:
    """A valid offer of exactly ``size`` bytes (padding in ``text``)."""
    base = encode({**OFFER, "text": ""})
    raw = encode({**OFFER, "text": "x" * (size - len(base))})
    assert len(raw) == size
    return raw


@pytest.mark.asyncio
async def test_a_body_of_exactly_64_kib_is_accepted(client: Client, host: FakeHost) -> None:
    assert (await post(client, padded_offer(LIMIT)))[0] == 200
    assert len(host.submitted) == 1


@pytest.mark.asyncio
async def test_content_length_over_64_kib_is_413(client: Client, host: FakeHost) -> None:
    assert_error(await post(client, padded_offer(LIMIT + 1)), 413, "body_too_large")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_chunked_body_over_64_kib_is_413(client: Client, host: FakeHost) -> None:
    raw = padded_offer(LIMIT + 4096)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    async with client.post(PATH, data=chunks(), headers=signed_headers(SECRET, int(T0), raw)) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "body_too_large"
    assert host.submitted == []


@pytest.mark.asyncio
async def test_chunked_body_within_the_limit_is_accepted(client: Client, host: FakeHost) -> None:
    raw = padded_offer(LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]

    async with client.post(PATH, data=chunks(), headers=signed_headers(SECRET, int(T0), raw)) as response:
        assert response.status == 200
    assert len(host.submitted) == 1


@pytest.mark.asyncio
async def test_oversize_is_refused_before_the_signature(client: Client, host: FakeHost) -> None:
    assert_error(
        await post(client, padded_offer(LIMIT + 1), secret="another-secret-of-16+chars"), 413, "body_too_large"
    )


@pytest.mark.asyncio
async def test_a_lower_configured_limit_applies(make_gateway: Any, host: FakeHost) -> None:
    _, client = await make_gateway(max_body_bytes=2048)

    assert (await post(client, padded_offer(2048)))[0] == 200
    assert_error(await post(client, padded_offer(2049)), 413, "body_too_large")


# -- invalid events ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b'{"event_id": "e1",', b"\xff\xfe\x00garbage", b'{"a": NaN}', b"[" * 60_000],
    ids=["garbled", "empty", "truncated", "not-utf8", "nan", "deeply-nested"],
)
async def test_malformed_json_is_400_on_field_body(client: Client, host: FakeHost, raw: bytes) -> None:
    error = assert_error(await post(client, raw), 400, "invalid_event")

    assert error["field"] == "body"
    assert host.submitted == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param([OFFER], "body", id="not-an-object"),
        pytest.param({k: v for k, v in OFFER.items() if k != "event_id"}, "event_id", id="no-event-id"),
        pytest.param({k: v for k, v in OFFER.items() if k != "type"}, "type", id="no-type"),
        pytest.param({k: v for k, v in OFFER.items() if k != "interaction_id"}, "interaction_id", id="no-interaction"),
        pytest.param({k: v for k, v in OFFER.items() if k != "channel"}, "channel", id="offer-without-channel"),
        pytest.param({**OFFER, "channel": "manual"}, "channel", id="manual-offer"),
        pytest.param({**OFFER, "channel": "fax"}, "channel", id="unknown-channel"),
        pytest.param({**OFFER, "type": "ring"}, "type", id="unknown-type"),
        pytest.param({**OFFER, "queue": None}, "queue", id="offer-without-target"),
        pytest.param({**OFFER, "occurred_at": "yesterday"}, "occurred_at", id="bad-time"),
        pytest.param({**OFFER, "occurred_at": "2023-11-14T22:10:00"}, "occurred_at", id="naive-time"),
        pytest.param({**OFFER, "vendor": VENDOR}, "vendor", id="vendor-in-body"),
    ],
)
async def test_invalid_event_is_400_naming_the_field(client: Client, host: FakeHost, body: Any, field: str) -> None:
    error = assert_error(await post(client, body), 400, "invalid_event")

    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert host.submitted == []


@pytest.mark.asyncio
async def test_unknown_fields_are_ignored_and_counted_by_default(client: Client, host: FakeHost) -> None:
    """Issue 6 item 15: vendors add fields over time; an event with fields the gateway does
    not know (top level, or inside ``customer``) is taken, and the fields reported."""
    body = {**OFFER, "colour": "red", "crm_ticket": {"id": 7}, "customer": {"name": "Grace", "shoe": 9}}
    status, answer = await post(client, body)

    assert (status, answer["decision"]) == (200, "assigned")
    [event] = host.submitted
    assert event.customer is not None and event.customer.name == "Grace"
    assert "colour" not in event.model_dump()
    assert host.unknown == [(VENDOR, ["colour", "crm_ticket", "customer.shoe"])]


@pytest.mark.asyncio
async def test_unknown_field_names_are_reported_printable_and_bounded(client: Client, host: FakeHost) -> None:
    raw = encode(OFFER)[:-1] + b',"' + b"x" * 100 + rb'":1,"bad\u00e9\n\u2028":2}'
    status, answer = await post(client, raw)

    assert (status, answer["decision"]) == (200, "assigned")
    [(_, names)] = host.unknown
    assert names == ["x" * 64 + "…", r"bad\xe9\n\u2028"]
    assert all(name.isprintable() for name in names)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**OFFER, "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({**OFFER, "customer": {"address": "x", "shoe": 9}}, "customer.shoe", id="nested-field"),
    ],
)
async def test_strict_mode_refuses_unknown_fields_400(make_gateway: Any, host: FakeHost, body: Any, field: str) -> None:
    _, strict = await make_gateway(strict=True)
    error = assert_error(await post(strict, body), 400, "invalid_event")

    assert (error["field"], error["message"]) == (field, f"{field}: unknown field")
    assert host.submitted == [] and host.unknown == []


@pytest.mark.asyncio
async def test_an_invalid_event_with_unknown_fields_is_still_400_and_counts_nothing(
    client: Client, host: FakeHost
) -> None:
    error = assert_error(await post(client, {**OFFER, "colour": "red", "channel": "fax"}), 400, "invalid_event")

    assert error["field"] == "channel"
    assert host.submitted == [] and host.unknown == []


@pytest.mark.asyncio
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param(encode(OFFER)[:-1] + rb',"subject":"a\ud800b"}', "subject", "lone surrogate", id="known-field"),
        pytest.param(encode(OFFER)[:-1] + rb',"colour":"\udfff"}', "colour", "lone surrogate", id="unknown-field"),
        pytest.param(
            encode(OFFER)[:-1] + rb',"customer":{"name":"\ud800","shoe":1}}',
            "customer.name",
            "lone surrogate",
            id="nested",
        ),
        pytest.param(encode(OFFER)[:-1] + rb',"attributes":{"n":1e999}}', "attributes.n", "finite", id="infinite"),
    ],
)
async def test_text_that_cannot_be_stored_is_refused_in_every_field_once_checked(
    make_gateway: Any, host: FakeHost, raw: bytes, field: str, message: str, strict: bool
) -> None:
    """The body is checked once, whole (unknown fields included), before unknown fields are
    dropped: what is parsed into the event is never checked a second time, and nothing of it
    escapes the check, in a lenient or a strict vendor."""
    _, client = await make_gateway(strict=strict)
    error = assert_error(await post(client, raw), 400, "invalid_event")

    assert error["field"] == field
    assert message in error["message"]
    assert host.submitted == []


@pytest.mark.asyncio
async def test_vendor_in_the_body_never_overrides_the_url(client: Client, host: FakeHost) -> None:
    error = assert_error(await post(client, {**OFFER, "vendor": "someone-else"}), 400, "invalid_event")

    assert error["field"] == "vendor"
    assert host.submitted == []


# -- readiness and failures of the host ------------------------------------------------------


@pytest.mark.asyncio
async def test_not_ready_is_503_and_nothing_is_submitted(client: Client, host: FakeHost) -> None:
    host.is_ready = False

    async with client.post(
        PATH, data=encode(OFFER), headers=signed_headers(SECRET, int(T0), encode(OFFER))
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == "not_ready"
    assert host.submitted == []


@pytest.mark.asyncio
async def test_invalid_signature_wins_over_not_ready(client: Client, host: FakeHost) -> None:
    host.is_ready = False

    assert_error(await post(client, secret="another-secret-of-16+chars"), 401, "bad_signature")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (GatewayError("store went away", code="not_ready", retryable=True), 503, "not_ready"),
        (
            ActionError("interaction chat-42 is already open", code="interaction_already_open"),
            409,
            "interaction_already_open",
        ),
        (InvalidEvent("queue", "unknown queue 'sails'"), 400, "invalid_event"),
    ],
)
async def test_gateway_errors_from_submit_keep_their_code(
    client: Client, host: FakeHost, exc: GatewayError, status: int, code: str
) -> None:
    host.answer = exc

    error = assert_error(await post(client), status, code)
    assert error["message"] == exc.message


@pytest.mark.asyncio
async def test_unknown_queue_from_the_host_names_the_field(client: Client, host: FakeHost) -> None:
    host.answer = InvalidEvent("queue", "unknown queue 'sails'")

    assert assert_error(await post(client), 400, "invalid_event")["field"] == "queue"


@pytest.mark.asyncio
async def test_an_unexpected_exception_is_500_json_without_traceback(
    client: Client, host: FakeHost, logs: Logs
) -> None:
    host.answer = RuntimeError("boom: internal detail")

    async with client.post(
        PATH, data=encode(OFFER), headers=signed_headers(SECRET, int(T0), encode(OFFER))
    ) as response:
        text = await response.text()
        assert response.status == 500
    assert json.loads(text)["error"]["code"] == "internal_error"
    assert "Traceback" not in text and "boom" not in text and "RuntimeError" not in text
    [line] = events_named(logs, "webhook_internal_error")
    assert line["log_level"] == "error" and line["exc_info"] is True
    assert line["vendor"] == VENDOR and line["event_id"] == "ev-1"


@pytest.mark.asyncio
async def test_refusals_are_logged_without_the_secret(client: Client, logs: Logs) -> None:
    await post(client, secret="another-secret-of-16+chars")

    [line] = events_named(logs, "webhook_refused")
    assert (line["status"], line["code"], line["vendor"]) == (401, "bad_signature", VENDOR)
    assert SECRET not in repr(logs)


@pytest.mark.asyncio
async def test_the_connection_serves_the_next_request_after_refusals(client: Client, host: FakeHost) -> None:
    for _ in range(3):
        assert_error(await post(client, b"{not json"), 400, "invalid_event")
        assert (await post(client))[0] == 200
    assert len(host.submitted) == 3


# -- settings ------------------------------------------------------------------------------


def test_the_secret_never_shows_in_reprs() -> None:
    config = WebhookConfig.model_validate({"secret": SECRET})

    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in repr(WebhookAdapter(VENDOR, config, FakeHost()).describe())


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"secret": "too-short"}, "secret"),
        ({}, "secret"),
        ({"secret": SECRET, "tolerance_s": 0}, "tolerance_s"),
        ({"secret": SECRET, "tolerance_s": 3601}, "tolerance_s"),
        ({"secret": SECRET, "max_body_bytes": LIMIT + 1}, "max_body_bytes"),
        ({"secret": SECRET, "callback_url": "ftp://example.org/x"}, "callback_url"),
        ({"secret": SECRET, "callback_timeout_s": 0}, "callback_timeout_s"),
        ({"secret": SECRET, "colour": "red"}, "colour"),
    ],
)
def test_invalid_settings(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        WebhookConfig.model_validate(settings)
    assert [error["loc"] for error in info.value.errors()] == [(field,)]
    assert "too-short" not in str(info.value)


def test_defaults() -> None:
    config = WebhookConfig.model_validate({"secret": SECRET})

    assert (config.tolerance_s, config.max_body_bytes, config.callback_url) == (300, LIMIT, None)


def test_metadata() -> None:
    assert WebhookAdapter.name == "webhook"
    assert WebhookAdapter.channels == frozenset({Channel.VOICE, Channel.CHAT, Channel.EMAIL})
    assert (WebhookAdapter.capabilities.can_reject, WebhookAdapter.capabilities.can_transfer) == (True, False)
    assert WebhookAdapter.Config is WebhookConfig
    [route] = WebhookAdapter(VENDOR, WebhookConfig(secret=SECRET), FakeHost()).routes()  # type: ignore[arg-type]
    assert (route.method, route.path) == ("POST", "/events")


# -- lifecycle without callbacks ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_is_up_after_start_and_down_after_stop(host: FakeHost) -> None:
    adapter = WebhookAdapter(VENDOR, WebhookConfig.model_validate({"secret": SECRET}), host)
    before = adapter.health

    await adapter.start()
    started = adapter.health
    await adapter.deliver(ToVendor(VENDOR, "chat-42", VendorAction.ACCEPTED, {"agent_id": "a1"}))  # no way back: no-op
    await adapter.stop()

    assert (before, started, adapter.health) == (Health.DOWN, Health.UP, Health.DOWN)
    assert host.health_states() == [Health.UP, Health.DOWN]


# -- callbacks (late notices) --------------------------------------------------------------------


@dataclass
class Receiver:
    """A vendor's callback endpoint: checks signatures, answers as scripted."""

    client: Client | None = None
    #: statuses to answer, in order; 200 once exhausted
    statuses: list[int] = field(default_factory=list)
    #: seconds to wait before answering, per request in order
    delays: list[float] = field(default_factory=list)
    #: while cleared, requests wait
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        assert self.client is not None
        return str(self.client.make_url("/callback"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        valid = timestamp.isdigit() and hmac.compare_digest(
            request.headers.get(SIGNATURE_HEADER, ""), sign(SECRET, int(timestamp), body)
        )
        async with self.arrived:
            self.requests.append((dict(request.headers), body, valid))
            self.arrived.notify_all()
        delay = self.delays.pop(0) if self.delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        await self.gate.wait()
        if not valid:
            return web.json_response({"error": "bad signature"}, status=401)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            async with self.arrived:
                self.delivered.append(json.loads(body))
                self.arrived.notify_all()
        return web.json_response({}, status=status)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            async with self.arrived:
                await self.arrived.wait_for(predicate)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    peer = Receiver()
    peer.gate.set()
    app = web.Application()
    app.router.add_post("/callback", peer.handle)
    peer.client = TestClient(TestServer(app))
    await peer.client.start_server()
    yield peer
    peer.gate.set()
    await peer.client.close()


async def callbacks_sent(adapter: WebhookAdapter, count: int) -> None:
    """Wait until the adapter counts ``count`` callbacks sent (it does so after the receiver answered)."""
    async with asyncio.timeout(10):
        while adapter.describe()["callbacks"]["sent"] < count:
            await asyncio.sleep(0.005)


FAST = {"callback_backoff_s": 0.01, "callback_backoff_max_s": 0.05, "callback_timeout_s": 2}


def notice(n: int = 1, action: VendorAction = VendorAction.DECISION) -> ToVendor:
    return ToVendor(VENDOR, f"chat-{n}", action, {"decision": "assigned", "agent_id": "a1", "n": n}, event_id=f"ev-{n}")


@pytest.mark.asyncio
async def test_notices_are_posted_signed_to_the_callback_url(
    make_gateway: Any, receiver: Receiver, host: FakeHost
) -> None:
    adapter, _ = await make_gateway(callback_url=receiver.url, **FAST)

    await adapter.deliver(notice(1))
    await adapter.deliver(ToVendor(VENDOR, "chat-2", VendorAction.REPLY, {"text": "hi", "session_id": "s2"}))
    await receiver.wait_for(lambda: len(receiver.delivered) == 2)
    await callbacks_sent(adapter, 2)

    assert receiver.delivered == [
        {
            "action": "decision",
            "interaction_id": "chat-1",
            "event_id": "ev-1",
            "data": {"decision": "assigned", "agent_id": "a1", "n": 1},
        },
        {"action": "reply", "interaction_id": "chat-2", "event_id": None, "data": {"text": "hi", "session_id": "s2"}},
    ]
    headers, _, valid = receiver.requests[0]
    assert valid
    assert headers[TIMESTAMP_HEADER] == str(int(T0))
    assert headers["Content-Type"] == "application/json"
    assert adapter.health is Health.UP


@pytest.mark.asyncio
async def test_a_failing_receiver_is_retried_with_backoff_until_it_succeeds(
    make_gateway: Any, receiver: Receiver, host: FakeHost, logs: Logs
) -> None:
    receiver.statuses = [503, 500, 429]
    adapter, _ = await make_gateway(callback_url=receiver.url, **FAST)

    await adapter.deliver(notice(1))
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    await callbacks_sent(adapter, 1)

    assert len(receiver.requests) == 4
    assert len({body for _, body, _ in receiver.requests}) == 1  # the same notice each time
    assert all(valid for _, _, valid in receiver.requests)
    retries = events_named(logs, "callback_retry")
    assert [line["attempt"] for line in retries] == [1, 2, 3]
    assert all(0 < line["delay_s"] <= FAST["callback_backoff_max_s"] for line in retries)
    # the intake never was down; the callbacks' trouble is logged once each way and described
    assert host.health_states() == [Health.UP]
    assert [line["event"] for line in logs if line["event"] in ("callback_down", "callback_up")] == [
        "callback_down",
        "callback_up",
    ]
    callbacks = adapter.describe()["callbacks"]
    assert (callbacks["state"], callbacks["sent"], callbacks["given_up"]) == ("ok", 1, 0)
    assert callbacks["last_problem"] == "HTTP 429"


@pytest.mark.asyncio
async def test_a_slow_receiver_times_out_and_is_retried(make_gateway: Any, receiver: Receiver) -> None:
    receiver.delays = [1.0]
    adapter, _ = await make_gateway(callback_url=receiver.url, **{**FAST, "callback_timeout_s": 0.2})

    await adapter.deliver(notice(1))
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    await callbacks_sent(adapter, 1)

    assert len(receiver.requests) == 2


@pytest.mark.asyncio
async def test_attempts_are_bounded_then_the_notice_is_given_up(
    make_gateway: Any, receiver: Receiver, host: FakeHost, logs: Logs
) -> None:
    receiver.statuses = [500] * 3
    adapter, _ = await make_gateway(callback_url=receiver.url, callback_max_attempts=3, **FAST)

    await adapter.deliver(notice(1))
    await adapter.deliver(notice(2))
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    await callbacks_sent(adapter, 1)

    assert len(receiver.requests) == 4
    assert [n["interaction_id"] for n in receiver.delivered] == ["chat-2"]
    [failed] = events_named(logs, "callback_failed")
    assert (failed["attempts"], failed["interaction_id"], failed["problem"]) == (3, "chat-1", "HTTP 500")
    # the intake never was down; the callbacks' trouble is logged once each way and described
    assert host.health_states() == [Health.UP]
    assert [line["event"] for line in logs if line["event"] in ("callback_down", "callback_up")] == [
        "callback_down",
        "callback_up",
    ]
    callbacks = adapter.describe()["callbacks"]
    assert (callbacks["state"], callbacks["sent"], callbacks["given_up"]) == ("ok", 1, 1)
    assert callbacks["last_problem"] == "HTTP 500"


@pytest.mark.asyncio
async def test_a_client_error_is_not_retried(make_gateway: Any, receiver: Receiver, logs: Logs) -> None:
    receiver.statuses = [400]
    adapter, _ = await make_gateway(callback_url=receiver.url, **FAST)

    await adapter.deliver(notice(1))
    await adapter.deliver(notice(2))
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)

    assert len(receiver.requests) == 2
    assert events_named(logs, "callback_failed")[0]["attempts"] == 1


@pytest.mark.asyncio
async def test_an_unreachable_receiver_is_retried_logged_and_described_but_never_unready(
    make_gateway: Any, host: FakeHost, logs: Logs
) -> None:
    """Issue 6 item 10: callbacks to a URL nobody listens on are retried with backoff and
    logged; the vendor's events are still taken (health stays up: /readyz stays ready)."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://gw:s3cret@127.0.0.1:{port}/callback?key=hidden"
    adapter, client = await make_gateway(callback_url=url, callback_max_attempts=2, **FAST)

    await adapter.deliver(notice(1))
    await adapter.deliver(notice(2))
    async with asyncio.timeout(10):
        while len(events_named(logs, "callback_failed")) < 2:
            await asyncio.sleep(0.01)

    assert adapter.health is Health.UP and host.health_states() == [Health.UP]
    assert len(events_named(logs, "callback_retry")) == 2
    [down] = events_named(logs, "callback_down")
    assert down["url"] == f"http://127.0.0.1:{port}/callback"
    assert "s3cret" not in str(logs) and "hidden" not in str(logs)
    callbacks = adapter.describe()["callbacks"]
    assert (callbacks["state"], callbacks["given_up"], callbacks["sent"]) == ("failing", 2, 0)
    assert "s3cret" not in str(adapter.describe())
    # and the intake goes on as before
    status, answer = await post(client, OFFER)
    assert (status, answer["decision"]) == (200, "assigned")


@pytest.mark.asyncio
async def test_the_queue_is_bounded_and_refuses_rather_than_drops(
    make_gateway: Any, receiver: Receiver, logs: Logs
) -> None:
    receiver.gate.clear()
    adapter, _ = await make_gateway(callback_url=receiver.url, callback_queue_size=2, **FAST)

    await adapter.deliver(notice(1))
    await receiver.wait_for(lambda: len(receiver.requests) == 1)  # in flight, held at the gate
    await adapter.deliver(notice(2))
    await adapter.deliver(notice(3))
    with pytest.raises(DeliveryError) as info:
        await adapter.deliver(notice(4))

    assert info.value.retryable
    [full] = events_named(logs, "callback_queue_full")
    assert (full["interaction_id"], full["size"]) == ("chat-4", 2)
    receiver.gate.set()
    await receiver.wait_for(lambda: len(receiver.delivered) == 3)
    assert [n["interaction_id"] for n in receiver.delivered] == ["chat-1", "chat-2", "chat-3"]
    await adapter.deliver(notice(5))  # room again
    await receiver.wait_for(lambda: len(receiver.delivered) == 4)


@pytest.mark.asyncio
async def test_deliver_before_start_is_a_retryable_delivery_error(host: FakeHost, receiver: Receiver) -> None:
    config = WebhookConfig.model_validate({"secret": SECRET, "callback_url": receiver.url})
    adapter = WebhookAdapter(VENDOR, config, host)

    with pytest.raises(DeliveryError) as info:
        await adapter.deliver(notice(1))
    assert info.value.retryable


@pytest.mark.asyncio
async def test_a_notice_that_is_not_json_is_refused_for_good(make_gateway: Any, receiver: Receiver) -> None:
    adapter, _ = await make_gateway(callback_url=receiver.url, **FAST)

    with pytest.raises(DeliveryError) as info:
        await adapter.deliver(ToVendor(VENDOR, "chat-1", VendorAction.REPLY, {"blob": object()}))
    assert not info.value.retryable


@pytest.mark.asyncio
async def test_stop_with_notices_pending_releases_everything(host: FakeHost, receiver: Receiver, logs: Logs) -> None:
    receiver.gate.clear()
    config = WebhookConfig.model_validate({"secret": SECRET, "callback_url": receiver.url, **FAST})
    adapter = WebhookAdapter(VENDOR, config, host)
    await adapter.start()
    await adapter.deliver(notice(1))
    await receiver.wait_for(lambda: len(receiver.requests) == 1)
    await adapter.deliver(notice(2))

    await adapter.stop()

    [dropped] = events_named(logs, "callback_notices_dropped")
    assert dropped["count"] == 2  # the one in flight and the one waiting
    assert adapter.health is Health.DOWN
    with pytest.raises(DeliveryError):
        await adapter.deliver(notice(3))
