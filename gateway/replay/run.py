"""Re-run a recorded period through the engine, under a ManualClock, as fast as it computes.

What is replayed, and how the people in it are modelled (the README states the same):

* **Customers** arrive when the recorded offers arrived (same event, same queue or agent
  target, same priority). A customer who hung up before any agent accepted (a vendor
  ``end`` with no accepted session before it) hangs up at the same moment in the replay if
  nobody has accepted by then; everyone else waits as long as the queue lets them.
  Rejected customers follow ``on_reject``: ``drop`` (they go away: default) or
  ``retry:SECONDS[:N]`` (they offer again SECONDS later, at most N times, default 1, as a
  new interaction ``<id>~rK``; still hanging up at their recorded moment).
* **Agents** are ready, with a desktop connected, for the whole period, from its start
  (in configuration order). The journal keeps only each agent's latest presence, so the
  presence history cannot be rebuilt: this is the one assumption that differs from the
  day if agents took breaks.
* The **k-th offer of an interaction** gets the answer the k-th recorded offer of that
  interaction got: accepted or declined after the same delay (from the desktop, or from the
  vendor's side if the vendor said so), or no answer (it expires after the profile's
  ``offer_timeout_s``). An offer the recording has no answer for (a customer who was
  rejected, a re-route that never happened) is accepted after the median recorded accept
  delay of its channel.
* **Handle time** (accept to end) is the interaction's recorded handle time, ended the way
  it ended (the agent's ``end`` or the vendor's); an interaction never handled in the
  recording gets the median recorded handle time of its channel. With ``slowdown`` F, a
  session accepted while the agent holds k other sessions takes ``(1 + F*k)`` times as
  long. Wrap-up follows the profile (the engine's own timers).
* The agent **focuses** the session it accepted last, and when that one closes, the most
  recently accepted one still open.
* **Manual sessions** start and end at their recorded times (refused ones are counted).
* Not replayed: transfers (the first agent's session ends when it was transferred),
  chat messages and updates (they change no capacity).

When the replayed offer happens at the recorded instant, the recorded absolute times of the
answer and the end are used (no floating-point drift): under the recorded configuration the
replay takes exactly the recorded decisions, which :func:`gateway.replay.summary.fidelity`
checks.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..clock import ManualClock
from ..config import GatewayConfig
from ..engine import Engine
from ..errors import ActionError
from ..events import Event
from ..interactions import VendorCapabilities
from ..persistence import StateDict
from .recording import Recording

#: the gateway's own focus checkpoints journal liveness only: never due in a replay
_NEVER = 1e12
#: accept delay / handle time when the recording has none for a channel
DEFAULT_ACCEPT_S = 5.0
DEFAULT_HANDLE_S = 300.0


@dataclass(frozen=True, slots=True)
class OnReject:
    """What a rejected customer does: go away (``retries`` 0) or offer again later."""

    retries: int = 0
    after_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> OnReject:
        if text == "drop":
            return cls()
        kind, _, rest = text.partition(":")
        parts = rest.split(":") if rest else []
        try:
            if kind != "retry" or not 1 <= len(parts) <= 2:
                raise ValueError
            after = float(parts[0])
            count = int(parts[1]) if len(parts) == 2 else 1
        except ValueError:
            raise ValueError(f"{text!r}: write drop or retry:SECONDS[:N], e.g. retry:60:2") from None
        if not (0 < after <= 86_400 and 1 <= count <= 100):
            raise ValueError(f"{text!r}: SECONDS is 0 to 86400 (not 0), N is 1 to 100")
        return cls(retries=count, after_s=after)

    def __str__(self) -> str:
        return "drop" if not self.retries else f"retry:{self.after_s:g}:{self.retries}"


@dataclass(frozen=True, slots=True)
class Model:
    on_reject: OnReject = OnReject()
    #: per extra session held at accept time, handle time grows by this share
    slowdown: float = 0.0

    def describe(self) -> str:
        parts = [f"on-reject {self.on_reject}"] if self.on_reject.retries else []
        if self.slowdown:
            parts.append(f"slowdown {self.slowdown:g}")
        return ", ".join(parts) or "recorded behaviour"


@dataclass(slots=True)
class _Answer:
    kind: str  # accept | decline | none
    #: recorded offer time and answer time (absolute)
    offered_at: float = 0.0
    at: float = 0.0
    #: the vendor event that carried it (vendor-side accept/decline), else the desktop's
    event: Event | None = None


@dataclass(slots=True)
class _Plan:
    """One recorded interaction: the customer and the agents' recorded answers."""

    offer: Event
    arrival: float
    answers: list[_Answer] = field(default_factory=list)
    #: recorded accept and end (absolute) of the session that handled it
    accepted_at: float | None = None
    ended_at: float | None = None
    end_event: Event | None = None
    #: the customer hung up here before anyone accepted (absolute)
    hang_up: Event | None = None
    hang_up_at: float | None = None


