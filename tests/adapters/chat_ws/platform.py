"""A chat platform for tests: a real ``websockets`` server the gateway connects to.

It checks the bearer token at the handshake (401 otherwise), answers ``sync`` with
``chat.list`` of the chats it holds open, acknowledges every gateway frame that has an
``id`` (unless ``auto_ack`` is off), and records every frame the gateway sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

TOKEN = "chat-platform-token-0123456789"

Frame = dict[str, Any]


class Platform:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.port = 0
        self.server: Server | None = None
        self.connection: ServerConnection | None = None
        #: every frame the gateway sent, in order, over all connections
        self.received: list[Frame] = []
        #: open chats, listed in chat.list: chat_id -> its chat.start fields
        self.chats: dict[str, Frame] = {}
        self.auto_ack = True
        self.answer_sync = True
        self.connections = 0
        self.refused_handshakes = 0
        self.headers: list[Headers] = []
        self._ids = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/chat"

    async def start(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", self.port, process_request=self._check)
        self.port = self.server.sockets[0].getsockname()[1] if self.port == 0 else self.port

    async def stop(self) -> None:
        """Close the listening socket and every connection (an outage)."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.connection = None

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.headers.append(request.headers)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused_handshakes += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.connections += 1
        try:
            async for raw in connection:
                frame = json.loads(raw)
                self.received.append(frame)
                if frame.get("type") == "sync" and self.answer_sync:
                    await connection.send(json.dumps({"type": "chat.list", "chats": list(self.chats.values())}))
                elif frame.get("id") and frame.get("type") not in ("ack", "error") and self.auto_ack:
                    await connection.send(json.dumps({"type": "ack", "id": frame["id"]}))
        except ConnectionClosed:
            pass

    def next_id(self) -> str:
        self._ids += 1
        return f"p-{self._ids}"

    async def send(self, frame: Frame | str | bytes) -> None:
        assert self.connection is not None, "the gateway is not connected"
        await self.connection.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def start_chat(self, chat_id: str, **fields: Any) -> str:
        frame_id = self.next_id()
        chat = {"chat_id": chat_id, **fields}
        self.chats[chat_id] = chat
        await self.send({"type": "chat.start", "id": frame_id, **chat})
        return frame_id

    async def message(self, chat_id: str, message_id: str, text: str) -> str:
        frame_id = self.next_id()
        await self.send(
            {"type": "chat.message", "id": frame_id, "chat_id": chat_id, "message_id": message_id, "text": text}
        )
        return frame_id

    async def end_chat(self, chat_id: str) -> str:
        frame_id = self.next_id()
        self.chats.pop(chat_id, None)
        await self.send({"type": "chat.end", "id": frame_id, "chat_id": chat_id})
        return frame_id

    def frames(self, **match: Any) -> list[Frame]:
        return [f for f in self.received if all(f.get(k) == v for k, v in match.items())]

    async def wait_for(self, timeout: float = 5.0, **match: Any) -> Frame:
        return (await self.wait_for_all(1, timeout, **match))[0]

    async def wait_for_all(self, count: int, timeout: float = 5.0, **match: Any) -> list[Frame]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.frames(**match)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} frame(s) like {match} within {timeout} s; got {self.received}")
            await asyncio.sleep(0.01)

    async def wait(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            await asyncio.sleep(0.01)
        return value
