"""The composition root: the one place where config, engine, journal, runtime, adapters and
the HTTP API are wired together.

Resources open in order and close in reverse (aiohttp ``cleanup_ctx``): the journal opens
and restores first (then a records store of its own, if configured); the runtime starts
taking requests; the adapters start taking vendor traffic last. On shutdown (SIGTERM) the
adapters stop first (no more intake), then the runtime finishes what is in flight, then the
journal flushes and closes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from adapters.base import Adapter, AdapterConfig, Capabilities
from adapters.registry import AdapterRegistry

from .api.admin import AdminApi
from .api.context import ApiSettings
from .api.routes import setup_api
from .clock import Clock, SystemClock
from .config import GatewayConfig, Known
from .engine import Engine
from .errors import ConfigError
from .interactions import VendorCapabilities
from .metrics import Metrics
from .persistence import Journal
from .records import open_journal, open_records
from .reload import Reloader
from .runtime import Runtime
from .store_url import RedisUrl, parse_store_url
from .vendors import ENDPOINTS as ENDPOINTS
from .vendors import VendorEndpoints
from .web import setup_web

RUNTIME = web.AppKey("runtime", Runtime)
RELOADER = web.AppKey("reloader", Reloader)
CONFIG = web.AppKey("config", GatewayConfig)

log = structlog.get_logger("cti_gateway.app")

#: Largest request body aiohttp reads for any route (routes enforce smaller limits).
CLIENT_MAX_SIZE = 1 << 20


def build_app(
    config: GatewayConfig,
    *,
    clock: Clock | None = None,
    journal: Journal | None = None,
    records: Journal | None = None,
    base_dir: Path | None = None,
    registry: AdapterRegistry | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> web.Application:
    """Build the gateway's aiohttp application from a validated configuration.

    ``config_path``: the file it was read from, which a reload (``POST /v1/admin/reload``,
    SIGHUP) reads again; without it the gateway cannot be reloaded."""
    clock = clock or SystemClock()
    registry = AdapterRegistry.discover() if registry is None else registry
    adapter_classes = {vendor.name: registry.get(vendor.adapter) for vendor in config.vendors}
    known = Known.of(config)
    settings = {
        vendor.name: registry.validate_vendor(vendor, index=index, known=known)
        for index, vendor in enumerate(config.vendors)
    }
    caps = {name: vendor_capabilities(cls, settings[name]) for name, cls in adapter_classes.items()}
    store = parse_store_url(config.store.url)
    runtime: Runtime
    if store.redis is not None:
        # several instances: the state is the shared log's; the records go to PostgreSQL
        shared_records = records if records is not None else journal
        if shared_records is None:
            if config.records is None:  # (the config model requires it next to redis://)
                raise ConfigError(["store.url: a redis:// store needs a records section"])
            shared_records = open_records(config.records.url)
        runtime = _cluster_runtime(config, store.redis, caps, shared_records, clock)
    else:
        engine = Engine(config, clock=clock, vendor_capabilities=caps)
        journal = journal if journal is not None else open_journal(config.store.url, base_dir=base_dir)
        if records is None and config.records is not None:
            records = open_records(config.records.url)
        runtime = Runtime(engine, journal, clock=clock, metrics=Metrics(), records=records)

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CONFIG] = config
    app[RUNTIME] = runtime
    endpoints = VendorEndpoints()
    for vendor in config.vendors:
        cls = adapter_classes[vendor.name]
        adapter: Adapter = cls(vendor.name, settings[vendor.name], runtime)
        runtime.adapters[vendor.name] = adapter
        endpoints.install(adapter)
    # one route for every vendor: a reload may replace, add or remove a vendor's adapter
    app.router.add_route("*", "/v1/vendors/{vendor}/{tail:.*}", endpoints.dispatch)
    app[ENDPOINTS] = endpoints
    reloader = Reloader(runtime, endpoints, registry, config, config_path)
    app[RELOADER] = reloader
    ctx = setup_api(
        app,
        runtime,
        settings=ApiSettings(
            rate_per_s=config.server.rate_limit_per_s,
            rate_burst=config.server.rate_limit_burst,
            max_desktops_per_agent=config.server.max_desktops_per_agent,
        ),
    )
    reloader.api = ctx
    app.router.add_post("/v1/admin/reload", AdminApi(ctx, reloader).reload)
    setup_web(app)  # /desk, /board and what they read (gateway/web)

    app.cleanup_ctx.append(_journal_ctx)
    app.cleanup_ctx.append(_records_ctx)
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(_adapters_ctx)
    return app


def _cluster_runtime(
    config: GatewayConfig, where: RedisUrl, caps: dict[str, VendorCapabilities], records: Journal, clock: Clock
) -> Runtime:
    """The replicated runtime (``store: redis://``): the engine applies the shared log."""
    from .cluster.log import RedisLog
    from .cluster.replica import Replica
    from .cluster.runtime import ClusterRuntime, ClusterSettings

    replica = Replica()
    engine = Engine(config, vendor_capabilities=caps, **replica.engine_options())
    return ClusterRuntime(
        engine,
        records,
        clock=clock,
        metrics=Metrics(),
        shared=RedisLog(where, prefix=config.store.prefix),
        replica=replica,
        config=config,
        caps=caps,
        settings=ClusterSettings(
            answer_timeout_s=config.store.answer_timeout_s,
            claim_idle_s=config.store.claim_idle_s,
            snapshot_every=config.store.snapshot_every,
            snapshot_every_s=config.store.snapshot_every_s,
        ),
    )


def vendor_capabilities(cls: type[Adapter], settings: AdapterConfig) -> VendorCapabilities:
    """What the router must respect for one vendor: its adapter's channels and the
    capabilities of a vendor with these settings (:meth:`Adapter.capabilities_for`)."""
    declared = cls.capabilities_for(settings)
    if not isinstance(declared, Capabilities):  # a plug-in's mistake, named before anything starts
        raise ConfigError(
            [f"adapter {cls.name!r}: capabilities_for() returned {type(declared).__name__}, not Capabilities"]
        )
    return VendorCapabilities(
        channels=cls.channels,
        can_reject=declared.can_reject,
        can_transfer=declared.can_transfer,
        max_voice_per_agent=declared.max_voice_per_agent,
    )


async def _journal_ctx(app: web.Application) -> AsyncIterator[None]:
    journal = app[RUNTIME].journal
    await journal.open()
    yield
    await journal.close()


async def _records_ctx(app: web.Application) -> AsyncIterator[None]:
    """A records store of its own (PostgreSQL) opens after the journal and closes before it."""
    runtime = app[RUNTIME]
    if not runtime.separate_records:
        yield
        return
    await runtime.records.open()
    yield
    await runtime.records.close()


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.start()
    yield
    await runtime.stop()


async def _adapters_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    started: list[Adapter] = []
    try:
        for adapter in runtime.adapters.values():
            await adapter.start()
            started.append(adapter)
            log.info("adapter_started", vendor=adapter.vendor, adapter=adapter.name)
            for warning in adapter.warnings():
                log.warning("vendor_warning", vendor=adapter.vendor, adapter=adapter.name, warning=warning)
        yield
        # reloads may have replaced, added or removed adapters since: stop those in use now,
        # after any reload that is running (none starts once shutting down)
        async with app[RELOADER].shutting_down():
            started = list(runtime.adapters.values())
    finally:
        await runtime.stop_intake()
        for adapter in reversed(started):
            try:
                await adapter.stop()
            except Exception:  # stop() must not raise; if it does, the others still stop
                log.exception("adapter_stop_failed", vendor=adapter.vendor)
