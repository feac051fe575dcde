"""Fuzzing the agent desktop WebSocket of a real gateway process (issue 6, item 6 and the
desktop half of its "done when" fuzz test).

Hypothesis sends raw frames to ``/v1/agents/a1/ws`` of ``python -m gateway run``: JSON of
every shape with wrong types, unknown fields and odd refs, lone surrogate escapes
(``"\\ud800"``) anywhere in it (in a ref, a field, a key: the frames that made sockets
mute), text that is not UTF-8, nesting thousands deep, frames above the 64 KiB limit and
binary frames. After every frame it asserts:

* the frame got exactly one answer (``ack``, ``error`` or ``pong``), in order, or, only where
  the WebSocket protocol calls for it, a close with its code: 1009 for a frame above the
  limit, 1007 for a text frame that is not UTF-8 (RFC 6455 section 8.1);
* the socket is not mute: a ``ping`` sent right after it gets its ``pong``.

A closed socket is reopened (``hello`` again). At the end the gateway is healthy: ``/readyz``
is 200, another agent's desktop still gets an offer made through the signed webhook, the
fuzzed agent's desktop counts as gone once its socket is closed (nothing leaked), and the
log holds no failure of a message handler or of a socket writer.

Examples: 150 by default, 600 with ``CI=true`` (about 20 s).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import GatewayFactory
from .live import LiveClient, sha, sqlite_url

CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
EXAMPLES = 600 if CI else 150
TOKENS = {"a1": "fuzz-a1-token-0123", "a2": "fuzz-a2-token-0123"}
SECRET = "fuzz-webhook-secret-0123456789"
LIMIT = 64 * 1024
ANSWERS = ("ack", "error", "pong")

# ---------------------------------------------------------------------------- frames

FIELDS = ["session_id", "state", "reason", "text", "label", "to_agent", "to_queue", "mode", "account_id", "ref"]
TYPES = ["ping", "presence", "accept", "decline", "end", "focus", "new_session", "transfer", "note"]
TYPES += ["confirm_account", "reset_account", "send", "hello", "", "PING", "session.offered"]

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=20),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), lone_surrogates, st.text(max_size=5)),
    st.sampled_from(["ready", "offline", "not_ready", "blind", "consult", "a2", "support", "s1"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A JSON object like a client message, with wrong types and odd fields; lone surrogates
    come out as ``\\uXXXX`` escapes (the text itself is valid UTF-8)."""
    body: dict[Any, Any] = {}
    if draw(st.booleans()):
        body["type"] = draw(st.one_of(st.sampled_from(TYPES), values))
    if draw(st.booleans()):
        body["ref"] = draw(st.one_of(texts, st.integers(), values))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        body[name] = draw(values)
    for key, value in draw(st.dictionaries(texts, values, max_size=2)).items():
        body[key] = value
    return json.dumps(body, ensure_ascii=True).encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 30_000))
    open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = draw(st.sampled_from(["1", '"\\ud800"', "null"]))
    text = '{"type":"ping","ref":' + open_ * depth + inner + close * depth + "}"
    return text.encode()


def huge(size: int) -> bytes:
    return json.dumps({"type": "note", "session_id": "x", "text": "y" * size}).encode()


def not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY

#: a lone surrogate escape in a known message: its ref, a field, a key
with_surrogate = st.builds(
    lambda kind, where, bad: json.dumps(
        {"type": kind, "ref": bad}
        if where == "ref"
        else {"type": kind, where: bad, "ref": 1}
        if where != "key"
        else {"type": kind, bad: 1},
        ensure_ascii=True,
    ).encode(),
    st.sampled_from(TYPES),
    st.sampled_from(["ref", "session_id", "text", "state", "label", "key"]),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), lone_surrogates, st.text(max_size=3)),
)

frames = st.one_of(
    st.tuples(st.just(TEXT), messages()),
    st.tuples(st.just(TEXT), with_surrogate),
    st.tuples(st.just(TEXT), deep()),
    st.tuples(st.just(TEXT), st.binary(max_size=64)),  # mostly not UTF-8
    st.tuples(st.just(TEXT), st.text(max_size=64).map(str.encode)),  # UTF-8, mostly not JSON
    st.tuples(st.just(TEXT), st.sampled_from([b"[]", b"1", b'"x"', b"null", b"NaN", b"{}", b'{"type":null}'])),
    st.tuples(st.just(TEXT), st.integers(LIMIT + 4096, 3 * LIMIT).map(huge)),
    st.tuples(st.just(BINARY), st.binary(max_size=256)),
    st.tuples(st.just(BINARY), st.integers(LIMIT + 4096, 2 * LIMIT).map(lambda n: b"\0" * n)),
)


def expected_close(opcode: aiohttp.WSMsgType, payload: bytes) -> int | None:
    """The close code the protocol calls for, or None: the frame must be answered."""
    if len(payload) > LIMIT:
        return int(aiohttp.WSCloseCode.MESSAGE_TOO_BIG)
    if opcode is TEXT and not_utf8(payload):
        return int(aiohttp.WSCloseCode.INVALID_TEXT)
    return None


# ---------------------------------------------------------------------------- the desktop


