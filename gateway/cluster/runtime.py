"""The replicated runtime: several gateway instances on one Redis (``store: redis://``).

The shared log (a Redis Stream, :mod:`gateway.cluster.log`) is the source of truth. Every
change is a :class:`~gateway.commands.Command`; the instance that receives a request
appends it and answers once its own apply loop has applied that entry. Every instance
applies every entry in the log's order to its own engine (:mod:`gateway.cluster.replica`:
the entry's time is the engine's clock, ids derive from the entry ID), so every instance
holds the same state: allocation is serialized by the log's order (no cap can be exceeded
whichever instance received the offer), a duplicate appended through another instance is
answered ``duplicate`` by the engine's own de-duplication, and any instance serves any
desktop (each pushes to the sockets it holds the notices its own engine produced).

Timers: an instance whose engine has a deadline due proposes a ``tick`` entry through a
script that appends only if no entry at or after the deadline exists (one tick for N
instances). Side effects that must happen once (deliveries to vendors) go through the
consumer group: the instance that claims an entry performs what its own engine produced
for it, then acknowledges it; the entries of an instance that died are claimed by another
(``XAUTOCLAIM`` after ``store.claim_idle_s``) and finished there.

Desktops: the engine counts an agent's desktops per instance (the ``desktop_connected``
and ``desktop_disconnected`` entries name the instance), so a desktop moving from one
instance to another, or an agent with desktops on two, is never taken for gone. Each
instance says it is alive in Redis (``{prefix}alive:<instance>``, renewed four times per
``store.claim_idle_s``); one that stays silent longer (it died without closing its
sockets) is declared gone by another (a ``desktops_gone`` entry): the agents whose only
desktops it held start their grace period, as after any disconnect. An instance that finds
itself declared gone (it lost Redis for that long) announces the desktops it still holds.

Configuration: the log's is the one in force (:mod:`gateway.cluster.shared_config`). The
first ``config`` entry records the cluster's (an instance that joins later builds its
engine from it, whatever its own file says, so it replays every entry on the configuration
that entry was decided with); a live reload on any instance appends a ``reload`` entry
with the new configuration, which every instance applies to its engine at that position,
then reconciles its own edges (tokens, desktops, vendors' adapters: :attr:`on_reload`). A
reload made on a configuration that is no longer in force (another reload was applied
first) is refused ``reload_conflict`` by every instance alike. An instance starts only on
the configuration in force; one whose file differs later (the reload came from another
instance) keeps serving the log's and says so (``config_file_differs``, ``/readyz``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from .. import commands
from ..clock import Clock
from ..commands import Command, CommandError
from ..config import GatewayConfig
from ..engine import DumpRefused, Engine
from ..errors import GatewayError
from ..interactions import VendorCapabilities
from ..metrics import Metrics
from ..notices import Notice, ToVendor
from ..oplog import log_notice
from ..persistence import Changes, Journal, Snapshot
from ..runtime import NotReady, Runtime, Unstorable, _state_key, deliver_to_vendor
from . import snapshot
from .log import Entry, RedisLog, StoreUnavailable
from .replica import Replica, parse_entry_id
from .shared_config import config_digest, decode_caps, encode_caps, legacy_hash, local_view, shared_part

__all__ = ["ClusterRuntime", "ClusterSettings", "ConfigMismatch", "ReloadHook", "SnapshotUnusable", "config_hash"]

#: what an instance does after its engine applied a reload entry: reconcile its own edges
#: (new config as this instance runs it, the vendors' capabilities, the engine's summary);
#: its result answers the instance that asked for the reload
ReloadHook = Callable[[GatewayConfig, dict[str, VendorCapabilities], dict[str, Any]], Awaitable[Any]]

log = structlog.get_logger("cti_gateway.cluster")


class ConfigMismatch(GatewayError):
    code = "config_mismatch"


class SnapshotUnusable(GatewayError):
    """The log is trimmed and its snapshot cannot be loaded here: replaying what is left
    would give another state than the other instances hold, so the instance does not start."""

    code = "snapshot_unusable"


class LogGap(Exception):
    """Entries this instance has not applied were trimmed away (it fell behind the trim)."""

    def __init__(self, mark: str) -> None:
        super().__init__(mark)
        self.mark = mark


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    #: longest a request waits for its entry to be appended and applied (then 503)
    answer_timeout_s: float = 5.0
    #: an entry handed to an instance and not acknowledged for this long is taken over
    claim_idle_s: float = 10.0
    #: how often an instance looks for such entries
    claim_every_s: float = 1.0
    #: entries read at once
    batch: int = 500
    #: side effects kept for entries not yet acknowledged (oldest dropped beyond it)
    effects_kept: int = 20_000
    #: how often the records store is pinged while it answers / while it does not
    records_check_s: float = 2.0
    records_retry_s: float = 0.5
    #: a snapshot is written once this many entries were applied after the newest one
    #: (0: never by count) ...
    snapshot_every: int = 10_000
    #: ... or once the newest is this old and the log moved on (0: never by age)
    snapshot_every_s: float = 300.0
    #: how often an instance reports its position, looks at the snapshot and trims
    snapshot_check_s: float = 1.0
    #: an instance that has not reported its position for this long no longer holds back
    #: the trim (it is gone; if it comes back behind the trim it reloads the snapshot)
    position_stale_s: float = 60.0
    #: longest one instance holds the snapshot writer's turn (it died while writing)
    snapshot_turn_s: float = 30.0


def config_hash(config: GatewayConfig, caps: Mapping[str, VendorCapabilities]) -> str:
    """What every instance on one log must agree on (:func:`.shared_config.config_digest`:
    the shared part of the configuration, retention included, and the vendors' capabilities)."""
    return config_digest(config, caps)


def _instance_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class ClusterRuntime(Runtime):
    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        clock: Clock,
        metrics: Metrics,
        shared: RedisLog,
        replica: Replica,
        config: GatewayConfig,
        caps: Mapping[str, VendorCapabilities],
        settings: ClusterSettings | None = None,
        instance: str | None = None,
    ) -> None:
        super().__init__(engine, journal, clock=clock, metrics=metrics)
        self.shared = shared
        self.replica = replica
        self._fresh_engine(engine)
        self.settings = settings or ClusterSettings()
        self.instance = instance or _instance_name()
        #: this instance's file (as last read: at start, or by a reload here) and its hash
        self.own_config = config
        self.own_caps = dict(caps)
        self.config_hash = config_digest(config, caps)
        self._legacy_hash = legacy_hash(config, caps)
        #: the configuration hash in force in the log (None: none recorded yet)
        self.log_config: str | None = None
        #: the reloads the log applied (0: the configuration of the cluster's birth)
        self.log_generation = 0
        #: this instance cannot run the log's configuration (start refuses)
        self._mismatch: str | None = None
        #: this instance's file differs from the configuration in force (it runs the log's)
        self.file_differs: str | None = None
        #: see :data:`ReloadHook` (set by the reloader)
        self.on_reload: ReloadHook | None = None
        self._reloads: asyncio.Queue[tuple[GatewayConfig, dict[str, VendorCapabilities], Any, Any]] = asyncio.Queue()
        #: entries applied to the engine (a birth configuration rebuilds it only before any)
        self._engine_entries = 0
        #: the configuration in force as the log carries it (its shared part and the vendors'
        #: capabilities, JSON; None: the log has none recorded, or only its hash): snapshots keep it
        self._in_force: dict[str, Any] | None = None
        self._rids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        #: entry ID -> the vendor deliveries and record changes its application produced
        #: (until the instance that claimed it acknowledged it)
        self._effects: OrderedDict[str, tuple[list[Notice], Changes]] = OrderedDict()
        self._applied = asyncio.Event()
        #: set when the apply loop applied entries (wakes the side-effects worker)
        self._new_entries = asyncio.Event()
        #: the newest entry whose effects were dropped (effects_kept): older ones are unknown
        self._oldest_effects = (0, 0)
        self._tasks: list[asyncio.Task[None]] = []
        #: stop() asked the loops to end
        self._closing = False
        self._caught_up = False
        #: the records store's last ping answered (its last write: ``journal.healthy``)
        self._records_answer = True
        self._records_wake = asyncio.Event()
        self._stopped = asyncio.Event()
        #: entries applied by this instance / side effects performed (tests, metrics)
        self.applied_entries = 0
        self.effects_done = 0
        self.desktop_host = self.instance
        #: instances holding desktops that did not say they are alive: how many rounds in a row
        self._silent: dict[str, int] = {}
        self._stop_liveness = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()
        #: the newest snapshot this instance knows of ("0-0": none)
        self._snapshot_seen = "0-0"
        #: the IDs of the entries applied last, oldest first: as many as make a snapshot
        #: due, so that the entries after the newest snapshot are counted by position
        #: (an instance learns of another's snapshot, or finishes writing its own, after
        #: it applied entries past it: a count reset then would miss them, and a log that
        #: stops growing would never be trimmed down to its last snapshot_every entries)
        self._applied_ids: deque[tuple[int, int]] = deque(maxlen=max(1, self.settings.snapshot_every))
        #: the snapshot this instance started from (None: it replayed the whole log)
        self.started_from: str | None = None
        self.snapshots_written = 0
        self.resyncs = 0

    def _fresh_engine(self, engine: Engine) -> None:
        """Bind ``engine`` (fresh) to the replica at the start of the log."""
        # the engine knows the whole log (it replays it from the start, or from a snapshot
        # of an engine that did): an event id is missing from its memory only once evicted
        # by count, which it tracks itself; so it starts as restored from nothing, not as
        # one that knows nothing of the journal
        engine.restore(Snapshot())
        engine.drain()
        engine.take_changes()
        engine.take_touched_agents()
        self.engine = engine
        self.replica.engine = engine
        self.replica.last, self.replica.last_id = (0, 0), "0-0"
        self.replica.clock.last = 0.0
        self.replica.clock.entry_time = None

    # ------------------------------------------------------------------ requests

    @property
    def ready(self) -> bool:
        # (the records store down is refused by act(), with its own message, not here)
        return self._accepting and self._caught_up and self.shared.healthy and self._mismatch is None

    @property
    def records_up(self) -> bool:
        """The records store answered its last ping and its last write did not fail."""
        return self._records_answer and bool(getattr(self.journal, "healthy", True))

    def _records_up(self) -> float:
        """``cti_gateway_records_up``: as :attr:`records_up`."""
        return 1.0 if self.records_up else 0.0

    def _check_taking(self) -> None:
        if not self._accepting:
            raise NotReady("the gateway is not taking requests (starting or shutting down)")
        if self._mismatch is not None:
            raise NotReady(self._mismatch)
        if not self._caught_up:
            raise NotReady("the gateway is catching up with the shared log; retry")
        if not self.records_up:
            # taking it would keep records only in memory: the vendor retries instead
            where = getattr(self.journal, "where", None)
            named = f" {where.describe()}" if where is not None else ""
            raise NotReady(f"records store down: the records store{named} does not answer; retry")

    async def act(self, command: Any) -> Any:
        """Append ``command`` to the shared log and return its result once this instance
        applied it (503 ``not_ready`` if Redis does not take it, or it is not applied within
        ``answer_timeout_s``: then it may still take effect, as any unanswered request)."""
        if not isinstance(command, Command):
            raise TypeError("the replicated runtime takes commands only")
        if command.name == "reconfigure":  # (the reloader appends a ``reload`` entry instead)
            raise TypeError("a reload on a shared store is a reload command (see reload_command)")
        self._check_taking()
        try:
            encoded = command.encode()
            encoded.encode("utf-8")  # what Redis stores: a lone surrogate cannot be
        except (ValueError, TypeError, UnicodeError) as exc:
            raise Unstorable(f"the request cannot be stored: {exc}") from None
        rid = f"{self.instance}:{next(self._rids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._inflight += 1
        self._idle.clear()
        try:
            async with asyncio.timeout(self.settings.answer_timeout_s):
                await self.shared.append(encoded, rid)
                return await future
        except StoreUnavailable as exc:
            raise NotReady(exc.message) from None
        except TimeoutError:
            raise NotReady("the shared log did not apply the change in time; retry") from None
        finally:
            self._waiting.pop(rid, None)
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def act_on_session(self, command: Command) -> Any:
        """:meth:`act` (a closed session that left memory is not read back here: that would
        change one instance's engine outside the log; such an action is refused
        ``session_not_found``)."""
        return await self.act(command)

    async def save_adapter_state(self, vendor: str, key: str, value: Any) -> None:
        await self.act(commands.adapter_state(_state_key(vendor, key), value))

    # ------------------------------------------------------------------ applying the log

    async def _apply_entry(self, entry: Entry, *, live: bool) -> None:
        entry_id, fields = entry
        rid = fields.get("r", "")
        future = self._waiting.pop(rid, None) if rid else None
        try:
            command = Command.decode(fields.get("c", ""))
        except CommandError as exc:
            log.error("log_entry_invalid", entry_id=entry_id, error=str(exc))
            self.replica.skip(entry_id)
            if future is not None and not future.done():
                future.set_exception(GatewayError(f"the change was not understood: {exc}", code="invalid_request"))
            return
        self.applied_entries += 1
        self._applied_ids.append(parse_entry_id(entry_id))
        if command.name in ("adapter_state", "config"):
            self.replica.skip(entry_id)
            if command.name == "adapter_state":
                self._adapter_state[str(command.args["key"])] = command.args["value"]
            else:
                self._config_entry(command.args)
            if future is not None and not future.done():
                future.set_result(None)
            return
        reload_to: tuple[GatewayConfig, dict[str, VendorCapabilities]] | None = None
        reload_args: Mapping[str, Any] = {}
        if command.name == "reload":
            reload_args = command.args
            try:
                reload_to = self._reload_entry(command.args)
            except GatewayError as exc:  # refused alike on every instance: nothing changes
                self.replica.skip(entry_id)
                if future is not None and not future.done():
                    future.set_exception(exc)
                return
            command = commands.reconfigure(*reload_to)
        self._engine_entries += 1
        applied = self.replica.apply(entry_id, command)
        if live and command.name == "desktops_gone" and command.args.get("host") == self.instance:
            self._spawn(self._announce_desktops(), name="desktops-announce")
        if applied.crash is not None:
            log.error("engine_call_failed", entry_id=entry_id, command=command.name, error=repr(applied.crash))
        if applied.notices or applied.changes:
            self._effects[entry_id] = (applied.notices, applied.changes)
            while len(self._effects) > self.settings.effects_kept:
                dropped, _ = self._effects.popitem(last=False)
                self._oldest_effects = max(self._oldest_effects, parse_entry_id(dropped))
        self._deliver_local(applied.notices, live=live)
        if live:
            self._agents_changed(applied.touched)
        if reload_to is not None and applied.error is None and applied.crash is None:
            self._reloaded(reload_args, live=live)
            if live:
                # the edges (tokens, desktops, adapters) follow, in the log's order; the
                # instance that asked is answered once its own are reconciled
                self._reloads.put_nowait((reload_to[0], reload_to[1], applied.result, future))
                return
        if future is not None and not future.done():
            if applied.error is not None:
                future.set_exception(applied.error)
            elif applied.crash is not None:
                future.set_exception(applied.crash)
            else:
                future.set_result(applied.result)

    def _deliver_local(self, notices: list[Notice], *, live: bool) -> None:
        """Desktops on this instance, its supervisor stream and metrics. Vendors, and the
        log lines (one per cluster, not one per instance), are the consumer group's
        (:meth:`_perform`)."""
        if live:
            for notice in notices:
                self._route(notice)

    def _queue_vendor(self, notice: ToVendor) -> None:
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

    def _config_entry(self, args: Mapping[str, Any]) -> None:
        """The cluster's configuration at its birth (the first ``config`` entry; later ones
        are instances that joined agreeing, or that refused themselves)."""
        if self.log_config is not None:
            return
        value = str(args["hash"])
        shared = args.get("config")
        if shared is None:  # a log written before live reload: its hash only
            if value == self._legacy_hash:
                self.log_config = self.config_hash
            else:
                self.log_config = value
                self._mismatch = self._mismatch_message(value)
            return
        self.log_config = value
        self._in_force = {"config": dict(shared), "caps": dict(args.get("caps") or {})}
        if value == self.config_hash:
            return
        try:
            birth = local_view(shared, self.own_config), decode_caps(args.get("caps") or {})
        except ValueError as exc:
            self._mismatch = f"the shared log's configuration cannot be read here ({exc})"
            return
        if self._engine_entries == 0:
            # replay every entry on the configuration it was decided with
            self.engine.keep_config(*birth)
            engine = self.engine.blank(birth[0])
            engine.restore(Snapshot())
            engine.drain()
            engine.take_changes()
            engine.take_touched_agents()
            self.engine = self.replica.engine = engine
        else:  # pragma: no cover - the birth entry is the log's first
            self._mismatch = self._mismatch_message(value)

    def _reload_entry(self, args: Mapping[str, Any]) -> tuple[GatewayConfig, dict[str, VendorCapabilities]]:
        """A ``reload`` entry: the configuration it carries (as this instance runs it), or
        :class:`GatewayError` when it is refused (the same on every instance)."""
        base = args.get("base")
        if base != self.log_config:
            raise GatewayError(
                "another reload was applied first (the configuration in force is now generation "
                f"{self.log_generation}, sha256 {str(self.log_config)[:12]}): nothing was changed by this one; "
                "check the file and reload again",
                code="reload_conflict",
            )
        try:
            return local_view(args["config"], self.own_config), decode_caps(args["caps"])
        except (KeyError, ValueError) as exc:
            raise GatewayError(f"the reloaded configuration cannot be read: {exc}", code="invalid_config") from None

    def _reloaded(self, args: Mapping[str, Any], *, live: bool) -> None:
        self.log_config = str(args["hash"])
        self._in_force = {"config": dict(args["config"]), "caps": dict(args["caps"])}
        self.log_generation = self.engine.generation
        self.check_file(live=live)

    def own_file(self, config: GatewayConfig, caps: Mapping[str, VendorCapabilities]) -> None:
        """This instance's file was read again (a reload here): what it is compared with."""
        self.own_config = config
        self.own_caps = dict(caps)
        self.config_hash = config_digest(config, caps)
        self._legacy_hash = legacy_hash(config, caps)

    def reload_command(self, config: GatewayConfig, caps: Mapping[str, VendorCapabilities]) -> Command:
        """The entry that reloads the cluster to ``config`` (read from this instance's file),
        made on the configuration in force here now."""
        return commands.reload(config_hash(config, caps), self.log_config, shared_part(config), encode_caps(caps))

    def check_file(self, *, live: bool) -> None:
        """Note (once per change) whether this instance's file is the configuration in force."""
        if self.log_config == self.config_hash or self.log_config is None:
            if self.file_differs is not None and live:
                log.info("config_file_matches", config=self.config_hash[:12])
            self.file_differs = None
            return
        message = (
            f"this instance's file (sha256 {self.config_hash[:12]}) differs from the configuration in force "
            f"in the shared log (generation {self.log_generation}, sha256 {str(self.log_config)[:12]}, reloaded "
            "from another instance): this instance runs the log's; put the file in force here too, or it cannot "
            "restart"
        )
        if live and message != self.file_differs:
            log.warning("config_file_differs", own_config=self.config_hash[:12], log_config=str(self.log_config)[:12])
        self.file_differs = message

    def _mismatch_message(self, value: str) -> str:
        reloaded = f", in force since reload {self.log_generation}" if self.log_generation else ""
        return (
            f"the shared log runs another configuration (sha256 {value[:12]}{reloaded}; "
            f"this instance {self.config_hash[:12]}): "
            "every instance on one store must run the same agents, profiles, queues and vendors; "
            "start it on the file in force (the one last reloaded)"
        )

    async def _reload_loop(self) -> None:
        """After the engine applied a reload entry: this instance's edges, in the log's order."""
        while not self._closing:
            try:  # (woken by stop(); and looks at _closing twice a second)
                config, caps, summary, future = await asyncio.wait_for(self._reloads.get(), 0.5)
            except TimeoutError:
                continue
            if self._closing:
                break
            result: Any = summary
            try:
                if self.on_reload is not None:
                    result = await self.on_reload(config, caps, summary)
            except asyncio.CancelledError:
                raise
            except Exception:  # the engine has moved; the edges are logged, never lost silently
                log.exception("config_reload_edges_failed")
            if future is not None and not future.done():
                future.set_result(result)

    async def _catch_up(self) -> None:
        """Apply every entry there is now (no blocking read); :class:`LogGap` if entries
        this instance has not applied were trimmed away."""
        while True:
            if not await self._read_and_apply(live=False):
                return

    async def _read_and_apply(self, *, live: bool) -> bool:
        """Apply the next batch of entries; whether there was one."""
        mark, entries = await self.shared.read_checked(self.replica.last_id, self.settings.batch)
        if mark is not None and parse_entry_id(mark) > self.replica.last:
            raise LogGap(mark)
        for entry in entries:
            await self._apply_entry(entry, live=live)
        if entries:
            self._applied.set()
        return bool(entries)

    async def _apply_loop(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                if not await self._read_and_apply(live=True):
                    await self.shared.wait_for_entries(self.replica.last_id)
                    continue
            except StoreUnavailable:
                self.metrics.store_up.set(0)
                attempt += 1
                await asyncio.sleep(min(0.05 * attempt, 1.0))
                continue
            except LogGap as gap:
                await self._resync(gap)
                continue
            except Exception:  # never stop applying: a surprise is logged, then retried
                log.exception("log_read_failed")
                await asyncio.sleep(0.5)
                continue
            attempt = 0
            self.metrics.store_up.set(1)
            self._new_entries.set()
            self._wake.set()

    async def _resync(self, gap: LogGap) -> None:
        """This instance fell behind the trim (it was cut off longer than
        ``position_stale_s``): it stops taking requests, starts again from the newest
        snapshot and the entries after it, and takes requests again."""
        log.error("log_gap", instance=self.instance, applied=self.replica.last_id, trimmed_before=gap.mark)
        self._caught_up = False
        attempt = 0
        while not self._closing:
            try:
                await self._start_from_snapshot(required_before=gap.mark)
                await self._catch_up()
                break
            except (StoreUnavailable, LogGap, SnapshotUnusable, ConfigMismatch) as exc:
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("resync_failed", error=str(exc) or type(exc).__name__, attempts=attempt)
                await asyncio.sleep(min(0.2 * attempt, 2.0))
        self.resyncs += 1
        self._caught_up = True
        log.info("resynced", instance=self.instance, last_entry=self.replica.last_id)
        # what adapters mirror of the agents and what desktops show may have changed
        self._agents_changed(set(self.engine.agent_ids()))
        self._new_entries.set()
        self._wake.set()

    async def _applied_through(self, entry_id: str) -> None:
        target = parse_entry_id(entry_id)
        while self.replica.last < target:
            if self._closing:
                raise NotReady("the gateway is shutting down")
            self._applied.clear()
            await self._applied.wait()

    # ------------------------------------------------------------------ once-only side effects

    async def _effects_loop(self) -> None:
        claim_at = 0.0
        start = "0-0"
        attempt = 0
        #: entries this instance claimed whose side effects failed (records store or Redis
        #: down): tried again first (an idempotent write), not after claim_idle_s
        retry: list[str] = []
        performed = False
        while not self._closing:
            try:
                ids: list[str] = retry
                if not ids and time.monotonic() >= claim_at:
                    start, ids = await self.shared.claim_stale(
                        self.instance, int(self.settings.claim_idle_s * 1000), start, 100
                    )
                    if start == "0-0":
                        claim_at = time.monotonic() + self.settings.claim_every_s
                    if ids:
                        log.info("entries_taken_over", count=len(ids), first=ids[0])
                if not ids:
                    ids = await self.shared.claim_new(self.instance, 100)
                    performed = False
                retry = ids
                if not ids:
                    # nothing new: until this instance applies more entries (or it is time
                    # to look for entries left by a dead instance)
                    self._new_entries.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._new_entries.wait(), self.settings.claim_every_s)
                    continue
                if not performed:
                    await self._applied_through(max(ids, key=parse_entry_id))
                    await self._perform(ids)
                    performed = True  # a failed ack does not deliver to vendors twice
                await self.shared.ack(ids)
                for entry_id in ids:
                    self._effects.pop(entry_id, None)
                retry, performed = [], False
                attempt = 0
            except (StoreUnavailable, GatewayError, OSError, TimeoutError) as exc:
                # Redis or the records store is down: the entries stay pending, this
                # instance tries them again (another takes them over if it dies)
                attempt += 1
                if attempt == 1:
                    log.warning("effects_delayed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(min(0.05 * attempt, 1.0))
                claim_at = 0.0
                # (a Redis that lost its data lost the group too: make it again)
                with contextlib.suppress(GatewayError, OSError, TimeoutError):
                    await self.shared.ensure_group()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("effects_failed")
                # not retried here at once: claimed again after claim_idle_s, as before
                retry, performed = [], False
                await asyncio.sleep(0.5)

    async def _perform(self, ids: list[str]) -> None:
        """The side effects of the entries ``ids`` (claimed by this instance): their record
        changes in one commit, then their vendor deliveries. A failed commit raises (the
        entries stay pending and are claimed again)."""
        positioned: list[tuple[tuple[int, int], Changes]] = []
        deliveries: list[ToVendor] = []
        for entry_id in sorted(ids, key=parse_entry_id):
            found = self._effects.get(entry_id)
            if found is None:
                if parse_entry_id(entry_id) < self._oldest_effects:
                    # older than what this instance keeps (effects_kept): cannot be redone
                    log.warning("effects_lost", entry_id=entry_id)
                continue
            for notice in found[0]:
                log_notice(notice)
                if isinstance(notice, ToVendor):
                    deliveries.append(notice)
            if found[1]:
                positioned.append((parse_entry_id(entry_id), found[1]))
        if positioned:
            # each entry's changes at its log position: the records store keeps, per row,
            # the latest entry's, whichever instance writes last (one group commit; a
            # store without an order of its own, SQLite or memory, takes them in order)
            async with asyncio.timeout(self.settings.answer_timeout_s * 2):
                await asyncio.gather(
                    *(
                        self.journal.commit(found, position=entry[0] * 1_000_000 + entry[1])
                        for entry, found in positioned
                    )
                )
        for notice in deliveries:
            if notice.vendor in self.adapters:
                await deliver_to_vendor(self.adapters, notice)
                self.effects_done += 1

    # ------------------------------------------------------------------ records store health

    async def _records_loop(self) -> None:
        """Ping the records store: while it is down (a ping or a write failed) requests are
        answered 503 ``not_ready``; the first ping that answers ends that (the pending
        records are written by the effects loop meanwhile). The store logs the outage and
        the recovery once each (``records_unreachable`` / ``records_recovered``)."""
        while not self._closing:
            try:
                self._records_answer = await self.journal.ping()
            except asyncio.CancelledError:
                raise
            except Exception:  # a ping never raises; if it does, it did not answer
                log.exception("records_ping_failed")
                self._records_answer = False
            delay = self.settings.records_check_s if self.records_up else self.settings.records_retry_s
            self._records_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._records_wake.wait(), delay)

    # ------------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            deadline = self.engine.next_deadline()
            delay = None if deadline is None else deadline - time.time()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            assert deadline is not None
            try:
                due_ms = math.ceil(deadline * 1000)
                added, value = await self.shared.propose_tick(due_ms, commands.tick(due_ms).encode())
                if not added and "-" not in value:  # not due yet by the server's clock
                    await asyncio.sleep(min(int(value), 1000) / 1000.0)
                    continue
                async with asyncio.timeout(self.settings.answer_timeout_s):
                    await self._applied_through(value)
            except (StoreUnavailable, TimeoutError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer_tick_failed")
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ instances alive

    async def _liveness_loop(self) -> None:
        """Say this instance is alive; declare gone the instances holding desktops that
        stopped saying so (two rounds in a row past their time to live)."""
        ttl_s = self.settings.claim_idle_s
        every_s = max(ttl_s / 4.0, 0.05)
        while not self._closing:
            try:
                await self.shared.heartbeat(self.instance, int(ttl_s * 1000))
                others = sorted(self.engine.desktop_hosts() - {self.instance, ""})
                alive = await self.shared.alive(others)
                for host in list(self._silent):
                    if host not in others or host in alive:
                        del self._silent[host]
                for host in others:
                    if host in alive:
                        continue
                    self._silent[host] = self._silent.get(host, 0) + 1
                    if self._silent[host] >= 2:
                        lost = await self.act(commands.desktops_gone(host))
                        log.warning("instance_gone", instance=host, agents_without_desktop=len(lost))
                        self._silent.pop(host, None)
            except (StoreUnavailable, NotReady, TimeoutError):
                pass  # the outage is logged once by the log itself; next round
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness_round_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_liveness.wait(), every_s)

    async def _announce_desktops(self) -> None:
        """Another instance took this one for dead (it lost Redis for a while): tell the log
        again about the desktops it holds, before their grace period ends."""
        agents = [a for a in self.engine.agent_ids() if self.hub.connected(a)]
        log.warning("declared_gone", instance=self.instance, desktops_announced=len(agents))
        for agent_id in agents:
            try:
                await self.act(commands.desktop_connected(agent_id, True, self.instance))
            except Exception as exc:  # the next declaration brings it back here
                log.warning("desktop_announce_failed", agent_id=agent_id, error=repr(exc))

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the newest snapshot (if any), apply the log after it, agree on the
        configuration, then take requests."""
        await self.shared.ensure_group()
        for attempt in range(5):
            await self._start_from_snapshot()
            # from here the trim keeps every entry this instance has still to apply
            await self.shared.report_position(self.instance, self.replica.last_id)
            try:
                await self._catch_up()
                break
            except LogGap as gap:
                # a newer snapshot was written and the log trimmed behind it meanwhile
                if attempt == 4:
                    raise SnapshotUnusable(
                        f"{self.shared.where.describe()}: the shared log is trimmed before {gap.mark} "
                        "faster than this instance can start from its snapshot; retry"
                    ) from None
        if self.log_config is None:
            birth = commands.config(self.config_hash, shared_part(self.own_config), encode_caps(self.own_caps))
            await self.shared.append(birth.encode(), "")
            await self._catch_up()
        # (another instance may have recorded another configuration first; the log's
        # configuration in force may come from a reload this file does not have)
        if self._mismatch is None and self.log_config != self.config_hash:
            self._mismatch = self._mismatch_message(str(self.log_config))
        if self._mismatch is not None:
            raise ConfigMismatch(f"{self.shared.where.describe()}: {self._mismatch}")
        self.check_file(live=False)
        self._caught_up = True
        self._accepting = True
        self.metrics.store_up.set(1)
        self._tasks = [
            asyncio.create_task(self._apply_loop(), name="log-apply"),
            asyncio.create_task(self._effects_loop(), name="log-effects"),
            asyncio.create_task(self._timer_loop(), name="log-timers"),
            asyncio.create_task(self._records_loop(), name="records-health"),
            asyncio.create_task(self._liveness_loop(), name="instance-liveness"),
            asyncio.create_task(self._snapshot_loop(), name="log-snapshots"),
            asyncio.create_task(self._reload_loop(), name="log-reloads"),
        ]
        log.info(
            "joined",
            instance=self.instance,
            store=self.shared.where.describe(),
            snapshot=self.started_from,
            applied=self.applied_entries,
            last_entry=self.replica.last_id,
            open_sessions=sum(1 for s in self.engine.sessions.values() if s.occupying),
        )

    # ------------------------------------------------------------------ snapshots and trimming

    def _own_engine(self) -> Engine:
        """A fresh engine of this instance's own file (before the log says otherwise)."""
        self.engine.keep_config(self.own_config, self.own_caps)
        self._engine_entries = 0
        self.log_generation = 0
        self._in_force = None
        self.file_differs = None
        return self.engine.blank(self.own_config)

    async def _start_from_snapshot(self, *, required_before: str | None = None) -> None:
        """Start from the newest snapshot: a fresh engine loads it and the replica stands at
        its position. Without a usable one the replica starts at the beginning of the log,
        which is right only if the log was never trimmed: else :class:`SnapshotUnusable`
        (a snapshot of another configuration: :class:`ConfigMismatch`)."""
        self._fresh_engine(self._own_engine())
        self._effects.clear()
        self._oldest_effects = (0, 0)
        self._adapter_state.clear()
        self.log_config = None
        self._mismatch = None
        self.started_from = None
        found = await self.shared.read_snapshot()
        reason = "there is none"
        if found is not None:
            meta, stored = found
            if meta["format"] != str(snapshot.FORMAT):
                reason = f"snapshot format {meta['format']}, this gateway reads {snapshot.FORMAT}"
            else:
                try:
                    body = await asyncio.to_thread(snapshot.decode, stored)
                    if meta["config"] != self.config_hash:
                        # the snapshot carries the configuration in force at its position
                        # (this file may be the one of a reload after it): its engine is
                        # built from that one; else this instance cannot run this log
                        in_force = body.get("config_in_force")
                        if not isinstance(in_force, dict):
                            self._mismatch = self._mismatch_message(meta["config"])
                            raise ConfigMismatch(f"{self.shared.where.describe()}: {self._mismatch}")
                        at = local_view(in_force["config"], self.own_config), decode_caps(in_force["caps"])
                        self.engine.keep_config(*at)
                        self._fresh_engine(self.engine.blank(at[0]))
                    self._load(body)
                except (snapshot.SnapshotError, DumpRefused, KeyError, ValueError, TypeError) as exc:
                    reason = str(exc) or type(exc).__name__
                    self._fresh_engine(self._own_engine())
                    self._effects.clear()
                    self._adapter_state.clear()
                    self.log_config = None
                else:
                    self.started_from = meta["position"]
                    self._snapshot_seen = meta["position"]
                    log.info("snapshot_loaded", position=meta["position"], bytes=len(stored))
                    return
            log.error("snapshot_refused", position=meta["position"], reason=reason)
        mark = required_before or await self.shared.trim_mark()
        if mark is not None:
            raise SnapshotUnusable(
                f"{self.shared.where.describe()}: the shared log is trimmed (entries before {mark} are gone) "
                f"and its snapshot cannot be used here ({reason}): start the version and configuration "
                "the other instances run, or start a new log (another store.prefix)"
            )

    def _load(self, body: dict[str, Any]) -> None:
        """Take a snapshot's body (see :mod:`.snapshot`) on the fresh engine."""
        if body.get("format") != snapshot.FORMAT:
            raise snapshot.SnapshotError(f"snapshot format {body.get('format')!r}")
        self.replica.load(body)
        self.log_config = str(body["config"])
        in_force = body.get("config_in_force")
        self._in_force = dict(in_force) if isinstance(in_force, dict) else None
        self.log_generation = self.engine.generation
        self._adapter_state.update(body["adapter_state"])
        for entry_id, (notices, changes) in body["effects"].items():
            self._effects[entry_id] = (
                [snapshot.notice_from_json(n) for n in notices],
                snapshot.changes_from_json(changes),
            )
        known = body["effects_known_from"]
        self._oldest_effects = (int(known[0]), int(known[1]))

    async def _snapshot_loop(self) -> None:
        """Report this instance's position, write a snapshot when one is due (one instance
        at a time), trim the log behind the newest one."""
        settings = self.settings
        while not self._closing:
            try:
                await self.check_snapshot()
            except StoreUnavailable:
                pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("snapshot_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), settings.snapshot_check_s)

    async def check_snapshot(self) -> bool:
        """One round of the snapshot loop: report this instance's position, note the newest
        snapshot, write one if it is due, trim the log. Whether this instance wrote one."""
        await self.shared.report_position(self.instance, self.replica.last_id)
        meta = await self.shared.snapshot_meta()
        position = meta["position"] if meta is not None else "0-0"
        if parse_entry_id(position) > parse_entry_id(self._snapshot_seen):
            self._snapshot_seen = position
        written = self._snapshot_due(meta) and await self.write_snapshot()
        removed, _mark = await self.shared.trim(int(self.settings.position_stale_s * 1000))
        if removed:
            self.metrics.log_trimmed.inc(removed)
        return written

    def entries_since_snapshot(self) -> int:
        """How many of the entries this instance applied come after the newest snapshot it
        knows of (counted up to ``snapshot_every``: past that a snapshot is due anyway)."""
        seen = parse_entry_id(self._snapshot_seen)
        ids = self._applied_ids
        if not ids or ids[-1] <= seen:
            return 0
        return len(ids) - bisect.bisect_right(ids, seen)

    def _snapshot_due(self, meta: dict[str, str] | None) -> bool:
        settings = self.settings
        if not self.ready or self.replica.last <= parse_entry_id(self._snapshot_seen):
            return False
        if settings.snapshot_every > 0 and self.entries_since_snapshot() >= settings.snapshot_every:
            return True
        if settings.snapshot_every_s <= 0:
            return False
        written = float(meta["written"]) / 1000.0 if meta is not None else 0.0
        return self.replica.clock.now() - written >= settings.snapshot_every_s

    async def write_snapshot(self) -> bool:
        """Write a snapshot of this instance at its position (unless another instance is
        writing one, or a newer one is there): whether it was written."""
        if not await self.shared.take_snapshot_turn(self.instance, int(self.settings.snapshot_turn_s * 1000)):
            return False
        try:
            delivered = parse_entry_id(await self.shared.undelivered_after())
            pending = set(await self.shared.pending_ids(self.settings.effects_kept))
            # between two entries (no await from here to the encoding): the state of the
            # entry applied last, with the side effects still owed for the entries up to it
            body = self.replica.dump()
            position = parse_entry_id(body["position"])
            body.update(
                format=snapshot.FORMAT,
                config=self.log_config or self.config_hash,
                config_in_force=self._in_force,
                adapter_state=dict(self._adapter_state),
                effects={
                    entry_id: [[snapshot.notice_to_json(n) for n in notices], snapshot.changes_to_json(changes)]
                    for entry_id, (notices, changes) in self._effects.items()
                    if parse_entry_id(entry_id) <= position
                    and (entry_id in pending or parse_entry_id(entry_id) > delivered)
                },
                effects_known_from=list(self._oldest_effects),
            )
            text = snapshot.encode(body)
            log.info("snapshot_writing", position=body["position"], bytes=len(text))
            started = time.monotonic()
            stored = await asyncio.to_thread(snapshot.compress, text)
            written = await self.shared.write_snapshot(
                body["position"],
                snapshot.FORMAT,
                str(body["config"]),
                int(self.replica.clock.last * 1000),
                stored,
            )
            if not written:
                return False
            self.snapshots_written += 1
            self.metrics.snapshots_written.inc()
            self._snapshot_seen = body["position"]
            log.info(
                "snapshot_written",
                position=body["position"],
                bytes=len(stored),
                effects=len(body["effects"]),
                ms=round((time.monotonic() - started) * 1000),
            )
            return True
        finally:
            with contextlib.suppress(GatewayError, OSError, TimeoutError):
                await self.shared.end_snapshot_turn(self.instance)

    async def stop(self) -> None:
        await self.stop_intake()
        tasks, self._tasks = self._tasks, []
        # the loops end by themselves (a cancelled blocking read can leave the Redis client's
        # connection stuck): told to, woken, the apply loop after its current read
        self._closing = True
        self._reloads.put_nowait((self.own_config, self.own_caps, None, None))  # wakes the reload loop
        self._stop_liveness.set()
        self._stopped.set()
        self._records_wake.set()
        self._new_entries.set()
        self._wake.set()
        self._applied.set()
        _done, pending = await asyncio.wait(tasks, timeout=self.shared.block_ms / 1000.0 + 3.0) if tasks else ((), ())
        for task in pending:  # pragma: no cover - a loop stuck on a call that never returns
            log.warning("task_did_not_stop", task=task.get_name())
            task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(NotReady("the gateway is shutting down"))
        for task in list(self._side_tasks):
            task.cancel()
        # not alive any more: the others take its desktops for gone without waiting out
        # the time to live (they were closed with the server)
        with contextlib.suppress(StoreUnavailable):
            await self.shared.forget(self.instance)
        # a stopped instance no longer holds back the trim
        with contextlib.suppress(GatewayError, OSError, TimeoutError):
            await self.shared.forget_position(self.instance)
        await self.shared.close()

    async def refresh_metrics(self) -> None:
        try:
            last = await self.shared.last_id()
            self.metrics.log_entries.set(await self.shared.length())
            behind = []
            if last != self.replica.last_id:
                behind = await self.shared.read(self.replica.last_id, 10_000, block=False)
        except StoreUnavailable:
            self.metrics.store_up.set(0)
            return
        self.metrics.store_up.set(1)
        self.metrics.log_lag_entries.set(len(behind))
        newest = parse_entry_id(last)[0] if last != "0-0" else self.replica.last[0]
        self.metrics.log_lag_seconds.set(max(0, newest - self.replica.last[0]) / 1000.0)

    async def check_ready(self) -> dict[str, Any]:
        store = await self.shared.ping()
        records = await self.journal.ping()
        adapters = {name: adapter.health.value for name, adapter in self.adapters.items()}
        ok = store and records and self.ready and all(h == "up" for h in adapters.values())
        checks: dict[str, Any] = {
            "ready": ok,
            "store": "up" if store and records else "down",
            "records": "up" if records else "down",
            "adapters": adapters,
            "accepting": self._accepting,
            "vendors": {name: adapter.describe() for name, adapter in self.adapters.items()},
            "warnings": [f"{name}: {text}" for name, adapter in self.adapters.items() for text in adapter.warnings()],
            "log": {"instance": self.instance, "applied": self.replica.last_id},
        }
        if not store:
            checks["store_error"] = f"the shared store {self.shared.where.describe()} does not answer"
        elif not records:
            checks["store_error"] = "the records store does not answer"
        if self._mismatch is not None:
            checks["config"] = self._mismatch
        elif self.file_differs is not None:
            checks["config"] = self.file_differs
        checks["config_in_force"] = {
            "sha256": self.log_config,
            "generation": self.log_generation,
            "file_sha256": self.config_hash,
        }
        return checks
