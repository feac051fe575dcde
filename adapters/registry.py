"""Which adapters exist: the built-ins plus plug-ins of the ``cti_gateway.adapters`` group.

::

    registry = AdapterRegistry.discover()    # built-ins + installed plug-ins, never raises
    cls = registry.get("webhook")            # UnknownAdapter (a ConfigError and a KeyError)
    settings = registry.validate_vendor(config.vendors[0], index=0)   # ConfigError
    adapter = cls(vendor.name, settings, host)

A plug-in is an entry point ``<name> = "package.module:AdapterClass"`` in the group
:data:`ENTRY_POINT_GROUP`. Its class is checked when it is registered
(:meth:`AdapterRegistry.register`); a plug-in that cannot be imported, whose class is
invalid or whose adapter name is taken is skipped by :meth:`AdapterRegistry.discover` (and
:meth:`AdapterRegistry.add_entry_points`) and logged once as ``adapter_plugin_rejected``
(``entry_point``, ``reason``): a broken plug-in never stops the gateway. Built-ins are
registered first, so a plug-in cannot take their names; a built-in that is also declared
as an entry point (the project's own ``pyproject.toml`` does that) is registered once. Two
plug-ins whose adapters have one name are both refused (which one a vendor got would
otherwise depend on what happens to be installed). A vendor that names a refused plug-in
fails ``check-config`` and start-up with the reason (:meth:`AdapterRegistry.refusal`):
``adapter 'x' is not available: plug-in 'x' (pkg.mod:Class) was skipped: cannot be
imported: ModuleNotFoundError: ...``.

**Loading only what a configuration uses.** ``discover(lazy=True)`` (what ``cti-gateway
run`` uses) defers each built-in adapter until something asks for it by name (:meth:`get`,
``in``, :meth:`refusal`, a plug-in claiming its name) or for the whole list
(:meth:`names`, iteration, ``len``): a gateway whose vendors use the webhook does not import
the other built-ins and their libraries (imapclient, aiosmtpd, ...: ~3 MB of
modules). The result of every question is the one a full discovery gives: the installed
plug-ins are loaded (and rejected, logged) at discovery as always, a plug-in cannot take a
built-in's name (the built-in is loaded first when one claims it), and a built-in that
cannot be imported is refused with its reason when it is asked for. ``check-config``, the
replay and the tests use the full discovery (:func:`default_registry`).

Vendor settings (the YAML keys of a vendor beside ``name`` and ``adapter``) are validated
against the adapter's ``Config`` model: :meth:`AdapterRegistry.vendor_problems` returns
``(path, message)`` pairs with paths from the file's root (``("vendors", 0, "secret")``)
for :func:`gateway.config_loader.load_config`'s ``vendor_check`` to map onto lines;
:meth:`AdapterRegistry.validate_vendor` returns the settings or raises
:class:`~gateway.errors.ConfigError` with ``vendors.<i>.<field>: message`` problems.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from gateway.config import Known, VendorConfig
from gateway.errors import ConfigError
from gateway.events import Channel

from .base import Adapter, AdapterConfig, Capabilities

__all__ = [
    "BUILTIN_ADAPTERS",
    "ENTRY_POINT_GROUP",
    "AdapterRegistrationError",
    "AdapterRegistry",
    "UnknownAdapter",
    "default_registry",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "cti_gateway.adapters"

#: Built-in adapters as ``name -> "module:Class"``, loaded like entry points.
BUILTIN_ADAPTERS: dict[str, str] = {
    "webhook": "adapters.webhook:WebhookAdapter",
    "twilio": "adapters.twilio:TwilioAdapter",
    "asterisk_ami": "adapters.asterisk_ami:AsteriskAmiAdapter",
    "chat_ws": "adapters.chat_ws:ChatWsAdapter",
    "kamailio": "adapters.kamailio:KamailioAdapter",
    "smtp_push": "adapters.smtp_push:SmtpPushAdapter",
    "freeswitch_esl": "adapters.freeswitch_esl:FreeswitchEslAdapter",
    "imap_pull": "adapters.imap_pull:ImapPullAdapter",
}

Loc = tuple[str | int, ...]


class AdapterRegistrationError(ValueError):
    """An adapter class cannot be registered: the message says every reason."""


class UnknownAdapter(ConfigError, KeyError):
    """No adapter of that name is registered.

    A :class:`~gateway.errors.ConfigError` (a vendor names it in the YAML file) and a
    :class:`KeyError` (a failed look-up); the message lists the known adapters, or, when
    ``refused`` says why, why the installed plug-in of that name was skipped (it failed
    to import, its class is invalid, two plug-ins claim the name).
    """

    code = "unknown_adapter"

    def __init__(self, name: str, known: Iterable[str], refused: str | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        self.refused = refused
        if refused is not None:
            super().__init__([f"adapter {name!r} is not available: {refused}"])
        else:
            listed = ", ".join(self.known) or "none"
            super().__init__([f"unknown adapter {name!r} (known: {listed})"])

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class _EntryPoint(Protocol):
    """What :meth:`AdapterRegistry.discover` uses of :class:`importlib.metadata.EntryPoint`."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