@dataclass(slots=True)
class RunResult:
    name: str
    start: float
    end: float
    sessions: list[StateDict]
    interactions: list[StateDict]
    events: list[StateDict]
    manual_refused: int = 0
    errors: list[str] = field(default_factory=list)
    #: actions taken (events, accepts, ends, timers fired): the replay's own work
    steps: int = 0


def _event(body: dict[str, Any]) -> Event:
    return Event.model_validate(body)


def _plans(recording: Recording) -> dict[tuple[str, str], _Plan]:
    plans: dict[tuple[str, str], _Plan] = {}
    by_key: dict[tuple[str, str], list[StateDict]] = {}
    for row in recording.events:
        by_key.setdefault((row["vendor"], row["interaction_id"]), []).append(row)
    sessions: dict[tuple[str, str], list[StateDict]] = {}
    for s in recording.sessions:
        if s.get("vendor") is not None and not s.get("transferred_from"):
            sessions.setdefault((s["vendor"], s["interaction_id"]), []).append(s)
    for key, rows in by_key.items():
        offer = next((r for r in rows if r["type"] == "offer"), None)
        if offer is None:
            continue
        plan = _Plan(_event(offer["event"]), offer["at"])
        vendor_events = {(r["type"], r["at"]): r for r in rows}
        accepted: StateDict | None = None
        for s in sessions.get(key, []):
            if s.get("accepted_at") is not None:
                via = vendor_events.get(("accept", s["accepted_at"]))
                plan.answers.append(
                    _Answer("accept", s["offered_at"], s["accepted_at"], _event(via["event"]) if via else None)
                )
                accepted = accepted or s
            elif s.get("outcome") == "declined" and s.get("closed_at") is not None:
                via = vendor_events.get(("decline", s["closed_at"]))
                plan.answers.append(
                    _Answer("decline", s["offered_at"], s["closed_at"], _event(via["event"]) if via else None)
                )
            else:
                plan.answers.append(_Answer("none", s["offered_at"]))
        if accepted is not None:
            plan.accepted_at = accepted["accepted_at"]
            plan.ended_at = accepted.get("ended_at")
            if plan.ended_at is not None and accepted.get("outcome") == "completed":
                via = vendor_events.get(("end", plan.ended_at))
                plan.end_event = _event(via["event"]) if via else None
        for r in rows:
            if r["type"] == "end" and (plan.accepted_at is None or r["at"] < plan.accepted_at):
                plan.hang_up, plan.hang_up_at = _event(r["event"]), r["at"]
                break
        plans[key] = plan
    return plans


def _medians(recording: Recording) -> tuple[dict[str, float], dict[str, float]]:
    accept: dict[str, list[float]] = {}
    handle: dict[str, list[float]] = {}
    for s in recording.sessions:
        if s.get("accepted_at") is None or s.get("channel") == "manual":
            continue
        accept.setdefault(s["channel"], []).append(s["accepted_at"] - s["offered_at"])
        if s.get("ended_at") is not None:
            handle.setdefault(s["channel"], []).append(s["ended_at"] - s["accepted_at"])
    return (
        {c: statistics.median(v) for c, v in accept.items()},
        {c: statistics.median(v) for c, v in handle.items()},
    )


