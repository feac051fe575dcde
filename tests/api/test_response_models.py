"""The answers built as dicts match the pydantic models the OpenAPI document is generated from.

The session object (:meth:`Session.as_dict`), the agent object (:meth:`Engine.agent`), the
colleague list, decisions, errors, reports and ``/readyz`` are dicts; their models in
:mod:`gateway.api.schemas` are closed and list every key as required. Here real answers of
a running gateway (REST, the journal's records, the desktop WebSocket) are validated against
them, so a key added to, dropped from or retyped in one of those dicts without its model
fails a test (and so the document cannot drift from what the server sends).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, ValidationError

from gateway.api import schemas
from gateway.api.openapi import build_openapi
from gateway.persistence import session_record
from gateway.web import openapi as web_models

from .conftest import Gateway, auth, receive_json, receive_until
from .test_web import wgw  # noqa: F401 (the gateway with a wait queue)


def valid(model: type[BaseModel], body: Any) -> Any:
    try:
        model.model_validate(body)
    except ValidationError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{model.__name__} does not describe the answer: {exc}\n{body}")
    return body


async def answer(
    gw: Gateway, model: type[BaseModel], method: str, path: str, who: str | None, status: int = 200, **kwargs: Any
) -> Any:
    response = await gw.request(method, path, who, **kwargs)
    body = await response.json()
    assert response.status == status, (method, path, response.status, body)
    return valid(model, body)


@pytest.mark.asyncio
async def test_sessions_agents_decisions_reports_and_errors_match_their_models(gw: Gateway) -> None:
    await gw.ready("a1", "a2")
    sid = await gw.offer(
        "a1", vendor="pbx", channel="chat", customer={"address": "+4930123", "name": "Kim"}, subject="hi"
    )
    voice = await gw.offer("a1", channel="voice")

    # every state and optional part of a session: offered, active, notes, account, focus,
    # wrap-up, closed with an outcome, transferred, manual
    await answer(gw, schemas.Session, "GET", f"/v1/sessions/{sid}", "a1")
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{sid}/accept", "a1")
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{sid}/note", "a1", json={"text": "called back"})
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{sid}/confirm_account", "a1", json={"account_id": "k1"})
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{sid}/focus", "a1")
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{sid}/send", "a1", json={"text": "hello"})
    await answer(gw, schemas.Agent, "PUT", "/v1/agents/a1/focus", "a1", json={"session_id": None})
    moved = await answer(
        gw, schemas.TransferResult, "POST", f"/v1/sessions/{sid}/transfer", "a1", json={"to_agent": "a2"}
    )
    assert moved["session"]["transferred_to"] == moved["target"]["id"]
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{moved['target']['id']}/accept", "a2")
    await answer(gw, schemas.Session, "POST", f"/v1/sessions/{voice}/accept", "a1")
    wrap = await answer(gw, schemas.Session, "POST", f"/v1/sessions/{voice}/end", "a1")
    assert wrap["state"] == "wrap_up"
    manual = await answer(gw, schemas.Session, "POST", "/v1/agents/a1/sessions", "a1", status=201, json={"label": "x"})
    closed = await answer(gw, schemas.Session, "POST", f"/v1/sessions/{manual['id']}/end", "a1")
    assert closed["state"] == "closed" and closed["outcome"] == "completed"
    await gw.advance(60)  # the voice wrap-up closes
    # a closed session's record, as the journal keeps it (GET answers it once the engine forgot it)
    stored = await gw.runtime.journal.record(voice)
    assert stored is not None and session_record(stored)["state"] == "closed"
    valid(schemas.Session, session_record(stored))
    await answer(gw, schemas.Session, "GET", f"/v1/sessions/{voice}", "a1")

    # agents: the full object, the supervisor's list, the colleagues' view
    agent = await answer(gw, schemas.Agent, "GET", "/v1/agents/a2", "a2")
    assert agent["sessions"]
    await answer(gw, schemas.Agent, "PUT", "/v1/agents/a3/presence", "a3", json={"state": "not_ready", "reason": "x"})
    listed = await answer(gw, schemas.AgentList, "GET", "/v1/agents", "supervisor")
    assert all("sessions" in a for a in listed["agents"])
    colleagues = await answer(gw, schemas.AgentList, "GET", "/v1/agents", "a1")
    assert all(set(a) == set(schemas.Colleague.model_fields) for a in colleagues["agents"])

    # the report, and the operations
    report = await answer(gw, schemas.Report, "GET", "/v1/reports/sessions", "supervisor")
    assert len(report["sessions"]) >= 3
    await answer(gw, schemas.Health, "GET", "/healthz", None)
    await answer(gw, schemas.Ready, "GET", "/readyz", None)

    # errors, with and without extra keys
    for method, path, who, status, kwargs in [
        ("GET", "/v1/agents", None, 401, {}),
        ("GET", "/v1/agents/a2", "a1", 403, {}),
        ("GET", "/v1/sessions/nope", "supervisor", 404, {}),
        ("PUT", "/v1/agents/a1/presence", "a1", 400, {"json": {"state": "away"}}),
        ("POST", f"/v1/sessions/{sid}/accept", "a1", 409, {}),
        ("POST", "/v1/agents/a4/sessions", "supervisor", 409, {}),
        ("GET", "/v1/reports/sessions?from=x", "supervisor", 400, {}),
        ("DELETE", "/v1/agents", "supervisor", 405, {}),
    ]:
        body = await answer(gw, schemas.Error, method, path, who, status, **kwargs)
        assert body["error"]["code"] and body["error"]["message"]

    # the webhook's decisions: assigned, a non-offer event, rejected, and the duplicates
    offer = {"event_id": "w1", "type": "offer", "channel": "email", "interaction_id": "m1", "agent_id": "a2"}
    for event, status, model, decision in [
        (offer, 200, schemas.Decision, "assigned"),
        (offer, 200, schemas.Decision, "duplicate"),
        (
            {"event_id": "w2", "type": "update", "interaction_id": "m1", "subject": "re"},
            200,
            schemas.Decision,
            "accepted",
        ),
        ({**offer, "event_id": "w3", "interaction_id": "m3", "agent_id": "a4"}, 409, schemas.Rejection, "rejected"),
        # a duplicate of a rejection repeats it with 200 (the decision is "duplicate")
        ({**offer, "event_id": "w3", "interaction_id": "m3", "agent_id": "a4"}, 200, schemas.Decision, "duplicate"),
        ({"event_id": "w4", "type": "offer", "interaction_id": "m4"}, 400, schemas.Error, None),
    ]:
        response = await gw.webhook(event)
        body = valid(model, await response.json())
        assert response.status == status, (event, body)
        assert body.get("decision") == decision, body


@pytest.mark.asyncio
async def test_the_desktop_socket_sends_agent_and_session_objects_of_the_models(gw: Gateway) -> None:
    ws = await gw.ws("a1")
    hello = await receive_until(ws, "hello")
    valid(schemas.Agent, hello["agent"])
    await gw.ready("a1")
    sid = await gw.offer("a1", channel="chat", customer={"name": "Jo"})
    offered = await receive_until(ws, "session.offered")
    assert offered["session"]["id"] == sid
    valid(schemas.Session, offered["session"])
    await gw.request("POST", f"/v1/sessions/{sid}/accept", "a1")
    valid(schemas.Session, (await receive_until(ws, "session.opened"))["session"])
    await ws.close()


@pytest.mark.asyncio
async def test_the_pages_reads_and_a_queued_decision_match_their_models(wgw: Gateway) -> None:  # noqa: F811
    for who in ("a1", "supervisor"):
        await answer(wgw, web_models.Whoami, "GET", "/v1/whoami", who)
        await answer(wgw, web_models.ProfileList, "GET", "/v1/profiles", who)
    # nobody serving sales is ready: the offer waits (queued), and the queue shows it
    response = await wgw.webhook(
        {"event_id": "q1", "type": "offer", "channel": "chat", "interaction_id": "q1", "queue": "sales"}
    )
    assert response.status == 200
    assert valid(schemas.Decision, await response.json())["decision"] == "queued"
    await wgw.advance(3)
    queues = await answer(wgw, web_models.QueueList, "GET", "/v1/queues", "supervisor")
    assert [w["waiting_ms"] for q in queues["queues"] for w in q["waiting"]] == [3000]
    names = await answer(wgw, web_models.QueueList, "GET", "/v1/queues", "a1")
    assert all(set(q) == {"name"} for q in names["queues"])


async def _drain(ws: aiohttp.ClientWebSocketResponse, until: str, seen: list[dict[str, Any]]) -> None:
    """Collect the socket's messages until one of type ``until`` arrived."""
    while True:
        message = await receive_json(ws)
        seen.append(message)
        if message.get("type") == until:
            return


