"""Live reload on a shared store: real ``cti-gateway run`` processes on one real
redis-server (append-only) and one real PostgreSQL.

A reload on one instance (``cti-gateway reload`` or ``POST /v1/admin/reload``) is one entry
in the shared log: every instance applies it at the same position and then reconciles its
own edges (tokens, desktops, adapters). What the tests check: an agent and a queue added
through instance A take work through instance B; an agent removed with an open session
retires on every instance (its desktop on B closed with 4001, new work refused
``unknown_agent``, gone with its last session), as in the embedded gateway; a broken file
is refused with its ``file:line`` errors and nothing changes on any instance; an instance
whose file is older than the configuration in force says so and cannot restart on it;
concurrent reloads on two instances end the same everywhere.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers.redis import RedisServer

from .conftest import GatewayFactory
from .live import ROOT, GatewayProcess, LiveClient, sha, write_config
from .test_cluster import AGENTS, SECRET, SUPERVISOR, cluster_config, offer, start_cluster

pytestmark = [pytest.mark.asyncio]

TOKENS = {"sup": SUPERVISOR, **{a: f"tok-{a}" for a in (*AGENTS, "a9")}}
NEW_SECRET = "cluster-webhook-secret-rotated-0002"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def client(http: aiohttp.ClientSession, proc: GatewayProcess) -> LiveClient:
    return LiveClient(http, proc.base, tokens=TOKENS, vendor="crm", secret=SECRET)


def rewrite(proc: GatewayProcess, config: dict[str, Any]) -> Path:
    """Write ``config`` into the instance's own file (keeping its own address)."""
    path = Path(proc.args[proc.args.index("--config") + 1])
    body = copy.deepcopy(config)
    body["server"] = {**body["server"], "host": "127.0.0.1", "port": proc.port}
    return write_config(path, body)


async def reload_cli(proc: GatewayProcess) -> tuple[int, str, str]:
    """``cti-gateway reload --config <the instance's file>``: (exit status, stdout, stderr)."""
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "reload",
        "--config",
        proc.args[proc.args.index("--config") + 1],
        cwd=ROOT,
        env={**os.environ, "CTI_SUPERVISOR_TOKEN": SUPERVISOR},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode is not None
    return cli.returncode, out.decode(), err.decode()


async def reload_http(http: aiohttp.ClientSession, proc: GatewayProcess) -> tuple[int, Any]:
    async with http.post(
        f"{proc.base}/v1/admin/reload", headers={"Authorization": f"Bearer {SUPERVISOR}"}, json={}
    ) as response:
        return response.status, await response.json()


async def readyz(http: aiohttp.ClientSession, proc: GatewayProcess) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{proc.base}/readyz") as response:
        body = await response.json()
        return response.status, body if response.status == 200 else body["error"]["checks"]


