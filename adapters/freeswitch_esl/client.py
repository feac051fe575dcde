"""One inbound event-socket connection to FreeSWITCH: login, commands, events.

:class:`EslConnection` owns the socket for one session of the adapter's
:class:`~adapters.connection.Link`:

* a reader task turns the byte stream into messages (:mod:`.framing`); events go to a
  bounded queue that :meth:`EslConnection.events` yields from; a malformed piece is logged
  (``esl_malformed``) and skipped, never fatal;
* FreeSWITCH answers the commands of one connection in order, each with exactly one
  ``command/reply`` or ``api/response``: :meth:`EslConnection.command` and
  :meth:`EslConnection.api` write the command and wait for the next answer in line, with a
  timeout. A command that gets no answer in time leaves the stream out of step, so the
  connection is closed (:class:`EslTimeout`) and the link reconnects;
* :meth:`EslConnection.login` waits for ``auth/request``, sends ``auth <password>`` and
  raises :class:`AuthFailed` on ``-ERR`` (FreeSWITCH closes the socket then) or on a
  ``text/rude-rejection`` (the client's address is not allowed by the socket's ACL);
* :attr:`EslConnection.last_rx` is when bytes last arrived (the adapter's stall detection).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator

import structlog

from .framing import (
    API_RESPONSE,
    AUTH_REQUEST,
    COMMAND_REPLY,
    DISCONNECT_NOTICE,
    EVENT_JSON,
    EVENT_PLAIN,
    RUDE_REJECTION,
    Event,
    EventError,
    Malformed,
    Message,
    Parser,
    command,
    parse_event,
)

log = structlog.get_logger(__name__)


class EslError(Exception):
    """The connection cannot go on (the link reconnects)."""


class AuthFailed(EslError):
    """FreeSWITCH refused the password (or the client's address)."""


class EslTimeout(EslError):
    """No answer in time: the connection is closed."""


class EslClosed(EslError):
    """The connection is closed."""


class EslConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        vendor: str,
        command_timeout_s: float = 5.0,
        max_queued_events: int = 10_000,
    ) -> None:
        self.vendor = vendor
        self._reader = reader
        self._writer = writer
        self.command_timeout_s = command_timeout_s
        self._parser = Parser()
        self._pending: collections.deque[asyncio.Future[Message]] = collections.deque()
        self._write_lock = asyncio.Lock()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=max_queued_events)
        self._auth_request = asyncio.Event()
        self._rude: str | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.last_rx = time.monotonic()
        #: malformed pieces skipped on this connection
        self.malformed = 0
        self._task = asyncio.create_task(self._read_loop(), name=f"esl-reader-{vendor}")

    # ---------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        reason = "closed by FreeSWITCH"
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    break
                self.last_rx = time.monotonic()
                for item in self._parser.feed(chunk):
                    self._dispatch(item)
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except (ConnectionError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except EslError as exc:
            reason = str(exc)
        except Exception as exc:  # a bug in dispatching must end this connection, visibly
            log.exception("esl_reader_failed", vendor=self.vendor)
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._shut(reason)

    def _dispatch(self, item: Message | Malformed) -> None:
        if isinstance(item, Malformed):
            self.malformed += 1
            log.warning("esl_malformed", vendor=self.vendor, reason=item.reason, sample=item.sample[:64])
            return
        kind = item.content_type
        if kind in (EVENT_PLAIN, EVENT_JSON):
            try:
                event = parse_event(item)
            except EventError as exc:
                self.malformed += 1
                log.warning("esl_malformed", vendor=self.vendor, reason=f"event: {exc}", sample=item.body[:64])
                return
            try:
                self._events.put_nowait(event)
            except asyncio.QueueFull:
                raise EslError(f"more than {self._events.maxsize} events wait to be handled") from None
        elif kind in (COMMAND_REPLY, API_RESPONSE):
            future = self._pending.popleft() if self._pending else None
            if future is None:
                log.warning("esl_unexpected_reply", vendor=self.vendor, content_type=kind, reply=item.reply_text)
            elif not future.done():
                future.set_result(item)
        elif kind == AUTH_REQUEST:
            self._auth_request.set()
        elif kind == DISCONNECT_NOTICE:
            disposition = item.headers.get("Content-Disposition", "")
            log.info("esl_disconnect_notice", vendor=self.vendor, disposition=disposition or None)
        elif kind == RUDE_REJECTION:
            self._rude = item.body.decode("utf-8", "replace").strip() or "rude rejection"
            raise AuthFailed(f"FreeSWITCH rejected the connection: {self._rude}")
        else:
            log.info("esl_ignored", vendor=self.vendor, content_type=kind or None)

    def shut(self, reason: str) -> None:
        """Close the connection now (pending commands fail, the event stream ends)."""
        self._shut(reason)

    def _shut(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(EslClosed(reason))
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)
        self._writer.transport.abort()

    async def close(self) -> None:
        self._shut("closed")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    # ---------------------------------------------------------------- commands

    async def command(self, line: str, *args: str, timeout: float | None = None) -> Message:
        """Send one command; its answer (``command/reply`` or ``api/response``)."""
        raw = command(line, *args)
        if self.closed.is_set():
            raise EslClosed(self.close_reason)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        async with self._write_lock:
            self._pending.append(future)
            self._writer.write(raw)
        wait = self.command_timeout_s if timeout is None else timeout
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # arrives together with the answer, leaving a task that ignores its stop
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            what = raw.decode(errors="replace").strip().split(" ")[0:2]
            self._shut(f"no answer to {' '.join(what)!r} within {wait} s")
            raise EslTimeout(f"no answer to {' '.join(what)!r} within {wait} s") from None

    async def api(self, *args: str, timeout: float | None = None) -> str:
        """``api <args>``: the command's output (FreeSWITCH's ``+OK`` / ``-ERR`` text included)."""
        message = await self.command("api", *args, timeout=timeout)
        return message.body.decode("utf-8", errors="replace")

    async def login(self, password: str, timeout: float) -> None:
        """Wait for ``auth/request`` and authenticate."""
        try:
            async with asyncio.timeout(timeout):
                waiter = asyncio.create_task(self._auth_request.wait())
                closed = asyncio.create_task(self.closed.wait())
                try:
                    await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    closed.cancel()
        except TimeoutError:
            raise EslTimeout(f"no auth/request within {timeout} s (is this an event socket?)") from None
        if not self._auth_request.is_set():
            raise AuthFailed(self.close_reason) if self._rude else EslClosed(self.close_reason)
        try:
            reply = await self.command("auth", password, timeout=timeout)
        except EslClosed:
            raise AuthFailed(f"FreeSWITCH closed the connection after auth ({self.close_reason})") from None
        if not reply.reply_text.startswith("+OK"):
            raise AuthFailed(f"authentication refused: {reply.reply_text or 'no Reply-Text'}")

    # ---------------------------------------------------------------- events

    async def events(self) -> AsyncIterator[Event]:
        """The events received, in order, until the connection closes."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event