class AdapterRegistry:
    """Adapter classes by their ``name`` (the ``adapter:`` value of a vendor in the YAML)."""

    def __init__(self) -> None:
        self._adapters: dict[str, type[Adapter]] = {}
        #: entry points already handled by :meth:`discover`, by ``value``
        self._seen: set[str] = set()
        #: rejected entry points: ``name`` -> reason
        self.rejected: dict[str, str] = {}
        #: adapter names claimed by more than one plug-in -> the claimants (none registered)
        self.conflicts: dict[str, list[str]] = {}
        self._rejected_targets: dict[str, str] = {}
        #: names of the built-in adapters (a plug-in never takes them)
        self._builtin: set[str] = set()
        #: the plug-in (entry point) each registered adapter name came from
        self._origin: dict[str, _EntryPoint] = {}
        #: built-ins not loaded yet (``discover(lazy=True)``): name -> "module:Class"
        self._deferred: dict[str, str] = {}

    # -- registering -----------------------------------------------------------------------

    def register(self, cls: Any) -> type[Adapter]:
        """Check ``cls`` and register it under ``cls.name``; returns it (usable as a decorator).

        Registering the same class again does nothing. Raises
        :class:`AdapterRegistrationError` naming every problem: not an :class:`Adapter`
        subclass, abstract methods left, ``name`` not a non-empty identifier, ``channels``
        not a non-empty frozenset of :class:`~gateway.events.Channel` without ``manual``,
        ``capabilities`` not a :class:`~adapters.base.Capabilities`, ``Config`` not an
        :class:`~adapters.base.AdapterConfig` subclass, ``start`` / ``stop`` / ``deliver``
        not coroutine functions, or the name taken by another class.
        """
        problems = class_problems(cls)
        if problems:
            raise AdapterRegistrationError(f"{_qualname(cls)}: {'; '.join(problems)}")
        adapter: type[Adapter] = cls
        self._builtin_named(adapter.name)  # a deferred built-in of that name is registered first
        existing = self._adapters.get(adapter.name)
        if existing is not None and existing is not adapter:
            raise AdapterRegistrationError(
                f"{_qualname(adapter)}: adapter name {adapter.name!r} is already taken by {_qualname(existing)}"
            )
        self._adapters[adapter.name] = adapter
        return adapter

    @classmethod
    def discover(cls, entry_points: Iterable[_EntryPoint] | None = None, *, lazy: bool = False) -> AdapterRegistry:
        """A new registry with the built-ins, then the plug-ins; broken ones skipped and logged.

        ``entry_points`` defaults to the installed ones of :data:`ENTRY_POINT_GROUP`
        (:func:`importlib.metadata.entry_points`). Never raises for a plug-in's fault.
        ``lazy``: each built-in is imported when first asked for (see the module's notes).
        """
        registry = cls()
        if lazy:
            registry._deferred = dict(BUILTIN_ADAPTERS)
        else:
            registry.add_entry_points(
                importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
                for name, value in BUILTIN_ADAPTERS.items()
            )
            registry._builtin.update(registry._adapters)
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        registry.add_entry_points(sorted(entry_points, key=lambda ep: (ep.name, ep.value)))
        return registry

    def add_entry_points(self, entry_points: Iterable[_EntryPoint]) -> None:
        """Load and register each entry point not seen before; skip and log the broken ones.

        Rejections are logged once as ``adapter_plugin_rejected`` (``entry_point``,
        ``target``, ``reason``) and kept in :attr:`rejected`. Never raises for a plug-in's
        fault.
        """
        deferred = set(self._deferred.values())
        for entry_point in entry_points:
            if entry_point.value in self._seen or entry_point.value in deferred:
                continue  # a deferred built-in is loaded as one when it is asked for
            self._seen.add(entry_point.value)
            self._load(entry_point)

    def _load(self, entry_point: _EntryPoint) -> None:
        try:
            cls = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - whatever a plug-in's import does wrong, it is skipped
            self._reject(entry_point, f"cannot be imported: {type(exc).__name__}: {exc}")
            return
        name = getattr(cls, "name", None)
        if isinstance(name, str):
            self._builtin_named(name)  # a deferred built-in of that name comes first, as in a full discovery
        if isinstance(name, str) and name in self.conflicts:
            self.conflicts[name].append(_qualname(cls))
            self._reject(entry_point, f"adapter name {name!r} is claimed by several plug-ins: all are refused")
            return
        existing = self._adapters.get(name) if isinstance(name, str) else None
        if isinstance(name, str) and existing is not None and existing is not cls and name not in self._builtin:
            # two plug-ins, one name: which one a vendor gets must not depend on install order
            first = self._origin.pop(name, None)
            del self._adapters[name]
            self.conflicts[name] = [_qualname(existing), _qualname(cls)]
            reason = (
                f"adapter name {name!r} is claimed by two plug-ins ({_qualname(existing)} and {_qualname(cls)}): "
                "both are refused; uninstall one"
            )
            if first is not None:
                self._reject(first, reason)
            self._reject(entry_point, reason)
            return
        try:
            self.register(cls)
        except AdapterRegistrationError as exc:
            self._reject(entry_point, str(exc))
            return
        if isinstance(name, str) and name not in self._builtin:
            self._origin.setdefault(name, entry_point)

    def _reject(self, entry_point: _EntryPoint, reason: str) -> None:
        self.rejected[entry_point.name] = reason
        self._rejected_targets[entry_point.name] = entry_point.value
        log.warning("adapter_plugin_rejected", entry_point=entry_point.name, target=entry_point.value, reason=reason)

    def _builtin_named(self, name: str) -> None:
        """Load the deferred built-in ``name``, if there is one."""
        value = self._deferred.pop(name, None)
        if value is None:
            return
        before = set(self._adapters)
        self.add_entry_points([importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)])
        self._builtin.update(self._adapters.keys() - before)

    def _every_builtin(self) -> None:
        for name in list(self._deferred):
            self._builtin_named(name)

    def refusal(self, name: str) -> str | None:
        """Why no adapter ``name`` is registered although a plug-in offers it, or None."""
        self._builtin_named(name)
        if name in self.conflicts:
            claimants = " and ".join(self.conflicts[name])
            return f"the name is claimed by several plug-ins ({claimants}); uninstall all but one"
        if name in self.rejected:
            return f"plug-in {name!r} ({self._rejected_targets[name]}) was skipped: {self.rejected[name]}"
        return None

    # -- looking up --------------------------------------------------------------------------

    def get(self, name: str) -> type[Adapter]:
        """The adapter class called ``name``; :class:`UnknownAdapter` lists the known names."""
        self._builtin_named(name)
        try:
            return self._adapters[name]
        except KeyError:
            self._every_builtin()  # the message lists them all
            raise UnknownAdapter(name, self._adapters, self.refusal(name)) from None

    def names(self) -> list[str]:
        self._every_builtin()
        return sorted(self._adapters)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self._builtin_named(name)
        return name in self._adapters

    def __iter__(self) -> Iterator[type[Adapter]]:
        return iter([self._adapters[name] for name in self.names()])

    def __len__(self) -> int:
        self._every_builtin()
        return len(self._adapters)

    # -- vendor settings -------------------------------------------------------------------

    def vendor_problems(self, vendor: VendorConfig, index: int, known: Known | None = None) -> list[tuple[Loc, str]]:
        """Problems of the ``index``-th vendor's adapter and settings as ``(path, message)``.

        Paths start at the file's root: ``("vendors", index, "adapter")`` for an unknown
        adapter, ``("vendors", index, <setting>, ...)`` for a setting; messages are short
        (``unknown key``, ``required``, the model's own words) and never echo a value.
        With ``known``, agents and queues the settings name (``agent_map`` ...) must exist.
        """
        prefix: Loc = ("vendors", index)
        config, problems = self._check(vendor, prefix)
        if config is not None and known is not None:
            problems.extend(_reference_problems(config, prefix, known))
        return problems

    def validate_vendor(
        self, vendor: VendorConfig, *, index: int | None = None, known: Known | None = None
    ) -> AdapterConfig:
        """The vendor's settings validated by its adapter's ``Config``.

        Raises :class:`ConfigError` with one ``vendors.<index>.<field>: message`` problem
        per fault (``vendors.<name>...`` when ``index`` is not given).
        """
        prefix: Loc = ("vendors", vendor.name if index is None else index)
        config, problems = self._check(vendor, prefix)
        if config is not None and known is not None:
            problems.extend(_reference_problems(config, prefix, known))
        if problems or config is None:
            raise ConfigError([f"{_dotted(loc)}: {message}" for loc, message in problems])
        return config

    def _check(self, vendor: VendorConfig, prefix: Loc) -> tuple[AdapterConfig | None, list[tuple[Loc, str]]]:
        try:
            cls = self.get(vendor.adapter)
        except UnknownAdapter as exc:
            return None, [((*prefix, "adapter"), exc.message)]
        try:
            return cls.Config.model_validate(vendor.settings()), []
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            return None, [((*prefix, *error["loc"]), _message(error["type"], error["msg"])) for error in errors]


