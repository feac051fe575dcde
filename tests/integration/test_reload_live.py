"""Live configuration against a real gateway process: ``cti-gateway reload`` and SIGHUP.

Each test runs ``python -m gateway run --config <tmp>.yaml`` on a SQLite journal, rewrites
the file and reloads it with the real command (``python -m gateway reload``, the supervisor
token in ``$CTI_SUPERVISOR_TOKEN``) or with SIGHUP, and checks what the issue promises:
agents added and removed, profiles raised and lowered under load, a webhook secret rotated
with a request in flight, a broken file refused with nothing changed, and a SIGKILL right
after a reload restarting into the new configuration.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.webhook import signed_headers
from gateway.api.schemas import StreamConfigReloaded

from .conftest import GatewayFactory
from .live import ROOT, GatewayProcess, LiveClient, sha, sqlite_url, write_config

pytestmark = [pytest.mark.asyncio]

VENDOR = "crm"
SECRET = "reload-test-webhook-secret-0001"
NEW_SECRET = "reload-test-webhook-secret-0002"
TOKENS = {
    "supervisor": "reload-supervisor-token",
    "a1": "reload-a1-token",
    "a2": "reload-a2-token",
    "a3": "reload-a3-token",
}


def base_config(db: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"]), "desktop_grace_s": 600},
        "store": {"url": sqlite_url(db)},
        "capacity_profiles": {
            "one": {"max_sessions": 1, "offer_timeout_s": {"chat": 600}},
            "three": {"max_sessions": 3, "offer_timeout_s": {"chat": 600}},
        },
        "queues": [{"name": "support"}],
        "agents": [
            {"id": "a1", "name": "A1", "profile": "one", "queues": ["support"], "token_sha256": sha(TOKENS["a1"])},
            {"id": "a2", "name": "A2", "profile": "three", "queues": ["support"], "token_sha256": sha(TOKENS["a2"])},
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }


class Live:
    """One gateway process, its config file and a client."""

    def __init__(self, proc: GatewayProcess, path: Path, config: dict[str, Any], http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.path = path
        self.config = config
        self.http = http
        self.client = LiveClient(http, proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        self.n = 0

    def rewrite(self, config: dict[str, Any]) -> None:
        config = copy.deepcopy(config)
        config["server"] = {**config["server"], "host": "127.0.0.1", "port": self.proc.port}
        write_config(self.path, config)
        self.config = config

    async def reload(self) -> tuple[int, str, str]:
        """``cti-gateway reload --config PATH``: (exit status, stdout, stderr)."""
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "reload",
            "--config",
            str(self.path),
            cwd=ROOT,
            env={**os.environ, "CTI_SUPERVISOR_TOKEN": TOKENS["supervisor"]},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode is not None
        return cli.returncode, out.decode(), err.decode()

    async def offer(self, *, agent: str | None = None, queue: str | None = None, secret: str | None = None) -> Any:
        self.n += 1
        body: dict[str, Any] = {
            "event_id": f"e{self.n}",
            "type": "offer",
            "channel": "chat",
            "interaction_id": f"i{self.n}",
        }
        if agent:
            body["agent_id"] = agent
        if queue:
            body["queue"] = queue
        return await self.client.webhook(body, secret=secret)

    async def end(self, interaction: str) -> None:
        self.n += 1
        body = {"event_id": f"e{self.n}", "type": "end", "interaction_id": interaction}
        status, answer = await self.client.webhook(body)
        assert status == 200, answer

    async def agent(self, agent_id: str) -> tuple[int, Any]:
        return await self.client.call("GET", f"/v1/agents/{agent_id}", "supervisor")

    async def metric(self, name: str) -> float:
        async with self.http.get(self.proc.base + "/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the socket closes; its close code."""
    while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
        pass
    return ws.close_code


async def start(gateway_process: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession) -> Live:
    config = base_config(tmp_path / "gateway.db")
    proc = gateway_process(config, name="reload")
    proc.start()
    live = Live(proc, tmp_path / "reload.yaml", config, http)
    live.rewrite(config)  # the file as the fixture wrote it, known to the test
    for agent_id in ("a1", "a2"):
        await live.client.ok("PUT", f"/v1/agents/{agent_id}/presence", agent_id, json_body={"state": "ready"})
    return live


