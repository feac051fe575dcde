"""Fakes and fixtures for adapter tests: a programmable :class:`FakeHost`, captured logs.

The adapter under test runs behind a real aiohttp server on a free loopback port, its
routes mounted under ``/v1/vendors/{vendor}`` as the gateway mounts them, and real HTTP
clients talk to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

import adapters.registry
import adapters.webhook
from adapters.base import Health
from gateway.clock import Clock, ManualClock
from gateway.events import Channel, Event
from gateway.notices import Decision, DecisionKind

T0 = 1_700_000_000.0

Answer = Decision | BaseException | Callable[[Event], Decision]
#: captured log entries (structlog event dicts)
Logs = list[MutableMapping[str, Any]]


class FakeHost:
    """An :class:`~adapters.base.AdapterHost` that records what the adapter does.

    ``answer`` is what :meth:`submit` gives: a :class:`Decision`, an exception to raise, or
    a function of the event. ``submitted`` holds the events in order, ``contexts`` the
    structlog context variables bound while each was submitted, ``health`` every
    :meth:`set_health` call, ``unknown`` every :meth:`unknown_fields` report.
    """

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.manual_clock = clock or ManualClock(T0)
        self.is_ready = True
        self.answer: Answer = Decision(DecisionKind.ASSIGNED, agent_id="a1", session_id="s1")
        self.submitted: list[Event] = []
        self.contexts: list[dict[str, Any]] = []
        self.health: list[tuple[str, Health, str | None]] = []
        #: agent id -> the reason :meth:`availability` gives (absent: available)
        self.unavailable: dict[str, str] = {}
        #: what :meth:`open_interactions` returns
        self.open_rows: list[dict[str, Any]] = []
        #: what :meth:`save_adapter_state` saved
        self.state: dict[tuple[str, str], Any] = {}
        self.unknown: list[tuple[str, list[str]]] = []

    @property
    def clock(self) -> Clock:
        return self.manual_clock

    @property
    def ready(self) -> bool:
        return self.is_ready

    async def submit(self, event: Event) -> Decision:
        self.submitted.append(event)
        self.contexts.append(structlog.contextvars.get_contextvars())
        answer = self.answer
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Decision):
            return answer
        return answer(event)

    def set_health(self, vendor: str, health: Health, detail: str | None = None) -> None:
        self.health.append((vendor, health, detail))

    def availability(self, agent_id: str, channel: Channel, vendor: str | None = None) -> str | None:
        return self.unavailable.get(agent_id)

    def open_interactions(self, vendor: str) -> list[dict[str, Any]]:
        return [dict(row) for row in self.open_rows]

    def adapter_state(self, vendor: str, key: str) -> Any:
        return self.state.get((vendor, key))

    async def save_adapter_state(self, vendor: str, key: str, value: Any) -> None:
        self.state[(vendor, key)] = value

    def unknown_fields(self, vendor: str, fields: Sequence[str]) -> None:
        self.unknown.append((vendor, list(fields)))

    def health_states(self) -> list[Health]:
        return [health for _, health, _ in self.health]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    """Log entries of the adapter modules, with the bound context variables merged in.

    The modules' loggers are replaced by fresh ones for the test, so that capturing works
    even if structlog was configured with ``cache_logger_on_first_use`` earlier.
    """
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        for module in (adapters.webhook, adapters.registry):
            monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
        yield entries


def events_named(entries: Logs, name: str) -> Logs:
    return [entry for entry in entries if entry.get("event") == name]
