"""The composition root: the one place where config, engine, journal, runtime, adapters and
the HTTP API are wired together.

Resources open in order and close in reverse (aiohttp ``cleanup_ctx``): the journal opens
and restores first; the runtime starts taking requests; the adapters start taking vendor
traffic last. On shutdown (SIGTERM) the adapters stop first (no more intake), then the
runtime finishes what is in flight, then the journal flushes and closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from adapters.base import Adapter, AdapterConfig, Capabilities
from adapters.registry import AdapterRegistry

from .api.context import ApiSettings
from .api.errors import json_error
from .api.routes import setup_api
from .clock import Clock, SystemClock
from .config import GatewayConfig, Known
from .engine import Engine
from .errors import ConfigError
from .interactions import VendorCapabilities
from .metrics import Metrics
from .persistence import Journal
from .records import open_journal
from .runtime import Runtime
from .web import setup_web

RUNTIME = web.AppKey("runtime", Runtime)
CONFIG = web.AppKey("config", GatewayConfig)

log = structlog.get_logger("cti_gateway.app")

#: Largest request body aiohttp reads for any route (routes enforce smaller limits).
CLIENT_MAX_SIZE = 1 << 20


def build_app(
    config: GatewayConfig,
    *,
    clock: Clock | None = None,
    journal: Journal | None = None,
    base_dir: Path | None = None,
    registry: AdapterRegistry | None = None,
) -> web.Application:
    """Build the gateway's aiohttp application from a validated configuration."""
    clock = clock or SystemClock()
    registry = registry or AdapterRegistry.discover()
    adapter_classes = {vendor.name: registry.get(vendor.adapter) for vendor in config.vendors}
    known = Known.of(config)
    settings = {
        vendor.name: registry.validate_vendor(vendor, index=index, known=known)
        for index, vendor in enumerate(config.vendors)
    }
    engine = Engine(
        config,
        clock=clock,
        vendor_capabilities={name: vendor_capabilities(cls, settings[name]) for name, cls in adapter_classes.items()},
    )
    journal = journal if journal is not None else open_journal(config.store.url, base_dir=base_dir)
    runtime = Runtime(engine, journal, clock=clock, metrics=Metrics())

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[CONFIG] = config
    app[RUNTIME] = runtime
    for vendor in config.vendors:
        cls = adapter_classes[vendor.name]
        adapter: Adapter = cls(vendor.name, settings[vendor.name], runtime)
        runtime.adapters[vendor.name] = adapter
        for route in adapter.routes():
            app.router.add_route(route.method, f"/v1/vendors/{vendor.name}{route.path}", route.handler)
    app.router.add_route("*", "/v1/vendors/{vendor}/{tail:.*}", _unknown_vendor)
    setup_api(
        app,
        runtime,
        settings=ApiSettings(
            rate_per_s=config.server.rate_limit_per_s,
            rate_burst=config.server.rate_limit_burst,
            max_desktops_per_agent=config.server.max_desktops_per_agent,
        ),
    )
    setup_web(app)  # /desk, /board and what they read (gateway/web)

    app.cleanup_ctx.append(_journal_ctx)
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(_adapters_ctx)
    return app


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


async def _unknown_vendor(request: web.Request) -> web.Response:
    vendor = request.match_info["vendor"]
    if vendor in request.app[RUNTIME].adapters:
        return json_error(404, "not_found", f"vendor {vendor!r} has no such endpoint")
    return json_error(404, "unknown_vendor", f"no vendor named {vendor!r} is configured")


async def _journal_ctx(app: web.Application) -> AsyncIterator[None]:
    journal = app[RUNTIME].journal
    await journal.open()
    yield
    await journal.close()


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
    finally:
        await runtime.stop_intake()
        for adapter in reversed(started):
            try:
                await adapter.stop()
            except Exception:  # stop() must not raise; if it does, the others still stop
                log.exception("adapter_stop_failed", vendor=adapter.vendor)
