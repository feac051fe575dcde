"""The ``twilio`` adapter end to end: a real gateway (SQLite journal), requests signed by
the ``twilio`` package's RequestValidator, TwiML and TaskRouter answers checked as Twilio
would read them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from openapi_spec_validator import validate

from gateway.sessions import Outcome, SessionState
from gateway.vendors import ENDPOINTS

from ..contract.harness import VENDOR, ContractGateway, contract_config
from .client import AUTH_TOKEN, PUBLIC_URL, TwilioClient, incoming

pytestmark = pytest.mark.asyncio

SUPPORT = "+15550000100"
DIRECT_A1 = "+15550000101"
SETTINGS: dict[str, Any] = {
    "auth_token": AUTH_TOKEN,
    "public_url": PUBLIC_URL,
    "numbers": {SUPPORT: "support", DIRECT_A1: "agent:a1"},
    "agent_targets": {"a1": "client:alice", "a2": "sip:a2@pbx.example.test;transport=tls"},
    "agent_map": {"WK0001": "a1", "WK0002": "a2"},
    "ring_timeout_s": 15,
    "hold_poll_s": 2,
    "max_body_bytes": 4096,
    "body_timeout_s": 0.5,
}
A1 = "client:alice"
A2 = "sip:a2@pbx.example.test;transport=tls"


@pytest_asyncio.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ContractGateway]:
    gateway = ContractGateway(contract_config("twilio", SETTINGS, tmp_path / "gw.db"), base_dir=tmp_path)
    await gateway.start()
    await gateway.ready()
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
def twilio(gw: ContractGateway) -> TwilioClient:
    return TwilioClient(gw.base, VENDOR)


def state(gw: ContractGateway, call_sid: str) -> list[tuple[str, str, str | None]]:
    return [(s.agent_id, s.state.value, s.outcome.value if s.outcome else None) for s in gw.sessions_of(call_sid)]


def in_use(gw: ContractGateway, agent: str) -> int:
    used: int = gw.engine.agent(agent)["in_use"]["sessions"]
    return used


# -- the voice URL ------------------------------------------------------------------------


async def test_an_incoming_call_is_dialled_to_the_assigned_agent(gw: ContractGateway, twilio: TwilioClient) -> None:
    answer = await twilio.post("voice", incoming("CA1", SUPPORT))

    assert answer.status == 200 and answer.content_type == "text/xml"
    dial = answer.twiml().find("Dial")
    assert dial is not None and answer.dialed() == A1
    assert dial.get("timeout") == "15" and dial.get("answerOnBridge") == "true"
    assert dial.get("action") == f"{PUBLIC_URL}/v1/vendors/{VENDOR}/voice?agent=a1"
    client = dial.find("Client")
    assert client is not None and client.get("statusCallback") == f"{PUBLIC_URL}/v1/vendors/{VENDOR}/status?agent=a1"
    assert "answered" in (client.get("statusCallbackEvent") or "")
    assert state(gw, "CA1") == [("a1", "offered", None)]
    [session] = gw.sessions_of("CA1")
    assert session.customer is not None and session.customer.address == "+15550009999"


async def test_a_sip_target_is_dialled_with_sip(gw: ContractGateway, twilio: TwilioClient) -> None:
    await gw.runtime.act(lambda e: e.set_presence("a1", "not_ready"))
    answer = await twilio.post("voice", incoming("CA2", SUPPORT))
    dial = answer.twiml().find("Dial")
    assert dial is not None and dial[0].tag == "Sip" and dial[0].text == A2
    assert answer.text.count("&amp;") == 0 and dial[0].get("statusCallback", "").endswith("/status?agent=a2")


async def test_a_rejected_call_gets_reject_busy_and_the_replay_the_same(
    gw: ContractGateway, twilio: TwilioClient
) -> None:
    assert (await twilio.post("voice", incoming("CA-fill", DIRECT_A1))).dialed() == A1
    first = await twilio.post("voice", incoming("CA-busy", DIRECT_A1))
    again = await twilio.post("voice", incoming("CA-busy", DIRECT_A1))

    assert first.status == again.status == 200
    assert first.text == again.text
    assert first.twiml()[0].tag == "Reject" and first.twiml()[0].get("reason") == "busy"
    assert len(first.twiml()) == 1
    assert state(gw, "CA-busy") == []


async def test_a_replayed_call_gets_the_same_twiml_and_one_session(gw: ContractGateway, twilio: TwilioClient) -> None:
    params = incoming("CA-replay", SUPPORT)
    answers = [await twilio.post("voice", params) for _ in range(3)]

    assert len({a.text for a in answers}) == 1 and answers[0].dialed() == A1
    assert state(gw, "CA-replay") == [("a1", "offered", None)]
    assert in_use(gw, "a1") == 1


async def test_a_number_not_routed_is_rejected(gw: ContractGateway, twilio: TwilioClient) -> None:
    answer = await twilio.post("voice", incoming("CA-nowhere", "+15559999999"))
    assert answer.twiml()[0].tag == "Reject" and answer.twiml()[0].get("reason") == "rejected"
    assert state(gw, "CA-nowhere") == []


async def test_a_waiting_call_holds_and_is_dialled_once_a_slot_frees(gw: ContractGateway, twilio: TwilioClient) -> None:
    await gw.runtime.act(lambda e: e.set_presence("a2", "not_ready"))
    await twilio.post("voice", incoming("CA-first", SUPPORT))
    hold = await twilio.post("voice", incoming("CA-wait", SUPPORT))
    root = hold.twiml()
    assert [child.tag for child in root] == ["Pause", "Redirect"] and root[0].get("length") == "2"
    redirect = root[1].text or ""
    assert redirect == f"{PUBLIC_URL}/v1/vendors/{VENDOR}/voice?hold=1"
    # Twilio comes back after the pause: still waiting
    again = await twilio.follow(redirect, incoming("CA-wait", SUPPORT, status="in-progress"))
    assert [child.tag for child in again.twiml()] == ["Pause", "Redirect"]

    ended = await twilio.post("status", {"CallSid": "CA-first", "CallStatus": "completed"})
    assert ended.status == 204
    dialled = await twilio.follow(redirect, incoming("CA-wait", SUPPORT, status="in-progress"))
    assert dialled.dialed() == A1
    assert state(gw, "CA-wait") == [("a1", "offered", None)]


# -- status callbacks -----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["no-answer", "canceled", "busy", "failed", "completed"])
async def test_the_callers_final_status_closes_the_session_and_frees_the_slot(
    gw: ContractGateway, twilio: TwilioClient, status: str
) -> None:
    await twilio.post("voice", incoming("CA-gone", SUPPORT))
    assert in_use(gw, "a1") == 1
    for _ in range(2):  # the replay changes nothing more
        answer = await twilio.post("status", {"CallSid": "CA-gone", "CallStatus": status})
        assert answer.status == 204
    assert state(gw, "CA-gone") == [("a1", "closed", "abandoned")]
    assert in_use(gw, "a1") == 0


async def test_progress_statuses_change_nothing(gw: ContractGateway, twilio: TwilioClient) -> None:
    await twilio.post("voice", incoming("CA-p", SUPPORT))
    for status in ("queued", "ringing", "in-progress"):
        assert (await twilio.post("status", {"CallSid": "CA-p", "CallStatus": status})).status == 204
    assert state(gw, "CA-p") == [("a1", "offered", None)]


def leg(status: str, leg_sid: str = "CA-leg1", parent: str = "CA-call") -> dict[str, str]:
    return {"CallSid": leg_sid, "ParentCallSid": parent, "CallStatus": status, "To": A1, "Direction": "outbound-dial"}


async def test_the_agent_answering_makes_the_session_active_and_hanging_up_ends_it(
    gw: ContractGateway, twilio: TwilioClient
) -> None:
    await twilio.post("voice", incoming("CA-call", SUPPORT))
    for status in ("initiated", "ringing"):
        assert (await twilio.post("status?agent=a1", leg(status))).status == 204
    assert state(gw, "CA-call") == [("a1", "offered", None)]

    assert (await twilio.post("status?agent=a1", leg("in-progress"))).status == 204
    assert state(gw, "CA-call") == [("a1", "active", None)]

    assert (await twilio.post("status?agent=a1", leg("completed"))).status == 204
    [session] = gw.sessions_of("CA-call")
    assert session.state is not SessionState.ACTIVE and session.outcome is Outcome.COMPLETED
    action = await twilio.post("voice?agent=a1", {**incoming("CA-call", SUPPORT), "DialCallStatus": "completed"})
    assert action.twiml()[0].tag == "Hangup"


@pytest.mark.parametrize("action_first", [False, True], ids=["status-first", "action-first"])
async def test_the_agent_not_answering_declines_and_the_next_agent_is_rung(
    gw: ContractGateway, twilio: TwilioClient, action_first: bool
) -> None:
    """Twilio sends the agent leg's ``no-answer`` and requests the ``<Dial>`` action in any
    order: either way one decline, and the action's TwiML rings the next agent."""
    await twilio.post("voice", incoming("CA-call", SUPPORT))
    dial_action = {**incoming("CA-call", SUPPORT), "DialCallStatus": "no-answer", "DialCallSid": "CA-leg1"}

    if action_first:
        answer = await twilio.post("voice?agent=a1", dial_action)
        assert (await twilio.post("status?agent=a1", leg("no-answer"))).status == 204
    else:
        assert (await twilio.post("status?agent=a1", leg("no-answer"))).status == 204
        answer = await twilio.post("voice?agent=a1", dial_action)

    assert answer.dialed() == A2
    assert state(gw, "CA-call") == [("a1", "closed", "declined"), ("a2", "offered", None)]
    assert in_use(gw, "a1") == 0


