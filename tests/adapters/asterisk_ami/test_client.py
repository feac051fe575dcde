"""The AMI connection against a scripted server that answers with the real recorded
responses (tests/fixtures): banner, MD5 and plain login, a refused login; ActionID
correlation, timeouts and the keep-alive that detects a stall; and the adapter's link
recovering from a refused login and a stall."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.asterisk_ami.client import ActionFailed, AmiConnection, AmiError, LoginFailed
from tests.adapters.contract.harness import ContractGateway
from tests.adapters.scripted import Connection, ScriptedServer, fixture_bytes

from .conftest import scenario_config
from .peer import FakeAsterisk, parse_action

pytestmark = pytest.mark.asyncio


def recorded(name: str) -> tuple[str, list[str]]:
    """The banner line and the server's response blocks of a recorded transcript (LF)."""
    text = fixture_bytes(name).decode()
    banner = text.split("\n", 1)[0] if text.startswith("Asterisk Call Manager/") else ""
    blocks = [b for b in re.split(r"\n\n+", text) if b.strip()]
    responses = [b[b.index("Response:") :] for b in blocks if "Response:" in b]
    return banner, responses


def answer(block: str, action_id: str) -> bytes:
    """A recorded response for this action (ActionID replaced), sent with CRLF."""
    text = re.sub(r"(?im)^ActionID: .*$", f"ActionID: {action_id}", block.strip("\n"))
    return (text.replace("\n", "\r\n") + "\r\n\r\n").encode()


class Recorded:
    """A server that plays the recorded responses: Challenge and Login from the fixtures."""

    def __init__(self, login_fixture: str, md5: bool = False) -> None:
        self.banner, self.login = recorded(login_fixture)
        _, self.challenge = recorded("ami_panoramisk_login_md5.txt")
        self.banner = recorded("ami_panoramisk_login_md5.txt")[0] if md5 else self.banner
        self.server = ScriptedServer(on_connect=self._hello, reply=self._reply, seed=3)
        self.received: list[dict[str, str]] = []

    async def _hello(self, server: ScriptedServer, conn: Connection) -> None:
        await server.send(self.banner + "\r\n", conn=conn)

    async def _reply(self, server: ScriptedServer, conn: Connection, raw: bytes) -> None:
        action = parse_action(raw)
        self.received.append(action)
        name = action["action"].lower()
        if name == "challenge":
            await server.send(answer(self.challenge[0], action["actionid"]), conn=conn)
        elif name == "login":
            await server.send(answer(self.login[0], action["actionid"]), conn=conn)


@pytest_asyncio.fixture
async def recorded_ok() -> AsyncIterator[Recorded]:
    peer = Recorded("ami_panoramisk_login_ok.txt", md5=True)
    await peer.server.start()
    yield peer
    await peer.server.stop()


async def open_conn(port: int) -> AmiConnection:
    return await AmiConnection.open("127.0.0.1", port, vendor="t", connect_timeout_s=2, action_timeout_s=1)


async def test_md5_login_with_the_recorded_challenge(recorded_ok: Recorded) -> None:
    conn = await open_conn(recorded_ok.server.port)
    try:
        assert conn.version == "7.0.3"
        await conn.login("gateway", "s3cret", md5=True)
    finally:
        await conn.close()
    challenge, login = recorded_ok.received
    assert challenge["authtype"] == "MD5"
    assert login["authtype"] == "MD5" and "secret" not in login
    assert login["key"] == hashlib.md5(b"145769581" + b"s3cret").hexdigest()
    assert login["username"] == "gateway" and login["events"] == "call,agent"


async def test_plain_login_and_a_refused_login() -> None:
    ok = Recorded("ami_panoramisk_login_ok.txt")
    refused = Recorded("ami_panoramisk_login_failed.txt")
    for peer in (ok, refused):
        await peer.server.start()
    try:
        conn = await open_conn(ok.server.port)
        assert conn.version == "1.3"
        await conn.login("gateway", "s3cret", md5=False)
        await conn.close()
        assert ok.received[-1]["secret"] == "s3cret"

        conn = await open_conn(refused.server.port)
        with pytest.raises(LoginFailed, match="Authentication failed"):
            await conn.login("gateway", "wrong", md5=False)
        await conn.close()
    finally:
        for peer in (ok, refused):
            await peer.server.stop()


