"""A vendor connection that stays up: reconnects with exponential backoff and jitter.

Connection-based adapters (Asterisk AMI, FreeSWITCH ESL, Kamailio evapi, chat WebSocket,
IMAP) own one :class:`Link`. They give it one coroutine function, ``session``, that
connects, logs in, calls :meth:`Link.up` once the vendor has accepted it (and after any
resynchronisation), then serves the connection until it ends. Whatever ends a session (a
refused connection, a reset, a stall the session detected, garbage on the wire, the peer
closing) makes the link wait and try again:

* the wait doubles from ``initial_s`` up to ``max_s``, each one jittered by ``±jitter``
  (so a fleet of gateways does not reconnect in lock-step after a vendor restart), and
  starts again from ``initial_s`` once a session reached :meth:`Link.up`;
* the outage is logged once (a warning with the first error) and the recovery once (the
  runtime logs ``vendor_up`` / ``vendor_down`` from the adapter's health); the retries in
  between log at debug level;
* the adapter's health is ``down`` from the first failure until the next :meth:`Link.up`,
  which is what ``/readyz`` and ``/metrics`` show.

Sessions never see :class:`asyncio.CancelledError` swallowed: :meth:`Link.stop` cancels the
task and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import structlog

from .base import Adapter, Health

log = structlog.get_logger("cti_gateway.adapters.link")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``initial_s * factor**n`` capped at ``max_s``, each ``±jitter``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delays(self, rng: random.Random) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay * (1.0 + rng.uniform(-self.jitter, self.jitter))
            delay = min(self.max_s, delay * self.factor)


Session = Callable[["Link"], Awaitable[None]]


class Link:
    """Keeps one vendor connection alive for ``adapter`` (see the module docstring)."""

    def __init__(
        self,
        adapter: Adapter,
        session: Session,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        describe: str = "",
    ) -> None:
        self.adapter = adapter
        self._session = session
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._describe = describe
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._is_up = False
        self._outage_logged = False
        #: sessions that reached :meth:`up` (1 after the first connect; more after reconnects)
        self.connects = 0
        #: attempts that ended in an error or a close
        self.failures = 0

    @property
    def is_up(self) -> bool:
        return self._is_up

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"link-{self.adapter.vendor}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            # cancel until it is done: a session may swallow one cancellation (asyncio.wait_for
            # in Python 3.11 does when its inner future completes at the same moment)
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        if self._is_up:
            self._is_up = False
            self.adapter._set_health(Health.DOWN, "stopped")

    def up(self, detail: str | None = None) -> None:
        """The session is connected and logged in: health up, backoff reset, recovery logged."""
        if not self._is_up:
            self._is_up = True
            self.connects += 1
            self._outage_logged = False
            self.adapter._set_health(Health.UP, detail or self._describe or None)

    def _down(self, error: str) -> None:
        self.failures += 1
        was_up, self._is_up = self._is_up, False
        if was_up or not self._outage_logged:
            self._outage_logged = True
            log.warning("vendor_link_lost", vendor=self.adapter.vendor, error=error, target=self._describe or None)
        else:
            log.debug("vendor_link_retry_failed", vendor=self.adapter.vendor, error=error)
        self.adapter._set_health(Health.DOWN, error)

    async def _run(self) -> None:
        delays = self.backoff.delays(self._rng)
        while not self._stopping:
            try:
                await self._session(self)
                error = "connection closed by the vendor"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of one session: reconnect, never die
                if self._stopping:  # a session that turned stop()'s cancellation into an error
                    raise asyncio.CancelledError from exc
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._is_up:
                delays = self.backoff.delays(self._rng)  # it was up: start the backoff again
            self._down(error)
            await asyncio.sleep(next(delays))