async def test_the_caller_giving_up_while_the_agent_rings_ends_it(gw: ContractGateway, twilio: TwilioClient) -> None:
    await twilio.post("voice", incoming("CA-call", SUPPORT))
    assert (await twilio.post("status?agent=a1", leg("canceled"))).status == 204
    assert (await twilio.post("status", {"CallSid": "CA-call", "CallStatus": "canceled"})).status == 204
    assert state(gw, "CA-call") == [("a1", "closed", "abandoned")]  # ended, not re-routed to a2


async def test_a_targeted_call_not_answered_is_over(gw: ContractGateway, twilio: TwilioClient) -> None:
    await twilio.post("voice", incoming("CA-direct", DIRECT_A1))
    dial_action = {**incoming("CA-direct", DIRECT_A1), "DialCallStatus": "busy", "DialCallSid": "CA-leg9"}
    answer = await twilio.post("voice?agent=a1", dial_action)
    assert answer.twiml()[0].tag == "Hangup"
    assert state(gw, "CA-direct") == [("a1", "closed", "declined")]


# -- TaskRouter ---------------------------------------------------------------------------


def assignment(task: str, reservation: str, worker: str, channel: str = "voice") -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "WorkspaceSid": "WS1",
        "WorkflowSid": "WW1",
        "TaskQueueSid": "WQ1",
        "TaskSid": task,
        "ReservationSid": reservation,
        "WorkerSid": worker,
        "TaskAge": "3",
        "TaskPriority": "0",
        "TaskChannelUniqueName": channel,
        "TaskAttributes": '{"from": "+15550001111", "name": "Grace", "account_id": "ACC-9"}',
        "WorkerAttributes": "{}",
    }


