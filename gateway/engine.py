"""The routing engine: inbound events in, sessions and decisions out.

Pure and synchronous: no I/O and no clock reads of its own (the :class:`~gateway.clock.Clock`
is injected). Every action (every public method but the reads) first fires the timers
that are due (offer timeouts, wrap-up ends, queue timeouts, desktop grace periods), then
acts, then leaves what the edges must deliver in :attr:`Engine.outbox` (see
:mod:`gateway.notices`). Reads change nothing; the runtime calls :meth:`Engine.tick` at
:meth:`Engine.next_deadline`, so what they show is at most a timer's latency old. Illegal actions
raise an :class:`~gateway.errors.ActionError` with a stable code and change nothing.

The engine owns session and interaction state; agent presence and capacity counters live
in a :class:`~gateway.state.base.StateStore`, reserved with compare-and-set.
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .capacity import Load, Presence, Reason, check
from .clock import Clock
from .config import AgentConfig, CapacityProfile, GatewayConfig, OnFull, QueueConfig
from .errors import ActionError, CapacityRejected, Forbidden, InvalidEvent, InvalidState, NotFound
from .events import INBOUND_CHANNELS, Channel, Event, EventType
from .interactions import Interaction, InteractionKey, Phase, VendorCapabilities
from .notices import (
    Decision,
    DecisionKind,
    Notice,
    PresenceChanged,
    Routed,
    SessionChanged,
    ToAgent,
    ToVendor,
    VendorAction,
)
from .persistence import (
    Changes,
    Snapshot,
    StateDict,
    decision_from_state,
    decision_to_state,
    interaction_from_state,
    interaction_to_state,
    session_from_state,
    session_to_state,
)
from .router import AgentView, EligibilityIndex, WaitingLists, agent_line
from .sessions import (
    Account,
    AccountState,
    Note,
    Outcome,
    Session,
    SessionState,
    default_label,
    iso,
)
from .state import MemoryStateStore, StateStore

MAX_NOTE_CHARS = 10_000
MAX_NOTES_PER_SESSION = 500
#: chat messages kept per interaction, for agents who get it later
MAX_TRANSCRIPT = 100
#: rejected even to a vendor that cannot take a rejection: no waiting can ever serve them
_ALWAYS_REJECTED = frozenset({Reason.VENDOR_UNSUPPORTED, Reason.UNKNOWN_AGENT})


class _Timer(StrEnum):
    OFFER = "offer"
    WRAP = "wrap"
    WAIT = "wait"
    GRACE = "grace"
    #: while focus time counts: note in the journal that the gateway is alive (see restore)
    CHECKPOINT = "checkpoint"


#: How often, while some session's focus time is counting, the journal learns that the
#: gateway is alive: after a crash no more than this much focus time before it is lost,
#: and none of the downtime ever counts.
FOCUS_CHECKPOINT_S = 5.0


@dataclass(slots=True)
class _Agent:
    config: AgentConfig
    profile: CapacityProfile
    open_sessions: dict[str, Session] = field(default_factory=dict)
    focused: str | None = None
    #: (time, sequence) of becoming ready or of the last offer: longest_idle sorts on it
    idle_since: tuple[float, int] = (0.0, 0)
    desktop_connected: bool = False
    grace_deadline: float | None = None
    #: removed from the configuration by a reload while it held sessions: they finish
    #: normally, it takes no new work, and it goes when the last one closes
    retiring: bool = False

    @property
    def queues(self) -> tuple[str, ...]:
        return () if self.retiring else tuple(self.config.queues)


class Engine:
    """Router, capacity and session lifecycle of one gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock,
        store: StateStore | None = None,
        new_id: Callable[[], str] | None = None,
        vendor_capabilities: Mapping[str, VendorCapabilities] | None = None,
        dedup_window_s: float = 86_400.0,
        closed_retention_s: float = 3_600.0,
        focus_checkpoint_s: float = FOCUS_CHECKPOINT_S,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store if store is not None else MemoryStateStore()
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._caps = dict(vendor_capabilities or {})
        self._dedup_window = dedup_window_s
        self._closed_retention = closed_retention_s
        self._grace_s = config.server.desktop_grace_s
        self._checkpoint_s = focus_checkpoint_s
        self._checkpoint_at: float | None = None
        self._alive_due = False

        self.queues: dict[str, QueueConfig] = {q.name: q for q in config.queues}
        self._agents: dict[str, _Agent] = {a.id: _Agent(a, config.capacity_profiles[a.profile]) for a in config.agents}
        self._index = EligibilityIndex({q.name: q.policy for q in config.queues})
        self._waiting = WaitingLists()
        self.sessions: dict[str, Session] = {}
        self.interactions: dict[InteractionKey, Interaction] = {}
        self._dedup: OrderedDict[tuple[str, str], tuple[float, Decision]] = OrderedDict()
        # what ended, oldest first, for pruning: (at, object)
        self._finished_interactions: deque[tuple[float, Interaction]] = deque()
        self._finished_sessions: deque[tuple[float, Session]] = deque()
        self._timers: list[tuple[float, int, _Timer, Any]] = []
        self._timer_seq = 0
        self._idle_seq = 0
        self.outbox: list[Notice] = []
        # what changed since the last take_changes(), for the journal
        self._dirty_sessions: dict[str, Session] = {}
        self._dirty_interactions: dict[InteractionKey, Interaction] = {}
        self._dirty_agents: set[str] = set()
        self._new_events: list[StateDict] = []
        #: agents whose presence or load changed (for adapters that mirror it to their CMS)
        self._touched: set[str] = set()
        #: reloads applied (journaled, so it survives restarts) and when the last one was
        self.generation = 0
        self.reloaded_at: float | None = None
        #: removed agents that still hold sessions: id -> {"agent": ..., "profile": ...}
        #: (journaled: a restart on the new file keeps them until their sessions close)
        self._retired: dict[str, StateDict] = {}
        self._config_dirty = False
        for agent_id in self._agents:
            self._refresh(agent_id)

    def blank(self, config: GatewayConfig | None = None) -> Engine:
        """A new engine with this one's configuration and no state, to :meth:`restore` into.

        The runtime rebuilds from the journal this way when its in-memory state may have
        moved away from what is stored (a failed write, an engine error mid-call).
        """
        return Engine(
            config if config is not None else self.config,
            clock=self.clock,
            store=type(self.store)(),
            new_id=self._new_id,
            vendor_capabilities=self._caps,
            dedup_window_s=self._dedup_window,
            closed_retention_s=self._closed_retention,
            focus_checkpoint_s=self._checkpoint_s,
        )

    # ------------------------------------------------------------------ edges

    def drain(self) -> list[Notice]:
        """Take every notice produced so far."""
        out, self.outbox = self.outbox, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no timer pending)."""
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def tick(self) -> None:
        """Fire every timer that is due (the server calls this at :meth:`next_deadline`)."""
        self._now()

    @property
    def dedup_window_s(self) -> float:
        """How long an event id is remembered (a repeat inside it is a duplicate)."""
        return self._dedup_window

    def set_vendor_capabilities(self, vendor: str, caps: VendorCapabilities) -> None:
        self._caps[vendor] = caps

    # ------------------------------------------------------------------ inbound events

    def handle_event(self, event: Event) -> Decision:
        """Apply one normalized vendor event and return the decision for it.

        Offers get ``assigned``, ``rejected`` (with reason) or ``queued``; other events get
        ``accepted``. A repeated ``(vendor, event_id)`` gets ``duplicate`` with the first
        answer, and changes nothing.
        """
        now = self._now()
        seen = self._dedup.get(event.key)
        body = event.model_dump(mode="json")
        if seen is not None:
            decision = Decision(DecisionKind.DUPLICATE, original=seen[1])
            self._routed(event, body, decision)
            return decision
        if event.type is EventType.OFFER:
            decision = self._offer(event, now)
        elif event.type is EventType.END:
            decision = self._vendor_end(event, now)
        elif event.type is EventType.MESSAGE:
            decision = self._vendor_message(event, now)
        elif event.type is EventType.ACCEPT:
            decision = self._vendor_accept(event, now)
        elif event.type is EventType.DECLINE:
            decision = self._vendor_decline(event, now)
        else:
            decision = self._vendor_update(event, now)
        self._dedup[event.key] = (now, decision)
        self._new_events.append(
            {
                "vendor": event.vendor,
                "event_id": event.event_id,
                "at": now,
                "type": event.type.value,
                "interaction_id": event.interaction_id,
                "event": body,
                "decision": decision_to_state(decision),
            }
        )
        self._routed(event, body, decision)
        return decision

    def _routed(self, event: Event, body: dict[str, Any], decision: Decision) -> None:
        self.outbox.append(
            Routed(
                event.vendor,
                event.event_id,
                event.type.value,
                event.interaction_id,
                event.channel.value if event.channel else None,
                decision,
                body,
            )
        )

    def _offer(self, event: Event, now: float) -> Decision:
        assert event.channel is not None  # the event model requires it on offers
        existing = self.interactions.get(event.interaction_key)
        if existing is not None and existing.phase is not Phase.DONE:
            raise ActionError(
                f"interaction {event.interaction_id!r} of {event.vendor!r} is already open ({existing.phase.value})",
                code="interaction_already_open",
            )
        if event.queue is not None and event.queue not in self.queues:
            raise InvalidEvent("queue", f"unknown queue {event.queue!r}")
        interaction = Interaction(
            vendor=event.vendor,
            interaction_id=event.interaction_id,
            channel=event.channel,
            offer_event_id=event.event_id,
            queue=event.queue,
            target_agent=event.agent_id,
            priority=event.priority,
            customer=event.customer,
            subject=event.subject,
            created_at=now,
            account_id=_account_id(event.attributes),
        )
        self.interactions[interaction.key] = interaction
        caps = self._caps.get(event.vendor)
        if caps is not None and event.channel not in caps.channels:
            return self._decide_reject(interaction, Reason.VENDOR_UNSUPPORTED, now)
        if interaction.target_agent is not None:
            if interaction.target_agent not in self._agents:
                return self._decide_reject(interaction, Reason.UNKNOWN_AGENT, now)
            reason = self._allocate(interaction.target_agent, interaction.channel, interaction.vendor)
            if reason is not None:
                return self._decide_reject(interaction, reason, now)
            session = self._open_offer(interaction, interaction.target_agent, now)
            return self._decide_assign(interaction, session, late=False)
        return self._route_to_queue(interaction, now, late=False)

    def _route_to_queue(self, interaction: Interaction, now: float, *, late: bool) -> Decision:
        assert interaction.queue is not None
        agent_id = self._select(interaction.queue, interaction.channel, interaction.vendor, interaction.excluded)
        if agent_id is not None:
            session = self._open_offer(interaction, agent_id, now)
            return self._decide_assign(interaction, session, late=late)
        if not self._can_reject(interaction.vendor):
            return self._hold(interaction, now, late=late)
        queue = self.queues.get(interaction.queue)
        if queue is None:  # removed by a reload while the interaction was open
            return self._decide_reject(interaction, Reason.NO_AGENT_AVAILABLE, now, late=late)
        if queue.on_full is OnFull.WAIT and self._waiting.count(queue.name) < queue.max_waiting:
            interaction.phase = Phase.WAITING
            interaction.holder = None
            interaction.wait_deadline = now + queue.max_wait_s
            # an interaction back from a declined offer keeps its place in the line
            interaction.wait_seq = self._waiting.add(
                interaction.key, queue.name, interaction.channel, interaction.priority, interaction.wait_seq
            ).seq
            self._arm(interaction.wait_deadline, _Timer.WAIT, interaction.key)
            decision = Decision(DecisionKind.QUEUED)
            self._record_decision(interaction, decision, late=late)
            return decision
        return self._decide_reject(interaction, Reason.NO_AGENT_AVAILABLE, now, late=late)

    def _decide_assign(self, interaction: Interaction, session: Session, *, late: bool) -> Decision:
        interaction.phase = Phase.OFFERED
        interaction.holder = session.id
        decision = Decision(DecisionKind.ASSIGNED, agent_id=session.agent_id, session_id=session.id)
        self._record_decision(interaction, decision, late=late)
        return decision

    def _can_reject(self, vendor: str) -> bool:
        caps = self._caps.get(vendor)
        return caps is None or caps.can_reject

    def _hold(self, interaction: Interaction, now: float, *, late: bool) -> Decision:
        """Keep an interaction of a vendor that cannot take a rejection until it can be served.

        As if its queue were ``on_full: wait``, but with no ``max_wait_s`` (a queue timeout
        would be a rejection too) and past ``max_waiting``; a targeted one waits for its
        agent (in the agent's own line) and is offered when that agent has room again, even
        after declining or missing it. It keeps its place in the line it had before.
        """
        interaction.phase = Phase.WAITING
        interaction.holder = None
        interaction.wait_deadline = None
        interaction.wait_seq = self._waiting.add(
            interaction.key, self._line(interaction), interaction.channel, interaction.priority, interaction.wait_seq
        ).seq
        decision = Decision(DecisionKind.QUEUED)
        self._record_decision(interaction, decision, late=late)
        return decision

    @staticmethod
    def _line(interaction: Interaction) -> str:
        """The waiting line of an interaction: its agent's (targeted, held) or its queue's."""
        if interaction.target_agent is not None:
            return agent_line(interaction.target_agent)
        assert interaction.queue is not None
        return interaction.queue

    def _decide_reject(self, interaction: Interaction, reason: Reason, now: float, *, late: bool = False) -> Decision:
        if reason not in _ALWAYS_REJECTED and not self._can_reject(interaction.vendor):
            # the vendor's CMS cannot take it back: the interaction waits instead
            return self._hold(interaction, now, late=late)
        interaction.phase = Phase.DONE
        interaction.holder = None
        interaction.done_at = now
        self._finished_interactions.append((now, interaction))
        decision = Decision(DecisionKind.REJECTED, reason=reason.value)
        self._record_decision(interaction, decision, late=late)
        return decision

    def _record_decision(self, interaction: Interaction, decision: Decision, *, late: bool) -> None:
        interaction.decisions.append(decision)
        self._dirty_interactions[interaction.key] = interaction
        if late:
            self.outbox.append(
                ToVendor(
                    interaction.vendor,
                    interaction.interaction_id,
                    VendorAction.DECISION,
                    decision.as_dict(),
                    event_id=interaction.offer_event_id,
                )
            )

    def _vendor_end(self, event: Event, now: float) -> Decision:
        interaction = self._interaction(event)
        if interaction.phase is Phase.WAITING:
            self._waiting.remove(interaction.key)
            self._finish(interaction, now)
        elif interaction.phase is not Phase.DONE:
            self._finish(interaction, now)  # first, so that withdrawn offers are not re-routed
            for session_id in (interaction.pending, interaction.holder):
                session = self.sessions.get(session_id) if session_id else None
                if session is None:
                    continue
                if session.state is SessionState.OFFERED:
                    self._withdraw(session, Outcome.ABANDONED, now)
                elif session.state is SessionState.ACTIVE:
                    self._end(session, Outcome.COMPLETED, now)
            interaction.holder = interaction.pending = None
        return Decision(DecisionKind.ACCEPTED)

    def _vendor_message(self, event: Event, now: float) -> Decision:
        """A customer's message: kept in the interaction's transcript (bounded) and shown on
        the desktop holding it; an agent offered the interaction later (re-route, transfer,
        a waiting queue) gets the transcript with the offer."""
        interaction = self._interaction(event)
        message = {
            "text": event.text,
            "sender": "customer",
            "customer": event.customer.model_dump() if event.customer else None,
            "at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        }
        self._keep_in_transcript(interaction, message)
        for session in self._live_sessions(interaction):
            # the desktop alerts unless the agent is looking at that very session
            alert = self._agents[session.agent_id].focused != session.id
            self._to_agent(session.agent_id, "chat.message", session_id=session.id, alert=alert, **message)
        return Decision(DecisionKind.ACCEPTED)

    def _keep_in_transcript(self, interaction: Interaction, message: dict[str, Any]) -> None:
        interaction.transcript.append(message)
        del interaction.transcript[:-MAX_TRANSCRIPT]
        self._dirty_interactions[interaction.key] = interaction

    def _vendor_update(self, event: Event, now: float) -> Decision:
        interaction = self._interaction(event)
        if event.customer is not None:
            interaction.customer = event.customer
        if event.subject is not None:
            interaction.subject = event.subject
        account_id = _account_id(event.attributes)
        if account_id is not None:
            interaction.account_id = account_id
        self._dirty_interactions[interaction.key] = interaction
        for session in self._live_sessions(interaction):
            if event.customer is not None:
                session.customer = event.customer
            if event.subject is not None:
                session.subject = event.subject
            if account_id is not None and session.account.state is not AccountState.CONFIRMED:
                session.account = Account(AccountState.IDENTIFIED, account_id)
            self._changed(session, "updated", now)
        return Decision(DecisionKind.ACCEPTED)

    def _vendor_accept(self, event: Event, now: float) -> Decision:
        """The vendor says the agent answered (a phone's 200 OK, AMI ``AgentConnect``): the
        offered session becomes active, as if the desktop had accepted it. Already active on
        that agent: nothing to do (the desktop was quicker)."""
        interaction = self._interaction(event)
        session = self._vendor_offered(interaction, event)
        if session is None:
            if any(s.state is SessionState.ACTIVE for s in self._vendor_matching(interaction, event)):
                return Decision(DecisionKind.ACCEPTED)
            raise InvalidState(
                f"interaction {event.interaction_id!r} has no offered session to accept", code="session_not_offered"
            )
        self._accept(session, now, echo=False)
        return Decision(DecisionKind.ACCEPTED)

    def _vendor_decline(self, event: Event, now: float) -> Decision:
        """The vendor says the agent did not answer or refused: the offer is declined (an
        untargeted interaction is re-routed excluding that agent, a targeted one rejected)."""
        interaction = self._interaction(event)
        session = self._vendor_offered(interaction, event)
        if session is None:
            raise InvalidState(
                f"interaction {event.interaction_id!r} has no offered session to decline", code="session_not_offered"
            )
        self._withdraw(session, Outcome.DECLINED, now)
        return Decision(DecisionKind.ACCEPTED)

    def _vendor_matching(self, interaction: Interaction, event: Event) -> Iterator[Session]:
        for session in self._live_sessions(interaction):
            if event.agent_id is None or session.agent_id == event.agent_id:
                yield session

    def _vendor_offered(self, interaction: Interaction, event: Event) -> Session | None:
        return next((s for s in self._vendor_matching(interaction, event) if s.state is SessionState.OFFERED), None)

    def _interaction(self, event: Event) -> Interaction:
        interaction = self.interactions.get(event.interaction_key)
        if interaction is None:
            raise NotFound(
                f"no interaction {event.interaction_id!r} of vendor {event.vendor!r}",
                code="interaction_not_found",
            )
        return interaction

    def _live_sessions(self, interaction: Interaction) -> Iterator[Session]:
        for session_id in (interaction.holder, interaction.pending):
            session = self.sessions.get(session_id) if session_id else None
            if session is not None and session.state in (SessionState.OFFERED, SessionState.ACTIVE):
                yield session

    # ------------------------------------------------------------------ agent actions

    def accept(self, session_id: str, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._own_session(session_id, actor)
        if session.state is not SessionState.OFFERED:
            raise InvalidState(
                f"session {session_id} is {session.state.value}, not offered", code="session_not_offered"
            )
        self._accept(session, now, echo=True)
        return session

    def _accept(self, session: Session, now: float, *, echo: bool) -> None:
        """An offered session becomes active; ``echo``: tell the vendor (not when it told us)."""
        session.state = SessionState.ACTIVE
        session.accepted_at = now
        session.deadline = None
        self._changed(session, "accepted", now, message="session.opened")
        interaction = self.interactions[(session.vendor, session.interaction_id)]  # type: ignore[index]
        if interaction.pending == session.id:
            source = self.sessions[interaction.holder]  # type: ignore[index]
            interaction.pending = None
            interaction.holder = session.id
            self._end(source, Outcome.TRANSFERRED, now, transferred_to=session.id)
            self._to_vendor(interaction, VendorAction.TRANSFERRED, mode="consult", session=session, source=source)
        else:
            interaction.phase = Phase.ACTIVE
            if echo:
                self._to_vendor(interaction, VendorAction.ACCEPTED, session=session)

    def decline(self, session_id: str, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._own_session(session_id, actor)
        if session.state is not SessionState.OFFERED:
            raise InvalidState(
                f"session {session_id} is {session.state.value}, not offered", code="session_not_offered"
            )
        self._withdraw(session, Outcome.DECLINED, now)
        return session

    def end(self, session_id: str, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._own_session(session_id, actor)
        if session.state is not SessionState.ACTIVE:
            raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
        interaction = self._interaction_of(session)
        if interaction is not None and interaction.holder == session.id:
            self._finish(interaction, now)
            if interaction.pending is not None:
                self._withdraw(self.sessions[interaction.pending], Outcome.ABANDONED, now)
                interaction.pending = None
            interaction.holder = None
            self._to_vendor(interaction, VendorAction.ENDED, session=session)
        self._end(session, Outcome.COMPLETED, now)
        return session

    def new_session(self, agent_id: str, *, label: str | None = None, actor: str | None = None) -> Session:
        """Start a manual (agent-started) session: created active and focused."""
        now = self._now()
        agent = self._agent(agent_id)
        self._authorize(agent_id, actor)
        reason = self._allocate(agent_id, Channel.MANUAL, None)
        if reason is not None:
            raise CapacityRejected(reason.value, f"agent {agent_id} cannot start a manual session: {reason.value}")
        session = Session(
            id=self._new_id(),
            agent_id=agent_id,
            channel=Channel.MANUAL,
            vendor=None,
            interaction_id=None,
            offered_at=now,
            state=SessionState.ACTIVE,
            accepted_at=now,
            label=(label or "New session")[:120],
            profile=agent.profile.start_screen(Channel.MANUAL),
            units=agent.profile.weight(Channel.MANUAL),
        )
        self.sessions[session.id] = session
        agent.open_sessions[session.id] = session
        self._refresh(agent_id)
        self._changed(session, "created", now, message="session.opened")
        self._set_focus(agent, session, now)
        return session

    def focus(self, agent_id: str, session_id: str | None, *, actor: str | None = None) -> Session | None:
        """Focus one session of the agent (leaving the previous one), or none."""
        now = self._now()
        agent = self._agent(agent_id)
        self._authorize(agent_id, actor)
        if session_id is None:
            self._set_focus(agent, None, now)
            return None
        session = self._own_session(session_id, agent_id)
        if session.state not in (SessionState.ACTIVE, SessionState.WRAP_UP):
            raise InvalidState(
                f"session {session_id} is {session.state.value}: only active or wrap-up sessions take focus",
                code="session_not_active",
            )
        self._set_focus(agent, session, now)
        return session

    def note(self, session_id: str, text: str, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._workable(session_id, actor)
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
            raise ActionError(f"a note is 1 to {MAX_NOTE_CHARS} characters", code="invalid_request")
        if len(session.notes) >= MAX_NOTES_PER_SESSION:
            raise InvalidState(f"a session holds at most {MAX_NOTES_PER_SESSION} notes", code="too_many_notes")
        session.notes.append(Note(text, now))
        self._changed(session, "note", now)
        return session

    def confirm_account(self, session_id: str, account_id: str | None = None, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._workable(session_id, actor)
        chosen = account_id if account_id is not None else session.account.id
        if not chosen:
            raise InvalidState(
                f"session {session_id} has no identified account to confirm; give account_id",
                code="account_not_identified",
            )
        session.account = Account(AccountState.CONFIRMED, str(chosen)[:256])
        self._changed(session, "account", now)
        return session

    def reset_account(self, session_id: str, *, actor: str | None = None) -> Session:
        now = self._now()
        session = self._workable(session_id, actor)
        session.account = Account()
        self._changed(session, "account", now)
        return session

    def send(self, session_id: str, text: str, *, actor: str | None = None) -> Session:
        """A chat reply from the agent, sent to the customer through the vendor.

        The reply joins the interaction's transcript (sender ``agent``), so an agent who
        gets the chat later (a transfer, a re-route) sees both sides; a consult target
        that is offered the chat meanwhile sees it at once."""
        now = self._now()
        session = self._own_session(session_id, actor)
        if session.channel is not Channel.CHAT:
            raise InvalidState(
                f"session {session_id} is a {session.channel.value} session, not chat", code="channel_unsupported"
            )
        if session.state is not SessionState.ACTIVE:
            raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
        if not isinstance(text, str) or not text or len(text) > 65_536:
            raise ActionError("a reply is 1 to 65536 characters", code="invalid_request")
        interaction = self._interaction_of(session)
        assert interaction is not None
        message = {"text": text, "sender": "agent", "agent_id": session.agent_id, "at": iso(now)}
        self._keep_in_transcript(interaction, message)
        for other in self._live_sessions(interaction):
            if other.id != session.id:
                self._to_agent(other.agent_id, "chat.message", session_id=other.id, alert=False, **message)
        self._to_vendor(interaction, VendorAction.REPLY, session=session, text=text)
        return session

    def transfer(
        self,
        session_id: str,
        *,
        to_agent: str | None = None,
        to_queue: str | None = None,
        mode: str = "blind",
        actor: str | None = None,
    ) -> Session:
        """Transfer an active session to an agent or a queue; returns the target's offered session.

        ``blind``: the target is allocated, then the source session ends.
        ``consult``: the source stays until the target accepts; if the target declines or
        times out, the source keeps the interaction. A transfer that cannot be allocated
        raises and leaves everything as it was.
        """
        now = self._now()
        session = self._own_session(session_id, actor)
        if mode not in ("blind", "consult"):
            raise ActionError("mode is blind or consult", code="invalid_request")
        if (to_agent is None) == (to_queue is None):
            raise ActionError("a transfer names exactly one of to_agent and to_queue", code="invalid_transfer_target")
        if session.state is not SessionState.ACTIVE:
            raise InvalidState(f"session {session_id} is {session.state.value}, not active", code="session_not_active")
        interaction = self._interaction_of(session)
        if interaction is None:
            raise InvalidState("manual sessions cannot be transferred", code="transfer_not_supported")
        caps = self._caps.get(session.vendor or "")
        if caps is not None and not caps.can_transfer:
            raise InvalidState(f"vendor {session.vendor} cannot transfer", code=Reason.VENDOR_UNSUPPORTED.value)
        if interaction.pending is not None:
            raise InvalidState(
                f"session {session_id} already has a consult transfer pending", code="transfer_in_progress"
            )
        if to_agent is not None:
            if to_agent == session.agent_id:
                raise ActionError("cannot transfer a session to its own agent", code="invalid_transfer_target")
            self._agent(to_agent)
            reason = self._allocate(to_agent, session.channel, interaction.vendor)
            if reason is not None:
                raise CapacityRejected(reason.value, f"transfer to {to_agent} refused: {reason.value}")
            target_agent = to_agent
        else:
            assert to_queue is not None
            if to_queue not in self.queues:
                raise NotFound(f"no queue {to_queue!r}", code="unknown_queue")
            found = self._select(to_queue, session.channel, interaction.vendor, {session.agent_id})
            if found is None:
                raise CapacityRejected(Reason.NO_AGENT_AVAILABLE.value, f"nobody in {to_queue} can take it")
            target_agent = found
        target = self._open_offer(interaction, target_agent, now, transferred_from=session.id)
        if to_queue is not None:
            target.queue = to_queue
        if mode == "consult":
            interaction.pending = target.id
            return target
        # blind: the interaction now belongs to the target's offer, routed like a fresh one
        interaction.holder = target.id
        interaction.phase = Phase.OFFERED
        interaction.target_agent = to_agent
        if to_queue is not None:
            interaction.queue = to_queue
            interaction.excluded = {session.agent_id}
        self._end(session, Outcome.TRANSFERRED, now, transferred_to=target.id)
        self._to_vendor(interaction, VendorAction.TRANSFERRED, mode="blind", session=target, source=session)
        return target

    def set_presence(
        self, agent_id: str, state: Presence | str, reason: str | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        now = self._now()
        agent = self._agent(agent_id)
        self._authorize(agent_id, actor)
        self._presence(agent_id, Presence(state), reason, now)
        # (a removed agent whose last offer this withdrew is gone now: its last picture)
        return self._agent_body(agent, now)

    # ------------------------------------------------------------------ desktops

    def desktop_connected(self, agent_id: str) -> dict[str, Any]:
        """A desktop socket opened: cancel the grace period, lift the flags, return ``hello``."""
        now = self._now()
        agent = self._agent(agent_id)
        agent.desktop_connected = True
        agent.grace_deadline = None
        self._dirty_agents.add(agent_id)
        for session in agent.open_sessions.values():
            if session.flagged:
                session.flagged = False
                self._changed(session, "unflagged", now)
        self._sync_focus(agent, now)
        return self.agent(agent_id)

    def desktop_disconnected(self, agent_id: str) -> None:
        """The desktop socket closed: sessions survive ``desktop_grace_s``, then the agent goes offline."""
        now = self._now()
        agent = self._agent(agent_id)
        agent.desktop_connected = False
        agent.grace_deadline = now + self._grace_s
        self._dirty_agents.add(agent_id)
        self._arm(agent.grace_deadline, _Timer.GRACE, agent_id)
        self._sync_focus(agent, now)

    # ------------------------------------------------------------------ live configuration

    def reconfigure(
        self,
        config: GatewayConfig,
        *,
        vendor_capabilities: Mapping[str, VendorCapabilities] | None = None,
    ) -> dict[str, Any]:
        """Apply a new (validated) configuration's agents, profiles and queues in one step.

        * New agents appear offline. A removed agent with open sessions is *retiring*: its
          sessions finish normally, it takes no new work (``unknown_agent``), it leaves no
          queue line behind, and it is gone when its last session closes; one without
          sessions is gone at once. Interactions waiting for a removed agent are rejected
          (``unknown_agent``).
        * A profile change applies to the next allocation; no open session is cut, even
          above the new caps. Units in use are counted with the new weights.
        * Queue changes keep every waiting interaction's place; a changed ``max_wait_s``
          moves the deadline of those waiting (measured from when they began to wait); the
          waiters of a removed queue are rejected (``no_agent_available``).
        * The eligibility index is rebuilt, then every agent with room is offered what waits.

        Vendors (``vendor_capabilities``: the new set, replacing the old) are the
        runtime's business otherwise. Returns what changed for the agents (for the log).
        """
        now = self._now()
        old_queues = self.queues
        new_agents = {a.id: a for a in config.agents}
        added: list[str] = []
        retiring: list[str] = []
        removed: list[str] = []
        reweighed: list[str] = []
        self.config = config
        self.queues = {q.name: q for q in config.queues}
        self._grace_s = config.server.desktop_grace_s
        if vendor_capabilities is not None:
            self._caps = dict(vendor_capabilities)
        for agent_id, agent_config in new_agents.items():
            profile = config.capacity_profiles[agent_config.profile]
            agent = self._agents.get(agent_id)
            if agent is None:
                self._agents[agent_id] = _Agent(agent_config, profile)
                self._dirty_agents.add(agent_id)
                added.append(agent_id)
                continue
            if agent.retiring:
                agent.retiring = False
                self._retired.pop(agent_id, None)
                self._config_dirty = True
            agent.config = agent_config
            if agent.profile != profile:
                agent.profile = profile
                if self._reweigh(agent, now):
                    reweighed.append(agent_id)
        for agent_id in [a for a in self._agents if a not in new_agents]:
            agent = self._agents[agent_id]
            if not agent.retiring:
                agent.retiring = True
                self._retired[agent_id] = {
                    "agent": agent.config.model_dump(mode="json"),
                    "profile": agent.profile.model_dump(mode="json"),
                }
                self._config_dirty = True
            for waiter in [w for w in self._waiting.waiters() if w.queue == agent_line(agent_id)]:
                interaction = self.interactions[waiter.key]
                self._waiting.remove(waiter.key)
                interaction.wait_deadline = None
                self._decide_reject(interaction, Reason.UNKNOWN_AGENT, now, late=True)
            if agent.open_sessions:
                retiring.append(agent_id)
            else:
                removed.append(agent_id)
        for waiter in self._waiting.waiters():
            interaction = self.interactions[waiter.key]
            if waiter.queue not in old_queues:
                continue  # an agent's own line
            queue = self.queues.get(waiter.queue)
            if queue is None:
                if self._can_reject(interaction.vendor):
                    self._waiting.remove(waiter.key)
                    interaction.wait_deadline = None
                    self._decide_reject(interaction, Reason.NO_AGENT_AVAILABLE, now, late=True)
                # else: held for a vendor that cannot take a rejection; it stays held until
                # the vendor ends it (or the queue comes back)
                continue
            before = old_queues[waiter.queue]
            if interaction.wait_deadline is not None and queue.max_wait_s != before.max_wait_s:
                began = interaction.wait_deadline - before.max_wait_s
                interaction.wait_deadline = began + queue.max_wait_s
                self._dirty_interactions[interaction.key] = interaction
                self._arm(interaction.wait_deadline, _Timer.WAIT, interaction.key)
        self._index = EligibilityIndex({q.name: q.policy for q in config.queues})
        for agent_id in self._agents:
            self._refresh(agent_id)
        for agent_id in removed:
            self._drop_if_retired(agent_id, now)
        for agent_id in list(self._agents):
            if agent_id in self._agents:
                self._serve_waiting(agent_id, now)
        self.generation += 1
        self.reloaded_at = now
        self._config_dirty = True
        return {
            "generation": self.generation,
            "agents_added": added,
            "agents_retiring": retiring,
            "agents_removed": removed,
            "agents_reweighed": reweighed,
        }

    def _reweigh(self, agent: _Agent, now: float) -> bool:
        """Count the agent's open sessions with its (new) profile's unit weights."""
        changed = False
        for session in agent.open_sessions.values():
            weight = agent.profile.weight(session.channel)
            if session.units != weight:
                session.units = weight
                self._dirty_sessions[session.id] = session
                changed = True
        if not changed:
            return False
        agent_id = agent.config.id
        for _ in range(64):
            state = self.store.get(agent_id)
            units = sum(s.units for s in agent.open_sessions.values() if s.occupying)
            new = replace(state, load=replace(state.load, units=units))
            if self.store.compare_and_set(agent_id, state.version, new) is not None:
                return True
        raise RuntimeError(f"reweighing {agent_id} lost every compare-and-set")

    def _drop_if_retired(self, agent_id: str, now: float) -> None:
        """A retiring agent whose last session closed leaves the gateway."""
        agent = self._agents.get(agent_id)
        if agent is None or not agent.retiring or agent.open_sessions:
            return
        if self.store.get(agent_id).presence is not Presence.OFFLINE:
            self.store.set_presence(agent_id, Presence.OFFLINE, "removed")
            self.outbox.append(PresenceChanged(agent_id, Presence.OFFLINE.value, "removed"))
        del self._agents[agent_id]
        self._retired.pop(agent_id, None)
        self._config_dirty = True
        self._dirty_agents.add(agent_id)
        self._touched.add(agent_id)

    def _config_meta(self) -> StateDict:
        return {
            "config_generation": self.generation,
            "config_reloaded_at": self.reloaded_at,
            "retired_agents": dict(self._retired),
        }

    def vendor_capabilities(self) -> dict[str, VendorCapabilities]:
        return dict(self._caps)

    def keep_config(self, config: GatewayConfig, vendor_capabilities: Mapping[str, VendorCapabilities]) -> None:
        """After a reconfiguration that may not be journaled: the configuration a rebuild
        from the journal (:meth:`blank`) must use."""
        self.config = config
        self._caps = dict(vendor_capabilities)

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def retiring_agents(self) -> list[str]:
        return [a for a, agent in self._agents.items() if agent.retiring]

    # ------------------------------------------------------------------ persistence

    def take_changes(self) -> Changes:
        """Everything that changed since the last call, as state dicts for the journal."""
        now = self.clock.now()
        for session in self._dirty_sessions.values():
            interaction = self._interaction_of(session)
            if interaction is not None:
                self._dirty_interactions[interaction.key] = interaction
        meta: StateDict = (
            {"idle_seq": self._idle_seq, "wait_seq": self._waiting.last_seq}
            if self._dirty_agents or self._dirty_interactions
            else {}
        )
        if self._config_dirty:
            meta.update(self._config_meta())
            self._config_dirty = False
        if meta or self._alive_due or self._dirty_sessions or self._new_events:
            # every write also says "alive at": restore ends open focus intervals there
            meta["alive_at"] = now
        self._alive_due = False
        changes = Changes(
            sessions=[session_to_state(s, now) for s in self._dirty_sessions.values()],
            interactions=[interaction_to_state(i) for i in self._dirty_interactions.values()],
            agents=[self._agent_state(a) for a in sorted(self._dirty_agents)],
            events=self._new_events,
            meta=meta,
        )
        self._dirty_sessions = {}
        self._dirty_interactions = {}
        self._dirty_agents = set()
        self._new_events = []
        return changes

    def _agent_state(self, agent_id: str) -> StateDict:
        agent = self._agents.get(agent_id)
        if agent is None:  # removed by a reload: a later return starts afresh, offline
            return {
                "id": agent_id,
                "presence": Presence.OFFLINE.value,
                "reason": "removed",
                "idle_since": [0.0, 0],
                "focused": None,
                "desktop_connected": False,
                "grace_deadline": None,
            }
        state = self.store.get(agent_id)
        return {
            "id": agent_id,
            "presence": state.presence.value,
            "reason": state.reason,
            "idle_since": list(agent.idle_since),
            "focused": agent.focused,
            "desktop_connected": agent.desktop_connected,
            "grace_deadline": agent.grace_deadline,
        }

    def restore(self, snapshot: Snapshot) -> None:
        """Rebuild state from a journal snapshot, on a fresh engine, before any other call.

        Open sessions, pending offers and wrap-ups (timers re-armed at their original
        deadlines, so one that passed while the gateway was down fires at once), waiting
        interactions in their original order, presence, focus and the recent event ids.
        Capacity counters are recomputed from the open sessions: exact by construction.
        A desktop that was connected counts as disconnected now: its grace period starts.
        Rows for agents no longer in the configuration are ignored (their sessions too).
        """
        if self.sessions or self.interactions or self._dedup:
            raise RuntimeError("restore() needs a fresh engine")
        now = self.clock.now()
        self._idle_seq = int(snapshot.meta.get("idle_seq", 0))
        self._waiting.last_seq = int(snapshot.meta.get("wait_seq", 0))
        self.generation = int(snapshot.meta.get("config_generation", 0))
        reloaded_at = snapshot.meta.get("config_reloaded_at")
        self.reloaded_at = None if reloaded_at is None else float(reloaded_at)
        # agents a reload removed while they held sessions: back (retiring) if the file
        # still leaves them out, until their last session closes
        for agent_id, entry in dict(snapshot.meta.get("retired_agents") or {}).items():
            if agent_id in self._agents:
                self._config_dirty = True  # the file has it again: no longer retired
                continue
            self._agents[agent_id] = _Agent(
                AgentConfig.model_validate(entry["agent"]),
                CapacityProfile.model_validate(entry["profile"]),
                retiring=True,
            )
            self._retired[agent_id] = entry
        for row in snapshot.agents:
            agent = self._agents.get(row["id"])
            if agent is None:
                continue
            presence = Presence(row["presence"])
            self.store.set_presence(row["id"], presence, row.get("reason"))
            agent.idle_since = (float(row["idle_since"][0]), int(row["idle_since"][1]))
            agent.focused = row.get("focused")
            if row.get("desktop_connected") or row.get("grace_deadline") is not None:
                agent.grace_deadline = row.get("grace_deadline") or now + self._grace_s
                self._arm(agent.grace_deadline, _Timer.GRACE, row["id"])
                # journal the grace period that starts now: a second restart must not restart it
                self._dirty_agents.add(row["id"])
        for row in snapshot.sessions:
            session = session_from_state(row)
            agent = self._agents.get(session.agent_id)
            if agent is None or not session.occupying:
                continue
            self.store.occupy(session.agent_id, agent.profile, session.channel)
            self.sessions[session.id] = session
            agent.open_sessions[session.id] = session
            if session.state is SessionState.OFFERED and session.deadline is not None:
                self._arm(session.deadline, _Timer.OFFER, session.id)
            elif session.state is SessionState.WRAP_UP and session.deadline is not None:
                self._arm(session.deadline, _Timer.WRAP, session.id)
        # No desktop survives a restart, so no focus time counts now; and none counts for the
        # downtime: an interval that was open ends when the gateway was last known alive
        # (its last journal write, at least every FOCUS_CHECKPOINT_S while focus counted).
        alive_at = snapshot.meta.get("alive_at")
        for agent in self._agents.values():
            if agent.focused is not None and agent.focused not in agent.open_sessions:
                agent.focused = None
            for session in agent.open_sessions.values():
                if session.focused_since is not None:
                    end = session.focused_since if alive_at is None else min(float(alive_at), now)
                    session.pause_focus(max(end, session.focused_since))
                    self._dirty_sessions[session.id] = session
                session.focused = agent.focused == session.id
        waiting: list[Interaction] = []
        for row in snapshot.interactions:
            interaction = interaction_from_state(row)
            self.interactions[interaction.key] = interaction
            if interaction.phase is Phase.DONE:
                self._finished_interactions.append((interaction.done_at or now, interaction))
            elif interaction.phase is Phase.WAITING:
                waiting.append(interaction)
        for interaction in waiting:
            self._waiting.add(
                interaction.key,
                self._line(interaction),
                interaction.channel,
                interaction.priority,
                interaction.wait_seq,
            )
            if interaction.wait_deadline is not None:  # None: held for a vendor that cannot reject
                self._arm(interaction.wait_deadline, _Timer.WAIT, interaction.key)
        for row in sorted(snapshot.events, key=lambda r: r["at"]):
            self._dedup[(row["vendor"], row["event_id"])] = (row["at"], decision_from_state(row["decision"]))
        for agent_id in [a for a, agent in self._agents.items() if agent.retiring and not agent.open_sessions]:
            self._drop_if_retired(agent_id, now)
        for agent_id in self._agents:
            self._refresh(agent_id)

    # ------------------------------------------------------------------ reads

    def agent_ids(self) -> list[str]:
        return list(self._agents)

    def agent(self, agent_id: str, *, with_sessions: bool = True) -> dict[str, Any]:
        """The agent object (DESIGN section 6)."""
        return self._agent_body(self._agent(agent_id), self.clock.now(), with_sessions=with_sessions)

    def _agent_body(self, agent: _Agent, now: float, *, with_sessions: bool = True) -> dict[str, Any]:
        agent_id = agent.config.id
        state = self.store.get(agent_id)
        body: dict[str, Any] = {
            "id": agent_id,
            "name": agent.config.name,
            "profile": agent.config.profile,
            "queues": list(agent.config.queues),
            "presence": {"state": state.presence.value, "reason": state.reason},
            "in_use": state.load.as_dict(),
            "desktop_connected": agent.desktop_connected,
        }
        if with_sessions:
            body["sessions"] = [s.as_dict(now) for s in agent.open_sessions.values()]
        return body

    def availability(self, agent_id: str, channel: Channel, vendor: str | None = None) -> Reason | None:
        """Why the agent could not take one more ``channel`` session now (None: it could).

        The same rules as an allocation (DESIGN section 4, plus the vendor's voice limit),
        without reserving anything: adapters mirror it to their CMS (e.g. AMI pause state).
        """
        if agent_id not in self._agents:
            return Reason.UNKNOWN_AGENT
        return self._refusal(agent_id, channel, vendor)

    def take_touched_agents(self) -> set[str]:
        """Agents whose presence or capacity in use may have changed since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def open_interactions(self, vendor: str) -> list[dict[str, Any]]:
        """The vendor's interactions that are not done, for an adapter's resynchronisation.

        Each: ``interaction_id``, ``channel``, ``phase``, ``queue``, and for the session
        holding it (if any) ``session_id``, ``agent_id``, ``state``; ``pending_session_id``
        during a consult transfer.
        """
        out: list[dict[str, Any]] = []
        for interaction in self.interactions.values():
            if interaction.vendor != vendor or interaction.phase is Phase.DONE:
                continue
            holder = self.sessions.get(interaction.holder) if interaction.holder else None
            out.append(
                {
                    "interaction_id": interaction.interaction_id,
                    "channel": interaction.channel.value,
                    "phase": interaction.phase.value,
                    "queue": interaction.queue,
                    "session_id": holder.id if holder else None,
                    "agent_id": holder.agent_id if holder else None,
                    "state": holder.state.value if holder else None,
                    "pending_session_id": interaction.pending,
                }
            )
        return out

    def free_capacity(self, agent_id: str) -> dict[str, int]:
        """How many more sessions of each channel the agent could take now, presence aside."""
        agent = self._agent(agent_id)
        load = self.store.get(agent_id).load
        free: dict[str, int] = {}
        for channel in Channel:
            count, probe = 0, load
            while count < agent.profile.max_sessions and check(agent.profile, probe, Presence.READY, channel) is None:
                probe = probe.plus(channel, agent.profile.weight(channel))
                count += 1
            free[channel.value] = count
        return free

    def session(self, session_id: str, *, actor: str | None = None) -> Session:
        return self._own_session(session_id, actor)

    def load_of(self, agent_id: str) -> Load:
        return self.store.get(agent_id).load

    def presence_of(self, agent_id: str) -> Presence:
        return self.store.get(agent_id).presence

    def profile_of(self, agent_id: str) -> CapacityProfile:
        return self._agent(agent_id).profile

    def focused_session(self, agent_id: str) -> str | None:
        return self._agent(agent_id).focused

    def open_sessions(self, agent_id: str) -> list[Session]:
        return list(self._agent(agent_id).open_sessions.values())

    def waiting(self) -> list[InteractionKey]:
        return [w.key for w in self._waiting.waiters()]

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        return self._index.eligible(queue, channel)

    # ------------------------------------------------------------------ internals: lookups

    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
        return agent

    @staticmethod
    def _authorize(agent_id: str, actor: str | None) -> None:
        if actor is not None and actor != agent_id:
            raise Forbidden(f"agent {actor} may not act for agent {agent_id}", code="forbidden")

    def _own_session(self, session_id: str, actor: str | None) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", code="session_not_found")
        if actor is not None and session.agent_id != actor:
            raise Forbidden(f"session {session_id} is not agent {actor}'s", code="forbidden")
        return session

    def _workable(self, session_id: str, actor: str | None) -> Session:
        """A session the agent may still write on: active or in wrap-up."""
        session = self._own_session(session_id, actor)
        if session.state not in (SessionState.ACTIVE, SessionState.WRAP_UP):
            raise InvalidState(
                f"session {session_id} is {session.state.value}, not active or in wrap-up",
                code="session_not_active",
            )
        return session

    def _interaction_of(self, session: Session) -> Interaction | None:
        if session.vendor is None or session.interaction_id is None:
            return None
        return self.interactions.get((session.vendor, session.interaction_id))

    # ------------------------------------------------------------------ internals: capacity

    def _refresh(self, agent_id: str) -> None:
        self._touched.add(agent_id)
        agent = self._agents[agent_id]
        state = self.store.get(agent_id)
        profile = agent.profile
        self._index.update(
            AgentView(
                agent_id=agent_id,
                queues=agent.queues,
                room={c: check(profile, state.load, state.presence, c) is None for c in INBOUND_CHANNELS},
                idle_since=agent.idle_since,
                busy_share=state.load.units / profile.unit_limit,
                sessions=state.load.sessions,
            )
        )

    def _allocate(self, agent_id: str, channel: Channel, vendor: str | None) -> Reason | None:
        """Reserve one ``channel`` session on the agent (compare-and-set), or say why not."""
        agent = self._agents[agent_id]
        reason = self._refusal(agent_id, channel, vendor)
        if reason is None:
            reason, _ = self.store.reserve(agent_id, agent.profile, channel)
        self._refresh(agent_id)
        return reason

    def _refusal(self, agent_id: str, channel: Channel, vendor: str | None) -> Reason | None:
        agent = self._agents[agent_id]
        if agent.retiring:
            return Reason.UNKNOWN_AGENT
        state = self.store.get(agent_id)
        reason = check(agent.profile, state.load, state.presence, channel)
        if reason is None and channel is Channel.VOICE and vendor is not None:
            caps = self._caps.get(vendor)
            if caps is not None and caps.max_voice_per_agent is not None:
                live = sum(1 for s in agent.open_sessions.values() if s.channel is Channel.VOICE and s.vendor == vendor)
                if live >= caps.max_voice_per_agent:
                    reason = Reason.CHANNEL_AT_CAPACITY
        return reason

    def _release(self, session: Session) -> None:
        agent = self._agents[session.agent_id]
        self.store.release(session.agent_id, agent.profile, session.channel)
        agent.open_sessions.pop(session.id, None)
        self._refresh(session.agent_id)

    def _touch_idle(self, agent: _Agent, now: float) -> None:
        self._idle_seq += 1
        agent.idle_since = (now, self._idle_seq)
        self._dirty_agents.add(agent.config.id)

    def _select(self, queue: str, channel: Channel, vendor: str, exclude: set[str]) -> str | None:
        """Reserve a slot on the best eligible agent of ``queue`` (see :mod:`gateway.router`)."""
        skip = set(exclude)
        while True:
            agent_id = next(self._index.candidates(queue, channel, skip), None)
            if agent_id is None:
                return None
            if self._allocate(agent_id, channel, vendor) is None:
                return agent_id
            skip.add(agent_id)

    # ------------------------------------------------------------------ internals: sessions

    def _open_offer(
        self, interaction: Interaction, agent_id: str, now: float, *, transferred_from: str | None = None
    ) -> Session:
        """Create an offered session on an agent whose slot is already reserved."""
        agent = self._agents[agent_id]
        profile = agent.profile
        channel = interaction.channel
        session = Session(
            id=self._new_id(),
            agent_id=agent_id,
            channel=channel,
            vendor=interaction.vendor,
            interaction_id=interaction.interaction_id,
            offered_at=now,
            queue=interaction.queue,
            customer=interaction.customer,
            subject=interaction.subject,
            label=default_label(channel, interaction.customer, interaction.subject, interaction.interaction_id),
            profile=profile.start_screen(channel),
            units=profile.weight(channel),
            transferred_from=transferred_from,
            deadline=now + profile.offer_timeout(channel),
        )
        if interaction.account_id is not None:
            session.account = Account(AccountState.IDENTIFIED, interaction.account_id)
        self.sessions[session.id] = session
        agent.open_sessions[session.id] = session
        self._touch_idle(agent, now)
        self._refresh(agent_id)
        self._arm(session.deadline, _Timer.OFFER, session.id)  # type: ignore[arg-type]
        self._changed(session, "offered", now, message="session.offered", alert=True)
        for message in interaction.transcript:
            # history, not news: the offer itself alerts
            self._to_agent(agent_id, "chat.message", session_id=session.id, alert=False, replay=True, **message)
        return session

    def _withdraw(self, session: Session, outcome: Outcome, now: float) -> None:
        """An offer ends unaccepted (declined, expired, abandoned): free the slot, then re-route."""
        session.state = SessionState.CLOSED
        session.closed_at = now
        session.outcome = outcome
        session.deadline = None
        self._release(session)
        self._finished_sessions.append((now, session))
        self._changed(session, outcome.value, now, message="session.closed")
        interaction = self._interaction_of(session)
        if interaction is not None and interaction.phase is not Phase.DONE:
            if interaction.pending == session.id:
                # a consult target said no: the source keeps the interaction
                interaction.pending = None
                if interaction.holder is not None:
                    self._changed(self.sessions[interaction.holder], "transfer_failed", now)
            elif interaction.holder == session.id:
                interaction.holder = None
                interaction.excluded.add(session.agent_id)
                if interaction.target_agent is not None:
                    self._decide_reject(interaction, Reason.OFFER_TIMEOUT, now, late=True)
                else:
                    self._route_to_queue(interaction, now, late=True)
        self._serve_waiting(session.agent_id, now)
        self._drop_if_retired(session.agent_id, now)

    def _end(self, session: Session, outcome: Outcome, now: float, *, transferred_to: str | None = None) -> None:
        """An active session ends: into wrap-up for the channel's ``wrap_up_s`` (or closed)."""
        session.state = SessionState.WRAP_UP
        session.ended_at = now
        session.outcome = outcome
        if transferred_to is not None:
            session.transferred_to = transferred_to
        wrap = self._agents[session.agent_id].profile.wrap_up(session.channel)
        if wrap > 0:
            session.deadline = now + wrap
            self._arm(session.deadline, _Timer.WRAP, session.id)
            self._changed(session, "ended", now, message="session.updated")
        else:
            self._close(session, now)

    def _close(self, session: Session, now: float) -> None:
        agent = self._agents[session.agent_id]
        if agent.focused == session.id:
            session.leave_focus(now)
            agent.focused = None
        session.state = SessionState.CLOSED
        session.closed_at = now
        session.deadline = None
        self._release(session)
        self._finished_sessions.append((now, session))
        self._changed(session, "closed", now, message="session.closed")
        self._serve_waiting(session.agent_id, now)
        self._drop_if_retired(session.agent_id, now)

    def _finish(self, interaction: Interaction, now: float) -> None:
        interaction.phase = Phase.DONE
        interaction.done_at = now
        interaction.wait_deadline = None
        self._dirty_interactions[interaction.key] = interaction
        self._finished_interactions.append((now, interaction))

    def _set_focus(self, agent: _Agent, session: Session | None, now: float) -> None:
        self._dirty_agents.add(agent.config.id)
        if agent.focused is not None and (session is None or agent.focused != session.id):
            previous = self.sessions[agent.focused]
            previous.leave_focus(now)
            agent.focused = None
            self._changed(previous, "unfocused", now)
        if session is not None and agent.focused != session.id:
            counting = self._counts_focus(agent)
            session.enter_focus(now, counting=counting)
            agent.focused = session.id
            self._changed(session, "focused", now)
            if counting:
                self._arm_checkpoint(now)

    def _counts_focus(self, agent: _Agent) -> bool:
        """Whether focus time counts for the agent now: a desktop of it is connected (somebody
        looks at the focused session) and it is not offline."""
        return agent.desktop_connected and self.store.get(agent.config.id).presence is not Presence.OFFLINE

    def _sync_focus(self, agent: _Agent, now: float) -> None:
        """Start or stop the focused session's clock after the desktop or the presence changed.

        The focus itself stays (the desktop that comes back shows it, ``hello`` says so); only
        the time that counts toward ``focus_ms`` pauses and resumes."""
        if agent.focused is None:
            return
        session = self.sessions[agent.focused]
        if self._counts_focus(agent):
            if session.focused_since is None:
                session.resume_focus(now)
                self._dirty_sessions[session.id] = session
                self._arm_checkpoint(now)
        elif session.focused_since is not None:
            session.pause_focus(now)
            self._dirty_sessions[session.id] = session

    def _arm_checkpoint(self, now: float) -> None:
        if self._checkpoint_at is None:
            self._checkpoint_at = now + self._checkpoint_s
            self._arm(self._checkpoint_at, _Timer.CHECKPOINT, None)

    def _presence(self, agent_id: str, presence: Presence, reason: str | None, now: float) -> None:
        agent = self._agents[agent_id]
        before = self.store.get(agent_id).presence
        self.store.set_presence(agent_id, presence, reason)
        self._dirty_agents.add(agent_id)
        if presence is Presence.READY and before is not Presence.READY:
            self._touch_idle(agent, now)
        self._refresh(agent_id)
        self._sync_focus(agent, now)
        self.outbox.append(PresenceChanged(agent_id, presence.value, reason))
        self._to_agent(agent_id, "agent.presence", presence={"state": presence.value, "reason": reason})
        if presence is Presence.OFFLINE:
            for session in [s for s in agent.open_sessions.values() if s.state is SessionState.OFFERED]:
                self._withdraw(session, Outcome.EXPIRED, now)
        elif presence is Presence.READY:
            self._serve_waiting(agent_id, now)

    def _serve_waiting(self, agent_id: str, now: float) -> None:
        """Offer waiting interactions to an agent that may have room, best first."""
        if not len(self._waiting):
            return
        agent = self._agents[agent_id]
        if agent.retiring:
            return

        def refuses(key: InteractionKey) -> bool:
            # an interaction waiting for this very agent is offered to it again, declined or not
            interaction = self.interactions[key]
            return interaction.target_agent is None and agent_id in interaction.excluded

        lines = [*agent.queues, agent_line(agent_id)]

        while True:
            state = self.store.get(agent_id)
            if state.presence is not Presence.READY:
                return
            room = {c: check(agent.profile, state.load, state.presence, c) is None for c in INBOUND_CHANNELS}
            waiter = self._waiting.best_for(lines, has_room=room.__getitem__, refuses=refuses)
            if waiter is None:
                return
            interaction = self.interactions[waiter.key]
            if self._allocate(agent_id, interaction.channel, interaction.vendor) is not None:
                return
            self._waiting.remove(waiter.key)
            interaction.wait_deadline = None
            session = self._open_offer(interaction, agent_id, now)
            self._decide_assign(interaction, session, late=True)

    # ------------------------------------------------------------------ internals: timers

    def _arm(self, deadline: float, kind: _Timer, ref: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, kind, ref))

    def _timer_live(self, timer: tuple[float, int, _Timer, Any]) -> bool:
        deadline, _seq, kind, ref = timer
        if kind is _Timer.OFFER or kind is _Timer.WRAP:
            session = self.sessions.get(ref)
            wanted = SessionState.OFFERED if kind is _Timer.OFFER else SessionState.WRAP_UP
            return session is not None and session.state is wanted and session.deadline == deadline
        if kind is _Timer.WAIT:
            interaction = self.interactions.get(ref)
            return (
                interaction is not None and interaction.phase is Phase.WAITING and interaction.wait_deadline == deadline
            )
        if kind is _Timer.CHECKPOINT:
            return deadline == self._checkpoint_at
        agent = self._agents.get(ref)
        return agent is not None and not agent.desktop_connected and agent.grace_deadline == deadline

    def _now(self) -> float:
        """Fire due timers in deadline order (each at its own deadline), prune, return now."""
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if self._timer_live(timer):
                self._fire(timer)
        self._prune(now)
        return now

    def _fire(self, timer: tuple[float, int, _Timer, Any]) -> None:
        at, _seq, kind, ref = timer
        if kind is _Timer.OFFER:
            self._withdraw(self.sessions[ref], Outcome.EXPIRED, at)
        elif kind is _Timer.WRAP:
            self._close(self.sessions[ref], at)
        elif kind is _Timer.WAIT:
            interaction = self.interactions[ref]
            self._waiting.remove(ref)
            interaction.wait_deadline = None
            self._decide_reject(interaction, Reason.QUEUE_TIMEOUT, at, late=True)
        elif kind is _Timer.CHECKPOINT:
            self._checkpoint_at = None
            self._alive_due = True
            if any(
                a.focused is not None and self.sessions[a.focused].focused_since is not None
                for a in self._agents.values()
            ):
                self._arm_checkpoint(self.clock.now())
        else:
            agent = self._agents[ref]
            agent.grace_deadline = None
            self._presence(ref, Presence.OFFLINE, "desktop_disconnected", at)
            for session in agent.open_sessions.values():
                if session.state is SessionState.ACTIVE and not session.flagged:
                    session.flagged = True
                    self._changed(session, "flagged", at)

    def _prune(self, now: float) -> None:
        """Forget old event ids, finished interactions and closed sessions (bounded memory)."""
        horizon = now - self._dedup_window
        while self._dedup:
            key, (at, _decision) = next(iter(self._dedup.items()))
            if at > horizon:
                break
            del self._dedup[key]
        while self._finished_interactions and self._finished_interactions[0][0] <= horizon:
            _at, interaction = self._finished_interactions.popleft()
            if self.interactions.get(interaction.key) is interaction and interaction.phase is Phase.DONE:
                del self.interactions[interaction.key]
        closed_horizon = now - self._closed_retention
        while self._finished_sessions and self._finished_sessions[0][0] <= closed_horizon:
            _at, session = self._finished_sessions.popleft()
            if session.state is SessionState.CLOSED:
                self.sessions.pop(session.id, None)

    # ------------------------------------------------------------------ internals: notices

    def _changed(
        self, session: Session, transition: str, now: float, *, message: str = "session.updated", **extra: Any
    ) -> None:
        body = session.as_dict(now)
        self._dirty_sessions[session.id] = session
        self.outbox.append(SessionChanged(transition, body))
        self.outbox.append(ToAgent(session.agent_id, {"type": message, "session": body, **extra}))

    def _to_agent(self, agent_id: str, message_type: str, /, **fields: Any) -> None:
        self.outbox.append(ToAgent(agent_id, {"type": message_type, **fields}))

    def _to_vendor(
        self,
        interaction: Interaction,
        action: VendorAction,
        *,
        session: Session,
        source: Session | None = None,
        **fields: Any,
    ) -> None:
        data: dict[str, Any] = {"agent_id": session.agent_id, "session_id": session.id, **fields}
        if source is not None:
            data.update(from_agent_id=source.agent_id, from_session_id=source.id)
        self.outbox.append(ToVendor(interaction.vendor, interaction.interaction_id, action, data))


def _account_id(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get("account_id")
    return str(value)[:256] if value not in (None, "") else None