class Replay:
    """One replay of ``recording`` under ``config`` (call :meth:`run` once)."""

    def __init__(
        self,
        name: str,
        recording: Recording,
        config: GatewayConfig,
        *,
        model: Model | None = None,
        vendor_capabilities: dict[str, VendorCapabilities] | None = None,
    ) -> None:
        self.name = name
        self.recording = recording
        self.model = model or Model()
        self.clock = ManualClock(recording.start)
        ids = itertools.count(1)
        self.engine = Engine(
            config,
            clock=self.clock,
            new_id=lambda: f"replay-{next(ids):08d}",
            vendor_capabilities=vendor_capabilities,
            focus_checkpoint_s=_NEVER,
        )
        self._plans = _plans(recording)
        self._accept_median, self._handle_median = _medians(recording)
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._sessions: dict[str, StateDict] = {}
        self._interactions: dict[tuple[str, str], StateDict] = {}
        self._events: list[StateDict] = []
        #: interaction key -> (the customer's plan, attempt number)
        self._attempt: dict[tuple[str, str], tuple[_Plan, int]] = {}
        #: interaction key -> offers made so far; decisions already looked at
        self._offers: dict[tuple[str, str], int] = {}
        self._decisions_seen: dict[tuple[str, str], int] = {}
        self._handled: set[tuple[str, str]] = set()
        #: a customer's first interaction key -> the key of its latest attempt
        self._current: dict[tuple[str, str], tuple[str, str]] = {}
        #: session id -> when it was accepted (for focus order)
        self._accepted: dict[str, float] = {}
        self._manual_refused = 0
        self._errors: list[str] = []
        self._steps = 0

    # ------------------------------------------------------------------ scheduling

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._actions, (max(when, self.clock.now()), next(self._seq), action))

    def run(self) -> RunResult:
        engine = self.engine
        for agent_id in engine.agent_ids():
            engine.desktop_connected(agent_id)
            engine.set_presence(agent_id, "ready")
        for key, plan in self._plans.items():
            self._attempt[key] = (plan, 0)
            self._current[key] = key
            self._at(plan.arrival, functools.partial(self._arrive, plan, plan.offer))
            if plan.hang_up is not None and plan.hang_up_at is not None:
                self._at(plan.hang_up_at, functools.partial(self._hang_up, plan))
        for row in self.recording.sessions:
            if row.get("channel") == "manual":
                self._at(row["offered_at"], functools.partial(self._manual, row))
        self._collect()
        while True:
            deadline = engine.next_deadline()
            timer = deadline if deadline is not None and deadline < self.recording.start + _NEVER / 2 else None
            action_at = self._actions[0][0] if self._actions else None
            if timer is None and action_at is None:
                break
            if action_at is None or (timer is not None and timer <= action_at):
                assert timer is not None
                self.clock.set(max(timer, self.clock.now()))
                engine.tick()
            else:
                when, _seq, action = heapq.heappop(self._actions)
                self.clock.set(when)
                try:
                    action()
                except ActionError as exc:
                    self._errors.append(f"{self.clock.now():.3f}: {exc.code}: {exc}")
            self._steps += 1
            self._collect()
        # the period: the recording's, or longer if the replayed sessions end later
        times = [t for s in self._sessions.values() for t in (s.get("closed_at"), s.get("ended_at")) if t is not None]
        return RunResult(
            self.name,
            self.recording.start,
            max([self.recording.end, *times]),
            list(self._sessions.values()),
            list(self._interactions.values()),
            self._events,
            manual_refused=self._manual_refused,
            errors=self._errors,
            steps=self._steps,
        )

    # ------------------------------------------------------------------ customers

    def _arrive(self, plan: _Plan, offer: Event) -> None:
        self.engine.handle_event(offer)

    def _hang_up(self, plan: _Plan) -> None:
        assert plan.hang_up is not None
        key = self._current[(plan.offer.vendor, plan.offer.interaction_id)]  # the latest attempt
        if key in self._handled or key not in self._interactions:
            return
        if self._interactions[key]["phase"] == "done":
            return
        attempt = self._attempt[key][1]
        event = plan.hang_up if attempt == 0 else _retarget(plan.hang_up, key[1], f"~r{attempt}")
        self.engine.handle_event(event)

    def _retry(self, plan: _Plan, attempt: int) -> None:
        offer = _retarget(plan.offer, f"{plan.offer.interaction_id}~r{attempt}", f"~r{attempt}")
        self._attempt[(offer.vendor, offer.interaction_id)] = (plan, attempt)
        self._current[(plan.offer.vendor, plan.offer.interaction_id)] = (offer.vendor, offer.interaction_id)
        self.engine.handle_event(offer)

    # ------------------------------------------------------------------ agents

    def _answer(self, session: StateDict, key: tuple[str, str], index: int) -> None:
        plan, attempt = self._attempt.get(key, (None, 0))
        recorded = plan.answers[index] if plan is not None and attempt == 0 and index < len(plan.answers) else None
        if recorded is not None and recorded.kind == "none":
            return  # nobody answers: the offer expires (or the customer hangs up)
        exact = recorded is not None and recorded.offered_at == session["offered_at"]
        if recorded is not None:
            when = recorded.at if exact else session["offered_at"] + (recorded.at - recorded.offered_at)
            kind, via = recorded.kind, recorded.event
        else:
            when = session["offered_at"] + self._accept_median.get(session["channel"], DEFAULT_ACCEPT_S)
            kind, via = "accept", None
        self._at(when, lambda: self._respond(session["id"], key, kind, via, exact))

    def _respond(self, session_id: str, key: tuple[str, str], kind: str, via: Event | None, exact: bool) -> None:
        session = self.engine.sessions.get(session_id)
        if session is None or session.state.value != "offered":
            return
        if via is not None:
            suffix = "" if exact else f"~{session_id}"  # event ids are unique per vendor
            self.engine.handle_event(_retarget(via, key[1], suffix, agent_id=session.agent_id))
        elif kind == "accept":
            self.engine.accept(session_id)
        else:
            self.engine.decline(session_id)
        if kind == "accept":
            self._accepted_now(session_id, key, exact)

    def _accepted_now(self, session_id: str, key: tuple[str, str], exact: bool) -> None:
        engine = self.engine
        session = engine.sessions[session_id]
        now = self.clock.now()
        self._handled.add(key)
        self._accepted[session_id] = now
        engine.focus(session.agent_id, session_id)
        plan, attempt = self._attempt.get(key, (None, 0))
        others = sum(1 for s in engine.open_sessions(session.agent_id) if s.id != session_id)
        factor = 1.0 + self.model.slowdown * others
        if plan is not None and plan.accepted_at is not None:
            if plan.ended_at is None:
                return  # still open when the recording ends: stays open
            handle = plan.ended_at - plan.accepted_at
            exact = exact and attempt == 0 and now == plan.accepted_at and factor == 1.0
            when = plan.ended_at if exact else now + handle * factor
            via = plan.end_event
        else:
            when = now + self._handle_median.get(session.channel.value, DEFAULT_HANDLE_S) * factor
            via = None
        self._at(when, lambda: self._finish(session_id, key, via, exact))

    def _finish(self, session_id: str, key: tuple[str, str], via: Event | None, exact: bool) -> None:
        session = self.engine.sessions.get(session_id)
        if session is None or session.state.value != "active":
            return
        if via is not None:
            self.engine.handle_event(_retarget(via, key[1], "" if exact else f"~{session_id}"))
        else:
            self.engine.end(session_id)

    def _manual(self, row: StateDict) -> None:
        try:
            session = self.engine.new_session(row["agent_id"], label=row.get("label"))
        except ActionError:
            self._manual_refused += 1
            return
        self._accepted[session.id] = self.clock.now()
        if row.get("ended_at") is not None:
            self._at(row["ended_at"], lambda: self._finish(session.id, ("", ""), None, True))

    def _refocus(self, agent_id: str) -> None:
        engine = self.engine
        if engine.focused_session(agent_id) is not None:
            return
        active = [s for s in engine.open_sessions(agent_id) if s.state.value == "active" and s.id in self._accepted]
        if active:
            latest = max(active, key=lambda s: self._accepted[s.id])
            engine.focus(agent_id, latest.id)

    # ------------------------------------------------------------------ what happened

    def _collect(self) -> None:
        engine = self.engine
        engine.drain()
        changes = engine.take_changes()
        self._events.extend(changes.events)
        fresh: list[StateDict] = []
        closed_agents: set[str] = set()
        for row in changes.sessions:
            if row["id"] not in self._sessions and row.get("vendor") is not None and not row.get("transferred_from"):
                fresh.append(row)
            self._sessions[row["id"]] = row
            if row["state"] == "closed":
                closed_agents.add(row["agent_id"])
        for row in changes.interactions:
            key = (row["vendor"], row["interaction_id"])
            self._interactions[key] = row
            seen = self._decisions_seen.get(key, 0)
            for decision in row["decisions"][seen:]:
                if decision["kind"] == "rejected":
                    self._rejected(key)
            self._decisions_seen[key] = len(row["decisions"])
        for row in sorted(fresh, key=lambda r: r["offered_at"]):
            key = (row["vendor"], row["interaction_id"])
            index = self._offers.get(key, 0)
            self._offers[key] = index + 1
            if row["state"] == "offered":
                self._answer(row, key, index)
        for agent_id in sorted(closed_agents):
            self._refocus(agent_id)
        if closed_agents:
            self._collect_quietly()

    def _collect_quietly(self) -> None:
        """Take what refocusing changed (focus only: no offer, no decision)."""
        self.engine.drain()
        changes = self.engine.take_changes()
        for row in changes.sessions:
            self._sessions[row["id"]] = row

    def _rejected(self, key: tuple[str, str]) -> None:
        plan, attempt = self._attempt.get(key, (None, 0))
        retry = self.model.on_reject
        if plan is None or attempt >= retry.retries:
            return
        when = self.clock.now() + retry.after_s
        if plan.hang_up_at is not None and when >= plan.hang_up_at:
            return  # the customer has hung up by then
        self._at(when, lambda: self._retry(plan, attempt + 1))


def _retarget(event: Event, interaction_id: str, suffix: str, *, agent_id: str | None = None) -> Event:
    """A copy of a recorded event for a replayed interaction (and agent)."""
    update: dict[str, Any] = {"interaction_id": interaction_id, "event_id": event.event_id + suffix}
    if agent_id is not None and event.agent_id is not None:
        update["agent_id"] = agent_id
    return event.model_copy(update=update)


def as_time(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat().replace("+00:00", "Z")
