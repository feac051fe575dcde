"""The runtime: the engine made safe to drive from asyncio, with durability and delivery.

Every change to the engine is a :class:`~gateway.commands.Command` that goes through
:meth:`Runtime.act` (or :meth:`Runtime.submit` for vendor events): the command is applied
(:func:`gateway.commands.apply`, synchronously, so no two interleave), its changes
are handed to the journal, and only once they are durable are its notices delivered
(desktops, vendors, the supervisor stream) and the caller answered. Journal writes are
group-committed, so concurrent callers share transactions while each still waits for its
own changes and everything before them.

A timer task fires the engine's deadlines (offer timeouts, wrap-ups, queue timeouts, desktop
grace periods) through the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from adapters.base import Adapter, Health

from . import commands
from .clock import Clock
from .commands import Command
from .engine import Engine
from .errors import GatewayError, InvalidEvent, NotFound
from .events import Channel, Event
from .hub import DesktopHub, EventBus
from .metrics import Metrics
from .notices import Decision, Notice, PresenceChanged, Routed, SessionChanged, ToAgent, ToVendor
from .oplog import info_enabled, log_notice
from .persistence import Changes, Journal

log = structlog.get_logger("cti_gateway.runtime")

#: Longest a caller waits for the journal before the request fails with ``not_ready``.
COMMIT_TIMEOUT_S = 10.0
#: Unknown event field names remembered (and logged once) per vendor.
UNKNOWN_FIELD_NAMES_MAX = 100
#: Vendor notices waiting for an adapter; beyond this they are logged and dropped.
VENDOR_QUEUE_MAX = 10_000


_ADAPTER_STATE_PREFIX = "adapter/"


def _state_key(vendor: str, key: str) -> str:
    return f"{_ADAPTER_STATE_PREFIX}{vendor}/{key}"


class NotReady(GatewayError):
    code = "not_ready"
    retryable = True


class Unstorable(GatewayError):
    """A change that the journal cannot store (e.g. text that is not valid Unicode).

    Input validation refuses such data first; this is the safety net behind it. The change
    is undone (the state is rebuilt from the journal) and the caller gets 400.
    """

    code = "invalid_request"


#: Waits between attempts to rebuild the state from the journal (seconds, growing to the last).
RECOVERY_BACKOFF_S = (0.02, 0.05, 0.1, 0.2)


class Runtime:
    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        clock: Clock,
        metrics: Metrics,
        hub: DesktopHub | None = None,
        bus: EventBus | None = None,
        records: Journal | None = None,
    ) -> None:
        self.engine = engine
        self.journal = journal
        #: where session records and reports are read: the journal itself (embedded store),
        #: or a records store of its own (``records: {url: postgresql://...}``)
        self.records: Journal = records if records is not None else journal
        #: whether :attr:`records` is a store of its own (opened, pinged and shown apart)
        self.separate_records = records is not None and records is not journal
        self._clock = clock
        self.metrics = metrics
        self.hub = hub or DesktopHub()
        self.bus = bus or EventBus()
        #: this gateway's name among the instances holding desktops ("" when alone)
        self.desktop_host = ""
        self.adapters: dict[str, Adapter] = {}
        self._accepting = False
        #: a graceful shutdown began: adapters going down is expected, not an outage
        self._stopping = False
        # False from the moment the engine's state may differ from the journal's (a write
        # failed, or an engine call failed half-way) until it is rebuilt from the journal
        self._consistent = True
        self._failure: str | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._vendor_queue: asyncio.Queue[ToVendor] = asyncio.Queue(VENDOR_QUEUE_MAX)
        self._vendor_task: asyncio.Task[None] | None = None
        self._health: dict[str, Health] = {}
        self._unknown_fields: dict[str, set[str]] = {}
        #: event keys being submitted: a second copy waits for the first (see submit)
        self._submitting: dict[tuple[str, str], asyncio.Future[None]] = {}
        #: times the state was rebuilt from the journal after a failure (tests, metrics)
        self.recoveries = 0
        #: adapters' durable bookkeeping (e.g. IMAP UIDVALIDITY), journaled under meta keys
        self._adapter_state: dict[str, Any] = {}
        metrics.records_up.set_function(self._records_up)

    # ------------------------------------------------------------------ AdapterHost

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def ready(self) -> bool:
        return self._accepting and self._consistent

    async def submit(self, event: Event) -> Decision:
        """Route one vendor event; returns once it and its decision are journaled."""
        started = self._clock.now()
        # bound for the lines logged inside, reset to what they were after (tokens: cheaper
        # than bound_contextvars, which reads the whole context and binds twice)
        tokens = structlog.contextvars.bind_contextvars(
            vendor=event.vendor, interaction_id=event.interaction_id, event_id=event.event_id
        )
        try:
            key = event.key
            # one copy of an event id at a time: a second copy waits until the first is
            # answered (so it finds the first decision in memory or the journal, never
            # decides again); its own failure or cancellation does not touch the first
            while (first := self._submitting.get(key)) is not None:
                await asyncio.wait([first])
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._submitting[key] = done
            try:
                recalled = await self._recall(event)
                decision: Decision = await self.act(commands.event(event, recalled))
            except Unstorable as exc:
                raise InvalidEvent("body", exc.message) from None
            finally:
                del self._submitting[key]
                done.set_result(None)
            self.metrics.observe_routing(event, decision, self._clock.now() - started)
            return decision
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _recall(self, event: Event) -> dict[str, Any] | None:
        """What the journal holds of what the engine no longer keeps in memory for ``event``
        (an older copy of its id, its finished interaction): see :meth:`Engine.missing`.

        A journal that cannot answer fails the event (503 ``not_ready``): the gateway never
        guesses whether an event is a duplicate."""
        missing = self.engine.missing(event)
        if not missing:
            return None
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                row = await self.journal.event(event.vendor, event.event_id) if missing.event else None
                interaction = (
                    await self.journal.interaction(event.vendor, event.interaction_id) if missing.interaction else None
                )
        except (TimeoutError, GatewayError, OSError) as exc:
            raise NotReady(f"the journal cannot be read: {exc or 'timeout'}") from exc
        if row is None and interaction is None:
            return None
        return {"event": row, "interaction": interaction}

    async def act_on_session(self, command: Command) -> Any:
        """:meth:`act` for a command that names a session (``session_id``): a closed session
        that left memory is read back from the journal and the command applied again, so it
        is refused as on any closed session (``session_not_active`` ...), never answered
        ``session_not_found`` while the journal has the session."""
        session_id = command.args.get("session_id")
        if not isinstance(session_id, str):
            return await self.act(command)
        try:
            return await self.act(command)
        except NotFound as exc:
            if exc.code != "session_not_found":
                raise
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    state = await self.journal.record(session_id)
            except (TimeoutError, GatewayError, OSError):
                raise exc from None  # cannot tell more than the engine did
            if state is None or not self.engine.recall_session(state):
                raise
        return await self.act(command)

    def availability(self, agent_id: str, channel: Channel, vendor: str | None = None) -> str | None:
        reason = self.engine.availability(agent_id, channel, vendor)
        return None if reason is None else reason.value

    def open_interactions(self, vendor: str) -> list[dict[str, Any]]:
        return self.engine.open_interactions(vendor)

    def adapter_state(self, vendor: str, key: str) -> Any:
        return self._adapter_state.get(_state_key(vendor, key))

    async def save_adapter_state(self, vendor: str, key: str, value: Any) -> None:
        """Journal one adapter value; it is visible to :meth:`adapter_state` once durable.

        It does not touch the engine, so a failed write only fails this call (503).
        """
        full = _state_key(vendor, key)
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self.journal.commit(Changes(meta={full: value}))
        except (TimeoutError, GatewayError, OSError) as exc:
            raise NotReady(f"the journal did not take the change: {exc or 'timeout'}") from exc
        self._adapter_state[full] = value

    def set_health(self, vendor: str, health: Health, detail: str | None = None) -> None:
        before = self._health.get(vendor)
        self._health[vendor] = health
        self.metrics.adapter_up.labels(vendor=vendor).set(1 if health is Health.UP else 0)
        if before is not health:
            if health is Health.UP:
                log.info("vendor_up", vendor=vendor, detail=detail)
            elif self._stopping:
                # the gateway is shutting down: an adapter stopping is no outage
                log.info("vendor_stopped", vendor=vendor, detail=detail)
            else:
                log.warning("vendor_down", vendor=vendor, detail=detail)

    def forget_vendor(self, vendor: str) -> None:
        """A reload removed the vendor: no health, no metrics series left for it."""
        self._health.pop(vendor, None)
        self._unknown_fields.pop(vendor, None)
        with contextlib.suppress(KeyError):
            self.metrics.adapter_up.remove(vendor)

    def unknown_fields(self, vendor: str, fields: Sequence[str]) -> None:
        if not fields:
            return
        self.metrics.unknown_fields.labels(vendor=vendor).inc(len(fields))
        seen = self._unknown_fields.setdefault(vendor, set())
        new = [name for name in fields if name not in seen][: max(0, UNKNOWN_FIELD_NAMES_MAX - len(seen))]
        if new:
            seen.update(new)
            # once per name, so an operator learns what the vendor added without a log flood
            log.info("event_fields_ignored", vendor=vendor, fields=new)

    # ------------------------------------------------------------------ the one way in

    async def act(self, command: Command | Callable[[Engine], Any]) -> Any:
        """Apply one command, journal what it changed, then deliver and return its result.

        (A plain engine call instead of a command is taken too, by this embedded runtime
        only: tests and tools use it; the replicated runtime takes commands alone.)

        Nothing is answered before it is durable: every call, one that changed nothing
        included (a ``duplicate``, a read made through here), returns only once the
        journal holds everything committed before it.

        An :class:`~gateway.errors.ActionError` from the engine propagates once whatever
        changed before it (timers that were due) is journaled; the action itself changed
        nothing. Any other failure leaves the state as the journal has it: when a write
        fails (:class:`NotReady`), a change cannot be stored (:class:`Unstorable`) or the
        engine fails half-way (the exception propagates: 500), the runtime stops taking
        calls, rebuilds the engine from the journal once the journal is writable again
        (retrying by itself) and goes on.
        """
        if not self._accepting:
            raise NotReady("the gateway is not taking requests (starting or shutting down)")
        if not self._consistent:
            raise NotReady(f"the gateway is restoring its state after a journal failure ({self._failure}); retry")
        self._inflight += 1
        self._idle.clear()
        try:
            error: GatewayError | None = None
            result: Any = None
            engine = self.engine
            try:
                result = commands.apply(engine, command) if isinstance(command, Command) else command(engine)
            except GatewayError as exc:
                error = exc
            except Exception:  # an engine bug: whatever it changed half-way is undone
                log.exception("engine_call_failed")
                self._lost("an engine call failed half-way", journal=False)
                raise
            changes = engine.take_changes()
            notices = engine.drain()
            try:
                # awaited directly (no task in between): the changes are encoded and queued
                # before any other call can reach the engine
                await self._commit(changes)
            except (ValueError, TypeError) as exc:
                self._lost(f"a change could not be stored: {exc}", journal=False)
                raise Unstorable(f"the request cannot be stored: {exc}") from None
            except (TimeoutError, GatewayError, OSError) as exc:
                self._lost(f"the journal did not take a change: {exc or 'timeout'}")
                raise NotReady(f"the journal did not take the change: {exc or 'timeout'}") from exc
            except asyncio.CancelledError:
                # the caller went away while its change was queued: whether it gets written
                # is unknown here, so the state is taken from the journal once it settled
                self._lost("a call was cancelled while its change was being written", journal=False)
                raise
            self._deliver(notices)
            self._agents_changed(engine.take_touched_agents())
            self._wake.set()
            if error is not None:
                raise error
            return result
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _commit(self, changes: Changes) -> None:
        """``journal.commit`` bounded by :data:`COMMIT_TIMEOUT_S`: by the journal itself where
        it says it waits no longer (``commit_wait_bound_s``: one timer for the journal, not
        one per call), else here."""
        journal = self.journal
        bound = getattr(journal, "commit_wait_bound_s", None)
        if bound is not None and bound <= COMMIT_TIMEOUT_S:
            await journal.commit(changes)
        else:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await journal.commit(changes)

    def _lost(self, reason: str, *, journal: bool = True) -> None:
        """The engine may hold state the journal has not: refuse calls and rebuild it.

        ``journal``: the journal failed (logged ``journal_down``); else the engine or the
        data did (``state_rebuild``). Once shutting down nothing is rebuilt: the next
        start loads the journal anyway.
        """
        if self._consistent:
            if journal:
                log.error("journal_down", error=reason)
            else:
                log.error("state_rebuild", reason=reason)
            self.metrics.journal_up.set(0)
        self._consistent = False
        self._failure = reason
        if self._stopping:
            return
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name="state-recovery")

    async def _recover(self) -> None:
        """Rebuild the engine from the journal, retrying until the journal is writable."""
        attempt = 0
        while True:
            # the calls already running finish first (their commits succeed or fail); no
            # new one starts while the state is inconsistent
            await self._idle.wait()
            try:
                engine = await self._rebuild()
            except Exception as exc:  # noqa: BLE001 - any failure: the journal is still down
                delay = RECOVERY_BACKOFF_S[min(attempt, len(RECOVERY_BACKOFF_S) - 1)]
                attempt += 1
                if attempt == 1 or attempt % 50 == 0:
                    log.warning("journal_still_down", error=str(exc) or type(exc).__name__, attempts=attempt)
                await asyncio.sleep(delay)
                continue
            if not self._idle.is_set():  # pragma: no cover - act() refuses while inconsistent
                continue
            notices = engine.drain()
            engine.take_touched_agents()
            self.engine = engine
            self._consistent = True
            self.recoveries += 1
            self.metrics.journal_up.set(1)
            self.metrics.state_rebuilds.inc()
            log.info("journal_up", attempts=attempt + 1, rebuilt_after=self._failure)
            self._failure = None
            self._deliver(notices)
            # what adapters mirror of the agents may have been undone: all of it, again
            self._agents_changed(set(engine.agent_ids()))
            self._wake.set()
            return

    async def _rebuild(self) -> Engine:
        """A new engine restored from the journal, with the desktops that are connected now.

        A probe write goes first: it waits behind every commit still queued (so what is
        loaded is final) and proves that the journal takes writes again.
        """
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            await self.journal.commit(Changes(meta={"restored_at": self._clock.now()}))
            snapshot = await self.journal.load(
                since=self._clock.now() - self.engine.dedup_window_s, recent=self.engine.cached_events
            )
        engine = self.engine.blank()
        engine.restore(snapshot)
        engine.drain()
        # (adapter state needs no reload: it is only ever set once its write succeeded)
        for agent_id in engine.agent_ids():
            if self.hub.connected(agent_id):
                engine.desktop_connected(agent_id)
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            await self.journal.commit(engine.take_changes())
        return engine

    def _deliver(self, notices: list[Notice]) -> None:
        logged = bool(notices) and info_enabled()  # (asked once for all: several a message)
        for notice in notices:
            if logged:
                log_notice(notice)
            self._route(notice)

    def _route(self, notice: Notice) -> None:
        """One notice to where it goes: a desktop, a vendor, the supervisor stream, metrics."""
        if isinstance(notice, ToAgent):
            self.hub.send(notice.agent_id, notice.message)
        elif isinstance(notice, ToVendor):
            self._queue_vendor(notice)
        elif isinstance(notice, SessionChanged):
            if self.bus:  # (no supervisor listening: no message built for nobody)
                self.bus.publish(
                    {"type": "session.changed", "transition": notice.transition, "session": notice.session}
                )
            self.metrics.session_changed(notice)
        elif not self.bus:
            return
        elif isinstance(notice, PresenceChanged):
            self.bus.publish(
                {
                    "type": "agent.presence",
                    "agent_id": notice.agent_id,
                    "state": notice.state,
                    "reason": notice.reason,
                }
            )
        elif isinstance(notice, Routed):
            self.bus.publish(
                {
                    "type": "event.routed",
                    "vendor": notice.vendor,
                    "event_id": notice.event_id,
                    "event_type": notice.event_type,
                    "interaction_id": notice.interaction_id,
                    "channel": notice.channel,
                    "event": notice.event,
                    "decision": notice.decision.as_dict(),
                }
            )

    def _agents_changed(self, agent_ids: set[str]) -> None:
        if not agent_ids:
            return
        for adapter in self.adapters.values():
            try:
                adapter.agents_changed(agent_ids)
            except Exception:  # an adapter bug must not fail the request that changed the agent
                log.exception("adapter_agents_changed_failed", vendor=adapter.vendor)

    def _queue_vendor(self, notice: ToVendor) -> None:
        if self.bus:
            self.bus.publish(
                {
                    "type": "vendor.notice",
                    "vendor": notice.vendor,
                    "interaction_id": notice.interaction_id,
                    "action": notice.action.value,
                    "event_id": notice.event_id,
                    "data": notice.data,
                }
            )
        if notice.vendor not in self.adapters:
            return
        try:
            self._vendor_queue.put_nowait(notice)
        except asyncio.QueueFull:
            log.error("vendor_queue_full", vendor=notice.vendor, action=notice.action.value)

    async def _vendor_sender(self) -> None:
        while True:
            notice = await self._vendor_queue.get()
            await deliver_to_vendor(self.adapters, notice)

    # ------------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.engine.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self._clock.now())
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            try:
                await self.act(commands.tick())
            except NotReady:
                # until the state is rebuilt (which wakes us) or the gateway takes requests
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
            except Exception:
                log.exception("timer_tick_failed")
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Restore from the journal, then start taking requests and firing timers."""
        snapshot = await self.journal.load(
            since=self._clock.now() - self.engine.dedup_window_s, recent=self.engine.cached_events
        )
        self.engine.restore(snapshot)
        self.engine.drain()
        self.engine.take_touched_agents()
        self._adapter_state = {k: v for k, v in snapshot.meta.items() if k.startswith(_ADAPTER_STATE_PREFIX)}
        self._accepting = True
        self._timer_task = asyncio.create_task(self._timer_loop(), name="engine-timers")
        self._vendor_task = asyncio.create_task(self._vendor_sender(), name="vendor-notices")
        log.info(
            "restored",
            open_sessions=sum(1 for s in self.engine.sessions.values() if s.occupying),
            waiting=len(self.engine.waiting()),
        )

    async def stop_intake(self) -> None:
        """Stop taking new requests and wait for the ones in flight (graceful shutdown)."""
        self._accepting = False
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), COMMIT_TIMEOUT_S)

    async def stop(self) -> None:
        await self.stop_intake()
        for task in (self._timer_task, self._vendor_task, self._recovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._timer_task = self._vendor_task = self._recovery = None

    async def refresh_metrics(self) -> None:
        """Gauges read when /metrics is scraped (the embedded journal has none)."""

    def _records_up(self) -> float:
        """``cti_gateway_records_up``: a records store of its own: whether its last call
        reached it; else the journal's (as ``cti_gateway_journal_up``)."""
        if self.separate_records:
            return 1.0 if getattr(self.records, "healthy", True) else 0.0
        return 1.0 if self._consistent else 0.0

    async def check_ready(self) -> dict[str, Any]:
        """Readiness: taking requests, the state matches the journal, the journal (and a
        records store of its own) answers and every adapter is up; with each vendor's
        details (:meth:`Adapter.describe`) and warnings (:meth:`Adapter.warnings`)."""
        store = await self.journal.ping()
        records = await self.records.ping() if self.separate_records else store and self._consistent
        adapters = {name: adapter.health.value for name, adapter in self.adapters.items()}
        ok = (
            store
            and records
            and self._accepting
            and self._consistent
            and all(h == Health.UP.value for h in adapters.values())
        )
        checks: dict[str, Any] = {
            "ready": ok,
            "store": "up" if store and self._consistent else "down",
            # the session records (reports): the journal's own, or the records store's
            "records": "up" if records else "down",
            "adapters": adapters,
            "accepting": self._accepting,
            # details: what each vendor can do, its callbacks, and what its settings leave out
            "vendors": {name: adapter.describe() for name, adapter in self.adapters.items()},
            "warnings": [f"{name}: {text}" for name, adapter in self.adapters.items() for text in adapter.warnings()],
        }
        if not self._consistent:
            checks["store_error"] = self._failure
        return checks


async def deliver_to_vendor(adapters: Mapping[str, Adapter], notice: ToVendor) -> None:
    """Hand ``notice`` to its vendor's adapter (none configured: nothing to do). A refusal
    (:class:`GatewayError`) is logged as a warning, an adapter's bug as an error with its
    traceback: neither stops delivery to the others."""
    adapter = adapters.get(notice.vendor)
    if adapter is None:
        return
    try:
        await adapter.deliver(notice)
    except GatewayError as exc:
        log.warning("vendor_delivery_failed", vendor=notice.vendor, action=notice.action.value, error=str(exc))
    except Exception:  # an adapter bug must not stop delivery to the others
        log.exception("vendor_delivery_crashed", vendor=notice.vendor, action=notice.action.value)
