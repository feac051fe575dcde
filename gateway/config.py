"""Configuration models (one YAML file per deployment).

The models here are pure: they validate shape and cross-references. Reading the YAML file,
``${ENV}`` interpolation and ``file:line`` error reporting live in
:mod:`gateway.config_loader`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from .events import ALL_CHANNELS, Channel
from .store_url import parse_records_url, parse_store_url, records_problem

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
_SHA256 = r"^[0-9a-fA-F]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapacityProfile(_Strict):
    """How many sessions of which channels one agent may hold (DESIGN section 4)."""

    max_sessions: int = Field(ge=1, le=64)
    reserved_inbound: int = Field(default=0, ge=0)
    channels: dict[Channel, int] = Field(default_factory=dict)
    units: dict[Channel, int] = Field(default_factory=dict)
    max_units: int | None = Field(default=None, ge=1)
    offer_timeout_s: dict[Channel, float] = Field(default_factory=dict)
    wrap_up_s: dict[Channel, float] = Field(default_factory=dict)
    #: Desktop start screen per channel (the session object's ``profile``); default: the channel name.
    start_screens: dict[Channel, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _admissible(self) -> CapacityProfile:
        problems = capacity_profile_problems(dict(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def valid_fields(cls, raw: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """The fields of a profile as written (``raw``) that are valid on their own, validated,
        and the names of those that are not.

        For checking the rules of :func:`capacity_profile_problems` on a profile that has
        other problems too (pydantic then skips the model validator). Of a per-channel map
        with a bad entry, the valid entries are kept.
        """
        fields: dict[str, Any] = {}
        invalid: set[str] = set()
        for name, adapter in _profile_field_adapters().items():
            if name not in raw:
                continue
            value = raw[name]
            try:
                fields[name] = adapter.validate_python(value)
            except ValidationError:
                if not isinstance(value, dict) or not _takes_a_mapping(adapter):
                    invalid.add(name)
                    continue
                # a per-channel map: its valid entries still have rules of their own
                entries: dict[Any, Any] = {}
                for key, item in value.items():
                    try:
                        entries.update(adapter.validate_python({key: item}))
                    except ValidationError:
                        continue
                fields[name] = entries
        return fields, invalid

    @property
    def unit_limit(self) -> int:
        return self.max_units if self.max_units is not None else self.max_sessions

    def cap(self, channel: Channel) -> int:
        return self.channels.get(channel, self.max_sessions)

    def weight(self, channel: Channel) -> int:
        return self.units.get(channel, 1)

    def offer_timeout(self, channel: Channel) -> float:
        return self.offer_timeout_s.get(channel, 30.0)

    def wrap_up(self, channel: Channel) -> float:
        return self.wrap_up_s.get(channel, 0.0)

    def start_screen(self, channel: Channel) -> str:
        return self.start_screens.get(channel, str(channel))


def capacity_profile_problems(fields: Mapping[str, Any], *, invalid: Collection[str] = ()) -> list[str]:
    """The admissibility rules of one capacity profile, as ``"field.path: message"`` texts.

    ``fields`` holds validated field values; absent ones take their defaults
    (``reserved_inbound`` 0, ``max_units`` = ``max_sessions``, empty maps). A rule that needs
    a field named in ``invalid`` (written but wrong, so reported on its own) or a missing
    ``max_sessions`` is not checked. The model validator passes every field; the config
    loader passes the valid fields of a profile that has other problems too, so that one
    pass reports everything.
    """
    problems: list[str] = []
    max_sessions: int | None = None if "max_sessions" in invalid else fields.get("max_sessions")
    reserved: int | None = None if "reserved_inbound" in invalid else fields.get("reserved_inbound", 0)
    unit_limit: int | None = None if "max_units" in invalid else fields.get("max_units")
    if unit_limit is None and "max_units" not in invalid:
        unit_limit = max_sessions
    if max_sessions is not None and reserved is not None and reserved >= max_sessions:
        problems.append(
            f"reserved_inbound ({reserved}) must be below max_sessions ({max_sessions}), "
            "or no manual session could ever start"
        )
    channels: Mapping[Channel, int] = fields.get("channels", {})
    for channel, cap in channels.items():
        if cap < 1:
            problems.append(f"channels.{channel}: {cap} can never admit a {channel} session (minimum 1)")
    units: Mapping[Channel, int] = fields.get("units", {})
    for channel, weight in units.items():
        if weight < 1:
            problems.append(f"units.{channel}: must be at least 1")
        elif unit_limit is not None and weight > unit_limit:
            problems.append(
                f"units.{channel}: {weight} exceeds max_units ({unit_limit}): "
                f"a {channel} session could never be admitted"
            )
    offer: Mapping[Channel, float] = fields.get("offer_timeout_s", {})
    for channel, seconds in offer.items():
        if not 0 < seconds <= 86_400:
            problems.append(f"offer_timeout_s.{channel}: must be > 0 and <= 86400")
    wrap: Mapping[Channel, float] = fields.get("wrap_up_s", {})
    for channel, seconds in wrap.items():
        if not 0 <= seconds <= 86_400:
            problems.append(f"wrap_up_s.{channel}: must be >= 0 and <= 86400")
    return problems


def _takes_a_mapping(adapter: TypeAdapter[Any]) -> bool:
    """Whether a profile field is a per-channel map (an empty one validates)."""
    try:
        adapter.validate_python({})
    except ValidationError:
        return False
    return True


@cache
def _profile_field_adapters() -> dict[str, TypeAdapter[Any]]:
    """One validator per field of :class:`CapacityProfile`, with the field's constraints."""
    adapters: dict[str, TypeAdapter[Any]] = {}
    for name, info in CapacityProfile.model_fields.items():
        annotated: Any = Annotated[info.annotation, info]  # a type built at run time
        adapters[name] = TypeAdapter(annotated)
    return adapters


