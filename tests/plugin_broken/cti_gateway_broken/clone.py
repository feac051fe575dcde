"""A second adapter called ``ticket_http``: the name of tests/plugin_example's adapter."""

from __future__ import annotations

from typing import ClassVar

from adapters.base import Adapter
from gateway.events import Channel


class TicketClone(Adapter):
    name: ClassVar[str] = "ticket_http"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
