"""Sessions: one slot of one agent holding one interaction, with its own record.

::

    offered --accept--> active --end--> wrap_up --(wrap_up_s)--> closed
    offered --decline/timeout--> closed
    manual: created active

This module holds the session data and its bookkeeping (times, focus intervals, notes,
account). What may happen when is decided by :mod:`gateway.engine`.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from .clock import ms_between
from .events import Channel, Customer


class SessionState(StrEnum):
    OFFERED = "offered"
    ACTIVE = "active"
    WRAP_UP = "wrap_up"
    CLOSED = "closed"


#: States in which a session occupies its agent's slot.
OCCUPYING = frozenset({SessionState.OFFERED, SessionState.ACTIVE, SessionState.WRAP_UP})


class Outcome(StrEnum):
    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"
    ABANDONED = "abandoned"
    TRANSFERRED = "transferred"
    #: a parallel offer another agent accepted first
    WITHDRAWN = "withdrawn"


class AccountState(StrEnum):
    UNIDENTIFIED = "unidentified"
    IDENTIFIED = "identified"
    CONFIRMED = "confirmed"


@dataclass(slots=True)
class Account:
    state: AccountState = AccountState.UNIDENTIFIED
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "id": self.id}


@dataclass(slots=True)
class Note:
    text: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "at": iso(self.at)}


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return _iso(ts)


#: Timestamps formatted lately: a session's times are formatted each time it is shown (its
#: desktop message, the supervisor stream, its journal record, the ack of an action), and
#: formatting is most of what building a session's snapshot costs. Bounded (a few hundred KB).
ISO_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=ISO_CACHE_SIZE)
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def customer_dict(customer: Customer) -> dict[str, Any]:
    """``customer.model_dump()`` (a frozen model of plain fields: its values as they are)."""
    return dict(customer.__dict__)


@dataclass(slots=True, eq=False)
class Session:
    id: str
    agent_id: str
    channel: Channel
    #: None for manual sessions (started by the agent, no vendor behind them)
    vendor: str | None
    interaction_id: str | None
    offered_at: float
    state: SessionState = SessionState.OFFERED
    queue: str | None = None
    customer: Customer | None = None
    subject: str | None = None
    label: str = ""
    profile: str = ""
    account: Account = field(default_factory=Account)
    accepted_at: float | None = None
    ended_at: float | None = None
    closed_at: float | None = None
    outcome: Outcome | None = None
    notes: list[Note] = field(default_factory=list)
    transferred_from: str | None = None
    transferred_to: str | None = None
    #: Units this session weighs on its agent (kept so release matches reserve exactly).
    units: int = 1
    #: Whether this is its agent's focused session (the one the desktop shows).
    focused: bool = False
    #: When the open focus interval started: None while not focused, and while focused
    #: but not counted (no desktop connected, or the agent offline; see the engine).
    focused_since: float | None = None
    #: Milliseconds of the closed focus intervals, unrounded: rounding each interval would let
    #: their sum pass the elapsed time; :meth:`focus_ms` rounds once.
    focus_ms_closed: float = 0.0
    #: Deadline of the pending offer or wrap-up timer, if any.
    deadline: float | None = None
    #: Active while the agent's desktop is gone past its grace period.
    flagged: bool = False

    @property
    def occupying(self) -> bool:
        return self.state in OCCUPYING

    @property
    def manual(self) -> bool:
        return self.channel is Channel.MANUAL

    def focus_ms(self, now: float) -> int:
        return _focus_ms(self.focus_ms_closed, self.focused_since, now)

    def enter_focus(self, now: float, *, counting: bool = True) -> None:
        """Become the focused session; the time counts from ``now`` if ``counting``."""
        self.focused = True
        if counting:
            self.resume_focus(now)

    def leave_focus(self, now: float) -> None:
        """No longer the focused session: the open interval (if any) ends at ``now``."""
        self.pause_focus(now)
        self.focused = False

    def pause_focus(self, now: float) -> None:
        """Still focused, but the time stops counting at ``now`` (nobody is looking)."""
        if self.focused_since is not None:
            self.focus_ms_closed += max(0.0, (now - self.focused_since) * 1000)
            self.focused_since = None

    def resume_focus(self, now: float) -> None:
        """A focused session's time counts again from ``now``."""
        if self.focused and self.focused_since is None:
            self.focused_since = now

    @property
    def handle_ms(self) -> int | None:
        return ms_between(self.accepted_at, self.ended_at)

    @property
    def wrap_ms(self) -> int | None:
        return ms_between(self.ended_at, self.closed_at)

    def snapshot(self) -> SessionSnapshot:
        """What the session's object (:meth:`as_dict`) is built from, as it is now: a later
        change of the session does not change it (the engine builds a notice's object only
        when the notice is delivered, from the snapshot taken when it was made)."""
        account = self.account
        return (*_SNAPSHOT(self), account.state, account.id, tuple(self.notes))

    def as_dict(self, now: float) -> dict[str, Any]:
        """The session object of the public API (DESIGN section 6)."""
        return session_body(self.snapshot(), now)