def tr_event(kind: str, task: str, reservation: str | None = None, worker: str = "WK0001") -> dict[str, str]:
    params = {"EventType": kind, "TaskSid": task, "WorkerSid": worker, "ResourceSid": reservation or task}
    if reservation:
        params["ReservationSid"] = reservation
    return params


async def test_taskrouter_assignment_accepts_and_rejects(gw: ContractGateway, twilio: TwilioClient) -> None:
    first = await twilio.post("taskrouter/assignment", assignment("WT1", "WR1", "WK0001"))
    replay = await twilio.post("taskrouter/assignment", assignment("WT1", "WR1", "WK0001"))
    full = await twilio.post("taskrouter/assignment", assignment("WT2", "WR2", "WK0001"))
    unknown = await twilio.post("taskrouter/assignment", assignment("WT3", "WR3", "WK9999"))

    assert first.status == 200 and first.json() == {"instruction": "accept"}
    assert replay.json() == {"instruction": "accept"}
    assert full.json() == {"instruction": "reject"} and unknown.json() == {"instruction": "reject"}
    [session] = gw.sessions_of("WT1")
    assert (session.agent_id, session.channel.value) == ("a1", "voice")
    assert session.customer is not None and session.customer.name == "Grace"
    assert session.account.id == "ACC-9"
    chat = await twilio.post("taskrouter/assignment", assignment("WT4", "WR4", "WK0002", channel="chat"))
    assert chat.json() == {"instruction": "accept"}
    assert [s.channel.value for s in gw.sessions_of("WT4")] == ["chat"]


