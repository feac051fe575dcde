"""What the engine hands to a journal, and gets back on start.

The engine tracks which sessions, interactions, agents and inbound events changed during a
call (:meth:`gateway.engine.Engine.take_changes`). The runtime writes those
:class:`Changes` to the journal and only then acknowledges anything (group commit: several
calls' changes may go in one transaction, in order). On start, the journal returns a
:class:`Snapshot` from which :meth:`gateway.engine.Engine.restore` rebuilds open sessions,
pending offers (timers re-armed), waiting interactions, presence, capacity counters
(recomputed from the open sessions, so they are exact by construction) and the event ids
still inside the de-duplication window.

Rows are plain JSON-able dicts ("state dicts"); a journal stores each whole, and indexes
the keys listed on each field below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .events import Channel, Customer
from .interactions import Interaction, Phase
from .notices import Decision, DecisionKind
from .sessions import Account, AccountState, Note, Outcome, Session, SessionState, customer_dict

StateDict = dict[str, Any]


@dataclass(slots=True)
class Changes:
    #: session state dicts; indexed keys: ``id`` (unique), ``agent_id``, ``state``,
    #: ``offered_at`` (epoch s), ``closed_at`` (epoch s or None). The session object of
    #: the API is :func:`session_record` of it (rows written before it existed hold it
    #: whole under ``record``).
    sessions: list[StateDict] = field(default_factory=list)
    #: interaction state dicts; indexed keys: ``vendor`` + ``interaction_id`` (unique),
    #: ``phase``, ``done_at`` (epoch s or None).
    interactions: list[StateDict] = field(default_factory=list)
    #: agent state dicts; indexed key ``id`` (unique).
    agents: list[StateDict] = field(default_factory=list)
    #: inbound events with their decision; indexed keys ``vendor`` + ``event_id`` (unique),
    #: ``at`` (epoch s). Also holds ``type``, ``interaction_id``, ``event`` (the normalized
    #: event as JSON) and ``decision`` (the decision as JSON).
    events: list[StateDict] = field(default_factory=list)
    #: engine-wide counters (e.g. ordering sequences); one dict, merged key by key.
    meta: StateDict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.interactions or self.agents or self.events or self.meta)

    def extend(self, other: Changes) -> None:
        self.sessions.extend(other.sessions)
        self.interactions.extend(other.interactions)
        self.agents.extend(other.agents)
        self.events.extend(other.events)
        self.meta.update(other.meta)


@dataclass(slots=True)
class Snapshot:
    #: sessions that were not closed (state offered, active or wrap_up)
    sessions: list[StateDict] = field(default_factory=list)
    #: interactions not done, and done ones with ``done_at`` inside the window (the most
    #: recent ``recent`` of them when :meth:`Journal.load` is given a bound), oldest first
    interactions: list[StateDict] = field(default_factory=list)
    agents: list[StateDict] = field(default_factory=list)
    #: events with ``at`` inside the de-duplication window (the most recent ``recent`` of
    #: them when bounded), oldest first
    events: list[StateDict] = field(default_factory=list)
    meta: StateDict = field(default_factory=dict)


class Journal(Protocol):
    """Durable storage for the engine's state and the session records.

    Optional attribute ``commit_wait_bound_s``: the longest ``commit()`` itself waits before
    it raises ``not_ready`` (None or absent: unbounded). Where it is within the runtime's
    commit timeout, the runtime sets no timer of its own around each commit.
    """

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Flush what is pending, then close."""
        ...

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        """Return only once ``changes`` (and everything committed before) is durable.

        Later rows for the same key replace earlier ones (upsert by the unique keys).
        ``position``: where the changes stand in a shared, ordered log (several instances,
        :mod:`gateway.cluster`: an integer growing with the log). A store that orders rows
        by it (PostgreSQL) never replaces a row with one of an older position; the embedded
        stores (SQLite, memory) take it and ignore it: their one writer commits in order.
        """
        ...

    async def load(self, *, since: float, recent: int | None = None) -> Snapshot:
        """Open state, plus done interactions and events with time >= ``since``.

        ``recent``: at most that many done interactions and that many events, the most
        recent ones (None: all of them). What is left out stays readable one by one
        (:meth:`event`, :meth:`interaction`).
        """
        ...

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        """The journaled inbound event (with its ``at`` and first ``decision``), or None.

        An indexed lookup: the engine keeps only recent event ids in memory, and the runtime
        asks here for the others before deciding (duplicates over the whole window).
        """
        ...

    async def interaction(self, vendor: str, interaction_id: str) -> StateDict | None:
        """One interaction's state dict (open or done), or None (indexed lookup)."""
        ...

    async def record(self, session_id: str) -> StateDict | None:
        """One session's state dict (open or closed), or None."""
        ...

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        """Session state dicts with ``offered_at`` in [start, end), oldest first."""
        ...

    async def ping(self) -> bool:
        """Whether the storage answers."""
        ...


