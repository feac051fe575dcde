"""Reloading the configuration of a running gateway (``cti-gateway reload``, SIGHUP).

:meth:`Reloader.reload` re-reads the YAML file the gateway runs on and validates it exactly
like ``check-config`` (:func:`gateway.config_loader.load_config` with the adapter registry's
vendor check, then each vendor's settings as ``run`` builds them). Anything wrong: nothing
changes, the problems come back as ``file:line: field: message``. Else, in this order:

1. the engine applies agents, capacity profiles and queues as one journaled change
   (:meth:`gateway.engine.Engine.reconfigure`); it is durable before anything else moves,
   so a crash after it restarts into the new file with the engine's reaction kept;
2. tokens and API limits: new tokens count for new requests at once; the desktops of an
   agent whose token changed (or who was removed) are closed (4001) and must reconnect
   with the new token;
3. vendors: an adapter whose settings changed is replaced alone (new requests wait for the
   new adapter, those inside the old one finish first, then it stops and the new one
   starts); a removed vendor's adapter stops once its requests are answered; an added
   vendor's starts. Vendors whose settings did not change are not touched;
4. a summary goes to the log (``config_reloaded``), the supervisor stream
   (``{"type": "config.reloaded"}``) and ``/metrics`` (generation, time of the reload).

Settings a running server cannot change (address, port, store, connection limits, access
log) are reported as ``needs_restart`` and the rest is applied. One reload runs at a time.

On a shared store (``store: redis://``, :mod:`gateway.cluster`) the file is validated the
same way, then step 1 is one ``reload`` entry appended to the shared log: every instance
applies it to its engine at the same position and then does steps 2-4 for its own edges
(:meth:`Reloader.reconcile`, called by the cluster runtime in the log's order), whichever
instance the reload came from. This instance answers once its own edges are reconciled. A
reload made on a configuration that another reload replaced in the meantime is refused
(``reload_conflict``) everywhere, and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from adapters.base import Adapter, AdapterConfig, Health
from adapters.registry import AdapterRegistry

from . import commands
from .config import GatewayConfig, Known
from .config_loader import load_config
from .errors import ConfigError, GatewayError
from .interactions import VendorCapabilities
from .reconfigure import ConfigDiff, diff
from .runtime import Runtime
from .vendors import VendorEndpoints

if TYPE_CHECKING:  # pragma: no cover
    from .api.context import ApiContext

__all__ = ["CLOSE_TOKEN_CHANGED", "ReloadFailed", "ReloadResult", "Reloader"]

log = structlog.get_logger("cti_gateway.reload")

#: WebSocket close code for a desktop whose agent's token changed or who was removed
CLOSE_TOKEN_CHANGED = 4001
#: longest a replaced or removed vendor's requests in flight are waited for
VENDOR_DRAIN_S = 10.0


class ReloadFailed(GatewayError):
    """The new file is not valid (``problems``) or could not be applied; nothing changed."""

    code = "invalid_config"

    def __init__(self, message: str, problems: list[str] | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.problems = list(problems or [])


@dataclass
class ReloadResult:
    generation: int
    changes: dict[str, list[str]]
    needs_restart: list[str]
    engine: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "changes": self.changes,
            "needs_restart": self.needs_restart,
            "agents_retiring": self.engine.get("agents_retiring", []),
        }


class Reloader:
    def __init__(
        self,
        runtime: Runtime,
        endpoints: VendorEndpoints,
        registry: AdapterRegistry,
        config: GatewayConfig,
        path: str | os.PathLike[str] | None,
    ) -> None:
        self.runtime = runtime
        self.endpoints = endpoints
        self.registry = registry
        self.config = config
        self.path = None if path is None else Path(path)
        self.api: ApiContext | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: the cluster runtime calls :meth:`reconcile` after applying a reload entry
        self.replicated = hasattr(runtime, "reload_command")
        if self.replicated:
            runtime.on_reload = self.reconcile  # type: ignore[attr-defined]

    @contextlib.asynccontextmanager
    async def shutting_down(self) -> AsyncIterator[None]:
        """Wait for a reload that is running; refuse new ones from then on."""
        async with self._lock:
            self._closed = True
            yield

    def same_file(self, path: str) -> bool:
        """Whether ``path`` names the file the gateway runs on."""
        if self.path is None:
            return False
        try:
            return Path(path).resolve() == self.path.resolve()
        except OSError:
            return False

    async def reload(self) -> ReloadResult:
        """Re-read, validate and apply the file; :class:`ReloadFailed` when nothing changed."""
        if self.path is None:
            raise ReloadFailed("the gateway was started without a configuration file", code="reload_unavailable")
        async with self._lock:
            if self._closed:
                raise ReloadFailed("the gateway is shutting down", code="not_ready")
            log.info("config_reload_started", file=str(self.path))
            new = await asyncio.to_thread(self._load, self.path)
            settings, caps = self._vendor_settings(new)
            if self.replicated:
                return await self._reload_shared(new, caps)
            return await self._apply(new, settings, caps)

    async def reload_from_signal(self) -> None:
        """SIGHUP: reload, reporting the outcome in the log only."""
        try:
            await self.reload()
        except ReloadFailed as exc:
            log.error("config_reload_failed", file=str(self.path), error=exc.message, problems=exc.problems)
        except Exception:  # a signal handler's task must never die silently
            log.exception("config_reload_crashed", file=str(self.path))

    # ------------------------------------------------------------------ steps

    def _load(self, path: Path) -> GatewayConfig:
        try:
            return load_config(path, vendor_check=self.registry.vendor_problems)
        except ConfigError as exc:
            raise ReloadFailed(f"{path}: {len(exc.problems)} problem(s); nothing was changed", exc.problems) from None

    def _vendor_settings(self, config: GatewayConfig) -> tuple[dict[str, AdapterConfig], dict[str, VendorCapabilities]]:
        from .app import vendor_capabilities  # the composition root owns how vendors are built

        known = Known.of(config)
        try:
            settings = {
                vendor.name: self.registry.validate_vendor(vendor, index=index, known=known)
                for index, vendor in enumerate(config.vendors)
            }
            caps = {
                vendor.name: vendor_capabilities(self.registry.get(vendor.adapter), settings[vendor.name])
                for vendor in config.vendors
            }
        except ConfigError as exc:
            raise ReloadFailed("the vendors' settings are not valid; nothing was changed", exc.problems) from None
        return settings, caps

    async def _apply(
        self, new: GatewayConfig, settings: dict[str, AdapterConfig], caps: dict[str, VendorCapabilities]
    ) -> ReloadResult:
        old = self.config
        changes = diff(old, new)
        runtime = self.runtime
        old_caps = runtime.engine.vendor_capabilities()
        try:
            summary = await runtime.act(commands.reconfigure(new, caps))
        except GatewayError as exc:
            # not journaled (or not known to be): a rebuild takes the state from the journal
            # with the configuration that is still in force
            runtime.engine.keep_config(old, old_caps)
            raise ReloadFailed(f"the change could not be applied: {exc.message}", code=exc.code) from exc
        except Exception:
            runtime.engine.keep_config(old, old_caps)
            raise
        return await self._reconciled(new, settings, summary, changes)

    async def _reconciled(
        self,
        new: GatewayConfig,
        settings: dict[str, AdapterConfig],
        summary: dict[str, Any],
        changes: ConfigDiff,
        *,
        edges: bool = True,
    ) -> ReloadResult:
        """Steps 2-4, once the engine applied the new configuration."""
        runtime = self.runtime
        old = self.config
        self.config = new
        if edges:
            self._apply_api(new, changes)
            await self._apply_vendors(old, new, changes, settings)
        result = ReloadResult(
            generation=summary["generation"],
            changes=changes.compact(),
            needs_restart=list(changes.needs_restart),
            engine=summary,
        )
        runtime.metrics.config_reloaded(runtime.engine)
        log.info(
            "config_reloaded",
            file=str(self.path),
            generation=result.generation,
            changes=result.changes,
            needs_restart=result.needs_restart,
            agents_retiring=summary["agents_retiring"],
        )
        if result.needs_restart:
            log.warning("config_needs_restart", settings=result.needs_restart)
        runtime.bus.publish({"type": "config.reloaded", **result.as_dict()})
        return result

    async def _reload_shared(self, new: GatewayConfig, caps: dict[str, VendorCapabilities]) -> ReloadResult:
        """A shared store: one ``reload`` entry; its edges follow in :meth:`reconcile`."""
        runtime: Any = self.runtime
        runtime.own_file(new, caps)  # (its settings of this instance only are reported needs_restart)
        restart = [x for x in diff(self.config, new).needs_restart if x.startswith("retention.")]
        if restart:
            # every instance must decide duplicates alike, and a running engine keeps the
            # retention it started with: the log keeps the one in force (needs_restart)
            new = new.model_copy(update={"retention": self.config.retention})
        try:
            result = await runtime.act(runtime.reload_command(new, caps))
        except GatewayError as exc:
            # refused (every instance refused it alike), or not known to be in the log (a
            # 503: it may still be applied, like any unanswered request)
            runtime.check_file(live=True)
            raise ReloadFailed(f"the change could not be applied: {exc.message}", code=exc.code) from exc
        if not isinstance(result, ReloadResult):  # (shutting down: the edges were not reconciled)
            raise ReloadFailed("the gateway is shutting down", code="not_ready")
        if restart:
            log.warning("config_needs_restart", settings=restart)
            result.needs_restart = [*result.needs_restart, *restart]
            result.changes = {**result.changes, "needs_restart": result.needs_restart}
        return result

    async def reconcile(
        self, new: GatewayConfig, caps: dict[str, VendorCapabilities], summary: dict[str, Any]
    ) -> ReloadResult:
        """A shared store: the engine applied a reload entry (from any instance); this
        instance's tokens, desktops and adapters follow (steps 2-4)."""
        try:
            settings, _ = self._vendor_settings(new)
        except ReloadFailed as exc:  # e.g. a plug-in this instance does not have
            log.error("config_reload_vendors_failed", error=exc.message, problems=exc.problems)
            settings = {}
        return await self._reconciled(new, settings, summary, diff(self.config, new), edges=not self._closed)

    def _apply_api(self, new: GatewayConfig, changes: ConfigDiff) -> None:
        api = self.api
        if api is None:
            return
        from .api.auth import TokenAuthority

        api.authority = TokenAuthority.from_config(new)
        api.settings.rate_per_s = new.server.rate_limit_per_s
        api.settings.rate_burst = new.server.rate_limit_burst
        api.settings.max_desktops_per_agent = new.server.max_desktops_per_agent
        for agent_id in changes.tokens_changed:
            closed = api.close_desktops(agent_id, CLOSE_TOKEN_CHANGED, b"token changed: reconnect")
            if closed:
                log.info("desktop_closed", agent_id=agent_id, reason="token_changed", sockets=closed)

    async def _apply_vendors(
        self, old: GatewayConfig, new: GatewayConfig, changes: ConfigDiff, settings: dict[str, AdapterConfig]
    ) -> None:
        runtime = self.runtime
        by_name = {vendor.name: vendor for vendor in new.vendors}
        for name in changes.vendors_removed:
            await self._drain(name)
            self.endpoints.remove(name)
            adapter = runtime.adapters.pop(name, None)
            if adapter is not None:
                await _stop(adapter)
            runtime.forget_vendor(name)
            log.info("vendor_removed", vendor=name)
        for name in changes.vendors_changed:
            if name not in settings:  # (not valid here: reported by reconcile, left as it was)
                continue
            vendor = by_name[name]
            replacement: Adapter = self.registry.get(vendor.adapter)(name, settings[name], runtime)
            await self._drain(name)
            previous = runtime.adapters.get(name)
            if previous is not None:
                await _stop(previous)
            runtime.adapters[name] = replacement
            await self._start(replacement)
            log.info("vendor_restarted", vendor=name, adapter=replacement.name)
        for name in changes.vendors_added:
            if name not in settings:
                continue
            vendor = by_name[name]
            adapter = self.registry.get(vendor.adapter)(name, settings[name], runtime)
            runtime.adapters[name] = adapter
            await self._start(adapter)
            log.info("vendor_added", vendor=name, adapter=adapter.name)
        # vendors keep their order of the file (``/readyz`` lists them so)
        order = [vendor.name for vendor in new.vendors]
        runtime.adapters = {name: runtime.adapters[name] for name in order if name in runtime.adapters}
        del old

    async def _drain(self, vendor: str) -> None:
        """New requests for ``vendor`` wait; those inside its adapter finish first."""
        self.endpoints.pause(vendor)
        inflight = self.endpoints.inflight(vendor)
        if inflight:
            log.info("vendor_draining", vendor=vendor, requests=inflight)
        if not await self.endpoints.drain(vendor, VENDOR_DRAIN_S):
            log.warning("vendor_drain_timeout", vendor=vendor, waited_s=VENDOR_DRAIN_S)

    async def _start(self, adapter: Adapter) -> None:
        """Start an adapter and serve its routes; one that fails to start is logged and
        left down (its routes answer 503 until a reload fixes it)."""
        try:
            await adapter.start()
        except Exception as exc:  # noqa: BLE001 - reported, the rest of the reload stands
            log.error("adapter_start_failed", vendor=adapter.vendor, adapter=adapter.name, error=str(exc) or repr(exc))
            self.runtime.set_health(adapter.vendor, Health.DOWN, str(exc))
            return
        self.endpoints.install(adapter)
        log.info("adapter_started", vendor=adapter.vendor, adapter=adapter.name)
        for warning in adapter.warnings():
            log.warning("vendor_warning", vendor=adapter.vendor, adapter=adapter.name, warning=warning)


async def _stop(adapter: Adapter) -> None:
    try:
        await adapter.stop()
    except Exception:  # stop() must not raise; if it does, the reload goes on
        log.exception("adapter_stop_failed", vendor=adapter.vendor)