async def test_taskrouter_events_move_sessions(gw: ContractGateway, twilio: TwilioClient) -> None:
    await twilio.post("taskrouter/assignment", assignment("WT1", "WR1", "WK0001"))
    assert (await twilio.post("taskrouter/events", tr_event("reservation.accepted", "WT1", "WR1"))).status == 204
    assert state(gw, "WT1") == [("a1", "active", None)]
    assert (await twilio.post("taskrouter/events", tr_event("task.wrapup", "WT1"))).status == 204
    assert (await twilio.post("taskrouter/events", tr_event("task.completed", "WT1"))).status == 204
    assert state(gw, "WT1")[0][2] == "completed" and in_use(gw, "a1") == 0

    await twilio.post("taskrouter/assignment", assignment("WT2", "WR2", "WK0001"))
    assert (await twilio.post("taskrouter/events", tr_event("reservation.timeout", "WT2", "WR2"))).status == 204
    assert state(gw, "WT2") == [("a1", "closed", "declined")]
    # TaskRouter reserves the next worker for the same task: a new offer
    assert (await twilio.post("taskrouter/assignment", assignment("WT2", "WR3", "WK0002"))).json() == {
        "instruction": "accept"
    }
    assert state(gw, "WT2")[-1] == ("a2", "offered", None)
    # events about nothing the gateway holds are acknowledged and ignored
    assert (await twilio.post("taskrouter/events", tr_event("reservation.rejected", "WT-x", "WR-x"))).status == 204
    assert (await twilio.post("taskrouter/events", tr_event("worker.activity.update", "WT-x"))).status == 204


# -- forged, malformed, oversize -------------------------------------------------------------


async def test_forged_requests_are_403_and_change_nothing(gw: ContractGateway, twilio: TwilioClient) -> None:
    params = incoming("CA-forged", SUPPORT)
    path = twilio.path("voice")
    local = TwilioClient(gw.base, VENDOR, public_url=gw.base)  # signs the address it posts to
    wrong_token = TwilioClient(gw.base, VENDOR, token="ffffffffffffffffffffffffffffffff")
    tampered = {**params, "To": DIRECT_A1}
    answers = {
        "missing": await twilio.post("voice", params, sign=False),
        "empty": await twilio.post("voice", params, signature=""),
        "garbage": await twilio.post("voice", params, signature="!!not base64!!"),
        "wrong token": await wrong_token.post("voice", params),
        "the gateway's own URL, not public_url": await local.post("voice", params),
        "another path": await twilio.post("voice", params, signature=twilio.sign(twilio.path("status"), [])),
        "a parameter changed after signing": await twilio.post(
            "voice", tampered, signature=twilio.sign(path, list(params.items()))
        ),
        "assignment": await wrong_token.post("taskrouter/assignment", assignment("WT1", "WR1", "WK0001")),
        "status": await wrong_token.post("status", {"CallSid": "CA-forged", "CallStatus": "completed"}),
    }
    assert {what: a.status for what, a in answers.items()} == {what: 403 for what in answers}
    assert all(a.json()["error"]["code"] == "bad_signature" for a in answers.values())
    assert gw.engine.interactions == {} and gw.engine.open_interactions(VENDOR) == []

    # the genuine request is then a first offer, not a duplicate of anything
    assert (await twilio.post("voice", params)).dialed() == A1