async def test_an_added_agent_goes_ready_and_gets_an_offer_and_a_changed_token_closes_the_desktop(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        stream = await http.ws_connect(f"{live.proc.base}/v1/events/ws", headers=live.client.headers("supervisor"))
        old_desktop = await http.ws_connect(f"{live.proc.base}/v1/agents/a1/ws", headers=live.client.headers("a1"))
        assert (await old_desktop.receive_json(timeout=5))["type"] == "hello"
        assert await live.metric("cti_gateway_config_generation") == 0

        config = copy.deepcopy(live.config)
        config["agents"].append(
            {"id": "a3", "name": "A3", "profile": "three", "queues": ["support"], "token_sha256": sha(TOKENS["a3"])}
        )
        config["agents"][0]["token_sha256"] = sha("a1-rotated-token")
        live.rewrite(config)
        before = time.time()
        closing = asyncio.create_task(until_closed(old_desktop))  # reads (and answers) the close
        code, out, err = await live.reload()
        assert code == 0, err
        assert "generation 1" in out and "agents added: a3" in out and "tokens changed: a1" in out, out

        # the old token of a1 is refused now, its desktop was closed, the new one works
        assert await asyncio.wait_for(closing, 10) == 4001
        status, _ = await live.client.call("GET", "/v1/agents/a1", "a1")
        assert status == 401
        renewed = await http.ws_connect(
            f"{live.proc.base}/v1/agents/a1/ws", headers={"Authorization": "Bearer a1-rotated-token"}
        )
        assert (await renewed.receive_json(timeout=5))["type"] == "hello"

        # the new agent: offline until its desktop connects, then ready and offered work
        status, agent = await live.agent("a3")
        assert status == 200 and agent["presence"]["state"] == "offline"
        desktop = await http.ws_connect(f"{live.proc.base}/v1/agents/a3/ws", headers=live.client.headers("a3"))
        hello = await desktop.receive_json(timeout=5)
        assert hello["type"] == "hello" and hello["agent"]["profile"] == "three"
        await desktop.send_json({"type": "presence", "state": "ready", "ref": 1})
        while (message := await desktop.receive_json(timeout=5))["type"] != "ack":
            pass
        status, answer = await live.offer(agent="a3")
        assert status == 200 and answer["decision"] == "assigned", answer
        while (message := await desktop.receive_json(timeout=5))["type"] != "session.offered":
            pass
        assert message["session"]["id"] == answer["session_id"]

        # the supervisor stream, the log and /metrics tell the reload
        while (event := await stream.receive_json(timeout=5))["type"] != "config.reloaded":
            pass
        assert event["generation"] == 1 and event["changes"]["agents_added"] == ["a3"]
        StreamConfigReloaded.model_validate(event)  # the model /openapi.json describes it with
        [logged] = live.proc.log_events("config_reloaded")
        assert logged["changes"]["agents_added"] == ["a3"]
        assert await live.metric("cti_gateway_config_generation") == 1
        assert before - 1 <= await live.metric("cti_gateway_config_reloaded_timestamp_seconds") <= time.time() + 1
        for ws in (stream, desktop, renewed):
            await ws.close()


async def test_raising_and_lowering_max_sessions_under_load_with_sighup(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        status, first = await live.offer(agent="a1")
        assert status == 200
        status, refused = await live.offer(agent="a1")
        assert (status, refused["reason"]) == (409, "agent_at_capacity")

        # raise: a1 moves to the profile of three sessions (SIGHUP this time)
        raised = copy.deepcopy(live.config)
        raised["agents"][0]["profile"] = "three"
        live.rewrite(raised)
        assert live.proc.proc is not None
        live.proc.proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if live.proc.log_events("config_reloaded"):
                break
            await asyncio.sleep(0.05)
        status, agent = await live.agent("a1")
        assert agent["profile"] == "three"
        held = [first["session_id"]]
        for _ in range(2):
            status, answer = await live.offer(agent="a1")
            assert (status, answer["decision"]) == (200, "assigned"), answer
            held.append(answer["session_id"])

        # lower below what it holds: nothing is cut, new offers refused until it drains
        lowered = copy.deepcopy(raised)
        lowered["capacity_profiles"]["three"]["max_sessions"] = 1
        live.rewrite(lowered)
        code, out, err = await live.reload()
        assert code == 0, err
        status, agent = await live.agent("a1")
        assert [s["id"] for s in agent["sessions"]] == held and agent["in_use"]["sessions"] == 3
        for open_session in held[:2]:
            status, answer = await live.offer(agent="a1")
            assert (status, answer["reason"]) == (409, "agent_at_capacity")
            interaction = (await live.client.ok("GET", f"/v1/sessions/{open_session}", "supervisor"))["interaction_id"]
            await live.end(interaction)
        status, answer = await live.offer(agent="a1")
        assert (status, answer["reason"]) == (409, "agent_at_capacity")  # one held, cap 1
        last = (await live.client.ok("GET", f"/v1/sessions/{held[2]}", "supervisor"))["interaction_id"]
        await live.end(last)
        status, answer = await live.offer(agent="a1")
        assert (status, answer["decision"]) == (200, "assigned"), answer


async def test_a_rotated_webhook_secret_with_a_request_in_flight(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        # a request signed with the old secret whose body is still arriving during the reload
        body = json.dumps(
            {"event_id": "slow", "type": "offer", "channel": "chat", "interaction_id": "slow", "queue": "support"}
        ).encode()
        headers = signed_headers(SECRET, int(time.time()), body)
        reader, writer = await asyncio.open_connection("127.0.0.1", live.proc.port)
        head = (
            f"POST /v1/vendors/{VENDOR}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body[:10])
        await writer.drain()
        await asyncio.sleep(0.3)

        rotated = copy.deepcopy(live.config)
        rotated["vendors"][0]["secret"] = NEW_SECRET
        live.rewrite(rotated)
        reload = asyncio.create_task(live.reload())
        for _ in range(400):  # the vendor's restart waits for the request inside it
            if live.proc.log_events("vendor_draining"):
                break
            await asyncio.sleep(0.05)
        [draining] = live.proc.log_events("vendor_draining")
        assert draining["requests"] == 1
        await asyncio.sleep(0.2)
        assert not reload.done()
        writer.write(body[10:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert b" 200 " in status_line, answer  # answered by the adapter it arrived at
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["decision"] == "assigned"
        code, out, err = await reload
        assert code == 0, err
        assert "vendors changed: crm" in out

        status, answer = await live.offer(queue="support")
        assert (status, answer["error"]["code"]) == (401, "bad_signature")
        status, answer = await live.offer(queue="support", secret=NEW_SECRET)
        assert (status, answer["decision"]) == (200, "assigned"), answer
        [restarted] = live.proc.log_events("vendor_restarted")
        assert restarted["vendor"] == VENDOR


async def test_vendors_added_and_removed_while_the_others_stay_untouched(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        added = copy.deepcopy(live.config)
        added["vendors"].append({"name": "crm2", "adapter": "webhook", "secret": NEW_SECRET})
        live.rewrite(added)
        code, out, err = await live.reload()
        assert code == 0 and "vendors added: crm2" in out, (out, err)
        live.n += 1
        body = {"event_id": "v2", "type": "offer", "channel": "chat", "interaction_id": "v2", "queue": "support"}
        raw = json.dumps(body).encode()
        status, answer = await live.client.post_raw(
            raw, signed_headers(NEW_SECRET, int(time.time()), raw), vendor="crm2"
        )
        assert (status, answer["decision"]) == (200, "assigned"), answer
        ready = await live.client.ok("GET", "/readyz")
        assert set(ready["adapters"]) == {VENDOR, "crm2"}

        removed = copy.deepcopy(added)
        removed["vendors"] = [v for v in removed["vendors"] if v["name"] != VENDOR]
        live.rewrite(removed)
        code, out, err = await live.reload()
        assert code == 0 and "vendors removed: crm" in out, (out, err)
        status, answer = await live.offer(queue="support")
        assert (status, answer["error"]["code"]) == (404, "unknown_vendor")
        assert not live.proc.log_events("vendor_restarted")  # crm2 was not touched by either reload
        body["event_id"] = body["interaction_id"] = "v3"
        raw = json.dumps(body).encode()
        status, answer = await live.client.post_raw(
            raw, signed_headers(NEW_SECRET, int(time.time()), raw), vendor="crm2"
        )
        assert status == 200, answer
        assert set((await live.client.ok("GET", "/readyz"))["adapters"]) == {"crm2"}


async def test_a_broken_file_changes_nothing_and_exits_2_with_the_errors(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        good = copy.deepcopy(live.config)
        broken = copy.deepcopy(live.config)
        broken["agents"].append({"id": "a3", "profile": "nope", "queues": ["support"]})
        broken["capacity_profiles"]["one"]["max_sessions"] = 0
        live.rewrite(broken)
        code, out, err = await live.reload()
        assert code == 2, (out, err)
        lines = err.splitlines()
        assert any(line.startswith(f"{live.path}:") and "capacity_profiles.one.max_sessions" in line for line in lines)
        assert any("agents.2.profile" in line and "unknown capacity profile 'nope'" in line for line in lines), err
        status, _ = await live.agent("a3")
        assert status == 404
        status, answer = await live.offer(agent="a1")
        assert (status, answer["decision"]) == (200, "assigned")
        assert await live.metric("cti_gateway_config_generation") == 0

        # SIGHUP with the same file: a log line, nothing changes
        assert live.proc.proc is not None
        live.proc.proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if live.proc.log_events("config_reload_failed"):
                break
            await asyncio.sleep(0.05)
        [failed] = live.proc.log_events("config_reload_failed")
        assert any("unknown capacity profile 'nope'" in p for p in failed["problems"])
        assert await live.metric("cti_gateway_config_generation") == 0

        # a file on a path the gateway does not run on is refused
        other = tmp_path / "other.yaml"
        write_config(other, good)
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "reload", "--config", str(other), "--url", live.proc.base,
            cwd=ROOT, env={**os.environ, "CTI_SUPERVISOR_TOKEN": TOKENS["supervisor"]},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err_bytes = await cli.communicate()
        assert cli.returncode == 1 and b"config_mismatch" in err_bytes, err_bytes


async def test_sigkill_right_after_a_reload_restarts_into_the_new_config(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live = await start(gateway_process, tmp_path, http)
        status, held = await live.offer(agent="a2")
        assert status == 200
        await live.client.ok("POST", f"/v1/sessions/{held['session_id']}/accept", "a2")
        changed = copy.deepcopy(live.config)
        changed["agents"] = [
            {"id": "a1", "name": "A1", "profile": "three", "queues": ["support"], "token_sha256": sha(TOKENS["a1"])},
            {"id": "a3", "name": "A3", "profile": "one", "queues": ["support"], "token_sha256": sha(TOKENS["a3"])},
        ]  # a2 removed while it holds a session
        live.rewrite(changed)
        code, out, err = await live.reload()
        assert code == 0, err
        assert "removed, finishing their sessions: a2" in out, out
        live.proc.kill()

    live.proc.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        live.http = http
        live.client = LiveClient(http, live.proc.base, tokens=TOKENS, vendor=VENDOR, secret=SECRET)
        status, a1 = await live.agent("a1")
        assert a1["profile"] == "three" and a1["presence"]["state"] == "ready"
        status, a3 = await live.agent("a3")
        assert status == 200 and a3["presence"]["state"] == "offline"
        status, a2 = await live.agent("a2")  # retiring: still there with its session
        assert status == 200 and [s["id"] for s in a2["sessions"]] == [held["session_id"]]
        assert await live.metric("cti_gateway_config_generation") == 1
        status, answer = await live.offer(agent="a2")
        assert (status, answer["reason"]) == (409, "unknown_agent")
        interaction = (await live.client.ok("GET", f"/v1/sessions/{held['session_id']}", "supervisor"))[
            "interaction_id"
        ]
        await live.end(interaction)
        status, _ = await live.agent("a2")
        assert status == 404  # gone with its last session
        record = await live.client.ok("GET", f"/v1/sessions/{held['session_id']}", "supervisor")
        assert record["state"] == "closed" and record["outcome"] == "completed"