@pytest.mark.asyncio
async def test_every_websocket_message_matches_its_model(gw: Gateway) -> None:
    """What both sockets send during a chat's life, each message checked against the model of its type."""
    desk, stream = await gw.ws("a1"), await gw.http.ws_connect(gw.ws_url("/v1/events/ws"), headers=auth("supervisor"))
    mine: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    await _drain(desk, "hello", mine)
    for n, message in enumerate(
        [
            {"type": "presence", "state": "ready"},
            {"type": "ping"},
            {"type": "accept", "session_id": "nope"},  # error
            {"type": "new_session", "label": "call back"},
        ]
    ):
        await desk.send_json({"ref": n, **message})
        await _drain(desk, "pong" if message["type"] == "ping" else "error" if n == 2 else "ack", mine)
    offer = {
        "event_id": "c1",
        "type": "offer",
        "channel": "chat",
        "interaction_id": "c1",
        "agent_id": "a1",
        "customer": {"name": "Jo"},
        "text": "hi",
    }
    assert (await gw.webhook(offer)).status == 200
    await _drain(desk, "session.offered", mine)
    sid = mine[-1]["session"]["id"]
    await desk.send_json({"ref": "a", "type": "accept", "session_id": sid})
    await _drain(desk, "ack", mine)
    assert (await gw.webhook({"event_id": "c2", "type": "message", "interaction_id": "c1", "text": "?"})).status == 200
    await _drain(desk, "chat.message", mine)
    await desk.send_json({"ref": "s", "type": "send", "session_id": sid, "text": "hello"})
    await _drain(desk, "ack", mine)
    await desk.send_json({"ref": "e", "type": "end", "session_id": sid})
    await _drain(desk, "session.closed", mine)
    await stream.send_json({"type": "ping", "ref": 1})
    await _drain(stream, "pong", seen)

    for messages, models in ((mine, schemas.DESK_MESSAGES), (seen, schemas.STREAM_MESSAGES)):
        for message in messages:
            valid(models[message["type"]], message)
    assert {m["type"] for m in mine} == set(schemas.DESK_MESSAGES)
    # config.reloaded needs a reload of a configuration file (tests/integration/test_reload*)
    assert {m["type"] for m in seen} == set(schemas.STREAM_MESSAGES) - {"config.reloaded"}
    await desk.close()
    await stream.close()