async def test_the_default_port_variant_of_the_public_url_is_accepted(
    gw: ContractGateway, twilio: TwilioClient
) -> None:
    with_port = TwilioClient(gw.base, VENDOR, public_url=PUBLIC_URL.replace(".test/", ".test:443/"))
    assert (await with_port.post("voice", incoming("CA-port", SUPPORT))).dialed() == A1


async def test_a_json_body_is_checked_by_its_body_hash(gw: ContractGateway, twilio: TwilioClient) -> None:
    body = b'{"CallSid": "CA-json"}'
    digest = hashlib.sha256(body).hexdigest()
    path_qs = twilio.path("voice") + f"?bodySHA256={digest}"
    signature = twilio.sign(path_qs, [])
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.base + path_qs, data=body, headers=headers) as genuine:
            assert genuine.status == 415  # genuine, but these callbacks are form-encoded
        async with http.post(gw.base + path_qs, data=body + b" ", headers=headers) as altered:
            assert altered.status == 403
    assert gw.engine.interactions == {}


async def test_bad_bodies_get_clear_answers(gw: ContractGateway, twilio: TwilioClient) -> None:
    no_sid = await twilio.post("voice", {"To": SUPPORT})
    assert no_sid.status == 400 and no_sid.json()["error"]["field"] == "CallSid"
    big = await twilio.post("voice", {"CallSid": "CA-big", "To": SUPPORT, "Pad": "x" * 5000})
    assert big.status == 413 and big.json()["error"]["code"] == "body_too_large"
    bad_utf8 = await twilio.post("voice", {}, data=b"\xff\xfe=1", signature=twilio.sign(twilio.path("voice"), []))
    assert bad_utf8.status == 403
    assert gw.engine.interactions == {}


async def test_a_body_that_does_not_arrive_in_time_is_408(gw: ContractGateway, twilio: TwilioClient) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b"CallSid=CA-slow&"
        await asyncio.sleep(2)
        yield b"To=%2B15550000100"

    headers = {"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.base + twilio.path("voice"), data=slow(), headers=headers) as r,
    ):
        assert r.status == 408
    assert gw.engine.interactions == {}


async def test_a_stopped_gateway_answers_503(gw: ContractGateway, twilio: TwilioClient) -> None:
    await gw.runtime.stop_intake()
    answer = await twilio.post("voice", incoming("CA-late", SUPPORT))
    assert answer.status == 503


async def test_a_shared_key_signature_is_refused_with_a_reason(gw: ContractGateway, twilio: TwilioClient) -> None:
    params = incoming("CA-sk", SUPPORT)
    signature = twilio.validator.compute_signature(PUBLIC_URL + twilio.path("voice"), params, "HMAC_SHA256")
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}
    answer = await twilio.post("voice", params, signature=signature, headers=settings)
    assert answer.status == 403 and "SharedKey" in answer.json()["error"]["message"]
    legacy = {"X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA1"}
    assert (await twilio.post("voice", params, headers=legacy)).dialed() == A1


async def test_the_openapi_document_lists_the_twilio_endpoints(gw: ContractGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{gw.base}/openapi.json") as response:
        doc = await response.json()
    base = f"/v1/vendors/{VENDOR}"
    for path in ("/voice", "/status"):
        operation = doc["paths"][base + path]["post"]
        assert operation["security"] == [] and operation["tags"] == ["vendors"]
        assert "X-Twilio-Signature" in operation["summary"]
        assert list(operation["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
        assert list(operation["responses"]["200"]["content"]) == ["text/xml"]
    assert list(doc["paths"][base + "/taskrouter/assignment"]["post"]["responses"]["200"]["content"]) == [
        "application/json"
    ]
    assert set(doc["paths"][base + "/taskrouter/events"]["post"]["responses"]) == {"204", "default"}
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values() if "operationId" in op]
    assert len(operation_ids) == len(set(operation_ids))
    validate(doc)  # still a valid OpenAPI 3.1 document

    gw.app[ENDPOINTS].remove(VENDOR)  # what a reload removing the vendor does
    async with aiohttp.ClientSession() as http, http.get(f"{gw.base}/openapi.json") as response:
        assert not [path for path in (await response.json())["paths"] if path.startswith(base)]
