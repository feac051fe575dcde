"""The :class:`Engine` facade: one object with the engine's public API over its concerns.

The state lives in one :class:`~.core.EngineState`; each concern is a module of functions
of it (:mod:`.inbound`, :mod:`.offers`, :mod:`.sessions`, :mod:`.transfers`, :mod:`.focus`,
:mod:`.agents`, :mod:`.timers`, :mod:`.restore`, :mod:`.slots`). This class builds the
state, delegates every action to its concern and answers the reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .. import ids
from ..capacity import Load, Presence, Reason, check
from ..clock import Clock
from ..config import CapacityProfile, GatewayConfig, QueueConfig
from ..events import Channel, Event
from ..interactions import Interaction, InteractionKey, Phase, VendorCapabilities
from ..notices import Decision, Notice
from ..persistence import Changes, Snapshot, StateDict, session_from_state
from ..router import EligibilityIndex
from ..sessions import Session, SessionState
from ..state import MemoryStateStore, StateStore
from . import agents, core, dump, focus, inbound, restore, sessions, slots, timers, transfers
from .core import AgentEntry, EngineState, Missing, Recalled

#: How often, while some session's focus time is counting, the journal learns that the
#: gateway is alive: after a crash no more than this much focus time before it is lost,
#: and none of the downtime ever counts.
FOCUS_CHECKPOINT_S = 5.0


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
        dedup_window_s: float | None = None,
        closed_retention_s: float = 3_600.0,
        focus_checkpoint_s: float = FOCUS_CHECKPOINT_S,
        cached_events: int | None = None,
        cached_finished: int | None = None,
    ) -> None:
        # the retention settings: ``retention`` of the configuration unless given here
        retention = config.retention
        self._st = st = EngineState(
            config=config,
            clock=clock,
            store=store if store is not None else MemoryStateStore(),
            new_id=new_id or ids.new_id,
            caps=dict(vendor_capabilities or {}),
            dedup_window=retention.dedup_window_s if dedup_window_s is None else dedup_window_s,
            closed_retention=closed_retention_s,
            cached_events=retention.cached_events if cached_events is None else cached_events,
            cached_finished=retention.cached_finished if cached_finished is None else cached_finished,
            grace_s=config.server.desktop_grace_s,
            checkpoint_s=focus_checkpoint_s,
            queues={q.name: q for q in config.queues},
            agents={a.id: AgentEntry(a, config.capacity_profiles[a.profile]) for a in config.agents},
            index=EligibilityIndex({q.name: q.policy for q in config.queues}),
        )
        for agent_id in st.agents:
            slots.refresh(st, agent_id)

    def blank(self, config: GatewayConfig | None = None) -> Engine:
        """A new engine with this one's configuration and no state, to :meth:`restore` into.

        The runtime rebuilds from the journal this way when its in-memory state may have
        moved away from what is stored (a failed write, an engine error mid-call).
        """
        st = self._st
        return Engine(
            config if config is not None else st.config,
            clock=st.clock,
            store=type(st.store)(),
            new_id=st.new_id,
            vendor_capabilities=st.caps,
            dedup_window_s=st.dedup_window,
            closed_retention_s=st.closed_retention,
            focus_checkpoint_s=st.checkpoint_s,
            cached_events=st.cached_events,
            cached_finished=st.cached_finished,
        )

    # ------------------------------------------------------------------ state

    @property
    def config(self) -> GatewayConfig:
        return self._st.config

    @config.setter
    def config(self, config: GatewayConfig) -> None:
        self._st.config = config

    @property
    def clock(self) -> Clock:
        return self._st.clock

    @property
    def store(self) -> StateStore:
        return self._st.store

    @property
    def queues(self) -> dict[str, QueueConfig]:
        return self._st.queues

    @property
    def sessions(self) -> dict[str, Session]:
        return self._st.sessions

    @property
    def interactions(self) -> dict[InteractionKey, Interaction]:
        return self._st.interactions

    @property
    def outbox(self) -> list[Notice]:
        """The notices produced since the last :meth:`drain` (see :mod:`gateway.notices`)."""
        st = self._st
        built = core.expand(st.outbox)
        st.outbox = built  # type: ignore[assignment]
        return built

    @property
    def generation(self) -> int:
        """Reloads applied (journaled, so it survives restarts)."""
        return self._st.generation

    @property
    def reloaded_at(self) -> float | None:
        return self._st.reloaded_at

    @property
    def _new_id(self) -> Callable[[], str]:
        return self._st.new_id

    @_new_id.setter
    def _new_id(self, new_id: Callable[[], str]) -> None:
        self._st.new_id = new_id

    @property
    def _dedup(self) -> OrderedDict[tuple[str, str], tuple[float, Decision]]:
        return self._st.dedup

    # ------------------------------------------------------------------ edges

    def drain(self) -> list[Notice]:
        """Take every notice produced so far."""
        out, self._st.outbox = self._st.outbox, []
        return core.expand(out)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no timer pending)."""
        return timers.next_deadline(self._st)

    def tick(self) -> None:
        """Fire every timer that is due (the server calls this at :meth:`next_deadline`)."""
        timers.fire_due(self._st)

    @property
    def dedup_window_s(self) -> float:
        """How long an event id is remembered (a repeat inside it is a duplicate)."""
        return self._st.dedup_window

    def set_vendor_capabilities(self, vendor: str, caps: VendorCapabilities) -> None:
        self._st.caps[vendor] = caps

    # ------------------------------------------------------------------ inbound events

    @property
    def cached_events(self) -> int:
        """Event ids kept in memory (the most recent); the others are read from the journal."""
        return self._st.cached_events

    @property
    def cached_finished(self) -> int:
        """Finished interactions and closed sessions kept in memory (each)."""
        return self._st.cached_finished

    def missing(self, event: Event) -> Missing:
        """What to read from the journal before :meth:`handle_event` (see :func:`.inbound.missing`)."""
        return inbound.missing(self._st, event)

    def handle_event(self, event: Event, *, recalled: Recalled | None = None) -> Decision:
        """Apply one normalized vendor event and return the decision for it (see :mod:`.inbound`).

        ``recalled``: what the journal holds of what :meth:`missing` named."""
        return inbound.handle_event(self._st, event, recalled)

    def recall_session(self, state: StateDict) -> bool:
        """Take a closed session that left memory back from its journaled state dict (so that
        an action on it is refused exactly as on any closed session). Changes nothing else;
        False (nothing done) for a session in memory or not closed."""
        st = self._st
        if state.get("state") != SessionState.CLOSED.value or state.get("id") in st.sessions:
            return False
        session = session_from_state(state)
        st.sessions[session.id] = session
        st.finished_sessions.append((session.closed_at or st.clock.now(), session))
        return True

    # ------------------------------------------------------------------ agent actions

    def accept(self, session_id: str, *, actor: str | None = None) -> Session:
        return sessions.accept(self._st, session_id, actor=actor)

    def decline(self, session_id: str, *, actor: str | None = None) -> Session:
        return sessions.decline(self._st, session_id, actor=actor)

    def end(self, session_id: str, *, actor: str | None = None) -> Session:
        return sessions.end(self._st, session_id, actor=actor)

    def new_session(self, agent_id: str, *, label: str | None = None, actor: str | None = None) -> Session:
        """Start a manual (agent-started) session: created active and focused."""
        return sessions.new_session(self._st, agent_id, label=label, actor=actor)

    def focus(self, agent_id: str, session_id: str | None, *, actor: str | None = None) -> Session | None:
        """Focus one session of the agent (leaving the previous one), or none."""
        return focus.focus(self._st, agent_id, session_id, actor=actor)

    def note(self, session_id: str, text: str, *, actor: str | None = None) -> Session:
        return sessions.note(self._st, session_id, text, actor=actor)

    def confirm_account(self, session_id: str, account_id: str | None = None, *, actor: str | None = None) -> Session:
        return sessions.confirm_account(self._st, session_id, account_id, actor=actor)

    def reset_account(self, session_id: str, *, actor: str | None = None) -> Session:
        return sessions.reset_account(self._st, session_id, actor=actor)

    def send(self, session_id: str, text: str, *, actor: str | None = None) -> Session:
        """A chat reply from the agent, sent to the customer through the vendor."""
        return sessions.send(self._st, session_id, text, actor=actor)

    def transfer(
        self,
        session_id: str,
        *,
        to_agent: str | None = None,
        to_queue: str | None = None,
        mode: str = "blind",
        actor: str | None = None,
    ) -> Session:
        """Transfer an active session to an agent or a queue; returns the target's offered session."""
        return transfers.transfer(self._st, session_id, to_agent=to_agent, to_queue=to_queue, mode=mode, actor=actor)

    def set_presence(
        self, agent_id: str, state: Presence | str, reason: str | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        return agents.set_presence(self._st, agent_id, state, reason, actor=actor)

    # ------------------------------------------------------------------ desktops

    def desktop_connected(self, agent_id: str, host: str = "") -> dict[str, Any]:
        """A desktop socket opened (the agent's first on gateway instance ``host``; "" for
        the embedded gateway): cancel the grace period, lift the flags, return ``hello``."""
        return agents.desktop_connected(self._st, agent_id, host)

    def desktop_disconnected(self, agent_id: str, host: str = "") -> None:
        """The agent's last desktop socket on ``host`` closed: unless another instance holds
        one, sessions survive ``desktop_grace_s``, then the agent goes offline."""
        agents.desktop_disconnected(self._st, agent_id, host)

    def desktops_gone(self, host: str) -> list[str]:
        """Instance ``host`` died: its desktops count as disconnected (the agents that lost
        their last one start their grace period; they are returned)."""
        return agents.desktops_gone(self._st, host)

    def desktop_hosts(self) -> set[str]:
        """The instances that hold at least one agent's desktop (as the engine was told)."""
        return agents.desktop_hosts(self._st)

    # ------------------------------------------------------------------ live configuration

    def reconfigure(
        self,
        config: GatewayConfig,
        *,
        vendor_capabilities: Mapping[str, VendorCapabilities] | None = None,
    ) -> dict[str, Any]:
        """Apply a new (validated) configuration's agents, profiles and queues in one step
        (see :func:`.agents.reconfigure`); returns what changed for the agents (for the log)."""
        return agents.reconfigure(self._st, config, vendor_capabilities=vendor_capabilities)

    def vendor_capabilities(self) -> dict[str, VendorCapabilities]:
        return dict(self._st.caps)

    def keep_config(self, config: GatewayConfig, vendor_capabilities: Mapping[str, VendorCapabilities]) -> None:
        """After a reconfiguration that may not be journaled: the configuration a rebuild
        from the journal (:meth:`blank`) must use."""
        self._st.config = config
        self._st.caps = dict(vendor_capabilities)

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self._st.agents

    def retiring_agents(self) -> list[str]:
        return [a for a, agent in self._st.agents.items() if agent.retiring]

    # ------------------------------------------------------------------ persistence

    def take_changes(self) -> Changes:
        """Everything that changed since the last call, as state dicts for the journal."""
        return restore.take_changes(self._st)

    def restore(self, snapshot: Snapshot) -> None:
        """Rebuild state from a journal snapshot, on a fresh engine, before any other call
        (see :func:`.restore.restore`)."""
        restore.restore(self._st, snapshot)

    def dump_state(self) -> dict[str, Any]:
        """The whole state as JSON-able data, between calls (see :mod:`.dump`)."""
        return dump.dump(self._st)

    def load_state(self, body: dict[str, Any]) -> None:
        """Take a :meth:`dump_state` of an engine of the same configuration, on a fresh
        engine: it then decides exactly as that one (:class:`.dump.DumpRefused` if not)."""
        dump.load(self._st, body)

    # ------------------------------------------------------------------ reads

    def agent_ids(self) -> list[str]:
        return list(self._st.agents)

    def agent(self, agent_id: str, *, with_sessions: bool = True) -> dict[str, Any]:
        """The agent object (DESIGN section 6)."""
        st = self._st
        return agents.agent_body(st, core.find_agent(st, agent_id), st.clock.now(), with_sessions=with_sessions)

    def availability(self, agent_id: str, channel: Channel, vendor: str | None = None) -> Reason | None:
        """Why the agent could not take one more ``channel`` session now (None: it could).

        The same rules as an allocation (DESIGN section 4, plus the vendor's voice limit),
        without reserving anything: adapters mirror it to their CMS (e.g. AMI pause state).
        """
        if agent_id not in self._st.agents:
            return Reason.UNKNOWN_AGENT
        return slots.refusal(self._st, agent_id, channel, vendor)

    def take_touched_agents(self) -> set[str]:
        """Agents whose presence or capacity in use may have changed since the last call."""
        touched, self._st.touched = self._st.touched, set()
        return touched

    def open_interactions(self, vendor: str) -> list[dict[str, Any]]:
        """The vendor's interactions that are not done, for an adapter's resynchronisation.

        Each: ``interaction_id``, ``channel``, ``phase``, ``queue``, and for the session
        holding it (if any) ``session_id``, ``agent_id``, ``state``; ``pending_session_id``
        during a consult transfer.
        """
        st = self._st
        out: list[dict[str, Any]] = []
        for interaction in st.interactions.values():
            if interaction.vendor != vendor or interaction.phase is Phase.DONE:
                continue
            holder = st.sessions.get(interaction.holder) if interaction.holder else None
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
        agent = core.find_agent(self._st, agent_id)
        load = self._st.store.get(agent_id).load
        free: dict[str, int] = {}
        for channel in Channel:
            count, probe = 0, load
            while count < agent.profile.max_sessions and check(agent.profile, probe, Presence.READY, channel) is None:
                probe = probe.plus(channel, agent.profile.weight(channel))
                count += 1
            free[channel.value] = count
        return free

    def session_object(self, session: Session) -> dict[str, Any]:
        """``session.as_dict(now)`` for the answer to an action, shared with the notice of
        the transition the action made when it shows the session as it is
        (:func:`.core.session_object`): built once for the push and the ack."""
        return core.session_object(self._st, session, self._st.clock.now())

    def session(self, session_id: str, *, actor: str | None = None) -> Session:
        return core.own_session(self._st, session_id, actor)

    def load_of(self, agent_id: str) -> Load:
        return self._st.store.get(agent_id).load

    def presence_of(self, agent_id: str) -> Presence:
        return self._st.store.get(agent_id).presence

    def profile_of(self, agent_id: str) -> CapacityProfile:
        return core.find_agent(self._st, agent_id).profile

    def focused_session(self, agent_id: str) -> str | None:
        return core.find_agent(self._st, agent_id).focused

    def open_sessions(self, agent_id: str) -> list[Session]:
        return list(core.find_agent(self._st, agent_id).open_sessions.values())

    def waiting(self) -> list[InteractionKey]:
        return [w.key for w in self._st.waiting.waiters()]

    def eligible(self, queue: str, channel: Channel) -> list[str]:
        return self._st.index.eligible(queue, channel)
