"""Stateful property test of the routing engine (DESIGN sections 4 and 5).

A hypothesis ``RuleBasedStateMachine`` drives one :class:`~gateway.engine.Engine` through
random histories of targeted and queue offers, accepts, declines, time passing (offer
timeouts, wrap-ups, queue timeouts and desktop grace periods firing), blind and consult
transfers to agents and queues (chains of any length), agent ends, vendor
end/message/update events, focus changes, manual sessions, presence changes, desktop
connects/disconnects, re-sent event ids, illegal actions, restarts (every step is
journaled to a memory journal, as the runtime does; a restart restores a fresh engine from
it after some downtime and the history goes on) and configuration reloads (issue 10:
profiles raised, lowered and reweighted under load, agents removed in the middle of their
sessions and added back; a later restart runs on the reloaded configuration), and
parallel offers (issue 13: queues with ``policy: offer_all``, with and without ``offer_to``;
accept races where several desktops accept in the same instant, declines, timeouts,
desktop drops, restarts and reloads that switch a queue between ``offer_all`` and
``longest_idle`` while the offers are out).

After every step it checks, from the engine's observable state:

* DESIGN section 4: per agent and channel the counters equal the occupying sessions and the
  units their weights; no cap is exceeded (but after a reload that lowered it: then nothing
  open was cut and what is above its cap never grows); a removed agent takes no new work
  (``unknown_agent``) and is gone once its last session closed; every admission and refusal (with its reason) is
  the one the rules call for (checked against the rules written out again here, and the
  agent picked is the one the queue policy orders first); an interaction has at most one
  active session (two only while a consult is pending); its holder / consult target exist
  and occupy a slot; nobody waits in a queue while an agent of that queue has room for it; the
  eligibility index holds exactly the agents with room, in the queue policy's order;
  due timers have fired; and, once everything has ended and wrap-up has passed, every
  counter is zero (the ``end_everything`` rule and the teardown).
* DESIGN section 5: focus time never exceeds the session's elapsed time; at most one
  focused session per agent, active or in wrap-up; an offer expires within its timeout;
  a wrap-up lasts exactly ``wrap_up_s``. Focus time counts only while somebody looks
  (issue 6 item 8): a session's focus clock runs exactly while it is its agent's focused
  session, a desktop of the agent is connected and the agent is not offline; time passing
  adds to no other session; a restart adds nothing for the downtime and loses at most
  ``FOCUS_CHECKPOINT_S``.
* Decisions: every offer sent is tracked with its synchronous answer and every late
  ``ToVendor`` decision drained from the engine. The first answer is assigned, rejected or
  queued (and the one the capacity rules and the queue policy call for); nothing follows a
  rejection; a queued offer gets exactly one assigned/rejected per queueing; an assigned
  offer gets a later decision only when its holder offer was declined or expired, and then
  exactly one; a re-sent event id gets ``duplicate`` with the first answer and changes
  nothing; nothing is decided about an interaction that has ended.
* Illegal actions raise :class:`~gateway.errors.ActionError` with the expected code and
  change nothing (state fingerprint before/after, empty outbox).
* Parallel offers: an offer to an ``offer_all`` queue goes at once to the first ``offer_to``
  agents with room in the policy's order (longest idle) and is answered ``queued``; each
  offer holds its slot (the counters above include them); the first accept wins, every other
  offer of the round is closed ``withdrawn`` in the same step; a declined or expired offer
  excludes its agent; the vendor hears exactly one more decision: ``assigned`` naming the
  winner (whose session is active) or ``rejected`` (``queue_timeout``, ``no_agent_available``),
  never ``queued`` twice in a row; a new round never offers to an excluded agent.

Where DESIGN leaves room, the machine holds the engine to the reading it implements:

* a channel missing from ``channels`` has no rule-2 cap of its own: filling the agent with
  it is ``agent_at_capacity`` (rule 1), not ``channel_at_capacity``;
* ``vendor_unsupported`` (the vendor's CMS cannot carry the channel) comes before every
  other reason, ``unknown_agent`` included;
* an offer whose session is declined, times out or is withdrawn (the agent went offline)
  gets exactly one more decision: re-routed in its queue (assigned / queued /
  ``no_agent_available``) or, if targeted, ``offer_timeout``. A blind-transfer target
  that does not accept is such an offer: the vendor hears about it under the original
  offer event (to an agent: ``offer_timeout``), the source does not take it back;
* ``longest_idle`` counts from becoming ready or from the last offer (declined or not);
  ``least_busy`` orders by share of ``max_units``, then sessions, then idle time;
* a repeated desktop disconnect restarts the grace period;
* a vendor that cannot take a rejection (``inbox``: ``can_reject=False``) never gets one
  but for ``vendor_unsupported`` / ``unknown_agent``: where another vendor would be
  rejected, its interaction waits instead (``queued``): untargeted in its queue (whatever
  ``on_full`` says, with no ``max_wait_s`` and past ``max_waiting``), targeted for its
  agent, who gets it again as soon as it has room, even after declining or missing it.

Profiles (``dev`` / ``ci``) live in ``tests/conftest.py``; the step count is set here.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from gateway.capacity import Load, Presence, within_limits
from gateway.clock import ManualClock, ms_between
from gateway.config import CapacityProfile, GatewayConfig, OnFull, QueuePolicy
from gateway.engine import FOCUS_CHECKPOINT_S, Engine
from gateway.errors import ActionError
from gateway.events import INBOUND_CHANNELS, Channel, Customer, Event, EventType
from gateway.interactions import Phase, VendorCapabilities
from gateway.notices import (
    Decision,
    DecisionKind,
    Notice,
    PresenceChanged,
    Routed,
    SessionChanged,
    ToVendor,
    VendorAction,
)
from gateway.records.memory import MemoryJournal
from gateway.sessions import Outcome, SessionState

#: Steps per history. On a 2-core machine 2000 histories (ci) take about 2.5 minutes when
#: nothing fails, 200 (dev) about 15 s; shrinking a failure adds a few minutes.
STEP_COUNT = 100

T0 = 1_700_000_000.0
GRACE_S = 5.0
#: short, so that closed sessions are pruned during a history (ids may vanish)
CLOSED_RETENTION_S = 45.0

CONFIG: dict[str, Any] = {
    "server": {"desktop_grace_s": GRACE_S},
    "store": {"url": "memory://"},
    "capacity_profiles": {
        # small caps everywhere, so that histories hit them often
        # manual sessions can never take the last free session; channel caps add up past max_sessions
        # max_units above max_sessions, so that rule 1 binds on its own
        "reserved": {
            "max_sessions": 3,
            "reserved_inbound": 1,
            "channels": {"voice": 1, "chat": 2, "email": 1, "manual": 1},
            "units": {"voice": 2},
            "max_units": 5,
            "offer_timeout_s": {"voice": 4, "chat": 6, "email": 8},
        },
        # a call takes the whole capacity
        "voice_whole": {
            "max_sessions": 3,
            "units": {"voice": 3, "chat": 1, "email": 1, "manual": 1},
            "max_units": 3,
            "offer_timeout_s": {"voice": 5, "chat": 5, "email": 5},
        },
        # wrap-up after every channel but e-mail (0 = none)
        "wrapper": {
            "max_sessions": 2,
            "channels": {"voice": 1},
            "wrap_up_s": {"voice": 6, "chat": 3, "email": 0, "manual": 4},
            "offer_timeout_s": {"voice": 3, "chat": 7, "email": 9},
        },
        # units below sessions, a reserve of two, fractional wrap-up, default offer timeout (30 s)
        "weighted": {
            "max_sessions": 4,
            "reserved_inbound": 2,
            "units": {"voice": 2, "chat": 1, "email": 2, "manual": 1},
            "max_units": 3,
            "wrap_up_s": {"chat": 1.5},
        },
    },
    "queues": [
        {"name": "idle", "policy": "longest_idle", "on_full": "reject"},
        {"name": "busy", "policy": "least_busy", "on_full": "reject"},
        {"name": "wait", "policy": "least_busy", "on_full": "wait", "max_wait_s": 20, "max_waiting": 2},
        {"name": "lobby", "policy": "longest_idle", "on_full": "wait", "max_wait_s": 6, "max_waiting": 1},
        # parallel offers (issue 13): to two agents at once, waiting when nobody has room ...
        {"name": "rush", "policy": "offer_all", "offer_to": 2, "on_full": "wait", "max_wait_s": 8, "max_waiting": 2},
        # ... and to every agent of the queue with room, rejected when nobody has any
        {"name": "blast", "policy": "offer_all", "on_full": "reject"},
    ],
    "agents": [
        {"id": "a1", "profile": "reserved", "queues": ["idle", "busy", "rush", "blast"]},
        {"id": "a2", "profile": "voice_whole", "queues": ["idle", "wait", "rush"]},
        {"id": "a3", "profile": "wrapper", "queues": ["busy", "wait", "rush", "blast"]},
        {"id": "a4", "profile": "weighted", "queues": ["idle", "busy", "lobby", "blast"]},
    ],
}

AGENTS = ("a1", "a2", "a3", "a4")
#: agents a reload may remove (and a later one add back)
REMOVABLE = ("a3", "a4")
#: what a reload may make of each profile (the first: as configured): caps raised and lowered
#: under load, unit weights, offer and wrap-up times changed
PROFILE_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "reserved": [
        CONFIG["capacity_profiles"]["reserved"],
        {"max_sessions": 2, "channels": {"voice": 1, "chat": 1}, "offer_timeout_s": {"voice": 2, "chat": 9}},
        {"max_sessions": 4, "reserved_inbound": 1, "units": {"voice": 3}, "max_units": 6},
    ],
    "voice_whole": [
        CONFIG["capacity_profiles"]["voice_whole"],
        {"max_sessions": 1, "wrap_up_s": {"chat": 2}, "offer_timeout_s": {"chat": 4, "email": 4, "voice": 4}},
    ],
    "wrapper": [
        CONFIG["capacity_profiles"]["wrapper"],
        {"max_sessions": 3, "channels": {"voice": 2}, "wrap_up_s": {"voice": 1, "chat": 5}},
    ],
    "weighted": [
        CONFIG["capacity_profiles"]["weighted"],
        {"max_sessions": 2, "units": {"chat": 2}, "max_units": 2, "wrap_up_s": {"email": 2.5}},
    ],
}
QUEUES = ("idle", "busy", "wait", "lobby", "rush", "blast")
#: the offer_all queues and their offer_to (None: every agent with room); a reload may make
#: ``rush`` a longest_idle queue (and back): offers out then finish normally
PARALLEL: dict[str, int | None] = {"rush": 2, "blast": None}
VENDORS = ("crm", "pbx", "mail", "inbox")
CAPABILITIES = {
    "pbx": VendorCapabilities(channels=frozenset({Channel.VOICE, Channel.CHAT})),
    "mail": VendorCapabilities(channels=frozenset({Channel.EMAIL}), can_transfer=False),
    # its CMS cannot take a rejection back: its interactions wait instead
    "inbox": VendorCapabilities(can_reject=False),
}
QUEUE_AGENTS = {q: tuple(a["id"] for a in CONFIG["agents"] if q in a["queues"]) for q in QUEUES}
MAX_WRAP_S = max(s for vs in PROFILE_VARIANTS.values() for p in vs for s in p.get("wrap_up_s", {}).values())
PRESENCES = ("ready", "not_ready", "offline")
#: presence changes lean towards ready, or most histories would have nobody to route to
NEW_PRESENCE = st.sampled_from(("ready", "ready", "ready", "not_ready", "offline"))

#: mostly short steps (offers time out after 3-9 s, queues after 4-8 s), sometimes long or tiny ones
#: (whole seconds hit deadlines exactly; microseconds exercise the rounding of the ms fields)
DURATIONS = st.one_of(
    st.sampled_from([0.0, 0.001, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 30.0]),
    st.integers(0, 8_000_000).map(lambda us: us / 1_000_000),
    st.integers(0, 2_000_000).map(lambda us: us / 1_000_000),
    st.integers(0, 3_000).map(lambda us: us / 1_000_000),
    st.integers(0, 60_000_000).map(lambda us: us / 1_000_000),
)
CHANNELS = st.sampled_from(INBOUND_CHANNELS)
#: the offer's vendor: usually one that supports the channel, now and then one that does not
VENDOR_CHOICE = st.tuples(st.sampled_from(VENDORS), st.integers(0, 7))
TARGETS = st.sampled_from((*AGENTS, *AGENTS, "ghost"))
PRIORITIES = st.integers(-2, 2)
CUSTOMERS = st.one_of(
    st.none(),
    st.builds(Customer, address=st.sampled_from(["+4930123", "ada@example.org"]), name=st.sampled_from([None, "Ada"])),
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def can_reject(vendor: str) -> bool:
    caps = CAPABILITIES.get(vendor)
    return caps is None or caps.can_reject


def vendor_for(choice: tuple[str, int], channel: Channel) -> str:
    vendor, roll = choice
    caps = CAPABILITIES.get(vendor)
    if caps is None or channel in caps.channels or roll == 0:
        return vendor
    return next(v for v in VENDORS if v != vendor and (v not in CAPABILITIES or channel in CAPABILITIES[v].channels))


def design_reason(profile: CapacityProfile, load: Load, presence: Presence, channel: Channel) -> str | None:
    """DESIGN section 4, written out again from the text (an oracle independent of gateway.capacity)."""
    max_sessions = profile.max_sessions
    weight = profile.units.get(channel, 1)
    max_units = profile.max_units if profile.max_units is not None else max_sessions
    if presence is Presence.OFFLINE:
        return "agent_offline"
    if channel is not Channel.MANUAL and presence is not Presence.READY:
        return "agent_not_ready"
    # rule 2. A channel missing from `channels` is "capped only by max_sessions": rule 2 does not
    # apply to it and filling the agent with it is rule 1, agent_at_capacity (the engine's reading)
    if channel in profile.channels and load.of(channel) + 1 > profile.channels[channel]:
        return "channel_at_capacity"
    sessions_after = load.sessions + 1
    if sessions_after > max_sessions:  # rule 1
        return "agent_at_capacity"
    if load.units + weight > max_units:  # rule 3
        return "agent_at_capacity"
    if channel is Channel.MANUAL and max_sessions - sessions_after < profile.reserved_inbound:  # rule 4
        return "agent_at_capacity"
    return None


def step(fn: F) -> F:
    """Mark the machine unhealthy while a step runs: the teardown skips its checks after a failure."""

    @functools.wraps(fn)
    def wrapper(self: EngineMachine, *args: Any, **kwargs: Any) -> Any:
        self.healthy = False
        result = fn(self, *args, **kwargs)
        self.note_dropped()
        self.persist()
        self.healthy = True
        return result

    return wrapper  # type: ignore[return-value]


@dataclass
class OfferModel:
    """What the vendor was told about one offer event, in order."""

    key: tuple[str, str]  # (vendor, interaction_id)
    answers: list[dict[str, Any]] = field(default_factory=list)
    #: the session the vendor believes holds the interaction while it is offered/active
    holder: str | None = None
    #: holder offers declined or expired and not yet answered by a new decision
    credit: int = 0
    #: the interaction ended (vendor end, agent end, rejection): nothing may be decided any more
    done: bool = False
    #: agents who declined or missed it (DESIGN 5: re-routed excluding them)
    excluded: set[str] = field(default_factory=set)
    #: its parallel offers out (offer_all queues), as the model followed them
    round: set[str] = field(default_factory=set)
    #: it went out in parallel at least once
    had_round: bool = False


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (the memory journal's) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the journal waited for something")


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(1)
        self.clock = ManualClock(T0)
        #: the configuration in force (reloads change it) and the agents it names
        self.config: dict[str, Any] = CONFIG
        self.engine = self.new_engine()
        #: what the runtime journals after every engine call; a restart restores from it
        self.journal = MemoryJournal()
        run_sync(self.journal.open())
        self.event_ids = itertools.count(1)
        self.interaction_ids = itertools.count(1)
        self.offers: dict[tuple[str, str], OfferModel] = {}
        #: interaction key -> the offer event of its current incarnation
        self.current: dict[tuple[str, str], tuple[str, str]] = {}
        #: every event that got an answer, for re-sending
        self.sent: list[tuple[Event, Decision]] = []
        #: session id -> (agent, vendor, interaction) of every session ever offered or created
        self.born: dict[str, tuple[str, str | None, str | None]] = {}
        # longest-idle model: sequence of the agent's last "became ready" or "was offered"
        self.idle_seq = 0
        self.idle: dict[str, int] = {a: 0 for a in AGENTS}
        self.presence: dict[str, str] = {a: "offline" for a in AGENTS}
        self.grace: dict[str, float | None] = {a: None for a in AGENTS}
        #: whether the agent has a desktop connected (focus time counts only then)
        self.desktop: dict[str, bool] = {a: False for a in AGENTS}
        #: whether the engine has fired its timers at the current clock time
        self.synced = True
        self.healthy = True
        self.configured: set[str] = set(AGENTS)
        #: the agents the engine knows (configured, or removed but finishing their sessions)
        self.present: set[str] = set(AGENTS)
        #: each agent's load at the last check: above its caps (a reload lowered them) it may only shrink
        self.last_load: dict[str, Load] = {}
        #: parallel offers won in the step being processed (offer -> winning session)
        self.winners: dict[tuple[str, str], str] = {}
        #: per session, the offer timeout and the wrap-up its profile had when they began
        self.timeout_of: dict[str, float] = {}
        self.wrap_of: dict[str, float] = {}

    # ------------------------------------------------------------------ plumbing

    def new_engine(self) -> Engine:
        return Engine(
            GatewayConfig.model_validate(self.config),
            clock=self.clock,
            new_id=lambda: f"s{next(self.ids)}",
            vendor_capabilities=CAPABILITIES,
            closed_retention_s=CLOSED_RETENTION_S,
        )

    def persist(self) -> None:
        """Journal what changed (the runtime does it after every engine call)."""
        changes = self.engine.take_changes()
        if changes:
            run_sync(self.journal.commit(changes))

    def now(self) -> float:
        return self.clock.now()

    def sync(self) -> None:
        """Fire what is due (what the server's timer does) and check what it produced."""
        self.engine.tick()
        self.process(self.engine.drain())
        # a retiring agent whose last session a timer closed is gone now: noted here, as the
        # step may add it back (a reload) before its end, and a return starts afresh
        self.note_dropped()
        self.synced = True

    def fingerprint(self) -> tuple[Any, ...]:
        """Everything an illegal action must leave untouched."""
        e = self.engine
        sessions = tuple(
            (
                s.id,
                s.agent_id,
                s.state,
                s.deadline,
                s.focused_since,
                s.focus_ms_closed,
                s.accepted_at,
                s.ended_at,
                s.closed_at,
                s.outcome,
                s.flagged,
                len(s.notes),
                s.account.state,
                s.account.id,
                s.transferred_from,
                s.transferred_to,
                s.customer,
                s.subject,
                s.queue,
                s.units,
            )
            for s in e.sessions.values()
        )
        interactions = tuple(
            (
                key,
                i.offer_event_id,
                i.phase,
                i.holder,
                i.pending,
                tuple(i.parallel),
                frozenset(i.excluded),
                i.target_agent,
                i.queue,
                i.wait_deadline,
                i.account_id,
                i.done_at,
                len(i.decisions),
                i.customer,
                i.subject,
                len(i.transcript),
            )
            for key, i in e.interactions.items()
        )
        agents = tuple(
            (a, e.store.get(a), e.focused_session(a), e.agent(a, with_sessions=False)["desktop_connected"])
            for a in sorted(e.agent_ids())
        )
        eligible = tuple(tuple(e.eligible(q, c)) for q in QUEUES for c in INBOUND_CHANNELS)
        return (self.now(), sessions, interactions, agents, tuple(e.waiting()), eligible, len(e._dedup))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one engine action; an ActionError must have changed nothing. Returns the result or the error."""
        self.sync()
        before = self.fingerprint()
        try:
            result = fn(*args, **kwargs)
        except ActionError as exc:
            name = getattr(fn, "__name__", repr(fn))
            assert self.engine.outbox == [], f"{name} raised {exc!r} but left notices {self.engine.outbox}"
            assert self.fingerprint() == before, f"{name} raised {exc!r} but changed the state"
            return exc
        self.process(self.engine.drain())
        return result

    def touch(self, agent_id: str) -> None:
        self.idle_seq += 1
        self.idle[agent_id] = self.idle_seq

    def parallel_queues(self) -> dict[str, int | None]:
        """The offer_all queues of the configuration in force (the engine's: a reload's notices are
        processed under the new one), with their offer_to."""
        return {n: q.offer_to for n, q in self.engine.queues.items() if q.policy is QueuePolicy.OFFER_ALL}

    def policy_key(self, queue: str, agent_id: str) -> tuple[Any, ...]:
        """The order DESIGN section 4 asks of a queue's policy (ties: the idle order, then the id)."""
        if self.engine.queues[queue].policy is QueuePolicy.LEAST_BUSY:
            load = self.engine.load_of(agent_id)
            share = load.units / self.engine.profile_of(agent_id).unit_limit
            return (share, load.sessions, self.idle[agent_id], agent_id)
        return (self.idle[agent_id], agent_id)

    def reason(self, agent_id: str, channel: Channel) -> str | None:
        """Why DESIGN section 4 refuses one more ``channel`` session on the agent now (None: it allows it)."""
        if agent_id not in self.configured:  # removed by a reload (finishing its sessions, or gone)
            return "unknown_agent"
        e = self.engine
        return design_reason(e.profile_of(agent_id), e.load_of(agent_id), e.presence_of(agent_id), channel)

    def has_room(self, agent_id: str, channel: Channel) -> bool:
        return self.reason(agent_id, channel) is None

    def process(self, notices: list[Notice]) -> None:
        """Follow the notices in order: idle order, presence, holders, late decisions."""
        #: sessions offered by this step; parallel offers won by this step (offer -> winner)
        offered_now: set[str] = set()
        winners = self.winners = {}
        for notice in notices:
            if isinstance(notice, SessionChanged):
                s = notice.session
                if notice.transition in ("offered", "created"):
                    self.born[s["id"]] = (s["agent_id"], s["vendor"], s["interaction_id"])
                if notice.transition == "offered":
                    profile = self.engine.profile_of(s["agent_id"])
                    self.timeout_of[s["id"]] = profile.offer_timeout(Channel(s["channel"]))
                elif notice.transition == "ended":
                    self.wrap_of[s["id"]] = self.engine.profile_of(s["agent_id"]).wrap_up(Channel(s["channel"]))
                elif notice.transition in ("closed", "transferred") and s["ended_at"] is not None:
                    self.wrap_of.setdefault(s["id"], 0.0)  # closed at its end: no wrap-up
                if notice.transition == "offered":
                    self.touch(s["agent_id"])
                    offered_now.add(s["id"])
                elif notice.transition in ("declined", "expired", "abandoned") and s["vendor"] is not None:
                    offer_key = self.current.get((s["vendor"], s["interaction_id"]))
                    offer = self.offers[offer_key] if offer_key else None
                    if offer is not None and offer.holder == s["id"]:
                        offer.holder = None
                        if notice.transition != "abandoned":
                            offer.credit += 1
                            offer.excluded.add(s["agent_id"])
                    elif offer is not None and (s["id"] in offer.round or s["id"] in offered_now):
                        # one parallel offer gone (no decision owed); one offered in this very step
                        # (timers firing in turn: a new round's offers may expire at once) is one too,
                        # as any other offer made here was announced to the vendor (its holder)
                        offer.round.discard(s["id"])
                        offer.had_round = True
                        if notice.transition != "abandoned":
                            offer.excluded.add(s["agent_id"])
                elif notice.transition == "accepted" and s["vendor"] is not None:
                    offer_key = self.current.get((s["vendor"], s["interaction_id"]))
                    offer = self.offers[offer_key] if offer_key else None
                    if offer is not None and s["id"] in offer.round:
                        offer.round.discard(s["id"])
                        winners[offer_key] = s["id"]  # type: ignore[index]
                elif notice.transition == "withdrawn":
                    offer_key = self.current.get((s["vendor"], s["interaction_id"]))
                    assert offer_key in winners, f"{s['id']} withdrawn although nobody accepted its interaction"
                    offer = self.offers[offer_key]
                    assert s["id"] in offer.round, f"{s['id']} withdrawn but not a parallel offer out"
                    offer.round.discard(s["id"])
            elif isinstance(notice, PresenceChanged):
                if notice.state == "ready" and self.presence[notice.agent_id] != "ready":
                    self.touch(notice.agent_id)
                if notice.reason == "desktop_disconnected":
                    deadline = self.grace[notice.agent_id]
                    assert deadline is not None, f"{notice.agent_id} went offline for a desktop that is connected"
                    assert self.now() >= deadline, f"{notice.agent_id} went offline before the grace period ended"
                    self.grace[notice.agent_id] = None
                self.presence[notice.agent_id] = notice.state
            elif isinstance(notice, ToVendor):
                if notice.action is VendorAction.DECISION:
                    self.late_decision(notice)
                elif notice.action is VendorAction.TRANSFERRED:
                    offer_key = self.current[(notice.vendor, notice.interaction_id)]
                    self.offers[offer_key].holder = notice.data["session_id"]
        for offer_key, winner in winners.items():
            offer = self.offers[offer_key]
            assert not offer.round, f"{offer_key}: {winner} won, but {offer.round} are still offered"
            assert offer.holder == winner, f"{offer_key}: {winner} won, the vendor was told {offer.answers[-1]}"
        for key, offer_key in self.current.items():
            offer = self.offers[offer_key]
            interaction = self.engine.interactions.get(key)
            current = interaction is not None and interaction.offer_event_id == offer_key[1]
            out = set(interaction.parallel) if current and interaction.phase is not Phase.DONE else set()  # type: ignore[union-attr]
            assert offer.round <= out, f"{offer_key}: parallel offers {offer.round - out} ended unannounced"
            assert out - offer.round <= offered_now, f"{offer_key}: parallel offers {out} were not offered now"
            offer.round = out
            offer.had_round |= bool(out)
        for offer_key, offer in self.offers.items():
            assert offer.credit == 0, (
                f"offer {offer_key}: its holder offer was declined/expired but no decision followed "
                f"(answers so far {offer.answers})"
            )

    def late_decision(self, notice: ToVendor) -> None:
        assert notice.event_id is not None
        offer_key = (notice.vendor, notice.event_id)
        offer = self.offers.get(offer_key)
        assert offer is not None, f"decision {notice} about an offer that was never sent"
        assert offer.key == (notice.vendor, notice.interaction_id), f"decision {notice} names another interaction"
        assert not offer.done, f"decision {notice.data} about {offer_key} after its interaction ended ({offer.answers})"
        kind = notice.data["decision"]
        assert can_reject(notice.vendor) or kind != "rejected" or notice.data["reason"] == "unknown_agent", (
            f"{offer_key}: {notice.data} to a vendor that cannot take a rejection ({offer.answers})"
        )
        last = offer.answers[-1]
        assert last["decision"] != "rejected", f"{offer_key}: decision {notice.data} after rejection {offer.answers}"
        interaction = self.engine.interactions[offer.key]
        parallel = interaction.target_agent is None and interaction.queue in self.parallel_queues()
        if last["decision"] == "queued":
            assert offer.credit == 0
            assert kind in ("assigned", "rejected"), f"{offer_key}: {kind} follows queued ({offer.answers})"
            if kind == "rejected":  # (unknown_agent: the agent it waited for was removed by a reload)
                # (no_agent_available: every parallel offer of the last round declined or expired)
                reasons = {"queue_timeout", "unknown_agent"} | ({"no_agent_available"} if offer.had_round else set())
                assert notice.data["reason"] in reasons, notice.data
            elif parallel:  # a parallel offer is assigned to its winner only, the first accept
                assert self.winners.get(offer_key) == notice.data["session_id"], (
                    f"{offer_key}: assigned {notice.data} but the winner is {self.winners.get(offer_key)}"
                )
                winner = self.engine.sessions[notice.data["session_id"]]
                assert winner.state is SessionState.ACTIVE, f"{offer_key}: assigned to {winner}, who did not accept"
        else:
            assert offer.credit > 0, (
                f"{offer_key}: late decision {notice.data} although its holder offer was not declined or "
                f"expired ({offer.answers})"
            )
            offer.credit -= 1
            assert kind in ("assigned", "queued", "rejected"), notice.data
            if kind == "rejected":
                assert notice.data["reason"] in ("offer_timeout", "no_agent_available"), notice.data
        if kind == "assigned":
            if not can_reject(notice.vendor) and interaction.target_agent is not None:
                # held for its agent: offered to that agent again, declined or not
                assert notice.data["agent_id"] == interaction.target_agent, (
                    f"{offer_key} waited for {interaction.target_agent} but went to {notice.data['agent_id']}"
                )
            else:
                assert notice.data["agent_id"] not in offer.excluded, (
                    f"{offer_key} offered again to {notice.data['agent_id']}, who declined or missed it "
                    f"({offer.excluded})"
                )
            self.check_assigned(offer, notice.data)
        offer.answers.append(dict(notice.data))

    def check_assigned(self, offer: OfferModel, body: dict[str, Any]) -> None:
        session_id = body["session_id"]
        born = self.born.get(session_id)
        assert born is not None, f"assigned to {session_id}, which was never offered"
        assert born == (body["agent_id"], *offer.key), f"assigned {body} but the session is {born}"
        offer.holder = session_id

    def send(self, event: Event) -> Decision | ActionError:
        return self.call(self.engine.handle_event, event)

    def new_event(self, type_: EventType, vendor: str, interaction_id: str, **fields: Any) -> Event:
        return Event(
            vendor=vendor,
            event_id=f"e{next(self.event_ids)}",
            type=type_,
            interaction_id=interaction_id,
            occurred_at=datetime.fromtimestamp(self.now(), tz=timezone.utc),
            **fields,
        )

    def open_interaction(self, key: tuple[str, str]) -> bool:
        interaction = self.engine.interactions.get(key)
        return interaction is not None and interaction.phase is not Phase.DONE

    def sessions_in(self, *states: SessionState, manual: bool | None = None) -> list[str]:
        return sorted(
            (
                s.id
                for s in self.engine.sessions.values()
                if s.state in states and (manual is None or s.manual == manual)
            ),
            key=lambda sid: int(sid[1:]),
        )

    def pick_interaction_id(self, data: st.DataObject, vendor: str, reuse: bool) -> str:
        known = sorted(iid for (v, iid) in self.current if v == vendor)
        if reuse and known:
            return data.draw(st.sampled_from(known), label="reused interaction")
        return f"i{next(self.interaction_ids)}"

    # ------------------------------------------------------------------ start

    @initialize(
        presences=st.lists(NEW_PRESENCE, min_size=len(AGENTS), max_size=len(AGENTS)),
        desktops=st.lists(st.booleans(), min_size=len(AGENTS), max_size=len(AGENTS)),
    )
    @step
    def start(self, presences: list[str], desktops: list[bool]) -> None:
        """A shift starts: most agents log in (agents start offline, DESIGN section 6)."""
        for agent, state, desktop in zip(AGENTS, presences, desktops, strict=True):
            if desktop:
                assert not isinstance(self.call(self.engine.desktop_connected, agent), ActionError)
                self.desktop[agent] = True
            if state != "offline":
                assert not isinstance(self.call(self.engine.set_presence, agent, state), ActionError)

    # ------------------------------------------------------------------ offers

    def offer(self, event: Event, accept_now: bool = False) -> None:
        key = event.interaction_key
        self.sync()
        was_open = self.open_interaction(key)
        expected = self.expected_answer(event)
        decision = self.send(event)
        if was_open:
            assert isinstance(decision, ActionError), f"an offer for open interaction {key} was taken: {decision}"
            assert decision.code == "interaction_already_open", decision
            return
        assert isinstance(decision, Decision), f"offer {event} raised {decision!r}"
        assert decision.kind in (DecisionKind.ASSIGNED, DecisionKind.REJECTED, DecisionKind.QUEUED), decision
        kind, detail = expected
        assert decision.kind.value == kind, f"offer {event.event_id}: expected {expected}, got {decision}"
        if kind == "rejected":
            assert decision.reason == detail, f"expected reason {detail}, got {decision}"
        elif kind == "assigned":
            assert decision.agent_id in detail, f"assigned to {decision.agent_id}, the policy says {detail}"
        elif detail is not None:  # a parallel offer: out to exactly the agents the policy orders first
            interaction = self.engine.interactions[key]
            out = {self.engine.sessions[s].agent_id for s in interaction.parallel}
            assert out == detail, f"offer {event.event_id} went out to {out}, the policy says {detail}"
        previous = self.current.get(key)
        if previous is not None:
            self.offers[previous].done = True  # its interaction was done (not was_open): a new incarnation
        offer = OfferModel(key=key, answers=[decision.as_dict()])
        self.offers[event.key] = offer
        self.current[key] = event.key
        if decision.kind is DecisionKind.ASSIGNED:
            self.check_assigned(offer, decision.as_dict())
        offer.round = set(self.engine.interactions[key].parallel)
        offer.had_round = bool(offer.round)
        self.sent.append((event, decision))
        if accept_now and decision.session_id is not None:
            accepted = self.call(self.engine.accept, decision.session_id, actor=decision.agent_id)
            assert not isinstance(accepted, ActionError), f"accepting {decision.session_id} failed: {accepted!r}"

    def expected_answer(self, event: Event) -> tuple[str, Any]:
        """What DESIGN section 4 says the synchronous answer to this offer is (engine synced)."""
        assert event.channel is not None
        caps = CAPABILITIES.get(event.vendor)
        if caps is not None and event.channel not in caps.channels:
            return ("rejected", "vendor_unsupported")
        if event.agent_id is not None:
            if event.agent_id not in self.configured:
                return ("rejected", "unknown_agent")
            reason = self.reason(event.agent_id, event.channel)
            if reason is None:
                return ("assigned", {event.agent_id})
            return ("rejected", reason) if can_reject(event.vendor) else ("queued", None)
        assert event.queue is not None
        if event.queue in self.parallel_queues():  # at once to the first offer_to agents with room: queued
            room = sorted(
                (a for a in self.queue_agents(event.queue) if self.has_room(a, event.channel)),
                key=lambda a: self.policy_key(event.queue, a),  # type: ignore[arg-type]
            )
            width = self.parallel_queues()[event.queue]
            if room:
                return ("queued", set(room if width is None else room[:width]))
        best = self.best_of(event.queue, event.channel, exclude=set())
        if best is not None:
            return ("assigned", {best})
        if not can_reject(event.vendor):
            return ("queued", None)
        queue = self.engine.queues[event.queue]
        waiting = sum(1 for k in self.engine.waiting() if self.in_line(k) == queue.name)
        if queue.on_full is OnFull.WAIT and waiting < queue.max_waiting:
            return ("queued", None)
        return ("rejected", "no_agent_available")

    def in_line(self, key: tuple[str, str]) -> str | None:
        """The queue a waiting interaction waits in (None: it waits for its agent)."""
        interaction = self.engine.interactions[key]
        return interaction.queue if interaction.target_agent is None else None

    def queue_agents(self, queue: str) -> list[str]:
        return [a for a in QUEUE_AGENTS[queue] if a in self.configured]

    def note_dropped(self) -> None:
        """Agents the engine let go (removed, last session closed): a return starts afresh."""
        known = set(self.engine.agent_ids())
        for agent in self.present - known:
            self.desktop[agent] = False
            self.grace[agent] = None
            self.idle[agent] = 0
            assert self.presence[agent] == "offline", f"{agent} left {self.presence[agent]}"
        self.present = known

    def best_of(self, queue: str, channel: Channel, exclude: set[str]) -> str | None:
        room = [a for a in self.queue_agents(queue) if a not in exclude and self.has_room(a, channel)]
        return min(room, key=lambda a: self.policy_key(queue, a)) if room else None

    @rule(
        data=st.data(),
        vendor_choice=VENDOR_CHOICE,
        channel=CHANNELS,
        agent=TARGETS,
        priority=PRIORITIES,
        reuse=st.booleans(),
        customer=CUSTOMERS,
        accept_now=st.booleans(),
    )
    @step
    def targeted_offer(
        self,
        data: st.DataObject,
        vendor_choice: tuple[str, int],
        channel: Channel,
        agent: str,
        priority: int,
        reuse: bool,
        customer: Customer | None,
        accept_now: bool,
    ) -> None:
        """The vendor's ACD chose the agent (accept_now: the agent answers at once)."""
        vendor = vendor_for(vendor_choice, channel)
        iid = self.pick_interaction_id(data, vendor, reuse)
        self.offer(
            self.new_event(
                EventType.OFFER, vendor, iid, channel=channel, agent_id=agent, priority=priority, customer=customer
            ),
            accept_now,
        )

    @rule(
        data=st.data(),
        vendor_choice=VENDOR_CHOICE,
        channel=CHANNELS,
        queue=st.sampled_from(QUEUES),
        priority=PRIORITIES,
        reuse=st.booleans(),
        account=st.sampled_from([None, "acc-7"]),
        accept_now=st.booleans(),
    )
    @step
    def queue_offer(
        self,
        data: st.DataObject,
        vendor_choice: tuple[str, int],
        channel: Channel,
        queue: str,
        priority: int,
        reuse: bool,
        account: str | None,
        accept_now: bool,
    ) -> None:
        """The gateway picks an agent of the queue, or queues / rejects (accept_now: the agent answers at once)."""
        vendor = vendor_for(vendor_choice, channel)
        iid = self.pick_interaction_id(data, vendor, reuse)
        attributes = {"account_id": account} if account else {}
        self.offer(
            self.new_event(
                EventType.OFFER, vendor, iid, channel=channel, queue=queue, priority=priority, attributes=attributes
            ),
            accept_now,
        )

    @rule(data=st.data())
    @step
    def resend(self, data: st.DataObject) -> None:
        """A vendor re-sends an event id it sent before: the first answer again, nothing changes."""
        if not self.sent:
            return
        event, first = data.draw(st.sampled_from(self.sent), label="re-sent event")
        self.sync()
        before = self.fingerprint()
        decision = self.engine.handle_event(event)
        assert decision.kind is DecisionKind.DUPLICATE, decision
        assert decision.original == first, (
            f"duplicate of {event.event_id} answers {decision.original}, first was {first}"
        )
        assert self.fingerprint() == before, "a duplicate changed the state"
        notices = self.engine.drain()
        assert len(notices) == 1 and isinstance(notices[0], Routed), notices

    # ------------------------------------------------------------------ agent actions

    @rule(data=st.data(), with_actor=st.booleans())
    @step
    def accept(self, data: st.DataObject, with_actor: bool) -> None:
        self.sync()
        offered = self.sessions_in(SessionState.OFFERED)
        if not offered:
            return
        sid = data.draw(st.sampled_from(offered), label="offered session")
        actor = self.engine.sessions[sid].agent_id if with_actor else None
        result = self.call(self.engine.accept, sid, actor=actor)
        assert not isinstance(result, ActionError), f"accepting offered {sid} failed: {result!r}"
        assert result.state is SessionState.ACTIVE

    @rule(data=st.data())
    @step
    def decline(self, data: st.DataObject) -> None:
        self.sync()
        offered = self.sessions_in(SessionState.OFFERED)
        if not offered:
            return
        sid = data.draw(st.sampled_from(offered), label="offered session")
        result = self.call(self.engine.decline, sid)
        assert not isinstance(result, ActionError), f"declining offered {sid} failed: {result!r}"
        assert result.state is SessionState.CLOSED

    @rule(data=st.data(), vendor_side=st.booleans())
    @step
    def accept_race(self, data: st.DataObject, vendor_side: bool) -> None:
        """Every desktop offered one parallel offer accepts it in the same instant, in some order
        (vendor_side: the first to arrive is the vendor's accept for that agent): the first one
        wins, the others are refused (``session_not_offered``) and find their offer withdrawn."""
        self.sync()
        e = self.engine
        out = sorted(k for k, i in e.interactions.items() if i.parallel)
        if not out:
            return
        key = data.draw(st.sampled_from(out), label="parallel offer")
        sessions = data.draw(st.permutations(e.interactions[key].parallel), label="accept order")
        first, *others = sessions
        if vendor_side:
            agent = e.sessions[first].agent_id
            result = self.send(self.new_event(EventType.ACCEPT, key[0], key[1], agent_id=agent))
        else:
            result = self.call(e.accept, first, actor=e.sessions[first].agent_id)
        assert not isinstance(result, ActionError), f"the first accept of {key} ({first}) failed: {result!r}"
        assert e.sessions[first].state is SessionState.ACTIVE
        assert e.interactions[key].holder == first
        for sid in others:
            late = self.call(e.accept, sid, actor=e.sessions[sid].agent_id)
            assert isinstance(late, ActionError) and late.code == "session_not_offered", late
            assert e.sessions[sid].outcome is Outcome.WITHDRAWN and not e.sessions[sid].occupying

    @rule(data=st.data())
    @step
    def agent_end(self, data: st.DataObject) -> None:
        self.sync()
        active = self.sessions_in(SessionState.ACTIVE)
        if not active:
            return
        sid = data.draw(st.sampled_from(active), label="active session")
        result = self.call(self.engine.end, sid, actor=self.engine.sessions[sid].agent_id)
        assert not isinstance(result, ActionError), f"ending active {sid} failed: {result!r}"
        assert result.state in (SessionState.WRAP_UP, SessionState.CLOSED)

    @rule(
        data=st.data(),
        mode=st.sampled_from(["blind", "consult"]),
        to_queue=st.booleans(),
        then=st.sampled_from([None, "accept", "decline"]),
    )
    @step
    def transfer(self, data: st.DataObject, mode: str, to_queue: bool, then: str | None) -> None:
        """Blind or consult transfer of an active session to an agent or a queue; the target may answer at once."""
        self.sync()
        active = self.sessions_in(SessionState.ACTIVE, manual=False)
        if not active:
            return
        sid = data.draw(st.sampled_from(active), label="active session")
        e = self.engine
        session = e.sessions[sid]
        interaction = e.interactions[(session.vendor, session.interaction_id)]  # type: ignore[index]
        expected: str | None = None
        best: str | None = None
        if to_queue:
            target = data.draw(st.sampled_from(QUEUES), label="to queue")
            kwargs: dict[str, Any] = {"to_queue": target}
        else:
            target = data.draw(st.sampled_from([a for a in AGENTS if a != session.agent_id]), label="to agent")
            kwargs = {"to_agent": target}
        if session.vendor == "mail":
            expected = "vendor_unsupported"
        elif interaction.pending is not None:
            expected = "transfer_in_progress"
        elif to_queue:
            best = self.best_of(target, session.channel, exclude={session.agent_id})
            expected = None if best is not None else "no_agent_available"
        else:
            expected = self.reason(target, session.channel)
            best = target
        result = self.call(e.transfer, sid, mode=mode, actor=session.agent_id, **kwargs)
        if expected is not None:
            assert isinstance(result, ActionError), (
                f"transfer of {sid} to {target} should fail with {expected}: {result}"
            )
            assert result.code == expected, f"transfer of {sid} to {target}: expected {expected}, got {result!r}"
            return
        assert not isinstance(result, ActionError), f"transfer of {sid} to {target} failed: {result!r}"
        assert result.agent_id == best, f"transfer to {target} went to {result.agent_id}, the policy says {best}"
        assert result.state is SessionState.OFFERED and result.transferred_from == sid
        if mode == "consult":
            assert session.state is SessionState.ACTIVE and interaction.pending == result.id
        else:
            assert session.state in (SessionState.WRAP_UP, SessionState.CLOSED) and interaction.holder == result.id
            if to_queue:  # routed in the new queue like a fresh offer, never back to the agent who moved it
                self.offers[self.current[interaction.key]].excluded = {session.agent_id}
        if then is not None:
            answered = self.call(getattr(e, then), result.id, actor=result.agent_id)
            assert not isinstance(answered, ActionError), f"{then} of transfer target {result.id} failed: {answered!r}"
            if then == "accept":
                assert interaction.holder == result.id and session.state is not SessionState.ACTIVE
            elif mode == "consult":
                assert (
                    interaction.holder == sid and interaction.pending is None and session.state is SessionState.ACTIVE
                )

    @rule(data=st.data(), agent=st.sampled_from(AGENTS), none=st.booleans(), bounce=st.booleans())
    @step
    def focus(self, data: st.DataObject, agent: str, none: bool, bounce: bool) -> None:
        """The desktop focuses a session, or none; bounce: it leaves the session and comes back at once
        (two focus messages handled in the same instant)."""
        self.sync()
        if not self.engine.has_agent(agent):
            return
        focusable = [
            s.id for s in self.engine.open_sessions(agent) if s.state in (SessionState.ACTIVE, SessionState.WRAP_UP)
        ]
        sid = None if none or not focusable else data.draw(st.sampled_from(sorted(focusable)), label="session")
        if bounce and sid is not None:
            result = self.call(self.engine.focus, agent, None, actor=agent)
            assert not isinstance(result, ActionError), f"focus of nothing failed: {result!r}"
        result = self.call(self.engine.focus, agent, sid, actor=agent)
        assert not isinstance(result, ActionError), f"focus of {sid} failed: {result!r}"
        assert self.engine.focused_session(agent) == sid

    @rule(agent=st.sampled_from(AGENTS), label=st.sampled_from([None, "callback"]))
    @step
    def manual_session(self, agent: str, label: str | None) -> None:
        self.sync()
        e = self.engine
        reason = self.reason(agent, Channel.MANUAL)
        result = self.call(e.new_session, agent, label=label, actor=agent)
        if reason is not None:
            assert isinstance(result, ActionError) and result.code == reason, (reason, result)
            return
        assert not isinstance(result, ActionError), f"manual session on {agent} refused: {result!r}"
        assert result.state is SessionState.ACTIVE and e.focused_session(agent) == result.id

    @rule(agent=st.sampled_from(AGENTS), state=NEW_PRESENCE, reason=st.sampled_from([None, "break"]))
    @step
    def presence(self, agent: str, state: str, reason: str | None) -> None:
        self.sync()
        if not self.engine.has_agent(agent):
            result = self.call(self.engine.set_presence, agent, state, reason, actor=agent)
            assert isinstance(result, ActionError) and result.code == "unknown_agent", result
            return
        result = self.call(self.engine.set_presence, agent, state, reason, actor=agent)
        assert not isinstance(result, ActionError), result
        assert self.engine.presence_of(agent) is Presence(state)
        if state == "offline" and self.engine.has_agent(agent):  # (a removed agent may be gone with its offers)
            assert not [s for s in self.engine.open_sessions(agent) if s.state is SessionState.OFFERED]

    @rule(agent=st.sampled_from(AGENTS), connected=st.sampled_from([True, True, False]))
    @step
    def desktop(self, agent: str, connected: bool) -> None:
        self.sync()
        if not self.engine.has_agent(agent):
            result = self.call(self.engine.desktop_connected, agent)
            assert isinstance(result, ActionError) and result.code == "unknown_agent", result
            return
        if connected:
            result = self.call(self.engine.desktop_connected, agent)
            self.grace[agent] = None
            self.desktop[agent] = True
            assert not isinstance(result, ActionError), result
            assert not any(s.flagged for s in self.engine.open_sessions(agent))
        else:
            self.sync()
            self.grace[agent] = self.now() + GRACE_S
            self.desktop[agent] = False
            result = self.call(self.engine.desktop_disconnected, agent)
            assert not isinstance(result, ActionError), result

    @rule(seconds=DURATIONS, fire=st.booleans())
    @step
    def advance(self, seconds: float, fire: bool) -> None:
        """Time passes; the server's timer may or may not have fired yet (the next call fires it).

        Focus time grows only while somebody looks (issue 6 item 8): by at most the time
        passed for the focused session of an agent with a desktop connected that is not
        offline, and not at all for any other session (timers that fire meanwhile only stop
        clocks: a grace period ends after the desktop left, a wrap-up closes the session)."""
        self.sync()
        before = {sid: s.focus_ms(self.now()) for sid, s in self.engine.sessions.items() if s.occupying}
        looked_at = {
            self.engine.focused_session(a)
            for a in sorted(self.engine.agent_ids())
            if self.desktop[a] and self.presence[a] != "offline" and self.engine.focused_session(a) is not None
        }
        self.clock.advance(seconds)
        self.synced = False
        if fire:
            self.sync()
        for sid, focus_before in before.items():
            s = self.engine.sessions.get(sid)
            if s is None:  # closed during a long advance and already forgotten (closed_retention_s)
                continue
            grown = s.focus_ms(s.closed_at if s.closed_at is not None else self.now()) - focus_before
            if sid in looked_at:
                assert 0 <= grown <= seconds * 1000 + 1, f"{sid}: focus grew {grown} ms in {seconds} s"
            else:
                assert grown == 0, f"{sid}: focus grew {grown} ms while nobody looked at it"

    @rule(down=DURATIONS)
    @step
    def restart(self, down: float) -> None:
        """The gateway stops (or crashes: everything acknowledged is journaled), stays down for
        ``down`` seconds and restores from the journal. No desktop survives it; no focus time
        counts for the downtime, and at most the last checkpoint's worth is lost (issue 6 item 8).
        Everything else goes on as before: the invariants hold on the restored engine."""
        self.sync()
        self.persist()
        crashed = self.now()
        before = {sid: s.focus_ms(crashed) for sid, s in self.engine.sessions.items() if s.occupying}
        self.clock.advance(down)
        fresh = self.new_engine()  # on the file in force: the last reload's
        fresh.restore(run_sync(self.journal.load(since=self.now() - fresh.dedup_window_s)))
        fresh.drain()
        self.engine = fresh
        for agent in AGENTS:
            if self.desktop[agent]:  # a desktop that was connected counts as gone now
                self.grace[agent] = self.now() + GRACE_S
            self.desktop[agent] = False
        for sid, focus_before in before.items():
            after = fresh.sessions[sid].focus_ms(self.now())
            assert focus_before - FOCUS_CHECKPOINT_S * 1000 - 1 <= after <= focus_before, (
                f"{sid}: focus_ms {focus_before} before a {down} s downtime, {after} after"
            )
        self.synced = False

    @rule(data=st.data(), removed=st.sets(st.sampled_from(REMOVABLE)))
    @step
    def reload(self, data: st.DataObject, removed: set[str]) -> None:
        """A new configuration (issue 10): profiles raised, lowered or reweighted under load,
        agents removed in the middle of their sessions (and added back later). Applied in one
        step; nothing open is cut, the rules apply to the next allocation, waiting
        interactions keep their place (and may be served at once), the waiters of a removed
        agent are rejected. A later restart uses this configuration."""
        self.sync()
        config = copy.deepcopy(CONFIG)
        for name, variants in PROFILE_VARIANTS.items():
            config["capacity_profiles"][name] = variants[data.draw(st.integers(0, len(variants) - 1), label=name)]
        config["agents"] = [a for a in CONFIG["agents"] if a["id"] not in removed]
        if not data.draw(st.booleans(), label="rush stays offer_all"):
            # a policy change applies to what is routed from now on; offers out finish normally
            config["queues"] = [
                {"name": "rush", "on_full": "wait", "max_wait_s": 8, "max_waiting": 2} if q["name"] == "rush" else q
                for q in config["queues"]
            ]
        e = self.engine
        held = {a: {s.id for s in e.open_sessions(a)} for a in e.agent_ids()}
        # the loads the new caps meet (timers that fired just now included): the baseline of "no more"
        self.last_load = {a: e.load_of(a) for a in e.agent_ids()}
        states = {sid: e.sessions[sid].state for ids in held.values() for sid in ids}
        result = self.call(e.reconfigure, GatewayConfig.model_validate(config), vendor_capabilities=CAPABILITIES)
        assert not isinstance(result, ActionError), result
        # the open sessions now weigh what the new profiles say (a recount, not an allocation)
        self.last_load = {a: replace(load, units=e.load_of(a).units) for a, load in self.last_load.items()}
        self.config = config
        self.configured = set(AGENTS) - removed
        # nothing open was cut: every session is still open, in the state it had (new offers aside)
        for sid, state in states.items():
            assert e.sessions[sid].state is state, f"{sid}: {state} -> {e.sessions[sid].state} by a reload"
        assert set(e.retiring_agents()) == {a for a in removed if held.get(a)}
        for agent in removed:
            assert e.availability(agent, Channel.CHAT) is not None

    # ------------------------------------------------------------------ vendor events

    def pick_known(self, data: st.DataObject) -> tuple[str, str]:
        known = sorted(self.current)
        if known and data.draw(st.integers(0, 9), label="known?") > 0:
            return data.draw(st.sampled_from(known), label="interaction")
        return (data.draw(st.sampled_from(VENDORS), label="vendor"), "i-unknown")

    @rule(data=st.data())
    @step
    def vendor_end(self, data: st.DataObject) -> None:
        vendor, iid = self.pick_known(data)
        self.vendor_event(EventType.END, vendor, iid)

    @rule(
        data=st.data(),
        message=st.booleans(),
        customer=CUSTOMERS,
        subject=st.sampled_from([None, "Re: invoice"]),
        account=st.sampled_from([None, "acc-1", "acc-2"]),
    )
    @step
    def vendor_info(
        self, data: st.DataObject, message: bool, customer: Customer | None, subject: str | None, account: str | None
    ) -> None:
        """A customer's chat message, or new details about the interaction (customer, subject, account)."""
        vendor, iid = self.pick_known(data)
        if message:
            self.vendor_event(EventType.MESSAGE, vendor, iid, text="still there?", customer=customer)
        else:
            attributes = {"account_id": account} if account else {}
            self.vendor_event(EventType.UPDATE, vendor, iid, customer=customer, subject=subject, attributes=attributes)

    def vendor_event(self, type_: EventType, vendor: str, iid: str, **fields: Any) -> None:
        key = (vendor, iid)
        known = key in self.engine.interactions
        event = self.new_event(type_, vendor, iid, **fields)
        result = self.send(event)
        if not known:
            assert isinstance(result, ActionError) and result.code == "interaction_not_found", result
            return
        assert isinstance(result, Decision) and result.kind is DecisionKind.ACCEPTED, result
        self.sent.append((event, result))
        if type_ is EventType.END:
            interaction = self.engine.interactions[key]
            assert interaction.phase is Phase.DONE and interaction.holder is None and interaction.pending is None
            assert key not in self.engine.waiting()

    # ------------------------------------------------------------------ illegal actions

    @rule(data=st.data())
    @step
    def illegal(self, data: st.DataObject) -> None:
        """An action the engine must refuse with a stable code, changing nothing."""
        self.sync()
        e = self.engine
        #: kind of mistake -> [(what, expected code, the call)]; the kind is drawn first, so rare ones come up
        choices: dict[str, list[tuple[str, str, Callable[[], Any]]]] = defaultdict(list)
        kind = "wrong state"

        def add(name: str, code: str, thunk: Callable[[], Any]) -> None:
            choices[kind].append((name, code, thunk))

        sessions = sorted(e.sessions.values(), key=lambda s: int(s.id[1:]))
        not_offered = [s for s in sessions if s.state is not SessionState.OFFERED]
        not_active = [s for s in sessions if s.state is not SessionState.ACTIVE]
        offered_or_closed = [
            s for s in sessions if s.state in (SessionState.OFFERED, SessionState.CLOSED) and e.has_agent(s.agent_id)
        ]
        movable = [
            s
            for s in sessions
            if s.state is SessionState.ACTIVE
            and not s.manual
            and s.vendor != "mail"
            and e.interactions[(s.vendor, s.interaction_id)].pending is None  # type: ignore[index]
        ]
        consulting = [
            s
            for s in sessions
            if s.state is SessionState.ACTIVE
            and not s.manual
            and s.vendor != "mail"
            and e.interactions[(s.vendor, s.interaction_id)].pending is not None  # type: ignore[index]
        ]
        manual = [s for s in sessions if s.state is SessionState.ACTIVE and s.manual]
        mail = [s for s in sessions if s.state is SessionState.ACTIVE and s.vendor == "mail"]
        open_keys = sorted(k for k in self.current if self.open_interaction(k))
        present = sorted(e.agent_ids())
        agent = data.draw(st.sampled_from(present), label="agent")
        other = data.draw(st.sampled_from([a for a in present if a != agent]), label="other agent")

        def pick(pool: list[Any]) -> Any:
            return data.draw(st.sampled_from(pool), label="session")

        kind = "wrong state"
        if not_offered:
            add("accept not offered", "session_not_offered", lambda: e.accept(pick(not_offered).id))
            add("decline not offered", "session_not_offered", lambda: e.decline(pick(not_offered).id))
        if not_active:
            add("end not active", "session_not_active", lambda: e.end(pick(not_active).id))
        if offered_or_closed:

            def focus_unfocusable() -> Any:
                s = pick(offered_or_closed)
                return e.focus(s.agent_id, s.id, actor=s.agent_id)

            add("focus offered/closed", "session_not_active", focus_unfocusable)
        kind = "someone else's"
        if sessions:

            def foreign(action: str) -> Callable[[], Any]:
                def thunk() -> Any:
                    s = pick(sessions)
                    actor = next(a for a in present if a != s.agent_id)
                    if action == "focus":
                        return e.focus(actor, s.id, actor=actor)
                    return getattr(e, action)(s.id, actor=actor)

                return thunk

            for action in ("accept", "decline", "end", "focus", "transfer"):
                add(f"{action} another agent's session", "forbidden", foreign(action))
        add("focus for another agent", "forbidden", lambda: e.focus(agent, None, actor=other))
        add("presence for another agent", "forbidden", lambda: e.set_presence(agent, "ready", actor=other))
        add("manual session for another agent", "forbidden", lambda: e.new_session(agent, actor=other))
        kind = "unknown"
        for action in ("accept", "decline", "end"):
            add(f"{action} unknown session", "session_not_found", functools.partial(getattr(e, action), "s0"))
        add("focus unknown session", "session_not_found", lambda: e.focus(agent, "s0", actor=agent))
        add("focus for unknown agent", "unknown_agent", lambda: e.focus("ghost", None))
        kind = "bad transfer"
        if movable:
            add(
                "transfer to self",
                "invalid_transfer_target",
                lambda: (s := pick(movable)) and e.transfer(s.id, to_agent=s.agent_id),
            )
            add("transfer to nobody", "invalid_transfer_target", lambda: e.transfer(pick(movable).id))
            add(
                "transfer to both",
                "invalid_transfer_target",
                lambda: e.transfer(pick(movable).id, to_agent=other, to_queue="idle"),
            )
            add(
                "transfer bad mode",
                "invalid_request",
                lambda: e.transfer(pick(movable).id, to_agent=other, mode="warm"),
            )
            add("transfer to unknown agent", "unknown_agent", lambda: e.transfer(pick(movable).id, to_agent="ghost"))
            add("transfer to unknown queue", "unknown_queue", lambda: e.transfer(pick(movable).id, to_queue="nowhere"))
        if not_active:
            add("transfer not active", "session_not_active", lambda: e.transfer(pick(not_active).id, to_queue="idle"))
        if consulting:
            add(
                "transfer while consulting",
                "transfer_in_progress",
                lambda: e.transfer(
                    pick(consulting).id, to_queue="idle", mode=data.draw(st.sampled_from(["blind", "consult"]))
                ),
            )
        if manual:
            add("transfer manual", "transfer_not_supported", lambda: e.transfer(pick(manual).id, to_queue="idle"))
        if mail:
            add("transfer mail", "vendor_unsupported", lambda: e.transfer(pick(mail).id, to_queue="idle"))
        kind = "vendor"
        if open_keys:

            def reoffer() -> Any:
                vendor, iid = data.draw(st.sampled_from(open_keys), label="open interaction")
                return e.handle_event(self.new_event(EventType.OFFER, vendor, iid, channel=Channel.EMAIL, queue="idle"))

            add("offer an open interaction", "interaction_already_open", reoffer)
        for type_ in (EventType.END, EventType.MESSAGE, EventType.UPDATE):
            add(
                f"vendor {type_.value} of unknown interaction",
                "interaction_not_found",
                functools.partial(e.handle_event, self.new_event(type_, "crm", "i-unknown")),
            )
        kind = "unknown"
        add("presence of unknown agent", "unknown_agent", lambda: e.set_presence("ghost", "ready"))
        add("desktop of unknown agent", "unknown_agent", lambda: e.desktop_connected("ghost"))
        add("desktop gone of unknown agent", "unknown_agent", lambda: e.desktop_disconnected("ghost"))
        add("manual session of unknown agent", "unknown_agent", lambda: e.new_session("ghost"))
        kind = "wrong state"
        if e.presence_of(agent) is Presence.OFFLINE and agent in self.configured:
            add("manual session while offline", "agent_offline", lambda: e.new_session(agent))

        kind = data.draw(st.sampled_from(sorted(choices)), label="kind of mistake")
        name, code, thunk = data.draw(st.sampled_from(choices[kind]), label="illegal action")
        result = self.call(thunk)
        assert isinstance(result, ActionError), f"{name}: not refused, returned {result!r}"
        assert result.code == code, f"{name}: expected code {code}, got {result!r}"

    # ------------------------------------------------------------------ the end

    @rule(go=st.integers(0, 3))
    @step
    def end_everything(self, go: int) -> None:
        if go == 0:
            self.finish_and_check_zero()

    def finish_and_check_zero(self) -> None:
        """End every interaction (vendor end) and manual session, let wrap-up pass: all counters zero."""
        e = self.engine
        self.sync()
        while True:
            open_keys = sorted(k for k, i in e.interactions.items() if i.phase is not Phase.DONE)
            if not open_keys:
                break
            vendor, iid = open_keys[0]
            self.vendor_event(EventType.END, vendor, iid)
        for sid in self.sessions_in(SessionState.ACTIVE, manual=True):
            result = self.call(e.end, sid)
            assert not isinstance(result, ActionError), result
        leftover = [s.id for s in e.sessions.values() if s.state in (SessionState.OFFERED, SessionState.ACTIVE)]
        assert not leftover, f"sessions {leftover} still offered/active after every interaction ended"
        assert not e.waiting()
        self.clock.advance(MAX_WRAP_S + 0.001)
        self.sync()
        assert e.retiring_agents() == [], "removed agents stay although their last session closed"
        self.note_dropped()
        for agent in AGENTS:
            assert all(v == 0 for v in e.load_of(agent).as_dict().values()), f"{agent} holds {e.load_of(agent)}"
            assert agent not in self.present or e.open_sessions(agent) == []
        assert not [s.id for s in e.sessions.values() if s.occupying]
        for key, interaction in e.interactions.items():
            assert interaction.phase is Phase.DONE and interaction.holder is None and interaction.pending is None, key
            assert interaction.parallel == [], key

    def teardown(self) -> None:
        if self.healthy:
            self.finish_and_check_zero()
            self.check_invariants_now()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def invariants(self) -> None:
        self.healthy = False
        self.check_invariants_now()
        self.healthy = True

    def check_invariants_now(self) -> None:
        e = self.engine
        now = self.now()
        assert e.outbox == [], "notices left undrained"
        occupying: dict[str, list[Any]] = defaultdict(list)
        for s in e.sessions.values():
            if s.occupying:
                occupying[s.agent_id].append(s)
        # -- DESIGN 4: counters equal the occupying sessions, caps hold
        assert set(e.agent_ids()) == self.configured | set(e.retiring_agents())
        assert set(occupying) <= set(e.agent_ids()), f"sessions of agents the engine let go: {set(occupying)}"
        for agent in sorted(e.agent_ids()):
            held = occupying[agent]
            profile = e.profile_of(agent)
            load = e.load_of(agent)
            assert {s.id for s in e.open_sessions(agent)} == {s.id for s in held}, f"{agent}: open sessions drifted"
            per_channel = Counter(s.channel for s in held)
            for channel in Channel:
                assert load.of(channel) == per_channel[channel], f"{agent} {channel}: {load} vs {per_channel}"
            assert load.sessions == len(held), f"{agent}: {load} vs {len(held)} sessions"
            for s in held:
                assert s.units == profile.weight(s.channel), s
            assert load.units == sum(s.units for s in held), f"{agent}: {load} vs weights"
            if not within_limits(profile, load):
                # only a reload that lowered the caps leaves an agent above them (no session is
                # cut); then what is above its cap gets no more (the admission rules check the
                # total, the units and the channel allocated) until it is below again
                before = self.last_load.get(agent, Load())
                over = [c.value for c in Channel if load.of(c) > profile.cap(c)]
                over += ["sessions"] * (load.sessions > profile.max_sessions) + ["units"] * (
                    load.units > profile.unit_limit
                )
                for dimension in over:
                    assert getattr(load, dimension) <= getattr(before, dimension), (
                        f"{agent} above its {dimension} cap and got more: {before} -> {load}"
                    )
            self.last_load[agent] = load
        # -- DESIGN 4: one active session per interaction, two only during a consult
        active = Counter(
            (s.vendor, s.interaction_id) for s in e.sessions.values() if s.state is SessionState.ACTIVE and not s.manual
        )
        waiting = set(e.waiting())
        for key, interaction in e.interactions.items():
            assert active[key] <= (2 if interaction.pending is not None else 1), f"{key}: {active[key]} active sessions"
            holder = e.sessions.get(interaction.holder) if interaction.holder else None
            pending = e.sessions.get(interaction.pending) if interaction.pending else None
            if interaction.holder is not None:
                assert holder is not None and holder.occupying, f"{key}: holder {interaction.holder} gone"
                assert (holder.vendor, holder.interaction_id) == key
                assert holder.state in (SessionState.OFFERED, SessionState.ACTIVE), f"{key}: holder {holder.state}"
            if interaction.pending is not None:
                assert pending is not None and pending.state is SessionState.OFFERED, f"{key}: consult target {pending}"
                assert (pending.vendor, pending.interaction_id) == key
                assert holder is not None and holder.state is SessionState.ACTIVE, (
                    f"{key}: consult without active source"
                )
            phase = interaction.phase
            assert (phase is Phase.WAITING) == (key in waiting), f"{key}: phase {phase}, waiting {key in waiting}"
            if interaction.parallel:  # a parallel offer out: each holds its own agent's slot, nobody won yet
                assert phase is Phase.OFFERED and holder is None and pending is None, (
                    f"{key}: parallel offers {interaction.parallel} while {phase}, {interaction.holder}"
                )
                assert interaction.target_agent is None and interaction.queue in PARALLEL, key
                round_ = [e.sessions[s] for s in interaction.parallel]
                assert all(s.state is SessionState.OFFERED and (s.vendor, s.interaction_id) == key for s in round_)
                agents_out = [s.agent_id for s in round_]
                assert len(set(agents_out)) == len(agents_out), f"{key}: offered twice to one agent {agents_out}"
                assert not set(agents_out) & interaction.excluded, f"{key}: offered to excluded {agents_out}"
                width = PARALLEL[interaction.queue]
                assert width is None or len(agents_out) <= width, f"{key}: offered to {agents_out}, offer_to {width}"
            if phase is Phase.WAITING or phase is Phase.DONE:
                assert holder is None and pending is None and not interaction.parallel, (
                    f"{key} {phase} holds {interaction.holder}/{interaction.pending}/{interaction.parallel}"
                )
            elif phase is Phase.OFFERED:
                assert (holder is not None and holder.state is SessionState.OFFERED) or interaction.parallel, (
                    f"{key} offered, holder {holder}"
                )
            else:
                assert holder is not None and holder.state is SessionState.ACTIVE, f"{key} active, holder {holder}"
        for s in e.sessions.values():
            if s.state in (SessionState.OFFERED, SessionState.ACTIVE) and not s.manual:
                interaction = e.interactions.get((s.vendor, s.interaction_id))  # type: ignore[arg-type]
                assert interaction is not None and (
                    s.id in (interaction.holder, interaction.pending) or s.id in interaction.parallel
                ), (
                    f"{s.id} ({s.state}) is neither holder, consult target nor parallel offer of "
                    f"{s.vendor}/{s.interaction_id}"
                )
        # -- the vendor's picture agrees with the engine's
        for key, offer_key in self.current.items():
            interaction = e.interactions.get(key)
            if interaction is None or interaction.offer_event_id != offer_key[1]:
                continue
            offer = self.offers[offer_key]
            assert [d.as_dict() for d in interaction.decisions] == offer.answers, (
                f"{key}: engine decided {interaction.decisions}, the vendor heard {offer.answers}"
            )
            if interaction.holder is not None:
                assert offer.holder == interaction.holder, f"{key}: vendor believes {offer.holder} holds it"
            assert interaction.excluded == offer.excluded, f"{key}: excluded {interaction.excluded} vs {offer.excluded}"
            assert set(interaction.parallel) == offer.round, f"{key}: out {interaction.parallel} vs {offer.round}"
            if interaction.phase is Phase.DONE:
                offer.done = True
        # -- waiting lists: bounded, and nobody waits while an agent of the queue has room
        # (a vendor that cannot reject waits past max_waiting and max_wait_s)
        per_queue = Counter(self.in_line(k) for k in waiting if can_reject(k[0]))
        for queue, count in per_queue.items():
            assert queue is not None and count <= e.queues[queue].max_waiting
        for key in waiting:
            interaction = e.interactions[key]
            assert (interaction.wait_deadline is not None) == can_reject(key[0]), (
                f"{key}: wait deadline {interaction.wait_deadline}"
            )
            if interaction.target_agent is not None:
                assert not can_reject(key[0]), f"{key}: a targeted offer waits although its vendor can reject"
                assert not self.has_room(interaction.target_agent, interaction.channel), (
                    f"{key} waits for {interaction.target_agent}, who has room for {interaction.channel}"
                )
                continue
            assert interaction.queue is not None
            for agent in self.queue_agents(interaction.queue):
                assert agent in interaction.excluded or not self.has_room(agent, interaction.channel), (
                    f"{key} waits in {interaction.queue} although {agent} has room for {interaction.channel}"
                )
        # -- the eligibility index: exactly the agents with room, in the policy's order
        for queue in QUEUES:
            for channel in INBOUND_CHANNELS:
                expected = sorted(
                    (a for a in self.queue_agents(queue) if self.has_room(a, channel)),
                    key=lambda a: self.policy_key(queue, a),
                )
                assert e.eligible(queue, channel) == expected, (
                    f"index {queue}/{channel}: {e.eligible(queue, channel)} vs {expected}"
                )
        # -- DESIGN 5: focus
        focused: dict[str, list[str]] = defaultdict(list)
        for s in e.sessions.values():
            if s.focused:
                focused[s.agent_id].append(s.id)
                assert s.state in (SessionState.ACTIVE, SessionState.WRAP_UP), f"{s.id} focused while {s.state}"
            # the focus clock runs exactly while somebody looks: the agent's desktop is
            # connected and the agent is not offline (issue 6 item 8)
            looking = self.desktop[s.agent_id] and e.presence_of(s.agent_id) is not Presence.OFFLINE
            assert (s.focused_since is not None) == (s.focused and looking), (
                f"{s.id}: focus clock {'runs' if s.focused_since is not None else 'stopped'}, focused={s.focused}, "
                f"desktop={self.desktop[s.agent_id]}, presence={e.presence_of(s.agent_id)}"
            )
            end = s.closed_at if s.closed_at is not None else now
            elapsed = ms_between(s.offered_at, end)
            assert elapsed is not None and s.focus_ms(end) <= elapsed, (
                f"{s.id}: focus_ms {s.focus_ms(end)} > elapsed {elapsed} (offered {s.offered_at}, end {end})"
            )
            times = [t for t in (s.offered_at, s.accepted_at, s.ended_at, s.closed_at) if t is not None]
            assert times == sorted(times) and times[-1] <= now, f"{s.id}: times out of order {times}"
        for agent in sorted(self.present):
            assert len(focused[agent]) <= 1, f"{agent} focuses {focused[agent]}"
            assert e.focused_session(agent) == (focused[agent][0] if focused[agent] else None)
        # -- timers: offers expire within their timeout, wrap-up lasts wrap_up_s; due timers fired
        for s in e.sessions.values():
            if not s.manual and s.accepted_at is None:
                end = s.closed_at if s.closed_at is not None else now
                if self.synced or s.closed_at is not None:
                    assert end <= s.offered_at + self.timeout_of[s.id], f"{s.id} offered past its timeout"
            if s.ended_at is not None and s.closed_at is not None:
                wrap = self.wrap_of[s.id]
                assert s.wrap_ms == ms_between(s.ended_at, s.ended_at + wrap), (
                    f"{s.id}: wrap {s.wrap_ms} ms, not {wrap} s"
                )
            if self.synced and s.deadline is not None and s.state in (SessionState.OFFERED, SessionState.WRAP_UP):
                assert s.deadline > now, f"{s.id}: {s.state} deadline {s.deadline} passed at {now} and did not fire"
        if self.synced:
            for key in waiting:
                deadline = e.interactions[key].wait_deadline
                assert deadline is None or deadline > now, f"{key}: queue timeout did not fire"
            for agent in sorted(self.present):
                deadline = self.grace[agent]
                assert deadline is None or deadline > now, f"{agent}: desktop grace period ended, agent not offline"


def _settings() -> settings:
    # max_examples, deadline etc. come from the profile loaded in tests/conftest.py
    return settings(
        stateful_step_count=STEP_COUNT,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_engine_state_machine() -> None:
    run_state_machine_as_test(EngineMachine, settings=_settings())
