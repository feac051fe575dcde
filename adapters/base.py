"""The adapter contract: what every vendor adapter is and may rely on.

An adapter speaks one vendor protocol and turns that vendor's traffic into normalized
:class:`~gateway.events.Event` objects. It never imports the router or the engine: it gets
an :class:`AdapterHost` and calls :meth:`AdapterHost.submit`, which returns only once the
event is journaled (durable) together with the decision, so an adapter may acknowledge to
its vendor as soon as ``submit`` returns.

Three shapes of adapter fit the same contract:

* **HTTP** (webhook, Twilio): :meth:`Adapter.routes` returns handlers that the gateway
  mounts under ``/v1/vendors/{vendor}/`` on its own server.
* **Outbound client** (Asterisk AMI, FreeSWITCH ESL, Kamailio evapi): :meth:`Adapter.start`
  opens the connection (with reconnects and backoff, reporting health), :meth:`Adapter.stop`
  closes it.
* **Listening server** (SMTP): :meth:`Adapter.start` binds its own port.

Decisions taken after the synchronous answer (an interaction that waited in a queue, a
re-route after a decline, a timeout) and session actions (accepted, transferred, ended,
chat replies) go back through :meth:`Adapter.deliver`, each as a
:class:`~gateway.notices.ToVendor`. An adapter that cannot act on one says so by raising
:class:`DeliveryError` with ``retryable`` set as appropriate.

Class-level metadata (``name``, ``channels``, ``capabilities``, ``Config``) is validated
when the class is registered (:mod:`adapters.registry`); the vendor's settings from the
YAML file are validated against ``Config`` at start-up, with unknown keys rejected.

What one vendor can do may depend on its settings (the webhook can carry a transfer only
when it has a ``callback_url``): :meth:`Adapter.capabilities_for` gives the capabilities
of a vendor with given settings (by default the class's ``capabilities``); the gateway
hands those to the router, before the adapter is built. :meth:`Adapter.warnings` names
what a vendor's settings leave out (logged once at start, shown by ``/readyz``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gateway.clock import Clock
from gateway.errors import AdapterError
from gateway.events import Channel, Event
from gateway.notices import Decision, ToVendor


class AdapterConfig(BaseModel):
    """Base of every adapter's settings model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def references(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        """The gateway agents and queues these settings name, as ``(path, kind, id)`` with
        ``kind`` ``"agent"`` or ``"queue"``; ``check-config`` and start-up refuse names that
        are not configured, at the line of ``path``.

        The default knows the common keys of DESIGN section 8: the values of ``agent_map``
        (vendor id -> agent) and ``queue_map`` (vendor queue -> queue), the keys of
        ``agent_contacts`` and ``agent_targets`` (agent -> address), and ``queue``. An
        adapter whose settings name agents or queues otherwise overrides it.
        """
        for key, kind, use_keys in _REFERENCE_FIELDS:
            value = getattr(self, key, None)
            if isinstance(value, Mapping):
                for vendor_id, target in value.items():
                    yield (key, str(vendor_id)), kind, str(vendor_id if use_keys else target)
            elif isinstance(value, str) and not use_keys:
                yield (key,), kind, value


#: (settings key, what it names, whether a mapping's keys (True) or values (False) are the names)
_REFERENCE_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("agent_map", "agent", False),
    ("queue_map", "queue", False),
    ("agent_contacts", "agent", True),
    ("agent_targets", "agent", True),
    ("queue", "queue", False),
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the vendor's CMS can do, declared by the adapter; the router respects it.

    A vendor that cannot take a rejection back (``can_reject=False``) never gets one for a
    lack of capacity: its interactions wait instead (see the README's routing section).
    """

    #: the CMS can take a rejection back and route the interaction elsewhere
    can_reject: bool = True
    #: the CMS can move a live interaction to another agent
    can_transfer: bool = False
    #: live calls of this vendor one agent may hold (None: no vendor limit)
    max_voice_per_agent: int | None = None


