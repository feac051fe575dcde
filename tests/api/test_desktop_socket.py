"""The desktop WebSocket served by the gateway's own connection (gateway/api/desktop_socket.py),
against real clients: the ``websockets`` library's client (a fresh connection each time, so
always the gateway's own connection), aiohttp's client, and a raw client built on
``websockets``' sans-I/O client protocol that sends exactly the frames a test needs
(unmasked, invalid UTF-8, no pong, no close reply, a reset) and reads the server's bytes as
they come (a close frame, then an orderly end of stream or a reset).

What aiohttp's route still serves (a desktop on a connection aiohttp already owns, every
other route, every refused desktop request) is checked here beside it."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import deque
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from gateway.api.sockets import CLOSE_REPLACED, CLOSE_TOO_SLOW

from .conftest import TOKENS, Gateway, auth, host_port, receive_json, request_ws, running_gateway, wait_for

pytestmark = pytest.mark.asyncio


def served_by(gw: Gateway) -> list[str]:
    """Which kind of object serves each open WebSocket of the gateway."""
    return sorted(type(ws).__name__ for ws in gw.api.sockets)


def desktop_ws(gw: Gateway, agent_id: str, **kwargs: Any) -> Any:
    """The ``websockets`` client on the desktop path (a fresh connection)."""
    return connect(gw.ws_url(f"/v1/agents/{agent_id}/ws"), additional_headers=auth(agent_id), **kwargs)


async def recv_json(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def reply_to(ws: Any, ref: Any, timeout: float = 3.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await recv_json(ws, max(0.01, deadline - loop.time()))
        if message.get("type") in ("ack", "error", "pong") and message.get("ref") == ref:
            return message


class RawClient:
    """A WebSocket client that does only what the test says: the handshake by websockets'
    sans-I/O client protocol, then frames written as given and the server's bytes parsed
    as they arrive (pongs and close replies are *not* sent unless :meth:`flush` is called)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: ClientProtocol) -> None:
        self.reader = reader
        self.writer = writer
        self.proto = proto
        self.frames: deque[Frame] = deque()
        self.eof = False
        self.reset = False

    @classmethod
    async def open(cls, gw: Gateway, agent_id: str, *, after_request: bool = False) -> RawClient:
        """Connect as ``agent_id``'s desktop; ``after_request``: on a connection that first
        carried a plain request (so aiohttp owns it and its route serves the desktop)."""
        reader, writer = await asyncio.open_connection(*host_port(gw))
        if after_request:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
        proto = ClientProtocol(parse_uri(gw.ws_url(f"/v1/agents/{agent_id}/ws")), max_size=None)
        request = proto.connect()
        request.headers["Authorization"] = f"Bearer {TOKENS[agent_id]}"
        proto.send_request(request)
        writer.write(b"".join(proto.data_to_send()))
        client = cls(reader, writer, proto)
        while True:
            data = await asyncio.wait_for(reader.read(65536), 3)
            assert data, "closed during the handshake"
            proto.receive_data(data)
            events = proto.events_received()
            if events:
                response = events[0]
                assert isinstance(response, Response) and response.status_code == 101, response
                client.frames.extend(e for e in events[1:] if isinstance(e, Frame))
                return client

    def send(self, opcode: Opcode, payload: bytes, *, fin: bool = True, mask: bool = True) -> None:
        self.writer.write(Frame(opcode, payload, fin).serialize(mask=mask, extensions=[]))

    def text(self, message: dict[str, Any]) -> None:
        self.send(Opcode.TEXT, json.dumps(message).encode())

    def flush(self) -> None:
        """Send what the client protocol queued (pongs, the close reply), not its end of stream."""
        data = b"".join(self.proto.data_to_send())
        if data:
            self.writer.write(data)

    async def frame(self, timeout: float = 3.0) -> Frame | None:
        """The server's next frame (None: the server ended the stream, or reset it)."""
        while not self.frames:
            if self.eof:
                return None
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except ConnectionResetError:
                data, self.reset = b"", True
            if not data:
                self.eof = True
                self.proto.receive_eof()
            else:
                self.proto.receive_data(data)
            self.frames.extend(e for e in self.proto.events_received() if isinstance(e, Frame))
        return self.frames.popleft()

    async def json(self, timeout: float = 3.0) -> dict[str, Any]:
        frame = await self.frame(timeout)
        assert frame is not None and frame.opcode is Opcode.TEXT, frame
        data: dict[str, Any] = json.loads(frame.data)
        return data

    async def close_frame(self, timeout: float = 3.0) -> int:
        """Skip to the server's close frame; its code."""
        while True:
            frame = await self.frame(timeout)
            assert frame is not None, "no close frame before the end of the stream"
            if frame.opcode is Opcode.CLOSE:
                return struct.unpack("!H", frame.data[:2])[0] if frame.data else 1005

    async def until_end(self, timeout: float = 5.0) -> None:
        """Read (and drop) until the server ends the stream."""
        while await self.frame(timeout) is not None:
            pass

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------- who serves what


