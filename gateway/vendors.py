"""The vendors' HTTP endpoints, swappable while the gateway runs.

aiohttp's router is frozen once the application starts, so adapters' routes are not added
to it one by one: one route, ``/v1/vendors/{vendor}/{tail}``, dispatches to the adapter
that serves the vendor *now* (:class:`VendorEndpoints`). A reload replaces a vendor's
adapter (:meth:`VendorEndpoints.pause`, then :meth:`VendorEndpoints.install`): requests
that arrive in between wait for the new adapter (a few milliseconds, at most
:data:`SWAP_WAIT_S`), requests already inside the old adapter finish first
(:meth:`VendorEndpoints.drain`). Adapter route paths are literal or hold aiohttp-style
placeholders (``/tickets/{ticket_id}/close``, ``{name:regex}``), found in
``request.match_info`` as with an aiohttp route.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from aiohttp import web

from adapters.base import Adapter, Route

from .api.errors import json_error

__all__ = ["ENDPOINTS", "SWAP_WAIT_S", "VendorEndpoints"]

#: How long a request waits for a vendor's adapter being replaced before 503 ``not_ready``.
SWAP_WAIT_S = 10.0


_PLACEHOLDER = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<regex>[^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def _pattern(path: str) -> re.Pattern[str] | None:
    """The regular expression of a route path with placeholders (None: a literal path)."""
    if "{" not in path:
        return None
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(path):
        parts.append(re.escape(path[last : match.start()]))
        parts.append(f"(?P<{match['name']}>{match['regex'] or '[^{}/]+'})")
        last = match.end()
    parts.append(re.escape(path[last:]))
    return re.compile("".join(parts))


@dataclass
class _Slot:
    adapter: Adapter | None = None
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    #: routes with placeholders, tried in order after the literal ones
    patterns: list[tuple[str, re.Pattern[str], Route]] = field(default_factory=list)
    #: set while an adapter serves the vendor; cleared while it is being replaced
    live: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class VendorEndpoints:
    """Which adapter serves each vendor's ``/v1/vendors/{vendor}/...`` requests now."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def install(self, adapter: Adapter) -> None:
        """Serve ``adapter.vendor`` with ``adapter``'s routes from now on."""
        slot = self._slots.setdefault(adapter.vendor, _Slot())
        slot.adapter = adapter
        routes = adapter.routes()
        slot.routes = {(route.method.upper(), route.path): route for route in routes}
        slot.patterns = [
            (route.method.upper(), pattern, route) for route in routes if (pattern := _pattern(route.path)) is not None
        ]
        slot.live.set()

    def pause(self, vendor: str) -> None:
        """New requests for ``vendor`` wait (see :meth:`install`) from now on."""
        slot = self._slots.get(vendor)
        if slot is not None:
            slot.live.clear()

    def remove(self, vendor: str) -> None:
        """``vendor`` is no longer configured: its requests get 404 ``unknown_vendor``."""
        slot = self._slots.pop(vendor, None)
        if slot is not None:
            slot.adapter = None
            slot.live.set()  # whoever waits finds it gone

    def inflight(self, vendor: str) -> int:
        """Requests inside ``vendor``'s adapter now."""
        slot = self._slots.get(vendor)
        return 0 if slot is None else slot.inflight

    async def drain(self, vendor: str, timeout: float) -> bool:
        """Wait until no request is inside ``vendor``'s adapter (False: still some after ``timeout``)."""
        slot = self._slots.get(vendor)
        if slot is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.idle.wait(), timeout)
        return slot.idle.is_set()

    def served(self) -> list[tuple[str, str, Route]]:
        """``(vendor, adapter, route)`` of every vendor endpoint served now (paths relative to
        ``/v1/vendors/{vendor}``), for the OpenAPI document."""
        return [
            (vendor, slot.adapter.name, route)
            for vendor, slot in self._slots.items()
            if slot.adapter is not None
            for route in slot.routes.values()
        ]

    def routes(self) -> list[tuple[str, str, str, str]]:
        """``(vendor, adapter, method, path)`` of every vendor endpoint, full paths."""
        return [
            (vendor, slot.adapter.name, method, f"/v1/vendors/{vendor}{path}")
            for vendor, slot in self._slots.items()
            if slot.adapter is not None
            for (method, path) in slot.routes
        ]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        vendor = request.match_info["vendor"]
        slot = self._slots.get(vendor)
        if slot is not None and not slot.live.is_set():
            try:
                await asyncio.wait_for(slot.live.wait(), SWAP_WAIT_S)
            except TimeoutError:
                return json_error(503, "not_ready", f"vendor {vendor!r} is being restarted; retry")
            slot = self._slots.get(vendor)
        if slot is None or slot.adapter is None:
            return json_error(404, "unknown_vendor", f"no vendor named {vendor!r} is configured")
        path = "/" + request.match_info["tail"]
        route = slot.routes.get((request.method, path))
        if route is None:
            for method, pattern, candidate in slot.patterns:
                match = pattern.fullmatch(path) if method == request.method else None
                if match is not None:
                    request.match_info.update(match.groupdict())
                    route = candidate
                    break
        if route is None:
            return json_error(404, "not_found", f"vendor {vendor!r} has no such endpoint")
        slot.inflight += 1
        slot.idle.clear()
        try:
            return await route.handler(request)
        finally:
            slot.inflight -= 1
            if slot.inflight == 0:
                slot.idle.set()


#: The application's :class:`VendorEndpoints`.
ENDPOINTS = web.AppKey("vendor_endpoints", VendorEndpoints)