class Health(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP route an adapter adds, relative to ``/v1/vendors/{vendor}``.

    ``summary``, ``consumes`` and ``produces`` describe it in the gateway's OpenAPI document
    (``GET /openapi.json`` lists the routes of the vendors configured now): what it is for,
    the media type of the request body the vendor sends and of the answer it gets.
    """

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str = ""
    consumes: str = "application/json"
    produces: str = "application/json"


class DeliveryError(AdapterError):
    """A notice could not be delivered to the vendor."""

    code = "delivery_failed"


class AdapterHost(Protocol):
    """What the gateway offers an adapter."""

    @property
    def clock(self) -> Clock: ...

    @property
    def ready(self) -> bool:
        """Whether the gateway takes events now (store up, not shutting down)."""
        ...

    async def submit(self, event: Event) -> Decision:
        """Route one event; returns once the event and its decision are durable.

        Raises :class:`gateway.errors.InvalidEvent` / :class:`gateway.errors.ActionError`
        for events the gateway refuses (nothing is journaled then), and
        :class:`gateway.errors.GatewayError` with code ``not_ready`` when it cannot take
        events now (retryable).
        """
        ...

    def set_health(self, vendor: str, health: Health, detail: str | None = None) -> None:
        """Report the vendor connection's health (logged once per change)."""
        ...

    def availability(self, agent_id: str, channel: Channel, vendor: str | None = None) -> str | None:
        """Why ``agent_id`` could not take one more ``channel`` session now: a rejection
        reason (``agent_offline``, ``agent_not_ready``, ``channel_at_capacity``,
        ``agent_at_capacity``, ``unknown_agent``), or None when it could. Nothing is reserved.
        Adapters that mirror capacity to their CMS (AMI member pause, mod_callcenter agent
        status) read it for the agents named in :meth:`Adapter.agents_changed`."""
        ...

    def open_interactions(self, vendor: str) -> list[dict[str, Any]]:
        """The vendor's interactions that are not done (for resynchronisation after a
        reconnect): dicts with ``interaction_id``, ``channel``, ``phase``
        (``waiting|offered|active``), ``queue``, ``session_id``, ``agent_id``, ``state``
        (of the session holding it, or None), ``pending_session_id``. An adapter ends the
        ones its vendor no longer has by submitting ``end`` events."""
        ...

    def adapter_state(self, vendor: str, key: str) -> Any:
        """A value the adapter saved with :meth:`save_adapter_state` (None if never), as of
        the last start: it survives restarts."""
        ...

    async def save_adapter_state(self, vendor: str, key: str, value: Any) -> None:
        """Journal a small JSON-able value for the adapter (e.g. IMAP UIDVALIDITY and the
        last UID seen); returns once it is durable. Raises ``not_ready`` like :meth:`submit`."""
        ...

    def unknown_fields(self, vendor: str, fields: Sequence[str]) -> None:
        """Report event fields the vendor sent that the gateway does not know and ignored
        (counted in a metric per vendor; each new name logged once)."""
        ...


class Adapter(ABC):
    """Base class of adapters. Subclasses set the class-level metadata below."""

    #: the ``adapter:`` value in the YAML file
    name: ClassVar[str]
    #: the channels this adapter may offer
    channels: ClassVar[frozenset[Channel]]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: the settings model (a subclass of :class:`AdapterConfig`)
    Config: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        self.vendor = vendor
        self.config = config
        self.host = host
        self._health = Health.DOWN

    @classmethod
    def capabilities_for(cls, config: AdapterConfig) -> Capabilities:
        """What a vendor of this adapter with these settings can do (default: ``capabilities``).

        Override when a setting changes it; must not do I/O (it runs before start-up).
        """
        return cls.capabilities

    @property
    def vendor_capabilities(self) -> Capabilities:
        """This vendor's capabilities (:meth:`capabilities_for` of its settings)."""
        return type(self).capabilities_for(self.config)

    def warnings(self) -> list[str]:
        """What this vendor's settings leave out, in words for the operator (none by default).

        Logged once when the adapter starts and listed by ``/readyz`` (``warnings``); not a
        reason to be unready.
        """
        return []

    def routes(self) -> list[Route]:
        """HTTP routes to mount under ``/v1/vendors/{vendor}`` (none by default)."""
        return []

    @abstractmethod
    async def start(self) -> None:
        """Begin taking traffic (connect, bind, or just mark the routes live)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop taking traffic and release every resource; must not raise."""

    def agents_changed(self, agent_ids: set[str]) -> None:  # noqa: B027 - optional hook, not abstract
        """Presence or capacity in use of these agents may have changed (called after every
        journaled change that touched them, synchronously: must not block; queue the work).
        Adapters that mirror capacity to their CMS compare :meth:`AdapterHost.availability`
        with what they last told the vendor."""

    async def deliver(self, notice: ToVendor) -> None:  # noqa: B027 - optional hook, not abstract
        """Send a late decision or a session action back to the vendor.

        The default does nothing: the adapter's protocol has no way back for it (it is
        still in the supervisor stream and the journal).
        """

    @property
    def health(self) -> Health:
        return self._health

    def _set_health(self, health: Health, detail: str | None = None) -> None:
        if health is not self._health:
            self._health = health
            self.host.set_health(self.vendor, health, detail)

    def describe(self) -> dict[str, Any]:
        capabilities = self.vendor_capabilities
        return {
            "vendor": self.vendor,
            "adapter": self.name,
            "channels": sorted(c.value for c in self.channels),
            "health": self._health.value,
            "can_reject": capabilities.can_reject,
            "can_transfer": capabilities.can_transfer,
        }