#: a session's fields as :meth:`Session.snapshot` reads them (in this order, then the
#: account's state and id and the notes)
_SNAPSHOT = operator.attrgetter(
    "id",
    "agent_id",
    "channel",
    "state",
    "vendor",
    "interaction_id",
    "queue",
    "customer",
    "subject",
    "label",
    "profile",
    "offered_at",
    "accepted_at",
    "ended_at",
    "closed_at",
    "outcome",
    "transferred_from",
    "transferred_to",
    "focused",
    "flagged",
    "focused_since",
    "focus_ms_closed",
)
SessionSnapshot = tuple[Any, ...]


def session_body(snapshot: SessionSnapshot, now: float) -> dict[str, Any]:
    """The session object of the public API (DESIGN section 6) from a :meth:`Session.snapshot`."""
    (
        id_,
        agent_id,
        channel,
        state,
        vendor,
        interaction_id,
        queue,
        customer,
        subject,
        label,
        profile,
        offered_at,
        accepted_at,
        ended_at,
        closed_at,
        outcome,
        transferred_from,
        transferred_to,
        focused,
        flagged,
        focused_since,
        focus_ms_closed,
        account_state,
        account_id,
        notes,
    ) = snapshot
    return {
        "id": id_,
        "agent_id": agent_id,
        "channel": channel.value,
        "state": state.value,
        "vendor": vendor,
        "interaction_id": interaction_id,
        "queue": queue,
        "customer": customer_dict(customer) if customer else None,
        "subject": subject,
        "label": label,
        "profile": profile,
        "account": {"state": account_state.value, "id": account_id},
        "offered_at": iso(offered_at),
        "accepted_at": iso(accepted_at),
        "ended_at": iso(ended_at),
        "closed_at": iso(closed_at),
        "handle_ms": ms_between(accepted_at, ended_at),
        "wrap_ms": ms_between(ended_at, closed_at),
        "focus_ms": _focus_ms(focus_ms_closed, focused_since, now if closed_at is None else closed_at),
        "outcome": outcome.value if outcome else None,
        "notes": [note.as_dict() for note in notes],
        "transferred_from": transferred_from,
        "transferred_to": transferred_to,
        "focused": focused,
        "flagged": flagged,
    }


def _focus_ms(closed_ms: float, since: float | None, now: float) -> int:
    open_ms = max(0.0, (now - since) * 1000) if since is not None else 0.0
    return int(round(closed_ms + open_ms))


def default_label(channel: Channel, customer: Customer | None, subject: str | None, fallback: str) -> str:
    """A tab title: who or what the session is about."""
    who = (customer.name or customer.address) if customer else None
    text = who or subject or fallback
    return f"{_TITLE[channel]}: {text}"[:120]


#: each channel's name as a tab title starts with it
_TITLE: dict[Channel, str] = {channel: channel.value.capitalize() for channel in Channel}