def test_a_key_the_models_do_not_know_fails() -> None:
    """The check above can fail: a session object with one key more (or one less) is refused."""
    session = {
        "id": "s1",
        "agent_id": "a1",
        "channel": "chat",
        "state": "active",
        "vendor": None,
        "interaction_id": None,
        "queue": None,
        "customer": None,
        "subject": None,
        "label": "Chat: x",
        "profile": "",
        "account": {"state": "unidentified", "id": None},
        "offered_at": "2024-05-01T08:00:00.000Z",
        "accepted_at": None,
        "ended_at": None,
        "closed_at": None,
        "handle_ms": None,
        "wrap_ms": None,
        "focus_ms": 0,
        "outcome": None,
        "notes": [],
        "transferred_from": None,
        "transferred_to": None,
        "focused": False,
        "flagged": False,
    }
    schemas.Session.model_validate(session)
    with pytest.raises(ValidationError, match="extra"):
        schemas.Session.model_validate({**session, "priority": 3})
    with pytest.raises(ValidationError, match="missing"):
        schemas.Session.model_validate({k: v for k, v in session.items() if k != "flagged"})


def test_the_document_is_generated_from_the_models() -> None:
    """Each answer's component is its model's JSON Schema (the models are the source)."""
    components = build_openapi()["components"]["schemas"]
    for model in (*schemas.RESPONSE_MODELS, *web_models.WEB_MODELS, schemas.Colleague, schemas.ReportRow):
        assert set(components[model.__name__]["properties"]) == set(model.model_fields), model.__name__
    assert list(components["ReportRow"]["properties"]) == list(schemas.ReportRow.model_fields)