async def test_a_fresh_desktop_connection_is_served_off_aiohttp_and_a_reused_one_by_aiohttp(gw: Gateway) -> None:
    """A desktop on a fresh connection gets the gateway's own connection; one that arrives on
    a keep-alive connection aiohttp already owns is served by aiohttp's route, the same way
    (hello, replies in order, pushed messages)."""
    async with desktop_ws(gw, "a1") as fresh:
        assert (await recv_json(fresh))["type"] == "hello"
        assert served_by(gw) == ["DesktopConnection"]
        reused = await RawClient.open(gw, "a2", after_request=True)
        assert (await reused.json())["type"] == "hello"
        assert served_by(gw) == ["DesktopConnection", "WebSocketResponse"]
        for client in (fresh, reused):
            gw.runtime.hub.send("a1" if client is fresh else "a2", {"type": "chat.message", "n": 1})
        assert (await recv_json(fresh))["n"] == 1
        assert (await reused.json())["n"] == 1
        reused.text({"type": "ping", "ref": "r"})
        assert await reused.json() == {"type": "pong", "ref": "r"}
        reused.close()
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0 and gw.runtime.hub.connected("a2") == 0)


async def test_hello_first_then_replies_in_the_order_of_the_messages(gw: Gateway) -> None:
    await gw.ready("a1")
    async with desktop_ws(gw, "a1") as ws:
        hello = await recv_json(ws)
        assert hello["type"] == "hello" and hello["agent"]["id"] == "a1"
        assert hello["agent"]["desktop_connected"] is True
        # many messages at once, of kinds that take different paths (journaled action,
        # validation error, pong): answered one by one in the order they were sent
        sids = [await gw.offer("a1") for _ in range(3)]
        offered = set()
        while len(offered) < 3:
            message = await recv_json(ws)
            if message["type"] == "session.offered":
                offered.add(message["session"]["id"])
        batch: list[dict[str, Any]] = []
        for n in range(30):
            if n % 10 == 0:
                batch.append({"type": "accept", "session_id": sids[n // 10], "ref": n})
            elif n % 3 == 0:
                batch.append({"type": "dance", "ref": n})
            else:
                batch.append({"type": "ping", "ref": n})
        for message in batch:
            await ws.send(json.dumps(message))
        refs = []
        while len(refs) < len(batch):
            message = await recv_json(ws)
            if message["type"] in ("ack", "error", "pong"):
                refs.append(message["ref"])
                kind = batch[message["ref"]]["type"]
                expected = {"accept": "ack", "dance": "error", "ping": "pong"}[kind]
                assert message["type"] == expected, message
        assert refs == list(range(30))
        assert all(gw.runtime.engine.session(sid).state.value == "active" for sid in sids)


async def test_a_fragmented_message_is_one_message(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        text = json.dumps({"type": "ping", "ref": "fragmented-é-" + "x" * 3000}, ensure_ascii=False)
        # websockets sends an iterable as a fragmented message (one frame per item); the
        # cut falls inside the two bytes of "é"
        cut = text.index("é")
        raw = text.encode()
        pieces = [raw[: cut + 1], raw[cut + 1 : cut + 2000], raw[cut + 2000 :]]
        await ws.send(pieces, text=True)
        assert await reply_to(ws, json.loads(text)["ref"]) == {"type": "pong", "ref": json.loads(text)["ref"]}
    # and with the raw client: control frames between the fragments are fine
    raw_client = await RawClient.open(gw, "a1")
    assert (await raw_client.json())["type"] == "hello"
    body = json.dumps({"type": "ping", "ref": "f2"}).encode()
    raw_client.send(Opcode.TEXT, body[:5], fin=False)
    raw_client.send(Opcode.PING, b"between")
    raw_client.send(Opcode.CONT, body[5:9], fin=False)
    raw_client.send(Opcode.CONT, body[9:], fin=True)
    pong = await raw_client.frame()
    assert pong is not None and pong.opcode is Opcode.PONG and pong.data == b"between"
    assert await raw_client.json() == {"type": "pong", "ref": "f2"}
    raw_client.close()


async def test_a_ping_is_answered_by_a_pong(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), 3)
        assert latency >= 0
        await ws.send(json.dumps({"type": "ping", "ref": 1}))
        assert await reply_to(ws, 1) == {"type": "pong", "ref": 1}


async def test_a_binary_message_gets_an_error_and_the_socket_stays_open(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        await ws.send(b"\x00\x01binary")
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_request" and error["ref"] is None
        assert "binary" in error["message"]
        await ws.send(json.dumps({"type": "ping", "ref": "still"}))
        assert await reply_to(ws, "still") == {"type": "pong", "ref": "still"}


async def test_a_handler_that_fails_is_answered_internal_error_on_both_routes(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while handling a client message is answered (``internal_error``, logged with its
    traceback) and the socket stays open, on the gateway's own connection and on aiohttp's
    route alike (they answer through one function)."""
    from structlog.testing import capture_logs

    from gateway.api.agent_ws import AgentSocket

    real = AgentSocket.on_text

    async def on_text(self: AgentSocket, principal: Any, agent_id: str, text: str) -> dict[str, Any]:
        if "boom" in text:
            raise RuntimeError("a bug")
        return await real(self, principal, agent_id, text)

    monkeypatch.setattr(AgentSocket, "on_text", on_text)
    fresh = await RawClient.open(gw, "a1")
    reused = await RawClient.open(gw, "a2", after_request=True)
    assert served_by(gw) == ["DesktopConnection", "WebSocketResponse"]
    try:
        for client in (fresh, reused):
            assert (await client.json())["type"] == "hello"
            with capture_logs() as entries:
                client.text({"type": "ping", "ref": "boom"})
                error = await client.json()
            assert error == {
                "type": "error",
                "ref": None,
                "code": "internal_error",
                "message": "the gateway failed to process the message",
            }
            assert [e["event"] for e in entries if e["log_level"] == "error"] == ["socket_message_failed"]
            client.text({"type": "ping", "ref": "after"})
            assert await client.json() == {"type": "pong", "ref": "after"}
    finally:
        fresh.close()
        reused.close()


# ---------------------------------------------------------------------------- protocol errors


async def test_a_message_above_64_kib_closes_the_socket_1009(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "hello"
        # exactly the limit is fine
        limit = gw.api.settings.max_ws_message_bytes
        padding = limit - len(json.dumps({"type": "ping", "ref": ""}))
        await ws.send(json.dumps({"type": "ping", "ref": "y" * padding}))
        assert (await reply_to(ws, "y" * padding))["type"] == "pong"
        await ws.send(json.dumps({"type": "note", "session_id": "x", "text": "y" * (70 * 1024)}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False


@pytest.mark.parametrize(
    ("what", "frames", "code"),
    [
        ("invalid UTF-8", [(Opcode.TEXT, b'{"type":"ping","ref":"\xff\xfe"}', True, True)], 1007),
        # a text message whose UTF-8 is cut between two fragments and never completed
        (
            "invalid UTF-8 across fragments",
            [(Opcode.TEXT, b'"\xc3', False, True), (Opcode.CONT, b'"', True, True)],
            1007,
        ),
        ("an unmasked frame", [(Opcode.TEXT, b'{"type":"ping"}', True, False)], 1002),
        ("a continuation without a start", [(Opcode.CONT, b"x", True, True)], 1002),
    ],
)
async def test_protocol_errors_close_with_their_code(
    gw: Gateway, what: str, frames: list[tuple[Opcode, bytes, bool, bool]], code: int
) -> None:
    client = await RawClient.open(gw, "a1")
    assert (await client.json())["type"] == "hello"
    for opcode, payload, fin, mask in frames:
        client.send(opcode, payload, fin=fin, mask=mask)
    assert await client.close_frame() == code, what
    await client.until_end()
    assert not client.reset  # an orderly end of stream after the close frame
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    client.close()


# ---------------------------------------------------------------------------- heartbeat


async def test_the_heartbeat_closes_a_silent_peer_and_keeps_an_answering_one() -> None:
    async with running_gateway() as gw:
        gw.api.settings.ws_heartbeat_s = 1.5
        silent = await RawClient.open(gw, "a1")  # never answers a ping
        assert (await silent.json())["type"] == "hello"
        async with desktop_ws(gw, "a2", ping_interval=None) as answering:  # answers pings (websockets does)
            assert (await recv_json(answering))["type"] == "hello"
            ping = await silent.frame(timeout=10)
            assert ping is not None and ping.opcode is Opcode.PING
            await wait_for(lambda: gw.runtime.hub.connected("a1") == 0, timeout=10)
            assert gw.runtime.engine.agent("a1")["desktop_connected"] is False  # the grace period runs
            await silent.until_end(timeout=10)
            # three more periods: the answering desktop is still there and working
            await asyncio.sleep(4.5)
            assert gw.runtime.hub.connected("a2") == 1
            await answering.send(json.dumps({"type": "ping", "ref": 1}))
            assert (await reply_to(answering, 1))["type"] == "pong"
        silent.close()


# ---------------------------------------------------------------------------- closes


async def test_a_newer_desktop_beyond_the_limit_closes_the_oldest_4009(gw: Gateway) -> None:
    limit = gw.api.settings.max_desktops_per_agent
    clients = []
    for _ in range(limit):
        client = await RawClient.open(gw, "a1")
        assert (await client.json())["type"] == "hello"
        clients.append(client)
    newest = await RawClient.open(gw, "a1")
    assert (await newest.json())["type"] == "hello"
    assert await clients[0].close_frame() == CLOSE_REPLACED
    clients[0].flush()  # the client's close reply: the handshake completes
    await clients[0].until_end()
    assert not clients[0].reset
    assert gw.runtime.hub.connected("a1") == limit
    for client in [*clients, newest]:
        client.close()


@pytest.mark.parametrize("after_request", [False, True], ids=["own", "aiohttp"])
async def test_a_desktop_closed_by_the_gateway_gets_its_close_code_even_if_it_answers_late(
    gw: Gateway, after_request: bool
) -> None:
    """The reload's 4001: the close frame reaches a client that does not answer it within
    ``ws_close_timeout_s`` (a busy browser), and the connection then ends with an orderly
    end of stream, not a reset (a reset can discard the unread close frame: the client
    then sees 1006). Both the gateway's own connection and aiohttp's route."""
    gw.api.settings.ws_close_timeout_s = 0.3
    client = await RawClient.open(gw, "a1", after_request=after_request)
    assert (await client.json())["type"] == "hello"
    assert gw.api.close_desktops("a1", 4001, b"token changed: reconnect") == 1
    await asyncio.sleep(1.5)  # the client reads nothing for five close timeouts
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert await client.close_frame() == 4001
    await client.until_end()
    assert not client.reset
    client.close()


async def test_a_desktop_that_falls_behind_is_closed_4008(gw: Gateway) -> None:
    await gw.ready("a1")
    gw.api.settings.ws_queue_size = 2
    client = await RawClient.open(gw, "a1")
    events = [gw.event("offer", channel="chat", agent_id="a1") for _ in range(3)]
    await gw.runtime.act(lambda e: [e.handle_event(ev) for ev in events])
    assert await client.close_frame() == CLOSE_TOO_SLOW
    client.flush()
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    client.close()


async def test_shutdown_closes_desktops_going_away_and_the_handshake_completes(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        await gw.api.close_sockets()
        with pytest.raises(ConnectionClosedOK) as closed:
            await asyncio.wait_for(ws.recv(), 3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert closed.value.rcvd_then_sent is True  # the server closed, the client answered
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)


async def test_a_client_close_is_answered_and_unregisters(gw: Gateway) -> None:
    async with desktop_ws(gw, "a1") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        await ws.close(4321, "bye")
        assert ws.close_code == 4321 and ws.protocol.close_rcvd_then_sent is False
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False


async def test_a_peer_that_vanishes_is_unregistered_and_its_grace_period_starts(gw: Gateway) -> None:
    client = await RawClient.open(gw, "a1")
    assert (await client.json())["type"] == "hello"
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is True
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()  # RST, no close frame
    await wait_for(lambda: gw.runtime.hub.connected("a1") == 0)
    assert gw.runtime.engine.agent("a1")["desktop_connected"] is False
    assert served_by(gw) == []


# ---------------------------------------------------------------------------- the door


async def test_the_desktop_errors_are_answered_as_before(gw: Gateway) -> None:
    """Whatever the door does not take is answered by aiohttp's route: same statuses and
    JSON error bodies as before, on a fresh connection too."""
    for agent_id, headers, status, code in (
        ("a1", {}, 401, "unauthorized"),
        ("a1", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ("a2", auth("a1"), 403, "forbidden"),
        ("a1", auth("supervisor"), 403, "forbidden"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gw.ws_url(f"/v1/agents/{agent_id}/ws"), additional_headers=headers):
                pass
        response = refused.value.response
        assert response.status_code == status
        assert json.loads(response.body)["error"]["code"] == code
    # plain HTTP on the desktop path, on a fresh connection: 426
    reader, writer = await asyncio.open_connection(*host_port(gw))
    writer.write(f"GET /v1/agents/a1/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['a1']}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 426"), head
    writer.close()
    # the browser's ?token= works off aiohttp too
    async with connect(gw.ws_url(f"/v1/agents/a1/ws?token={TOKENS['a1']}")) as ws:
        assert (await recv_json(ws))["type"] == "hello"
        assert served_by(gw) == ["DesktopConnection"]


async def test_the_rate_limit_counts_desktop_connections() -> None:
    async with running_gateway(rate_limit_per_s=0.01, rate_limit_burst=1) as gw:
        async with desktop_ws(gw, "a1") as ws:
            assert (await recv_json(ws))["type"] == "hello"
            with pytest.raises(InvalidStatus) as refused:
                async with desktop_ws(gw, "a1"):
                    pass
            assert refused.value.response.status_code == 429
            assert json.loads(refused.value.response.body)["error"]["code"] == "rate_limited"


async def test_the_connection_limit_counts_desktop_connections() -> None:
    async with running_gateway(max_connections_per_address=2) as gw:
        assert gw.limiter is not None
        first = await RawClient.open(gw, "a1")
        second = await RawClient.open(gw, "a2")
        assert served_by(gw) == ["DesktopConnection", "DesktopConnection"]
        assert sum(gw.limiter.open.values()) == 2
        with pytest.raises(InvalidStatus) as refused:
            async with desktop_ws(gw, "a3"):
                pass
        assert refused.value.response.status_code == 503
        first.close()
        await wait_for(lambda: sum(gw.limiter.open.values()) == 1)  # type: ignore[union-attr]
        async with desktop_ws(gw, "a3") as ws:
            assert (await recv_json(ws))["type"] == "hello"
        second.close()
        await wait_for(lambda: sum(gw.limiter.open.values()) == 0)  # type: ignore[union-attr]


async def test_a_desktop_head_trickled_in_is_closed_after_the_idle_timeout() -> None:
    async with running_gateway(idle_timeout_s=1) as gw:
        reader, writer = await asyncio.open_connection(*host_port(gw))
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"GET /v1/agents/a1/ws HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
            try:
                writer.write(b"X")  # a header that never ends
                await writer.drain()
            except (ConnectionError, OSError):
                break
        # (the trickle stops after ~4 s; a server that did not close would fail the read's wait)
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b""
        assert loop.time() - started >= 0.9  # not before the idle timeout
        writer.close()


async def test_a_huge_desktop_head_goes_to_aiohttp_which_refuses_it(gw: Gateway) -> None:
    reader, writer = await asyncio.open_connection(*host_port(gw))
    writer.write(
        b"GET /v1/agents/a1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + b"X-Big: "
        + b"a" * 40_000
        + b"\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)
    assert head.split(b" ")[1] in (b"400", b"431"), head
    assert gw.runtime.hub.connected("a1") == 0
    writer.close()


async def test_other_routes_are_unaffected_on_the_same_port(gw: Gateway) -> None:
    # keep-alive: two requests on one connection, pipelined
    reader, writer = await asyncio.open_connection(*host_port(gw))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/agents/a1 HTTP/1.1\r\nHost: x\r\n" + b"\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert first.startswith(b"HTTP/1.1 200"), first
    length = int(next(x for x in first.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
    await reader.readexactly(length)
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert second.startswith(b"HTTP/1.1 401"), second
    writer.close()
    # an aiohttp client session: requests and the supervisor stream, served by aiohttp
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(gw.url("/v1/agents/a1"), headers=auth("supervisor")) as response:
                assert response.status == 200
    async with connect(gw.ws_url("/v1/events/ws"), additional_headers=auth("supervisor")) as stream:
        await stream.send(json.dumps({"type": "ping", "ref": 1}))
        assert await recv_json(stream) == {"type": "pong", "ref": 1}
        assert served_by(gw) == ["WebSocketResponse"]
    # a POST to a path that starts like the desktop's
    await gw.ready("a1")
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url("/v1/agents/a1/sessions"), headers=auth("a1"), json={"label": "x"}) as response:
            assert response.status in (200, 201), await response.text()


async def test_an_idle_desktop_runs_no_task(gw: Gateway) -> None:
    """P4: an open, idle desktop on the gateway's own connection has no task at all (no
    reader, no writer, no heartbeat timer of its own)."""
    before = len(asyncio.all_tasks())
    clients = []
    for agent_id in ("a1", "a2", "a3", "a1", "a2", "a3"):
        client = await RawClient.open(gw, agent_id)
        assert (await client.json())["type"] == "hello"
        clients.append(client)
    await asyncio.sleep(0.1)  # the joins' tasks are done
    assert len(asyncio.all_tasks()) == before
    assert [type(ws).__name__ for ws in gw.api.sockets] == ["DesktopConnection"] * 6
    for client in clients:
        client.close()


async def test_websockets_and_aiohttp_clients_see_the_same_conversation(gw: Gateway) -> None:
    """The two client libraries against the gateway's own connection: same hello, same
    replies (websockets always opens a fresh connection; aiohttp here does too)."""
    await gw.ready("a1")
    async with aiohttp.ClientSession() as http:
        aio = await http.ws_connect(gw.url("/v1/agents/a1/ws"), headers=auth("a1"))
        assert (await receive_json(aio))["type"] == "hello"
        async with desktop_ws(gw, "a1") as wsk:
            assert (await recv_json(wsk))["type"] == "hello"
            assert served_by(gw) == ["DesktopConnection", "DesktopConnection"]
            sid = await gw.offer("a1")
            assert (await receive_json(aio))["session"]["id"] == sid
            assert (await recv_json(wsk))["session"]["id"] == sid
            ack = await request_ws(aio, {"type": "accept", "session_id": sid, "ref": "a"})
            assert ack["type"] == "ack" and ack["session"]["state"] == "active"
            # the other desktop sees the change
            assert (await recv_json(wsk))["type"].startswith("session.")
        await aio.close()
        assert aio.close_code == 1000
