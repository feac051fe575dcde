"""A scripted FreeSWITCH event socket for the adapter's tests (on :class:`ScriptedServer`).

It speaks the server side of ``mod_event_socket`` as PROTOCOLS.md section 2.1 describes:
greets with ``auth/request``, answers ``auth`` (``+OK accepted`` / ``-ERR invalid`` and a
close), ``event ...`` and every ``api ...`` in order (``api/response`` with a
Content-Length body), and plays mod_callcenter's ``CUSTOM callcenter::info`` events
(the headers ``mod_callcenter.c`` puts on each ``CC-Action``) and ``CHANNEL_HANGUP_COMPLETE``
as URL-encoded ``text/event-plain``, written in random pieces.

``live`` is the set of channel uuids ``show channels as json`` reports; ``members`` what
``callcenter_config queue list members`` reports (the member rows mod_callcenter keeps:
``Trying`` while an agent rings, ``Answered`` once bridged, ``Waiting`` after a failed ring,
gone when the caller leaves the queue), kept in step by the event helpers; ``statuses`` the
last ``callcenter_config agent set status`` per agent; ``api_log`` every api command.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import Any

from adapters.freeswitch_esl.framing import encode_event_plain

from ..scripted import Connection, ScriptedServer

CORE_UUID = "8694f653-55e0-42ed-98d8-4983e2b6d248"


MEMBER_COLUMNS = (
    "queue|instance_id|uuid|session_uuid|cid_number|cid_name|system_epoch|joined_epoch|rejoined_epoch"
    "|bridge_epoch|abandoned_epoch|base_score|skill_score|serving_agent|serving_system|state"
).split("|")


def api_response(text: str) -> bytes:
    body = text.encode()
    return f"Content-Type: api/response\nContent-Length: {len(body)}\n\n".encode() + body


def command_reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


class EslPeer:
    def __init__(self, password: str = "ClueCon", *, seed: int | None = None) -> None:
        self.password = password
        self.server = ScriptedServer(delimiter=b"\n\n", on_connect=self._greet, reply=self._reply, seed=seed)
        self.live: set[str] = set()
        self.queues = ["support@default"]
        #: caller uuid -> member row (queue, uuid, serving_agent, state, ...)
        self.members: dict[str, dict[str, str]] = {}
        self.statuses: dict[str, str] = {}
        self.status_log: list[tuple[str, str]] = []
        self.api_log: list[str] = []
        self.subscriptions: list[str] = []
        self.auth_attempts = 0
        #: answer nothing at all (a stalled switch)
        self.mute = False
        #: answer ``api status`` pings
        self.answer_status = True
        self._seq = itertools.count(1000)
        #: one writer at a time: a reply must not interleave with an event's pieces
        self._lock = asyncio.Lock()

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def send(self, data: bytes, *, conn: Connection | None = None, split: bool = True) -> None:
        async with self._lock:
            await self.server.send(data, conn=conn, split=split)

    async def _greet(self, server: ScriptedServer, conn: Connection) -> None:
        await self.send(b"Content-Type: auth/request\n\n", conn=conn)

    async def _reply(self, server: ScriptedServer, conn: Connection, message: bytes) -> None:
        if self.mute:
            return
        line = message.decode().strip()
        if line.startswith("auth "):
            self.auth_attempts += 1
            if line[5:] == self.password:
                await self.send(command_reply("+OK accepted"), conn=conn)
            else:
                await self.send(command_reply("-ERR invalid"), conn=conn)
                server._close(conn)
        elif line.startswith("event "):
            self.subscriptions.append(line)
            await self.send(command_reply("+OK event listener enabled plain"), conn=conn)
        elif line.startswith("api "):
            command = line[4:]
            self.api_log.append(command)
            if command == "status" and not self.answer_status:
                return
            await self.send(api_response(self._api(command)), conn=conn)
        else:
            await self.send(command_reply("-ERR command not found"), conn=conn)

    def _api(self, command: str) -> str:
        if command == "show channels as json":
            rows = [{"uuid": u, "direction": "inbound", "state": "CS_EXECUTE"} for u in sorted(self.live)]
            return json.dumps({"row_count": len(rows), "rows": rows} if rows else {"row_count": 0})
        if command.startswith("callcenter_config agent set status "):
            rest = command[len("callcenter_config agent set status ") :]
            agent, _, status = rest.partition(" ")
            status = status.strip("'")
            self.statuses[agent] = status
            self.status_log.append((agent, status))
            return "+OK\n"
        if command == "callcenter_config queue list":
            head = "name|strategy|moh_sound|time_base_score|tier_rules_apply|tier_rule_wait_second"
            rows = [f"{q}|longest-idle-agent|local_stream://moh|queue|false|300" for q in self.queues]
            return "\n".join([head, *rows, "+OK", ""])
        if command.startswith("callcenter_config queue list members "):
            queue = command.rsplit(" ", 1)[1]
            rows = [m for m in self.members.values() if m["queue"] == queue]
            lines = ["|".join(MEMBER_COLUMNS)] if rows else []
            lines += ["|".join(row.get(c, "") for c in MEMBER_COLUMNS) for row in rows]
            return "\n".join([*lines, "+OK", ""])
        if command == "status":
            return "UP 0 years, 0 days, 0 hours, 1 minute\nFreeSWITCH (Version 1.10.12) is ready\n"
        if command.startswith(("hupall ", "uuid_kill ", "uuid_transfer ")):
            return "+OK\n"
        return "-ERR no such command\n"

    # ---------------------------------------------------------------- observations

    def commands(self, prefix: str) -> list[str]:
        return [c for c in self.api_log if c.startswith(prefix)]

    async def wait_for(self, predicate: Any, timeout: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}; api_log={self.api_log}")
            await asyncio.sleep(0.01)

    async def wait_status(self, agent: str, status: str, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.statuses.get(agent) == status, timeout, f"{agent} {status}")

    # ---------------------------------------------------------------- events

    def headers(self, name: str, **extra: str) -> dict[str, str]:
        return {
            "Event-Name": name,
            "Core-UUID": CORE_UUID,
            "FreeSWITCH-Hostname": "fs-test",
            "Event-Date-Local": "2026-12-01 09:00:00",
            "Event-Date-Timestamp": str(int(time.time() * 1_000_000)),
            "Event-Sequence": str(next(self._seq)),
            **extra,
        }

    async def event(self, name: str, body: str = "", **extra: str) -> None:
        await self.send(encode_event_plain(self.headers(name, **extra), body))

    async def callcenter(self, action: str, member: str, agent: str | None, **extra: str) -> None:
        headers = {
            "Event-Subclass": "callcenter::info",
            "CC-Queue": extra.pop("queue", "support@default"),
            "CC-Action": action,
            "CC-Member-UUID": extra.pop("member_uuid", f"m-{member}"),
            "CC-Member-Session-UUID": member,
            "CC-Member-CID-Name": "Ada Caller",
            "CC-Member-CID-Number": "+4930123456",
        }
        if agent is not None:
            headers.update({"CC-Agent": agent, "CC-Agent-System": "single_box"})
        headers.update(extra)
        await self.event("CUSTOM", **headers)

    def member(self, member: str, state: str, agent: str = "") -> None:
        """Set what mod_callcenter's member table says of caller ``member``."""
        now = str(int(time.time()))
        self.members[member] = {
            "queue": "support@default",
            "instance_id": "single_box",
            "uuid": f"m-{member}",
            "session_uuid": member,
            "cid_number": "+4930123456",
            "cid_name": "Ada Caller",
            "system_epoch": now,
            "joined_epoch": now,
            "bridge_epoch": now if state == "Answered" else "0",
            "serving_agent": agent,
            "serving_system": "single_box" if agent else "",
            "state": state,
        }

    async def offering(self, member: str, agent: str) -> None:
        self.live.add(member)
        self.member(member, "Trying", agent)
        await self.callcenter("agent-offering", member, agent, **{"CC-Agent-Type": "callback"})

    async def answered(self, member: str, agent: str) -> str:
        self.member(member, "Answered", agent)
        leg = str(uuid.uuid4())
        now = str(int(time.time()))
        await self.callcenter(
            "bridge-agent-start",
            member,
            agent,
            **{"CC-Agent-UUID": leg, "CC-Agent-Called-Time": now, "CC-Agent-Answered-Time": now},
        )
        return leg

    async def failed(self, member: str, agent: str, cause: str = "NO_ANSWER") -> None:
        if member in self.members:
            self.member(member, "Waiting")
        await self.callcenter("bridge-agent-fail", member, agent, **{"CC-Hangup-Cause": cause})

    async def bridge_end(self, member: str, agent: str) -> None:
        await self.callcenter(
            "bridge-agent-end", member, agent, **{"CC-Hangup-Cause": "NORMAL_CLEARING", "CC-Agent-Bridged": "true"}
        )

    async def queue_end(self, member: str, cause: str = "Terminated", **extra: str) -> None:
        self.members.pop(member, None)
        await self.callcenter("member-queue-end", member, None, **{"CC-Cause": cause, **extra})

    async def hangup(self, member: str) -> None:
        self.live.discard(member)
        self.members.pop(member, None)
        await self.event("CHANNEL_HANGUP_COMPLETE", **{"Unique-ID": member, "Hangup-Cause": "NORMAL_CLEARING"})

    async def heartbeat(self) -> None:
        await self.event("HEARTBEAT", **{"Event-Info": "System Ready"})