async def test_actions_are_correlated_by_action_id_and_time_out() -> None:
    """Responses come back out of order, one never: each action gets its own."""
    held: list[dict[str, str]] = []

    async def reply(server: ScriptedServer, conn: Connection, raw: bytes) -> None:
        action = parse_action(raw)
        held.append(action)
        if len(held) == 2:  # answer the second first, then the first; never the third
            for a in reversed(held):
                await server.send(f"Response: Success\r\nActionID: {a['actionid']}\r\nMessage: {a['action']}\r\n\r\n")

    async def hello(server: ScriptedServer, conn: Connection) -> None:
        await server.send("Asterisk Call Manager/9.0.0\r\n", conn=conn)

    server = ScriptedServer(on_connect=hello, reply=reply, seed=5)
    await server.start()
    conn = await open_conn(server.port)
    try:
        first = asyncio.create_task(conn.action("First"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(conn.action("Second"))
        assert (await first).get("Message") == "First"
        assert (await second).get("Message") == "Second"
        with pytest.raises(ActionFailed, match="no response within 0.2 s"):
            await conn.action("Third", timeout=0.2)
        with pytest.raises(ValueError):
            await conn.action("Hangup", [("Channel", "x\r\nAction: Originate")])
    finally:
        await conn.close()
        await server.stop()


async def test_no_banner_is_an_error() -> None:
    server = ScriptedServer(seed=1)
    await server.start()
    try:
        with pytest.raises(AmiError, match="banner"):
            await AmiConnection.open("127.0.0.1", server.port, vendor="t", connect_timeout_s=0.3, action_timeout_s=1)
    finally:
        await server.stop()


async def test_a_refused_login_keeps_the_link_down_and_retrying(tmp_path: Path) -> None:
    ast = FakeAsterisk(secret="the-real-secret")
    await ast.start()
    config = scenario_config(ast, tmp_path / "gw.db").model_dump(mode="json")
    config["vendors"][0]["secret"] = "a-wrong-secret"
    from gateway.config import GatewayConfig

    gw = ContractGateway(GatewayConfig.model_validate(config), base_dir=tmp_path)
    await gw.start()
    try:
        await gw.until(lambda: ast.login_failures >= 2, what="a retry after the refusal")
        assert gw.health() == "down" and ast.logins == 0
    finally:
        await gw.stop()
        await ast.stop()


async def test_a_stall_is_detected_and_the_link_made_again(tmp_path: Path) -> None:
    """Asterisk stops answering (no byte, no Pong): within the stall timeout the adapter
    drops the connection and logs in again."""
    ast = FakeAsterisk()
    await ast.start()
    gw = ContractGateway(
        scenario_config(ast, tmp_path / "gw.db", ping_interval_s=0.3, stall_timeout_s=1.5), base_dir=tmp_path
    )
    await gw.start()
    try:
        await gw.until(lambda: gw.health() == "up" and ast.logins == 1, what="logged in")
        await gw.until(lambda: len(ast.actions_named("Ping")) >= 3, what="pings")
        assert ast.logins == 1 and len(ast.server.connections) == 1  # pings answered: no reconnect
        ast.answer_pings = False
        await gw.until(lambda: len(ast.server.connections) >= 2, timeout=10, what="a new connection")
        ast.answer_pings = True
        await gw.until(lambda: ast.logins == 2 and gw.health() == "up", timeout=10, what="logged in again")
        assert ast.server.connections[0].closed
    finally:
        await gw.stop()
        await ast.stop()


async def test_command_output_in_both_reply_styles() -> None:
    """``Command``: the recorded Asterisk 11 reply (Response: Follows ... --END COMMAND--)
    and the newer one (Output: headers) give the same lines."""
    _, [follows] = recorded("ami_panoramisk_command_core_show_version.txt")
    modern = "Response: Success\nActionID: x\nMessage: Command output follows\nOutput: {line}\n"
    version_line = follows.splitlines()[3]
    styles = iter([follows, modern.format(line=version_line)])

    async def reply(server: ScriptedServer, conn: Connection, raw: bytes) -> None:
        action = parse_action(raw)
        if action["action"].lower() == "command" and action["command"] == "core show version":
            await server.send(answer(next(styles), action["actionid"]), conn=conn)

    async def hello(server: ScriptedServer, conn: Connection) -> None:
        await server.send("Asterisk Call Manager/1.3\r\n", conn=conn)

    server = ScriptedServer(on_connect=hello, reply=reply, seed=9)
    await server.start()
    conn = await open_conn(server.port)
    try:
        old = await conn.command("core show version")
        new = await conn.command("core show version")
    finally:
        await conn.close()
        await server.stop()
    assert old == new == [version_line]
    assert version_line.startswith("Asterisk 11.11.0+xivo")
