"""The agent desktops of ``cti-gateway bench``: a separate process holding many WebSockets.

``python -m gateway.bench.desktops SPEC_PATH OUT_PATH``. Each agent of the spec connects to
``/v1/agents/{id}/ws`` with its token and waits for ``hello``. In ``mode: "work"`` it goes
``ready``, accepts every ``session.offered`` at once and ends the session as soon as the
accept is acknowledged (so capacity comes back); it records when each offer arrived
(``time.monotonic()``, comparable with the load generator's schedule) and when each of its
own actions was acknowledged. In ``mode: "idle"`` it only holds the socket (P4).

When every desktop is connected (and, working, ready) it prints ``ready N`` on stdout;
SIGTERM (or ``duration`` seconds) ends it: the sockets are closed and the result is written
as JSON to OUT_PATH (offers received per interaction id, duplicates, acks, errors).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Desktops:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.base: str = spec["url"].replace("http://", "ws://", 1)
        self.work = spec["mode"] == "work"
        self.offered: dict[str, float] = {}  # interaction_id -> first arrival
        self.offer_agents: dict[str, str] = {}
        self.duplicates: Counter[str] = Counter()
        self.ack_times: list[float] = []
        self.errors: Counter[str] = Counter()
        self.connected = 0
        self.stop = asyncio.Event()

    async def agent(self, session: aiohttp.ClientSession, agent_id: str, token: str, ready: asyncio.Event) -> None:
        url = f"{self.base}/v1/agents/{agent_id}/ws"
        headers = {"Authorization": f"Bearer {token}"}
        for attempt in range(20):
            try:
                ws = await session.ws_connect(url, headers=headers, heartbeat=None, max_msg_size=1 << 20)
                break
            except (aiohttp.ClientError, OSError) as exc:
                if attempt == 19:
                    self.errors[f"connect {type(exc).__name__}"] += 1
                    ready.set()
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
        refs = 0
        pending: dict[str, tuple[str, str]] = {}  # ref -> (action, session_id)
        try:
            hello = await ws.receive_json(timeout=60)
            if hello.get("type") != "hello":
                self.errors["no hello"] += 1
            if self.work:
                refs += 1
                await ws.send_str(json.dumps({"type": "presence", "state": "ready", "ref": f"p{refs}"}))
                pending[f"p{refs}"] = ("presence", "")
            else:
                self.connected += 1
                ready.set()
            stop_wait = asyncio.ensure_future(self.stop.wait())
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                msg = receive.result()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        self.errors[f"frame {msg.type.name}"] += 1
                    else:
                        self.errors["closed by the gateway"] += 1
                    break
                data = json.loads(msg.data)
                kind = data.get("type")
                now = time.monotonic()
                if kind == "session.offered":
                    interaction = str(data["session"].get("interaction_id"))
                    if interaction in self.offered:
                        self.duplicates[interaction] += 1
                    else:
                        self.offered[interaction] = now
                        self.offer_agents[interaction] = agent_id
                    refs += 1
                    ref = f"a{refs}"
                    pending[ref] = ("accept", data["session"]["id"])
                    await ws.send_str(json.dumps({"type": "accept", "session_id": data["session"]["id"], "ref": ref}))
                elif kind == "ack":
                    action, session_id = pending.pop(str(data.get("ref")), ("?", ""))
                    self.ack_times.append(now)
                    if action == "presence":
                        self.connected += 1
                        ready.set()
                    elif action == "accept":
                        refs += 1
                        ref = f"e{refs}"
                        pending[ref] = ("end", session_id)
                        await ws.send_str(json.dumps({"type": "end", "session_id": session_id, "ref": ref}))
                elif kind == "error":
                    self.errors[f"error {data.get('code')}"] += 1
                    pending.pop(str(data.get("ref")), None)
            stop_wait.cancel()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            ready.set()
        finally:
            await ws.close()

    async def main(self) -> dict[str, Any]:
        agents: list[list[str]] = self.spec["agents"]
        connector = aiohttp.TCPConnector(limit=0)
        gate = asyncio.Semaphore(int(self.spec.get("connect_concurrency", 100)))
        async with aiohttp.ClientSession(connector=connector) as session:
            readies = [asyncio.Event() for _ in agents]

            async def start(i: int, agent_id: str, token: str) -> None:
                async with gate:
                    task = asyncio.create_task(self.agent(session, agent_id, token, readies[i]))
                    await readies[i].wait()
                await task

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self.stop.set)
            tasks = [asyncio.create_task(start(i, a, t)) for i, (a, t) in enumerate(agents)]
            await asyncio.gather(*(r.wait() for r in readies))
            print(f"ready {self.connected}", flush=True)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=float(self.spec.get("duration", 600)))
            except TimeoutError:
                self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "connected": self.connected,
            "offered": self.offered,
            "offer_agents": self.offer_agents,
            "duplicates": dict(self.duplicates),
            "ack_times": self.ack_times,
            "errors": dict(self.errors),
        }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    raise_fd_limit()
    with open(args[0], encoding="utf-8") as f:
        spec = json.load(f)
    result = asyncio.run(Desktops(spec).main())
    with open(args[1], "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
