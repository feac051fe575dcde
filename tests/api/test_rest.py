"""The REST API against a live server: auth, agents, presence, sessions, records, errors."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.api.context import API
from gateway.app import build_app
from gateway.clock import ManualClock
from gateway.records.memory import MemoryJournal
from gateway.records.report import REPORT_COLUMNS

from .conftest import T0, TOKENS, Gateway, auth, make_config

pytestmark = pytest.mark.asyncio

HEADER = (
    "session_id,interaction_id,vendor,channel,agent_id,queue,offered_at,accepted_at,ended_at,"
    "closed_at,handle_ms,wrap_ms,focus_ms,outcome,account_id,transferred_from,transferred_to"
)


def error_of(body: dict) -> tuple[str, str]:
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["code"], body["error"]["message"]


# ---------------------------------------------------------------------------- operations


async def test_health_ready_and_metrics_need_no_token(gw: Gateway) -> None:
    assert await gw.json("GET", "/healthz") == {"status": "ok"}
    ready = await gw.json("GET", "/readyz")
    assert ready["status"] == "ready" and ready["ready"] is True
    assert ready["store"] == "up" and ready["adapters"] == {"crm": "up"}

    await gw.ready("a1")
    await gw.offer("a1", channel="voice")
    response = await gw.request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert "cti_gateway_sessions_in_use" in text
    assert 'cti_gateway_sessions_in_use{channel="voice"} 1.0' in text
    assert 'cti_gateway_agents{presence="ready"} 1.0' in text
    assert "cti_gateway_session_transitions_total" in text


async def test_readyz_is_503_with_the_error_shape_when_the_store_is_down(gw: Gateway) -> None:
    await gw.runtime.journal.close()  # MemoryJournal: ping() is False while closed
    try:
        response = await gw.request("GET", "/readyz")
        body = await response.json()
        assert response.status == 503
        code, message = body["error"]["code"], body["error"]["message"]
        assert code == "not_ready" and "store down" in message
        assert body["error"]["checks"]["store"] == "down"
    finally:
        await gw.runtime.journal.open()


# ---------------------------------------------------------------------------- auth


async def test_no_token_or_a_bad_token_is_401_with_www_authenticate(gw: Gateway) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {TOKENS['a1']}"},
        {"Authorization": "Bearer"},
    ):
        response = await gw.request("GET", "/v1/agents", headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert error_of(await response.json())[0] == "unauthorized"
    # the supervisor token's hash is not a token
    response = await gw.request(
        "GET", "/v1/agents", headers={"Authorization": f"Bearer {TOKENS['supervisor'].upper()}"}
    )
    assert response.status == 401


async def test_token_in_the_query_works_for_browsers(gw: Gateway) -> None:
    body = await gw.json("GET", f"/v1/agents/a1?token={TOKENS['a1']}")
    assert body["id"] == "a1"
    # a malformed header is not silently replaced by the query token
    response = await gw.request("GET", f"/v1/agents/a1?token={TOKENS['a1']}", headers={"Authorization": "Token x"})
    assert response.status == 401


async def test_supervisor_sees_full_agents_and_agents_see_colleagues_without_sessions(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    await gw.offer("a2")
    full = await gw.json("GET", "/v1/agents", "supervisor")
    assert [a["id"] for a in full["agents"]] == ["a1", "a2", "a3", "a4"]
    a2 = full["agents"][1]
    assert set(a2) == {"id", "name", "profile", "queues", "presence", "in_use", "desktop_connected", "sessions"}
    assert len(a2["sessions"]) == 1 and a2["in_use"]["chat"] == 1

    colleagues = await gw.json("GET", "/v1/agents", "a1")
    for entry in colleagues["agents"]:
        assert set(entry) == {"id", "name", "presence", "free_capacity"}
    by_id = {a["id"]: a for a in colleagues["agents"]}
    assert by_id["a2"]["presence"] == {"state": "ready", "reason": None}
    # std: 3 sessions, one reserved for inbound work; a2 holds one chat
    assert by_id["a2"]["free_capacity"] == {"voice": 2, "chat": 2, "email": 2, "manual": 1}
    assert by_id["a3"]["free_capacity"]["chat"] == 3


async def test_an_agent_cannot_read_or_act_on_another_agent(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    theirs = await gw.offer("a2")
    mine = await gw.offer("a1")
    assert (await gw.json("GET", "/v1/agents/a1", "a1"))["id"] == "a1"
    forbidden = [
        ("GET", "/v1/agents/a2", None),
        ("PUT", "/v1/agents/a2/presence", {"state": "offline"}),
        ("PUT", "/v1/agents/a2/focus", {"session_id": None}),
        ("POST", "/v1/agents/a2/sessions", {}),
        ("GET", f"/v1/sessions/{theirs}", None),
        ("POST", f"/v1/sessions/{theirs}/accept", None),
        ("POST", f"/v1/sessions/{theirs}/decline", None),
        ("POST", f"/v1/sessions/{theirs}/transfer", {"to_agent": "a1"}),
        ("GET", "/v1/reports/sessions", None),
    ]
    for method, path, body in forbidden:
        response = await gw.request(method, path, "a1", json=body)
        assert response.status == 403, (method, path, response.status)
        assert error_of(await response.json())[0] == "forbidden"
    # nothing changed for a2
    agent = gw.runtime.engine.agent("a2")
    assert agent["presence"]["state"] == "ready"
    assert [s["state"] for s in agent["sessions"]] == ["offered"]
    # an agent's own session is fine
    assert (await gw.json("GET", f"/v1/sessions/{mine}", "a1"))["agent_id"] == "a1"


async def test_supervisor_may_act_for_agents(gw: Gateway) -> None:
    agent = await gw.json("PUT", "/v1/agents/a2/presence", "supervisor", json={"state": "ready"})
    assert agent["presence"] == {"state": "ready", "reason": None}
    sid = await gw.offer("a2")
    session = await gw.json("POST", f"/v1/sessions/{sid}/accept", "supervisor")
    assert session["state"] == "active"
    response = await gw.request("PUT", "/v1/agents/nobody/presence", "supervisor", json={"state": "ready"})
    assert response.status == 404 and error_of(await response.json())[0] == "unknown_agent"


async def test_rate_limit_answers_429_with_retry_after(gw: Gateway) -> None:
    gw.api.settings.rate_per_s = 0.001
    gw.api.settings.rate_burst = 2
    assert (await gw.request("GET", "/v1/agents/a1", "a1")).status == 200
    assert (await gw.request("GET", "/v1/agents/a1", "a1")).status == 200
    response = await gw.request("GET", "/v1/agents/a1", "a1")
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert error_of(await response.json())[0] == "rate_limited"
    # per principal: another agent still gets through
    assert (await gw.request("GET", "/v1/agents/a2", "a2")).status == 200


# ---------------------------------------------------------------------------- presence


async def test_presence(gw: Gateway) -> None:
    agent = await gw.json("PUT", "/v1/agents/a1/presence", "a1", json={"state": "not_ready", "reason": "lunch"})
    assert agent["presence"] == {"state": "not_ready", "reason": "lunch"}
    assert gw.runtime.engine.agent("a1")["presence"]["state"] == "not_ready"
    agent = await gw.json("PUT", "/v1/agents/a1/presence", "a1", json={"state": "ready"})
    assert agent["presence"] == {"state": "ready", "reason": None}

    for body, field in (
        ({"state": "busy"}, "state"),
        ({}, "state"),
        ({"state": "ready", "mood": "good"}, "mood"),
        ({"state": "ready", "reason": 5}, "reason"),
    ):
        response = await gw.request("PUT", "/v1/agents/a1/presence", "a1", json=body)
        payload = await response.json()
        assert response.status == 400, body
        assert payload["error"]["code"] == "invalid_request"
        assert payload["error"]["field"] == field, payload


async def test_going_offline_withdraws_offers(gw: Gateway) -> None:
    await gw.ready("a1")
    sid = await gw.offer("a1")
    await gw.json("PUT", "/v1/agents/a1/presence", "a1", json={"state": "offline"})
    record = await gw.json("GET", f"/v1/sessions/{sid}", "a1")
    assert record["state"] == "closed" and record["outcome"] == "expired"


# ---------------------------------------------------------------------------- manual sessions


async def test_manual_session_201_and_409_with_the_reason(gw: Gateway) -> None:
    response = await gw.request("POST", "/v1/agents/a1/sessions", "a1", json={"label": "callback"})
    assert response.status == 409
    assert error_of(await response.json())[0] == "agent_offline"

    await gw.json("PUT", "/v1/agents/a1/presence", "a1", json={"state": "not_ready"})
    first = await gw.json("POST", "/v1/agents/a1/sessions", "a1", status=201, json={"label": "callback"})
    assert first["channel"] == "manual" and first["state"] == "active"
    assert first["label"] == "callback" and first["focused"] is True and first["vendor"] is None
    # an empty body is fine too
    second = await gw.json("POST", "/v1/agents/a1/sessions", "a1", status=201)
    assert second["label"] == "New session" and second["focused"] is True
    assert gw.runtime.engine.focused_session("a1") == second["id"]
    # the third session is reserved for inbound work
    response = await gw.request("POST", "/v1/agents/a1/sessions", "a1", json={})
    assert response.status == 409
    assert error_of(await response.json())[0] == "agent_at_capacity"


# ---------------------------------------------------------------------------- session actions


async def test_session_lifecycle_over_rest_and_the_record(gw: Gateway) -> None:
    await gw.ready("a1")
    desk = await gw.ws("a1")  # focus time counts only while a desktop is connected
    sid = await gw.offer("a1", channel="voice", attributes={"account_id": "acct-7"})
    offered = await gw.json("GET", f"/v1/sessions/{sid}", "a1")
    assert offered["state"] == "offered" and offered["account"] == {"state": "identified", "id": "acct-7"}

    await gw.advance(2)
    accepted = await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    assert accepted["state"] == "active" and accepted["focused"] is False  # inbound never steals focus
    focused = await gw.json("POST", f"/v1/sessions/{sid}/focus", "a1", json={})
    assert focused["focused"] is True
    await gw.advance(5)
    noted = await gw.json("POST", f"/v1/sessions/{sid}/note", "a1", json={"text": "wants a refund"})
    assert [n["text"] for n in noted["notes"]] == ["wants a refund"]
    confirmed = await gw.json("POST", f"/v1/sessions/{sid}/confirm_account", "a1")
    assert confirmed["account"] == {"state": "confirmed", "id": "acct-7"}
    reset = await gw.json("POST", f"/v1/sessions/{sid}/reset_account", "a1", json={})
    assert reset["account"] == {"state": "unidentified", "id": None}
    confirmed = await gw.json("POST", f"/v1/sessions/{sid}/confirm_account", "a1", json={"account_id": "acct-9"})
    assert confirmed["account"] == {"state": "confirmed", "id": "acct-9"}
    # unfocus everything through the agent resource
    agent = await gw.json("PUT", "/v1/agents/a1/focus", "a1", json={"session_id": None})
    assert [s["focused"] for s in agent["sessions"]] == [False]
    await gw.advance(3)
    ended = await gw.json("POST", f"/v1/sessions/{sid}/end", "a1")
    assert ended["state"] == "wrap_up" and ended["outcome"] == "completed"
    assert ended["handle_ms"] == 8000 and ended["focus_ms"] == 5000 and ended["wrap_ms"] is None

    await gw.advance(30)  # voice wrap-up
    record = await gw.json("GET", f"/v1/sessions/{sid}", "a1")
    assert record["state"] == "closed"
    assert (record["handle_ms"], record["focus_ms"], record["wrap_ms"]) == (8000, 5000, 30000)
    assert record["offered_at"] == "2023-11-14T22:13:20.000Z"
    await desk.close()

    # and long after the engine forgot it, from the journal
    await gw.advance(7200)
    assert sid not in gw.runtime.engine.sessions
    assert await gw.json("GET", f"/v1/sessions/{sid}", "a1") == record
    response = await gw.request("GET", f"/v1/sessions/{sid}", "a2")
    assert response.status == 403
    assert (await gw.json("GET", f"/v1/sessions/{sid}", "supervisor"))["id"] == sid


async def test_decline_and_illegal_actions(gw: Gateway) -> None:
    await gw.ready("a1")
    sid = await gw.offer("a1")
    declined = await gw.json("POST", f"/v1/sessions/{sid}/decline", "a1")
    assert declined["state"] == "closed" and declined["outcome"] == "declined"
    response = await gw.request("POST", f"/v1/sessions/{sid}/accept", "a1")
    assert response.status == 409 and error_of(await response.json())[0] == "session_not_offered"
    response = await gw.request("POST", "/v1/sessions/nope/accept", "a1")
    assert response.status == 404 and error_of(await response.json())[0] == "session_not_found"
    response = await gw.request("GET", "/v1/sessions/nope", "a1")
    assert response.status == 404 and error_of(await response.json())[0] == "session_not_found"
    # the session is the path's: a REST body does not name one
    sid2 = await gw.offer("a1")
    response = await gw.request("POST", f"/v1/sessions/{sid2}/accept", "a1", json={"session_id": sid2})
    body = await response.json()
    assert response.status == 400 and body["error"]["field"] == "session_id"
    # send on a non-chat, note on an offered session
    response = await gw.request("POST", f"/v1/sessions/{sid2}/note", "a1", json={"text": "x"})
    assert response.status == 409
    response = await gw.request("POST", f"/v1/sessions/{sid2}/note", "a1", json={"text": "   "})
    assert response.status == 400 and (await response.json())["error"]["field"] == "text"


async def test_transfer_over_rest(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    refused = await gw.offer("a1")  # the webhook vendor cannot transfer
    await gw.json("POST", f"/v1/sessions/{refused}/accept", "a1")
    response = await gw.request("POST", f"/v1/sessions/{refused}/transfer", "a1", json={"to_agent": "a2"})
    assert response.status == 409 and error_of(await response.json())[0] == "vendor_unsupported"

    sid = await gw.offer("a1", vendor="pbx")
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    response = await gw.request("POST", f"/v1/sessions/{sid}/transfer", "a1", json={})
    assert response.status == 400 and error_of(await response.json())[0] == "invalid_transfer_target"
    response = await gw.request("POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2", "mode": "warm"})
    assert response.status == 400 and (await response.json())["error"]["field"] == "mode"

    result = await gw.json("POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2", "mode": "blind"})
    assert result["session"]["id"] == sid and result["session"]["outcome"] == "transferred"
    target = result["target"]
    assert target["agent_id"] == "a2" and target["state"] == "offered" and target["transferred_from"] == sid
    assert result["session"]["transferred_to"] == target["id"]
    # a2 accepts its own offer
    assert (await gw.json("POST", f"/v1/sessions/{target['id']}/accept", "a2"))["state"] == "active"


async def test_send_a_chat_reply(gw: Gateway) -> None:
    await gw.ready("a1")
    sid = await gw.offer("a1", channel="chat")
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    session = await gw.json("POST", f"/v1/sessions/{sid}/send", "a1", json={"text": "Hello!"})
    assert session["id"] == sid


# ---------------------------------------------------------------------------- reports


async def test_report_json_and_csv(gw: Gateway) -> None:
    await gw.ready("a1")
    desk = await gw.ws("a1")  # focus time counts only while a desktop is connected
    first = await gw.offer("a1", channel="chat")
    await gw.json("POST", f"/v1/sessions/{first}/accept", "a1")
    await gw.json("POST", f"/v1/sessions/{first}/focus", "a1")
    await gw.advance(4)
    await gw.json("POST", f"/v1/sessions/{first}/end", "a1")
    await gw.advance(100)
    second = await gw.offer("a1", channel="email")

    body = await gw.json("GET", "/v1/reports/sessions", "supervisor")
    assert [row["session_id"] for row in body["sessions"]] == [first, second]
    for row in body["sessions"]:
        assert tuple(row) == REPORT_COLUMNS
    row = body["sessions"][0]
    assert (row["handle_ms"], row["focus_ms"], row["wrap_ms"], row["outcome"]) == (4000, 4000, 0, "completed")
    await desk.close()

    response = await gw.request("GET", "/v1/reports/sessions?format=csv", "supervisor")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    text = await response.text()
    assert text.splitlines()[0] == HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["session_id"] for r in rows] == [first, second]
    assert rows[0]["handle_ms"] == "4000" and rows[1]["handle_ms"] == ""

    # from (inclusive) / to (exclusive), RFC 3339 or Unix seconds
    cut = T0 + 50
    for query in (f"from={cut:.0f}", "from=2023-11-14T22:14:10Z", "from=2023-11-14T23:14:10%2B01:00"):
        body = await gw.json("GET", f"/v1/reports/sessions?{query}", "supervisor")
        assert [r["session_id"] for r in body["sessions"]] == [second], query
    body = await gw.json("GET", f"/v1/reports/sessions?to={cut:.0f}&format=json", "supervisor")
    assert [r["session_id"] for r in body["sessions"]] == [first]
    body = await gw.json("GET", f"/v1/reports/sessions?from={cut:.0f}&to={cut - 1:.0f}", "supervisor")
    assert body == {"sessions": []}

    for query, field in (
        ("from=yesterday", "from"),
        ("to=2023-02-30T00:00:00Z", "to"),
        ("from=2023-11-14T22:14:10", "from"),
        ("format=xml", "format"),
    ):
        response = await gw.request("GET", f"/v1/reports/sessions?{query}", "supervisor")
        payload = await response.json()
        assert response.status == 400, query
        assert payload["error"]["code"] == "invalid_request" and payload["error"]["field"] == field


# ---------------------------------------------------------------------------- error shapes


async def test_error_shapes_for_404_405_400_413(gw: Gateway) -> None:
    response = await gw.request("GET", "/v1/nothing-here", "a1")
    assert response.status == 404 and error_of(await response.json())[0] == "not_found"
    response = await gw.request("GET", "/nothing-at-all")
    assert response.status == 404 and error_of(await response.json())[0] == "not_found"

    response = await gw.request("DELETE", "/v1/agents", "supervisor")
    assert response.status == 405 and error_of(await response.json())[0] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]

    for raw in (b"{not json", b"[1, 2]", b'"text"', b"null", b'{"state": NaN}', b"[" * 50_000):
        response = await gw.request(
            "PUT", "/v1/agents/a1/presence", "a1", data=raw, headers={"Content-Type": "application/json"}
        )
        body = await response.json()
        assert response.status == 400, raw[:20]
        assert body["error"]["code"] == "invalid_request" and body["error"]["field"] == "body"

    big = b'{"label": "' + b"x" * (64 * 1024) + b'"}'
    response = await gw.request(
        "POST", "/v1/agents/a1/sessions", "a1", data=big, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413 and error_of(await response.json())[0] == "body_too_large"

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 8192

    response = await gw.request("POST", "/v1/agents/a1/sessions", "a1", data=chunks())
    assert response.status == 413 and error_of(await response.json())[0] == "body_too_large"


async def test_unexpected_failures_are_500_without_a_traceback(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(gw.runtime.engine, "agent", boom)
    response = await gw.request("GET", "/v1/agents/a1", "a1")
    body = await response.json()
    assert response.status == 500
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in (await response.text())


async def test_not_ready_is_503(gw: Gateway) -> None:
    await gw.runtime.stop_intake()
    response = await gw.request("PUT", "/v1/agents/a1/presence", "a1", json={"state": "ready"})
    assert response.status == 503 and error_of(await response.json())[0] == "not_ready"
    gw.runtime._accepting = True  # let the fixture shut down normally


async def test_webhook_offer_reaches_the_engine(gw: Gateway) -> None:
    await gw.ready("a1")
    response = await gw.webhook(
        {"event_id": "w1", "type": "offer", "channel": "chat", "interaction_id": "chat-1", "agent_id": "a1"}
    )
    body = await response.json()
    assert response.status == 200 and body["decision"] == "assigned" and body["agent_id"] == "a1"
    record = await gw.json("GET", f"/v1/sessions/{body['session_id']}", "a1")
    assert record["interaction_id"] == "chat-1" and record["vendor"] == "crm"
    response = await gw.webhook(
        {"event_id": "w2", "type": "offer", "channel": "chat", "interaction_id": "c2", "agent_id": "a3"}
    )
    assert response.status == 409 and (await response.json()) == {"decision": "rejected", "reason": "agent_offline"}
    # the error middleware does not get in the way of the adapter's own errors
    async with gw.http.post(gw.url("/v1/vendors/crm/events"), data=b"{}") as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "bad_signature"


async def test_headers_are_case_insensitive_and_token_header_wins(gw: Gateway) -> None:
    response = await gw.request(
        "GET", f"/v1/agents/a1?token={TOKENS['a2']}", headers={"authorization": f"bearer {TOKENS['a1']}"}
    )
    assert response.status == 200
    response = await gw.request("GET", "/v1/agents/a1", headers=auth("a2"))
    assert response.status == 403


async def test_the_rate_limit_comes_from_the_config() -> None:
    """server.rate_limit_per_s / rate_limit_burst reach the API layer (0 turns it off)."""
    config = make_config()
    tuned = config.model_copy(
        update={"server": config.server.model_copy(update={"rate_limit_per_s": 0.0, "rate_limit_burst": 7.0})}
    )
    app = build_app(tuned, clock=ManualClock(T0), journal=MemoryJournal())
    settings = app[API].settings
    assert (settings.rate_per_s, settings.rate_burst) == (0.0, 7.0)


async def test_a_lone_surrogate_in_a_rest_body_is_400_and_changes_nothing(gw: Gateway) -> None:
    """JSON that is not valid Unicode never reaches the engine or the journal (a string with
    a lone surrogate cannot be written as UTF-8: issue 6 items 1 and 6)."""
    await gw.ready("a1")
    desk = await gw.ws("a1")
    sid = await gw.offer("a1")
    await gw.json("POST", f"/v1/sessions/{sid}/accept", "a1")
    for raw in ('{"text": "refund \\ud800"}', '{"text": "ok", "\\udc00": 1}'):
        response = await gw.request(
            "POST", f"/v1/sessions/{sid}/note", "a1", data=raw, headers={"Content-Type": "application/json"}
        )
        body = await response.json()
        assert response.status == 400, body
        assert body["error"]["code"] == "invalid_request" and body["error"]["field"] == "body"
        assert "Unicode" in body["error"]["message"]
    assert gw.runtime.engine.session(sid).notes == []
    noted = await gw.json("POST", f"/v1/sessions/{sid}/note", "a1", json={"text": "refund \U0001f600"})
    assert [n["text"] for n in noted["notes"]] == ["refund \U0001f600"]
    await desk.close()