# ---------------------------------------------------------------------------- codecs
# State dicts <-> core objects. Kept here so that the core objects stay plain dataclasses.


def decision_to_state(decision: Decision) -> StateDict:
    body: StateDict = {"kind": decision.kind.value}
    if decision.agent_id is not None:
        body["agent_id"] = decision.agent_id
    if decision.session_id is not None:
        body["session_id"] = decision.session_id
    if decision.reason is not None:
        body["reason"] = decision.reason
    if decision.original is not None:
        body["original"] = decision_to_state(decision.original)
    return body


def decision_from_state(body: StateDict) -> Decision:

    original = body.get("original")
    return Decision(
        DecisionKind(body["kind"]),
        agent_id=body.get("agent_id"),
        session_id=body.get("session_id"),
        reason=body.get("reason"),
        original=decision_from_state(original) if original else None,
    )


def session_to_state(session: Session, now: float) -> StateDict:
    """A session's journal row: its fields, without those that hold their default (None, an
    empty list, ``units`` 1, ...): :func:`session_from_state` reads a missing key as that
    default, so a compact row and a whole one (as earlier releases wrote them) load alike.
    About half of a session's fields hold their default at any time: left out, they are
    not built, checked, encoded and written on every change of the session."""
    row: StateDict = {
        "id": session.id,
        "agent_id": session.agent_id,
        "channel": session.channel.value,
        "state": session.state.value,
        "vendor": session.vendor,
        "interaction_id": session.interaction_id,
        "offered_at": session.offered_at,
        "label": session.label,
        "profile": session.profile,
        # the time the public session object is shown as of (see session_record): the
        # object itself is not stored, it is made of these fields when it is read
        "as_of": now,
    }
    if session.accepted_at is not None:
        row["accepted_at"] = session.accepted_at
    if session.ended_at is not None:
        row["ended_at"] = session.ended_at
    if session.closed_at is not None:
        row["closed_at"] = session.closed_at
    if session.queue is not None:
        row["queue"] = session.queue
    if session.customer is not None:
        row["customer"] = customer_dict(session.customer)
    if session.subject is not None:
        row["subject"] = session.subject
    account = session.account
    if account.state is not AccountState.UNIDENTIFIED or account.id is not None:
        row["account"] = {"state": account.state.value, "id": account.id}
    if session.outcome is not None:
        row["outcome"] = session.outcome.value
    if session.notes:
        row["notes"] = [{"text": n.text, "at": n.at} for n in session.notes]
    if session.transferred_from is not None:
        row["transferred_from"] = session.transferred_from
    if session.transferred_to is not None:
        row["transferred_to"] = session.transferred_to
    if session.units != 1:
        row["units"] = session.units
    if session.focused or session.focused_since is not None:
        # (a row without "focused" reads as focused while an interval is open: rows of
        # journals written before it was kept)
        row["focused"] = session.focused
    if session.focused_since is not None:
        row["focused_since"] = session.focused_since
    if session.focus_ms_closed:
        row["focus_ms_closed"] = session.focus_ms_closed
    if session.deadline is not None:
        row["deadline"] = session.deadline
    if session.flagged:
        row["flagged"] = True
    return row


def session_record(state: StateDict) -> StateDict:
    """The public session object (DESIGN section 6) of a journaled session state dict, as it
    was when the row was written: :meth:`Session.as_dict` of the row's fields as of its
    ``as_of`` time, exactly what it was when written (it depends on nothing else).

    Rows written by earlier releases (and the replay's recorded sessions) hold the object
    whole under ``record``: it is returned as it is. Building it on every change only to
    store it doubled what each session row cost to build, encode and write."""
    record = state.get("record")
    if record is not None:
        return cast(StateDict, record)
    return session_from_state(state).as_dict(state["as_of"])


