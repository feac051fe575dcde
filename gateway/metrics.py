"""Prometheus metrics, on a registry of the app's own (so several apps can run in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .capacity import Presence
from .events import ALL_CHANNELS, Event
from .notices import Decision, DecisionKind, SessionChanged

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: labelled series of the per-event metrics, by label values (a bounded set: vendors,
        #: types, channels, decisions, reasons, transitions are all configured or fixed)
        self._children: dict[tuple[str, ...], Any] = {}
        self.events = Counter(
            "cti_gateway_events_total",
            "Inbound vendor events by vendor, type, channel and decision",
            ["vendor", "type", "channel", "decision", "reason"],
            registry=self.registry,
        )
        self.routing_latency = Histogram(
            "cti_gateway_routing_seconds",
            "Time from receiving an event to its durable decision",
            ["type"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.sessions_in_use = Gauge(
            "cti_gateway_sessions_in_use", "Occupying sessions by channel", ["channel"], registry=self.registry
        )
        self.agents_by_presence = Gauge(
            "cti_gateway_agents", "Agents by presence", ["presence"], registry=self.registry
        )
        self.adapter_up = Gauge(
            "cti_gateway_adapter_up", "1 when the vendor connection is up", ["vendor"], registry=self.registry
        )
        self.session_transitions = Counter(
            "cti_gateway_session_transitions_total",
            "Session transitions",
            ["transition"],
            registry=self.registry,
        )
        self.unknown_fields = Counter(
            "cti_gateway_event_unknown_fields_total",
            "Fields of vendor events the gateway does not know and ignored (a lenient webhook)",
            ["vendor"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "cti_gateway_waiting_interactions", "Interactions waiting in queues", registry=self.registry
        )
        self.journal_up = Gauge(
            "cti_gateway_journal_up",
            "1 while the state is the journal's; 0 from a failed write until it is rebuilt",
            registry=self.registry,
        )
        self.journal_up.set(1)
        self.records_up = Gauge(
            "cti_gateway_records_up",
            "1 while the session records answer: a records store of its own (PostgreSQL), its last "
            "call reached it; the embedded store, as cti_gateway_journal_up",
            registry=self.registry,
        )
        self.records_up.set(1)  # the runtime binds it to its records store
        self.state_rebuilds = Counter(
            "cti_gateway_state_rebuilds_total",
            "Times the state was rebuilt from the journal after a failed write or an internal error",
            registry=self.registry,
        )
        # the shared store (store: redis://); absent with the embedded journal
        self.store_up = Gauge(
            "cti_gateway_store_up",
            "1 while the shared store (Redis) answers this instance; 0 while it does not",
            registry=self.registry,
        )
        self.log_lag_entries = Gauge(
            "cti_gateway_log_lag_entries",
            "Entries of the shared log appended but not yet applied by this instance (at the scrape)",
            registry=self.registry,
        )
        self.log_lag_seconds = Gauge(
            "cti_gateway_log_lag_seconds",
            "Time between the newest entry of the shared log and the last one this instance applied",
            registry=self.registry,
        )
        self.log_entries = Gauge(
            "cti_gateway_log_entries",
            "Entries in the shared log now (its length: the entries after the newest snapshot and those still needed)",
            registry=self.registry,
        )
        self.log_trimmed = Counter(
            "cti_gateway_log_trimmed_entries_total",
            "Entries of the shared log this instance trimmed away (behind the newest snapshot)",
            registry=self.registry,
        )
        self.snapshots_written = Counter(
            "cti_gateway_snapshots_written_total",
            "Snapshots of the state this instance wrote to the shared store",
            registry=self.registry,
        )
        self.config_generation = Gauge(
            "cti_gateway_config_generation",
            "Configuration reloads applied (0: the file as read at the first start; kept across restarts)",
            registry=self.registry,
        )
        self.config_reloaded_at = Gauge(
            "cti_gateway_config_reloaded_timestamp_seconds",
            "Unix time of the last configuration reload (0: none yet)",
            registry=self.registry,
        )

    def config_reloaded(self, engine: Engine) -> None:
        self.config_generation.set(engine.generation)
        if engine.reloaded_at is not None:
            self.config_reloaded_at.set(engine.reloaded_at)

    def observe_routing(self, event: Event, decision: Decision, seconds: float) -> None:
        shown = decision.original if decision.kind is DecisionKind.DUPLICATE and decision.original else decision
        key = (
            event.vendor,
            event.type.value,
            event.channel.value if event.channel else "",
            decision.kind.value,
            shown.reason or "",
        )
        # the labelled series, looked up once per label set (labels() validates and locks)
        child = self._children.get(key)
        if child is None:
            vendor, kind, channel, answer, reason = key
            child = self._children[key] = self.events.labels(
                vendor=vendor, type=kind, channel=channel, decision=answer, reason=reason
            )
        child.inc()
        latency = self._children.get(kind_key := ("latency", event.type.value))
        if latency is None:
            latency = self._children[kind_key] = self.routing_latency.labels(type=event.type.value)
        latency.observe(seconds)

    def session_changed(self, notice: SessionChanged) -> None:
        key = ("transition", notice.transition)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.session_transitions.labels(transition=notice.transition)
        child.inc()

    def refresh_gauges(self, engine: Engine) -> None:
        self.config_reloaded(engine)
        totals = {channel: 0 for channel in ALL_CHANNELS}
        presence = {p: 0 for p in Presence}
        for agent_id in engine.agent_ids():
            load = engine.load_of(agent_id)
            for channel in ALL_CHANNELS:
                totals[channel] += load.of(channel)
            presence[engine.presence_of(agent_id)] += 1
        for channel, count in totals.items():
            self.sessions_in_use.labels(channel=channel.value).set(count)
        for state, count in presence.items():
            self.agents_by_presence.labels(presence=state.value).set(count)
        self.waiting.set(len(engine.waiting()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