class Desk:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.url = f"{base}/v1/agents/a1/ws?token={TOKENS['a1']}"
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.probes = itertools.count(1)
        self.reconnects = 0

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        # the client's own receive limit is lifted: the gateway's answers are what is tested
        ws = await self.http.ws_connect(self.url, max_msg_size=0)
        hello = await ws.receive(timeout=5)
        assert hello.type is TEXT and json.loads(hello.data)["type"] == "hello", hello
        self.ws = ws
        return ws

    async def next_json(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | aiohttp.WSMessage:
        msg = await ws.receive(timeout=5)
        if msg.type is not TEXT:
            return msg
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def check(self, opcode: aiohttp.WSMsgType, payload: bytes) -> None:
        ws = self.ws or await self.connect()
        close = expected_close(opcode, payload)
        await ws.send_frame(payload, opcode)
        if close is not None:
            msg = await ws.receive(timeout=5)
            while msg.type is TEXT:  # notices sent before the frame arrived
                assert json.loads(msg.data)["type"] not in ANSWERS, msg.data
                msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert msg.data == close, (msg.data, msg.extra, payload[:80])
            await ws.close()
            self.ws = None
            self.reconnects += 1
            return
        probe = f"probe-{next(self.probes)}"
        await ws.send_str(json.dumps({"type": "ping", "ref": probe}))
        answers: list[dict[str, Any]] = []
        while True:
            got = await self.next_json(ws)
            assert isinstance(got, dict), f"socket closed after {payload[:120]!r}: {got}"
            if got.get("type") == "pong" and got.get("ref") == probe:
                break
            if got.get("type") in ANSWERS:
                answers.append(got)
        assert len(answers) == 1, (payload[:200], answers)
        answer = answers[0]
        if answer["type"] == "error":
            assert answer["code"] and answer["message"], answer
            assert answer["code"] != "internal_error", (payload[:200], answer)


# ---------------------------------------------------------------------------- the test


def test_raw_desktop_frames_never_silence_a_socket_nor_harm_the_gateway(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(
        {
            # no rate limit: every frame must be answered for what it is, not as "too many"
            "server": {"rate_limit_per_s": 0, "desktop_grace_s": 600},
            "store": {"url": sqlite_url(tmp_path / "fuzz.db")},
            "capacity_profiles": {"p": {"max_sessions": 4}},
            "queues": [{"name": "support"}],
            "agents": [
                {"id": a, "profile": "p", "queues": ["support"], "token_sha256": sha(token)}
                for a, token in TOKENS.items()
            ],
            "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
        }
    ).start()
    loop = asyncio.new_event_loop()
    try:
        http = loop.run_until_complete(_session())
        desk = Desk(http, proc.base)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )
        @given(st.lists(frames, min_size=1, max_size=4))
        def fuzz(batch: list[tuple[aiohttp.WSMsgType, bytes]]) -> None:
            for opcode, payload in batch:
                loop.run_until_complete(asyncio.wait_for(desk.check(opcode, payload), 30))

        started = time.monotonic()
        fuzz()
        elapsed = time.monotonic() - started
        loop.run_until_complete(_healthy(http, proc.base, desk))
        assert elapsed < 120, f"the fuzz run took {elapsed:.0f} s"
        loop.run_until_complete(http.close())
    finally:
        loop.close()
    for failure in ("socket_message_failed", "desktop_message_failed", "socket_message_not_json", "request_failed"):
        assert proc.log_events(failure) == [], failure
    assert "Traceback" not in proc.stderr()
    assert proc.terminate() == 0


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


async def _healthy(http: aiohttp.ClientSession, base: str, desk: Desk) -> None:
    client = LiveClient(http, base, tokens=TOKENS, vendor="crm", secret=SECRET)
    async with http.get(f"{base}/readyz") as response:
        assert response.status == 200, await response.text()
    # another agent still gets an offer, through the vendor webhook, on its desktop
    other = await http.ws_connect(f"{base}/v1/agents/a2/ws?token={TOKENS['a2']}")
    assert json.loads((await other.receive(timeout=5)).data)["type"] == "hello"
    status, _ = await client.call("PUT", "/v1/agents/a2/presence", "a2", json_body={"state": "ready"})
    assert status == 200
    status, decision = await client.webhook(
        {"event_id": "after-fuzz", "type": "offer", "channel": "chat", "interaction_id": "i-after", "agent_id": "a2"}
    )
    assert (status, decision["decision"]) == (200, "assigned"), decision
    while True:
        message = json.loads((await other.receive(timeout=5)).data)
        if message["type"] == "session.offered":
            assert message["session"]["id"] == decision["session_id"]
            break
    await other.close()
    # the fuzzed desktop still answers, and once closed it no longer counts as connected
    ws = desk.ws or await desk.connect()
    await ws.send_str('{"type":"ping","ref":"last"}')
    while True:
        message = json.loads((await ws.receive(timeout=5)).data)
        if message.get("ref") == "last":
            assert message["type"] == "pong"
            break
    await ws.close()
    deadline = time.monotonic() + 5
    while True:
        status, agent = await client.call("GET", "/v1/agents/a1", "a1")
        if status == 200 and agent["desktop_connected"] is False:
            break
        assert time.monotonic() < deadline, f"a1's desktop still counts as connected: {agent}"
        await asyncio.sleep(0.05)