def _reference_problems(config: AdapterConfig, prefix: Loc, known: Known) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for path, kind, name in config.references():
        pool = known.agents if kind == "agent" else known.queues
        if name not in pool:
            problems.append(((*prefix, *path), f"no {kind} {name!r} is configured"))
    return problems


def class_problems(cls: Any) -> list[str]:
    """Why ``cls`` cannot be registered as an adapter (empty when it can)."""
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        return [f"not a subclass of {Adapter.__module__}.{Adapter.__qualname__}"]
    problems: list[str] = []
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        problems.append(f"abstract methods not implemented: {missing}")
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
        problems.append(f"name must be a non-empty identifier, not {name!r}")
    channels = getattr(cls, "channels", None)
    if not (isinstance(channels, frozenset) and channels and all(isinstance(channel, Channel) for channel in channels)):
        problems.append(f"channels must be a non-empty frozenset of gateway.events.Channel, not {channels!r}")
    elif Channel.MANUAL in channels:
        problems.append("channels must not include manual (agents start manual sessions, not vendors)")
    capabilities = getattr(cls, "capabilities", None)
    if not isinstance(capabilities, Capabilities):
        problems.append(f"capabilities must be an adapters.base.Capabilities, not {capabilities!r}")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, AdapterConfig)):
        problems.append(f"Config must be a subclass of adapters.base.AdapterConfig, not {config!r}")
    for method in ("start", "stop", "deliver"):
        if not inspect.iscoroutinefunction(getattr(cls, method, None)):
            problems.append(f"{method} must be a coroutine function (async def)")
    return problems


@cache
def default_registry() -> AdapterRegistry:
    """The process-wide registry, discovered on first use."""
    return AdapterRegistry.discover()


def _message(kind: str, message: str) -> str:
    """pydantic's message in the config loader's words."""
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message[:2].istitle():
        message = message[0].lower() + message[1:]
    return message


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _qualname(cls: Any) -> str:
    if isinstance(cls, type):
        return f"{cls.__module__}.{cls.__qualname__}"
    return repr(cls)