def session_from_state(body: StateDict) -> Session:
    return Session(
        id=body["id"],
        agent_id=body["agent_id"],
        channel=Channel(body["channel"]),
        vendor=body.get("vendor"),
        interaction_id=body.get("interaction_id"),
        offered_at=body["offered_at"],
        state=SessionState(body["state"]),
        queue=body.get("queue"),
        customer=Customer(**body["customer"]) if body.get("customer") else None,
        subject=body.get("subject"),
        label=body.get("label", ""),
        profile=body.get("profile", ""),
        account=_account(body.get("account")),
        accepted_at=body.get("accepted_at"),
        ended_at=body.get("ended_at"),
        closed_at=body.get("closed_at"),
        outcome=Outcome(body["outcome"]) if body.get("outcome") else None,
        notes=[Note(n["text"], n["at"]) for n in body.get("notes", [])],
        transferred_from=body.get("transferred_from"),
        transferred_to=body.get("transferred_to"),
        units=body.get("units", 1),
        # journals written before "focused" was kept: an open interval meant focused
        focused=bool(body.get("focused", body.get("focused_since") is not None)),
        focused_since=body.get("focused_since"),
        focus_ms_closed=body.get("focus_ms_closed", 0.0),
        deadline=body.get("deadline"),
        flagged=body.get("flagged", False),
    )


def _account(body: StateDict | None) -> Account:
    if body is None:  # (a compact row: unidentified, no id)
        return Account()
    return Account(AccountState(body["state"]), body.get("id"))


def interaction_to_state(interaction: Interaction) -> StateDict:
    """An interaction's journal row, without the fields that hold their default (None, an
    empty list, priority 0): :func:`interaction_from_state` reads a missing key as that
    default, so compact rows and whole ones (earlier releases) load alike. The row is
    written again on every change of its sessions: what is left out is saved each time."""
    row: StateDict = {
        "vendor": interaction.vendor,
        "interaction_id": interaction.interaction_id,
        "channel": interaction.channel.value,
        "offer_event_id": interaction.offer_event_id,
        "created_at": interaction.created_at,
        "phase": interaction.phase.value,
    }
    if interaction.queue is not None:
        row["queue"] = interaction.queue
    if interaction.target_agent is not None:
        row["target_agent"] = interaction.target_agent
    if interaction.priority:
        row["priority"] = interaction.priority
    if interaction.customer is not None:
        row["customer"] = customer_dict(interaction.customer)
    if interaction.subject is not None:
        row["subject"] = interaction.subject
    if interaction.excluded:
        row["excluded"] = sorted(interaction.excluded)
    if interaction.holder is not None:
        row["holder"] = interaction.holder
    if interaction.pending is not None:
        row["pending"] = interaction.pending
    if interaction.parallel:
        row["parallel"] = list(interaction.parallel)
    if interaction.wait_deadline is not None:
        row["wait_deadline"] = interaction.wait_deadline
    if interaction.wait_seq is not None:
        row["wait_seq"] = interaction.wait_seq
    if interaction.account_id is not None:
        row["account_id"] = interaction.account_id
    if interaction.done_at is not None:
        row["done_at"] = interaction.done_at
    if interaction.decisions:
        row["decisions"] = [decision_to_state(d) for d in interaction.decisions]
    if interaction.transcript:
        row["transcript"] = interaction.transcript
    return row


def interaction_from_state(body: StateDict) -> Interaction:
    return Interaction(
        vendor=body["vendor"],
        interaction_id=body["interaction_id"],
        channel=Channel(body["channel"]),
        offer_event_id=body["offer_event_id"],
        queue=body.get("queue"),
        target_agent=body.get("target_agent"),
        priority=body.get("priority", 0),
        customer=Customer(**body["customer"]) if body.get("customer") else None,
        subject=body.get("subject"),
        created_at=body["created_at"],
        phase=Phase(body["phase"]),
        excluded=set(body.get("excluded", [])),
        holder=body.get("holder"),
        pending=body.get("pending"),
        parallel=list(body.get("parallel", [])),
        wait_deadline=body.get("wait_deadline"),
        wait_seq=body.get("wait_seq"),
        account_id=body.get("account_id"),
        done_at=body.get("done_at"),
        decisions=[decision_from_state(d) for d in body.get("decisions", [])],
        transcript=list(body.get("transcript", [])),
    )
