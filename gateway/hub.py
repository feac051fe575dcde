"""Fan-out to sockets: agent desktops (:class:`DesktopHub`) and supervisors (:class:`EventBus`).

Both are synchronous and never block the caller: every subscriber owns a bounded queue,
and a subscriber that does not keep up (its queue is full) is dropped, so that one stuck
desktop can never stall routing for anybody else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

log = structlog.get_logger("cti_gateway.hub")

Message = dict[str, Any]


class Subscriber(Protocol):
    """A socket's outgoing side: ``offer`` must not block; False means "drop me"."""

    def offer(self, message: Message) -> bool: ...

    def overflow(self) -> None:
        """Called once the subscriber fell behind: close the socket."""
        ...


class EventBus:
    """Supervisor stream: every normalized event, decision and session change."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, message: Message) -> None:
        for subscriber in list(self._subscribers):
            try:
                delivered = subscriber.offer(message)
            except Exception:  # a broken listener never breaks the publisher
                log.exception("bus_subscriber_failed")
                delivered = False
            if not delivered:
                self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            log.warning("bus_subscriber_dropped", reason="fell behind")
            subscriber.overflow()


class DesktopHub:
    """Agent desktop sockets, several per agent allowed (e.g. two browser tabs)."""

    def __init__(self) -> None:
        self._connections: dict[str, list[Subscriber]] = {}

    def connected(self, agent_id: str) -> int:
        return len(self._connections.get(agent_id, ()))

    def subscribers(self, agent_id: str) -> list[Subscriber]:
        return list(self._connections.get(agent_id, ()))

    def add(self, agent_id: str, subscriber: Subscriber) -> bool:
        """Register a socket; True if it is the agent's first."""
        conns = self._connections.setdefault(agent_id, [])
        conns.append(subscriber)
        return len(conns) == 1

    def remove(self, agent_id: str, subscriber: Subscriber) -> bool:
        """Forget a socket; True if it was the agent's last one (False if it was not registered:
        a socket replaced by a newer one was removed already)."""
        conns = self._connections.get(agent_id)
        if conns is None or subscriber not in conns:
            return False
        conns.remove(subscriber)
        if not conns:
            del self._connections[agent_id]
            return True
        return False

    def trim(self, agent_id: str, keep: int) -> list[Subscriber]:
        """Forget the agent's oldest sockets beyond the newest ``keep``; returns them (to close)."""
        conns = self._connections.get(agent_id, [])
        excess = max(0, len(conns) - max(1, keep))
        dropped, conns[:excess] = conns[:excess], []
        return dropped

    def send(self, agent_id: str, message: Message) -> None:
        for subscriber in list(self._connections.get(agent_id, ())):
            try:
                delivered = subscriber.offer(message)
            except Exception:
                log.exception("desktop_send_failed", agent_id=agent_id)
                delivered = False
            if not delivered:
                log.warning("desktop_dropped", agent_id=agent_id, reason="fell behind")
                subscriber.overflow()