class QueuePolicy(StrEnum):
    LONGEST_IDLE = "longest_idle"
    LEAST_BUSY = "least_busy"
    #: parallel offers: up to ``offer_to`` eligible agents at once (longest idle first); the
    #: first accept wins, the other offers are withdrawn
    OFFER_ALL = "offer_all"


class OnFull(StrEnum):
    REJECT = "reject"
    WAIT = "wait"


class QueueConfig(_Strict):
    name: str = Field(pattern=_NAME)
    policy: QueuePolicy = QueuePolicy.LONGEST_IDLE
    on_full: OnFull = OnFull.REJECT
    #: With ``on_full: wait``: how long an interaction may wait before ``queue_timeout``.
    max_wait_s: float = Field(default=60.0, gt=0, le=86_400)
    #: With ``on_full: wait``: at most this many interactions wait; more are rejected.
    max_waiting: int = Field(default=1000, ge=1, le=1_000_000)
    #: With ``policy: offer_all``: offer each interaction to at most this many agents at once
    #: (default: every eligible agent of the queue with room).
    offer_to: int | None = Field(default=None, ge=1, le=1000)


class _Validation:
    """The validation model of :class:`AgentConfig` (named like it: pydantic's messages name
    the class, e.g. ``input should be a valid dictionary or instance of AgentConfig``)."""

    class AgentConfig(_Strict):
        id: str = Field(pattern=_NAME)
        name: str = Field(default="", max_length=256)
        profile: str
        queues: list[str] = Field(default_factory=list)
        token_sha256: str | None = Field(default=None, pattern=_SHA256)