async def metric(http: aiohttp.ClientSession, proc: GatewayProcess, name: str) -> float:
    async with http.get(proc.base + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def eventually(check: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll ``check()`` (async, truthy when done) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never: {what} (last: {result!r})"
        await asyncio.sleep(0.05)


def with_agent_and_queue(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` plus the queue ``vip`` and the agent ``a9`` in it, and the vendor's secret rotated."""
    new = copy.deepcopy(config)
    new["vendors"][0]["secret"] = NEW_SECRET
    new["queues"].append({"name": "vip"})
    new["agents"].append(
        {"id": "a9", "name": "A9", "profile": "std", "queues": ["vip"], "token_sha256": sha(TOKENS["a9"])}
    )
    return new


async def test_a_reload_on_one_instance_adds_an_agent_and_a_queue_that_another_instance_routes_to(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    base = cluster_config(redis_server.url, postgres_url)
    a, b = start_cluster(gateway_process, base, 2)
    new = with_agent_and_queue(base)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        on_a, on_b = client(http, a), client(http, b)
        rewrite(a, new)
        code, out, err = await reload_cli(a)
        assert code == 0, err
        assert "generation 1" in out and "agents added: a9" in out and "queues added: vip" in out, out

        # B applied the same entry: a9's token works there, a9 goes ready, and an offer to the
        # new queue sent through B is routed to a9
        async def a9_ready_on_b() -> bool:
            status, _ = await on_b.call("PUT", "/v1/agents/a9/presence", "a9", json_body={"state": "ready"})
            return status == 200

        await eventually(a9_ready_on_b, "a9's token accepted by B")

        # B restarted its vendor's adapter with the rotated secret: the old one is refused there
        async def restarted_on_b() -> list[dict[str, Any]]:
            return b.log_events("vendor_restarted")

        [restarted] = await eventually(restarted_on_b, "B restarted the vendor's adapter")
        assert restarted["vendor"] == "crm"
        event = {**offer("vip-1", "a9", "chat"), "queue": "vip"}
        del event["agent_id"]
        status, refused = await on_b.webhook(event)
        assert status == 401, refused
        status, answer = await on_b.webhook(event, secret=NEW_SECRET)
        assert status == 200 and answer["decision"] == "assigned" and answer["agent_id"] == "a9", answer

        # (A applies the offer B appended on its own time: the same view once it has)
        async def same_on_both() -> bool:
            return bool(await on_a.ok("GET", "/v1/agents/a9", "sup") == await on_b.ok("GET", "/v1/agents/a9", "sup"))

        await eventually(same_on_both, "A shows a9 as B does")
        for proc in (a, b):
            assert await metric(http, proc, "cti_gateway_config_generation") == 1
        [reloaded] = b.log_events("config_reloaded")  # B reconciled its own edges
        assert reloaded["changes"]["agents_added"] == ["a9"]

        # B's file is older than the configuration in force: it says so, once, and serves the log's
        status, checks = await readyz(http, b)
        assert status == 200 and "this instance's file" in checks["config"], checks
        assert "differs from the configuration in force in the shared log (generation 1" in checks["config"]
        assert len(b.log_events("config_file_differs")) == 1
        status, checks = await readyz(http, a)
        assert status == 200 and "config" not in checks, checks

    # restarted on its older file, B refuses to start, in one line
    assert b.terminate() == 0
    b.start(wait=False)
    assert b.wait_exit(60) != 0
    stderr = b.stderr()
    assert "Traceback" not in stderr
    [line] = [x for x in stderr.splitlines() if "the shared log runs another configuration" in x]
    assert ", in force since reload 1; this instance " in line, line
    assert "start it on the file in force (the one last reloaded)" in line
    # on the file in force it starts, and holds a9's session
    rewrite(b, new)
    b.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        view = await client(http, b).ok("GET", "/v1/agents/a9", "sup")
        assert [s["id"] for s in view["sessions"]] == [answer["session_id"]]
        status, checks = await readyz(http, b)
        assert status == 200 and "config" not in checks, checks


async def test_a_reload_removing_an_agent_with_an_open_session_retires_it_on_every_instance(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    base = cluster_config(redis_server.url, postgres_url)
    a, b = start_cluster(gateway_process, base, 2)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        on_a, on_b = client(http, a), client(http, b)
        await on_b.ok("PUT", "/v1/agents/a2/presence", "a2", json_body={"state": "ready"})
        desktop = await http.ws_connect(f"{b.base}/v1/agents/a2/ws", headers=on_b.headers("a2"))
        assert (await desktop.receive_json(timeout=5))["type"] == "hello"
        status, held = await on_a.webhook(offer("held", "a2", "chat"))
        assert status == 200 and held["decision"] == "assigned", held
        await on_b.ok("POST", f"/v1/sessions/{held['session_id']}/accept", "a2")

        removed = copy.deepcopy(base)
        removed["agents"] = [x for x in removed["agents"] if x["id"] != "a2"]
        rewrite(a, removed)
        status, body = await reload_http(http, a)
        assert status == 200, body
        assert body["changes"]["agents_removed"] == ["a2"] and body["agents_retiring"] == ["a2"], body

        # its desktop (held by B) is closed 4001; its session goes on; new work is refused
        while (message := await desktop.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            assert message.type == aiohttp.WSMsgType.TEXT, message
        # B closed it because of the reload (4001; seen once as 1006 on a loaded machine,
        # the close frame lost: the server's log line is what proves who closed it and why)
        [closed] = [x for x in b.log_events("desktop_closed") if x["agent_id"] == "a2"]
        assert closed["reason"] == "token_changed", closed
        assert desktop.close_code in (4001, 1006), desktop.close_code
        for c in (on_a, on_b):
            view = await c.ok("GET", "/v1/agents/a2", "sup")
            assert [s["id"] for s in view["sessions"]] == [held["session_id"]]
            assert view["sessions"][0]["state"] == "active"
        status, answer = await on_b.webhook(offer("after", "a2", "chat"))
        assert (status, answer["reason"]) == (409, "unknown_agent"), answer

        # the session ends normally (through B); a2 leaves both instances with it
        await on_b.ok("POST", f"/v1/sessions/{held['session_id']}/end", "sup")
        for c in (on_a, on_b):

            async def gone(c: LiveClient = c) -> bool:
                status, _ = await c.call("GET", "/v1/agents/a2", "sup")
                return status == 404

            await eventually(gone, f"a2 gone on {c.base}")
        record = await on_a.ok("GET", f"/v1/sessions/{held['session_id']}", "sup")
        assert record["state"] in ("closed", "wrap_up"), record


async def test_a_broken_file_is_refused_with_its_line_and_nothing_changes_on_any_instance(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    base = cluster_config(redis_server.url, postgres_url)
    a, b = start_cluster(gateway_process, base, 2)
    path = rewrite(a, base)
    broken = path.read_text().replace("profile: std", "profile: gold", 1)
    path.write_text(broken)
    line = next(n for n, text in enumerate(broken.splitlines(), start=1) if "profile: gold" in text)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        code, out, err = await reload_cli(a)
        assert code == 2, (out, err)
        assert re.search(rf"^{re.escape(str(path))}:{line}:.*gold", err, re.M), err
        assert "Traceback" not in err
        status, body = await reload_http(http, b)  # B's file is fine and unchanged: nothing to do
        assert status == 200 and body["changes"] == {} and body["generation"] == 1, body

        async def applied_on_a() -> bool:  # (A applies B's entry on its own time)
            return await metric(http, a, "cti_gateway_config_generation") == 1

        await eventually(applied_on_a, "A applied B's reload")
        # only B's (empty) reload is in the log: A's broken file changed nothing anywhere
        for proc in (a, b):
            assert await metric(http, proc, "cti_gateway_config_generation") == 1
            status, checks = await readyz(http, proc)
            assert status == 200 and checks["config_in_force"]["generation"] == 1, checks
            view = await client(http, proc).ok("GET", "/v1/agents/a1", "sup")
            assert view["profile"] == "std"
        status, answer = await client(http, b).webhook(offer("still", "a1", "chat"))
        assert status in (200, 409) and answer["decision"] in ("assigned", "rejected"), answer
        assert a.log_events("config_reloaded")[0]["changes"] == {}


async def test_concurrent_reloads_on_two_instances_end_the_same_on_both(
    gateway_process: GatewayFactory, redis_server: RedisServer, postgres_url: str
) -> None:
    """Two instances reload different files at the same moment: the log orders them. Each is
    either applied (in that order) or refused ``reload_conflict`` (made on a configuration
    another reload replaced first: nothing of it applied); both instances end identical."""
    base = cluster_config(redis_server.url, postgres_url)
    a, b = start_cluster(gateway_process, base, 2)
    files = {}
    for proc, extra in ((a, "x1"), (b, "x2")):
        new = copy.deepcopy(base)
        new["agents"].append({"id": extra, "name": extra, "profile": "std", "queues": ["support"]})
        rewrite(proc, new)
        files[proc.port] = extra
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        answers = await asyncio.gather(reload_http(http, a), reload_http(http, b))
        applied = [files[p.port] for p, (status, _) in zip((a, b), answers, strict=True) if status == 200]
        refused = [(p, body) for p, (status, body) in zip((a, b), answers, strict=True) if status != 200]
        for _proc, body in refused:
            assert body["error"]["code"] == "reload_conflict", body
            assert "another reload was applied first" in body["error"]["message"]
        assert applied and len(applied) + len(refused) == 2, answers
        generations = sorted(body["generation"] for status, body in answers if status == 200)
        assert generations == list(range(1, len(applied) + 1))

        async def same_agents() -> Any:
            views = [await client(http, p).ok("GET", "/v1/agents", "sup") for p in (a, b)]
            ids = [sorted(x["id"] for x in view["agents"]) for view in views]
            return ids[0] if ids[0] == ids[1] else None

        final = await eventually(same_agents, "both instances hold the same agents")
        last = max(
            ((status, body, files[p.port]) for p, (status, body) in zip((a, b), answers, strict=True)),
            key=lambda x: x[1].get("generation", 0) if x[0] == 200 else 0,
        )[2]
        assert last in final and [x for x in ("x1", "x2") if x in final] == [last], (final, answers)
        for proc in (a, b):
            assert await metric(http, proc, "cti_gateway_config_generation") == len(applied)
