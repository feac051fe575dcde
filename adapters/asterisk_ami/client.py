"""An AMI client connection: banner, login (plain or MD5 challenge), actions correlated by
ActionID with timeouts, list actions (``EventList``), keep-alive ``Ping`` and stall
detection. One :class:`AmiConnection` per TCP connection; reconnecting is the caller's job
(:class:`adapters.connection.Link`).

Events that answer no action go, in order, to a bounded queue that the adapter drains
(:meth:`AmiConnection.events`); a full queue stops reading from the socket (TCP back
pressure) instead of dropping anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import structlog

from .framing import Banner, Framer, Malformed, Message, encode_action

__all__ = [
    "AmiConnection",
    "AmiError",
    "ActionFailed",
    "LoginFailed",
    "Stalled",
]

log = structlog.get_logger("cti_gateway.adapters.asterisk_ami")

#: events waiting for the adapter; beyond this the reader waits (back pressure)
EVENT_QUEUE_MAX = 10_000
#: list responses collected per action at most (a runaway list is cut, not buffered forever)
MAX_LIST_EVENTS = 100_000


class AmiError(Exception):
    """The AMI connection cannot go on (the link reconnects)."""


class LoginFailed(AmiError):
    """Asterisk refused the credentials."""


class Stalled(AmiError):
    """Nothing arrived for too long, not even the answer to a Ping."""


class ActionFailed(Exception):
    """One action was answered ``Response: Error`` (or not in time); the connection goes on."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message


@dataclass(slots=True)
class _Pending:
    action: str
    future: asyncio.Future[tuple[Message, list[Message]]]
    is_list: bool = False
    response: Message | None = None
    events: list[Message] = field(default_factory=list)


class AmiConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        vendor: str,
        action_timeout_s: float = 5.0,
    ) -> None:
        self.vendor = vendor
        self._reader = reader
        self._writer = writer
        self.action_timeout_s = action_timeout_s
        self._framer = Framer()
        self._prefix = f"gw-{uuid.uuid4().hex[:12]}-"
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._events: asyncio.Queue[Message | BaseException] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader_task: asyncio.Task[None] | None = None
        self.version: str | None = None
        #: monotonic time of the last byte received
        self.last_received = time.monotonic()
        self.malformed = 0
        self._closed: BaseException | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, host: str, port: int, *, vendor: str, connect_timeout_s: float, action_timeout_s: float
    ) -> AmiConnection:
        """Connect and read the banner; :class:`AmiError` if no banner comes in time."""
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer, vendor=vendor, action_timeout_s=action_timeout_s)
        conn._reader_task = asyncio.create_task(conn._read_loop(), name=f"ami-reader-{vendor}")
        try:
            async with asyncio.timeout(connect_timeout_s):
                conn.version = await asyncio.shield(conn._banner)
        except TimeoutError:
            await conn.close()
            raise AmiError(f"no 'Asterisk Call Manager' banner within {connect_timeout_s} s") from None
        except BaseException:
            await conn.close()
            raise
        return conn

    async def login(self, username: str, secret: str, *, md5: bool = True) -> None:
        """Log in (``Events: on``); MD5: ``Challenge`` first and send ``md5(challenge+secret)``.

        Raises :class:`LoginFailed` when Asterisk refuses, :class:`AmiError` otherwise."""
        headers: list[tuple[str, str]] = [("Username", username)]
        if md5:
            try:
                challenge = await self.action("Challenge", [("AuthType", "MD5")])
            except ActionFailed as exc:
                raise LoginFailed(f"MD5 challenge refused: {exc.message}") from None
            value = challenge.get("Challenge")
            if not value:
                raise AmiError("the Challenge response carries no Challenge")
            key = hashlib.md5((value + secret).encode("utf-8"), usedforsecurity=False).hexdigest()
            headers += [("AuthType", "MD5"), ("Key", key)]
        else:
            headers.append(("Secret", secret))
        headers.append(("Events", "call,agent"))
        try:
            await self.action("Login", headers)
        except ActionFailed as exc:
            raise LoginFailed(f"login as {username!r} refused: {exc.message}") from None

    # -- actions ---------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _send(self, name: str, headers: Iterable[tuple[str, str]], *, is_list: bool) -> _Pending:
        if self._closed is not None:
            raise AmiError(f"the connection is closed ({self._closed})")
        action_id = self._next_id()
        data = encode_action(name, action_id, headers)  # ValueError for CR/LF injection
        future: asyncio.Future[tuple[Message, list[Message]]] = asyncio.get_running_loop().create_future()
        pending = _Pending(name, future, is_list=is_list)
        self._pending[action_id] = pending
        self._writer.write(data)
        return pending

    async def action(
        self, name: str, headers: Iterable[tuple[str, str]] = (), *, timeout: float | None = None
    ) -> Message:
        """Send an action and return its response; :class:`ActionFailed` for ``Response:
        Error`` or no answer within ``timeout`` (default :attr:`action_timeout_s`)."""
        response, _ = await self._wait(self._send(name, headers, is_list=False), timeout)
        return response

    async def list_action(
        self, name: str, headers: Iterable[tuple[str, str]] = (), *, timeout: float | None = None
    ) -> tuple[Message, list[Message]]:
        """An action answered by a list: its response and the events carrying its ActionID,
        up to the one with ``EventList: Complete``."""
        return await self._wait(self._send(name, headers, is_list=True), timeout)

    async def _wait(self, pending: _Pending, timeout: float | None) -> tuple[Message, list[Message]]:
        action_id = next(k for k, v in self._pending.items() if v is pending)
        try:
            await self._writer.drain()
            async with asyncio.timeout(timeout or self.action_timeout_s):
                response, events = await pending.future
        except TimeoutError:
            raise ActionFailed(pending.action, f"no response within {timeout or self.action_timeout_s} s") from None
        finally:
            self._pending.pop(action_id, None)
        if (response.get("Response") or "").lower() == "error":
            raise ActionFailed(pending.action, response.get("Message") or "error")
        return response, events

    async def command(self, command: str, *, timeout: float | None = None) -> list[str]:
        """A CLI command's output lines (``Action: Command``), from either reply style:
        ``Output:`` headers (Asterisk 14+) or ``Response: Follows`` text (older)."""
        response = await self.action("Command", [("Command", command)], timeout=timeout)
        return list(response.output)

    async def ping(self, timeout: float) -> None:
        """``Ping``; :class:`Stalled` when no answer comes within ``timeout``."""
        try:
            await self.action("Ping", timeout=timeout)
        except ActionFailed as exc:
            if self._closed is not None:
                raise AmiError(str(self._closed)) from None
            raise Stalled(f"no answer to Ping within {timeout} s ({exc.message})") from None

    # -- events ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Message]:
        """Unsolicited events in order; ends by raising what ended the connection."""
        while True:
            item = await self._events.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        error: BaseException
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    error = AmiError("connection closed by Asterisk")
                    break
                self.last_received = time.monotonic()
                for item in self._framer.feed(chunk):
                    await self._dispatch(item)
        except asyncio.CancelledError:
            error = AmiError("connection closed")
            self._fail(error)
            raise
        except (ConnectionError, OSError) as exc:
            error = AmiError(f"{type(exc).__name__}: {exc}")
        self._fail(error)
        await self._events.put(error)

    async def _dispatch(self, item: Banner | Message | Malformed) -> None:
        if isinstance(item, Banner):
            if not self._banner.done():
                self._banner.set_result(item.version)
            return
        if isinstance(item, Malformed):
            self._skip(item.reason, item.excerpt)
            return
        kind = item.kind
        if kind == "unknown" or kind == "action":
            self._skip("a block that is neither a response nor an event", str(item.as_dict())[:120])
            return
        action_id = item.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        if not self._banner.done():
            self._banner.set_exception(AmiError("Asterisk sent a message before its banner"))
        if pending is None:
            if kind == "event":
                await self._events.put(item)
            else:
                log.debug("ami_unmatched_response", vendor=self.vendor, action_id=action_id)
            return
        if kind == "response":
            pending.response = item
            # a list's response (``EventList: start``, or none on Asterisk 11's Status) is
            # followed by its events: wait for the last one, unless the action was refused
            if not pending.is_list or (item.get("Response") or "").lower() == "error":
                self._resolve(pending)
            return
        # an event carrying our ActionID: part of a list answer
        if len(pending.events) < MAX_LIST_EVENTS:
            pending.events.append(item)
        # the list's last event: ``EventList: Complete`` (or ``cancelled``); Asterisk 11's
        # StatusComplete has no EventList header, only its name says it
        last = (item.get("EventList") or "").lower() in ("complete", "cancelled") or item.name.endswith("Complete")
        if last and pending.response is not None:
            self._resolve(pending)

    def _resolve(self, pending: _Pending) -> None:
        assert pending.response is not None
        if not pending.future.done():
            pending.future.set_result((pending.response, pending.events))

    def _skip(self, reason: str, excerpt: str) -> None:
        self.malformed += 1
        log.warning("ami_malformed_input_skipped", vendor=self.vendor, reason=reason, excerpt=excerpt)

    def _fail(self, error: BaseException) -> None:
        if self._closed is None:
            self._closed = error
        if not self._banner.done():
            self._banner.set_exception(AmiError(str(error)))
            self._banner.exception()  # retrieved: no "never retrieved" warning
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(AmiError(str(error)))
                pending.future.exception()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail(AmiError("connection closed"))
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