_AgentFields = _Validation.AgentConfig


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One configured agent (an entry of ``agents``).

    Validated as a pydantic model (:data:`_AgentFields`: same rules, same errors at the same
    places), then kept as this slotted record: a pydantic model per agent costs ~1.2 KB
    (its ``__dict__``, its set of fields set, its own strings and list), 12 MB for 10,000
    agents held for the gateway's whole life; this is ~0.25 KB. The queue names and the
    profile name are interned and an agent's queues a tuple shared by every agent with the
    same ones. Build one with :meth:`model_validate` (or as part of a
    :class:`GatewayConfig`); :meth:`model_dump` gives the fields as the model did.
    """

    id: str
    name: str
    profile: str
    queues: tuple[str, ...]
    token_sha256: str | None

    @classmethod
    def model_validate(cls, data: Any) -> AgentConfig:
        """The agent validated from ``data`` (a mapping); :class:`ValidationError` as the model's."""
        if isinstance(data, AgentConfig):
            return data
        return cls._of(_AgentFields.model_validate(data))

    @classmethod
    def _of(cls, fields: _Validation.AgentConfig) -> AgentConfig:
        return cls(
            fields.id,
            fields.name,
            sys.intern(fields.profile),
            _shared_queues(tuple(sys.intern(queue) for queue in fields.queues)),
            fields.token_sha256,
        )

    def model_dump(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The fields as a dict (``queues`` a list), as the pydantic model dumped them."""
        return {
            "id": self.id,
            "name": self.name,
            "profile": self.profile,
            "queues": list(self.queues),
            "token_sha256": self.token_sha256,
        }

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # validated by the model's schema (its errors and their paths unchanged), kept as a record
        def validate(value: Any, fields: core_schema.ValidatorFunctionWrapHandler) -> AgentConfig:
            return value if isinstance(value, AgentConfig) else cls._of(fields(value))

        return core_schema.no_info_wrap_validator_function(
            validate,
            handler.generate_schema(_AgentFields),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda agent: agent.model_dump()),
        )


@lru_cache(maxsize=4096)
def _shared_queues(queues: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple object for every agent with these queues (returns the first one seen)."""
    return queues


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    supervisor_token_sha256: str | None = Field(default=None, pattern=_SHA256)
    #: Sessions survive a desktop disconnect this long; then the agent goes offline.
    desktop_grace_s: float = Field(default=60.0, ge=0, le=86_400)
    #: per token: API requests (and WebSocket messages) per second, and the burst allowed;
    #: beyond it 429 ``rate_limited``. 0 turns the limit off.
    rate_limit_per_s: float = Field(default=50.0, ge=0, le=100_000)
    rate_limit_burst: float = Field(default=100.0, ge=1, le=1_000_000)
    #: An HTTP connection that has not sent a complete request head this long after it
    #: opened, or after its previous answer, is closed (slow or idle clients).
    idle_timeout_s: float = Field(default=30.0, ge=1, le=3_600)
    #: Open connections one client address may have; beyond it 503 ``too_many_connections``.
    #: 0 turns the limit off (behind a reverse proxy every client has the proxy's address).
    max_connections_per_address: int = Field(default=256, ge=0, le=1_000_000)
    #: Desktop sockets one agent may have open; a new one beyond it closes the oldest (4009).
    max_desktops_per_agent: int = Field(default=4, ge=1, le=64)
    #: log every HTTP request (``http_request``: method, path without query, status, time)
    access_log: bool = False
    #: ``POST /v1/admin/reload`` (``cti-gateway reload``) answers loopback clients only,
    #: unless this is true (it always needs the supervisor token)
    remote_admin: bool = False


class StoreConfig(_Strict):
    #: Checked by :func:`gateway.store_url.parse_store_url`, the validator ``run`` uses too.
    url: str = "sqlite:///data/gateway.db"
    #: redis: what every key of this deployment starts with (several deployments on one Redis)
    prefix: str = Field(default="cti:", pattern=r"^[A-Za-z0-9_.:{}-]{1,64}$")
    #: redis: an entry handed to an instance for its side effects and not done for this
    #: long is taken over by another instance (the first one died or is stuck)
    claim_idle_s: float = Field(default=10.0, ge=0.5, le=3_600)
    #: redis: longest a request waits for its change to be in the shared log and applied (then 503)
    answer_timeout_s: float = Field(default=5.0, ge=0.1, le=60)
    #: redis: a snapshot of the state is written to Redis once this many log entries were
    #: applied after the newest one (0: never by count), and the log is trimmed behind it
    snapshot_every: int = Field(default=10_000, ge=0, le=10_000_000)
    #: redis: ... or once the newest snapshot is this old and the log moved on (0: never by age)
    snapshot_every_s: float = Field(default=300.0, ge=0, le=86_400)

    @field_validator("url")
    @classmethod
    def _usable(cls, url: str) -> str:
        parse_store_url(url)  # ValueError: reported at the url's line
        return url


class RecordsConfig(_Strict):
    """Where the session records of several instances go (PostgreSQL); README, "Running
    several instances". The embedded store keeps them in its journal and refuses this section."""

    #: Checked by :func:`gateway.store_url.parse_records_url`, the validator ``run`` uses too.
    url: str

    @field_validator("url")
    @classmethod
    def _usable(cls, url: str) -> str:
        parse_records_url(url)  # ValueError: reported at the url's line
        return url


class RetentionConfig(_Strict):
    """How long the gateway remembers what it decided, and how much of it stays in memory.

    Everything is journaled; memory holds the open work plus the most recent finished work
    (bounded by the ``cached_*`` sizes), and the rest is read from the journal when needed.
    """

    #: a repeated event id is answered ``duplicate`` (with the first decision) this long after
    #: the first copy; older, it is a new event. Late vendor events on a finished interaction
    #: (an ``end`` after the agent ended it, a message) are taken this long too.
    dedup_window_s: float = Field(default=86_400.0, ge=60, le=30 * 86_400)
    #: event ids (with their first decision) kept in memory, the most recent ones; older ones
    #: inside the window are looked up in the journal
    cached_events: int = Field(default=10_000, ge=100, le=10_000_000)
    #: finished interactions and closed sessions kept in memory (each), the most recent ones;
    #: older ones are read from the journal when a request or a late event names them
    cached_finished: int = Field(default=1_000, ge=10, le=1_000_000)


@dataclass(frozen=True, slots=True)
class Known:
    """The agents and queues a configuration defines: what vendor settings (an adapter's
    ``agent_map``, ``queue_map`` ...) may name."""

    agents: frozenset[str]
    queues: frozenset[str]

    @classmethod
    def of(cls, config: GatewayConfig) -> Known:
        return cls(frozenset(a.id for a in config.agents), frozenset(q.name for q in config.queues))


class VendorConfig(BaseModel):
    """One vendor connection. Adapter-specific keys are validated by the adapter's own model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=_NAME)
    adapter: str = Field(min_length=1)

    def settings(self) -> dict[str, Any]:
        """The adapter-specific keys (everything but ``name`` and ``adapter``)."""
        return dict(self.model_extra or {})


class GatewayConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    #: the session records on PostgreSQL (several instances only; see :class:`RecordsConfig`)
    records: RecordsConfig | None = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    capacity_profiles: dict[str, CapacityProfile]
    queues: list[QueueConfig] = Field(default_factory=list)
    agents: list[AgentConfig] = Field(default_factory=list)
    vendors: list[VendorConfig] = Field(default_factory=list)

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-reference problems as ``(path, message)``; the loader adds file:line."""
        return reference_problems(self.model_dump())

    def profile_of(self, agent_id: str) -> CapacityProfile:
        for agent in self.agents:
            if agent.id == agent_id:
                return self.capacity_profiles[agent.profile]
        raise KeyError(agent_id)


Loc = tuple[str | int, ...]


def reference_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Cross-reference problems of a configuration as written, as ``(path, message)``.

    Works on the raw data (as the YAML file holds it) as well as on a dumped model, so the
    loader reports unknown references together with shape errors: entries or fields that
    are malformed are skipped here (they are reported by the model's validation).
    """
    problems: list[tuple[Loc, str]] = []
    store = data.get("store")
    store_url = store.get("url", StoreConfig().url) if isinstance(store, Mapping) else StoreConfig().url
    if (store is None or isinstance(store, Mapping)) and isinstance(store_url, str):
        problem = records_problem(store_url, data.get("records") is not None)
        if problem is not None:
            where, message = problem
            problems.append(((where,) if where == "records" else ("store", "url"), message))
    queues = _entries(data.get("queues"))
    agents = _entries(data.get("agents"))
    profiles = data.get("capacity_profiles")
    queue_names: set[str] = set()
    for i, queue in queues:
        name = queue.get("name")
        if isinstance(name, str):
            if name in queue_names:
                problems.append((("queues", i, "name"), f"duplicate queue {name!r}"))
            queue_names.add(name)
    # unknown queues only against a queue list whose names are all readable
    raw_queues = data.get("queues")
    queues_known = raw_queues is None or (
        isinstance(raw_queues, list)
        and len(queues) == len(raw_queues)
        and all(isinstance(queue.get("name"), str) for _, queue in queues)
    )
    for i, queue in queues:
        if queue.get("offer_to") is not None and queue.get("policy") != QueuePolicy.OFFER_ALL.value:
            policy = queue.get("policy", QueuePolicy.LONGEST_IDLE.value)
            problems.append(
                (("queues", i, "offer_to"), f"offer_to applies to policy: offer_all only (this queue's is {policy})")
            )
    agent_ids: set[str] = set()
    for i, agent in agents:
        agent_id = agent.get("id")
        if isinstance(agent_id, str):
            if agent_id in agent_ids:
                problems.append((("agents", i, "id"), f"duplicate agent {agent_id!r}"))
            agent_ids.add(agent_id)
        profile = agent.get("profile")
        if isinstance(profile, str) and isinstance(profiles, Mapping) and profile not in profiles:
            problems.append((("agents", i, "profile"), f"unknown capacity profile {profile!r}"))
        agent_queues = agent.get("queues")
        if queues_known and isinstance(agent_queues, list):
            for j, queue_name in enumerate(agent_queues):
                if isinstance(queue_name, str) and queue_name not in queue_names:
                    problems.append((("agents", i, "queues", j), f"unknown queue {queue_name!r}"))
    vendor_names: set[str] = set()
    for i, vendor in _entries(data.get("vendors")):
        name = vendor.get("name")
        if isinstance(name, str):
            if name in vendor_names:
                problems.append((("vendors", i, "name"), f"duplicate vendor {name!r}"))
            vendor_names.add(name)
    return problems


def _entries(section: object) -> list[tuple[int, Mapping[str, Any]]]:
    """The mapping entries of a list section with their indexes (anything else: none)."""
    if not isinstance(section, list):
        return []
    return [(i, item) for i, item in enumerate(section) if isinstance(item, Mapping)]


__all__ = [
    "ALL_CHANNELS",
    "AgentConfig",
    "CapacityProfile",
    "GatewayConfig",
    "OnFull",
    "QueueConfig",
    "QueuePolicy",
    "RecordsConfig",
    "RetentionConfig",
    "ServerConfig",
    "StoreConfig",
    "VendorConfig",
    "capacity_profile_problems",
    "reference_problems",
]
