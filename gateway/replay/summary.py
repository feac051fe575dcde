"""What a planner reads off a run (recorded or replayed): the same code for both.

Per run: offers (interactions, retries included) and customers; decisions (assigned at
once, queued); rejections by reason (every rejection decision: a retried customer may be
rejected twice); each customer's fate (handled: an agent accepted; rejected: the last
attempt was rejected; abandoned: hung up before any accept; open: still waiting or offered
at the end); waits (customers queued: from the offer to the first offer to an agent, or to
the rejection or hang-up) with p50/p95; handle time (accept to end) p50/p95; per agent the
share of the period with 0, 1, 2 ... sessions in use (offered, active or in wrap-up:
what capacity counts) and the focus share (time with a focused session / the period).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import GatewayConfig
from ..persistence import StateDict, session_record

_RETRY = re.compile(r"~r\d+$")


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class AgentFigures:
    agent_id: str
    profile: str
    max_sessions: int
    #: share of the period with n sessions in use, n = 0 .. max(max_sessions, most seen)
    occupancy: list[float] = field(default_factory=list)
    focus_share: float = 0.0
    mean_sessions: float = 0.0


@dataclass(slots=True)
class Summary:
    name: str
    start: float
    end: float
    offers: int = 0
    customers: int = 0
    retries: int = 0
    assigned_at_once: int = 0
    queued: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    handled: int = 0
    rejected: int = 0
    abandoned: int = 0
    open: int = 0
    waited: int = 0
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    handle_p50_s: float | None = None
    handle_p95_s: float | None = None
    manual_refused: int = 0
    agents: list[AgentFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def period_s(self) -> float:
        return self.end - self.start

    def occupancy_total(self) -> list[float]:
        """Share of all agents' time with n sessions in use (the histogram)."""
        width = max((len(a.occupancy) for a in self.agents), default=1)
        total = [0.0] * width
        for agent in self.agents:
            for n, share in enumerate(agent.occupancy):
                total[n] += share / len(self.agents)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": {"start": self.start, "end": self.end, "seconds": round(self.period_s, 3)},
            "offers": self.offers,
            "customers": self.customers,
            "retries": self.retries,
            "assigned_at_once": self.assigned_at_once,
            "queued": self.queued,
            "rejections": dict(sorted(self.rejections.items())),
            "fate": {
                "handled": self.handled,
                "rejected": self.rejected,
                "abandoned": self.abandoned,
                "open": self.open,
            },
            "waits": {"count": self.waited, "p50_s": self.wait_p50_s, "p95_s": self.wait_p95_s},
            "handle": {"p50_s": self.handle_p50_s, "p95_s": self.handle_p95_s},
            "manual_refused": self.manual_refused,
            "occupancy": [round(v, 4) for v in self.occupancy_total()],
            "agents": [
                {
                    "id": a.agent_id,
                    "profile": a.profile,
                    "max_sessions": a.max_sessions,
                    "occupancy": [round(v, 4) for v in a.occupancy],
                    "mean_sessions": round(a.mean_sessions, 3),
                    "focus_share": round(a.focus_share, 4),
                }
                for a in self.agents
            ],
            "notes": self.notes,
        }


def customer_of(interaction_id: str) -> str:
    return _RETRY.sub("", interaction_id)


def summarize(
    name: str,
    config: GatewayConfig,
    *,
    sessions: Iterable[StateDict],
    interactions: Iterable[StateDict],
    start: float,
    end: float,
    manual_refused: int = 0,
) -> Summary:
    sessions = list(sessions)
    interactions = list(interactions)
    out = Summary(name, start, end, manual_refused=manual_refused)
    by_interaction: dict[tuple[str, str], list[StateDict]] = {}
    for s in sessions:
        if s.get("vendor") is not None:
            by_interaction.setdefault((s["vendor"], s["interaction_id"]), []).append(s)
    rejections: Counter[str] = Counter()
    waits: list[float] = []
    handles: list[float] = []
    #: customer -> (attempt created_at, fate) of the latest attempt
    fates: dict[tuple[str, str], tuple[float, str]] = {}
    for i in interactions:
        key = (i["vendor"], i["interaction_id"])
        decisions = i.get("decisions", [])
        out.offers += 1
        if customer_of(i["interaction_id"]) != i["interaction_id"]:
            out.retries += 1
        if decisions and decisions[0]["kind"] == "assigned":
            out.assigned_at_once += 1
        for d in decisions:
            if d["kind"] == "rejected":
                rejections[d.get("reason") or "unknown"] += 1
        own = [s for s in by_interaction.get(key, []) if not s.get("transferred_from")]
        accepted = any(s.get("accepted_at") is not None for s in by_interaction.get(key, []))
        if decisions and decisions[0]["kind"] == "queued":
            out.queued += 1
            first_offer = min((s["offered_at"] for s in own), default=None)
            left = first_offer if first_offer is not None else i.get("done_at")
            waits.append((left if left is not None else end) - i["created_at"])
        if accepted:
            fate = "handled"
        elif i["phase"] != "done":
            fate = "open"
        elif decisions and decisions[-1]["kind"] == "rejected":
            fate = "rejected"
        else:
            fate = "abandoned"
        customer = (i["vendor"], customer_of(i["interaction_id"]))
        if customer not in fates or fates[customer][0] <= i["created_at"]:
            fates[customer] = (i["created_at"], fate)
    for s in sessions:
        if s.get("accepted_at") is not None and s.get("ended_at") is not None and s.get("channel") != "manual":
            handles.append(s["ended_at"] - s["accepted_at"])
    out.customers = len(fates)
    counts = Counter(f for _at, f in fates.values())
    out.handled, out.rejected, out.abandoned, out.open = (
        counts[k] for k in ("handled", "rejected", "abandoned", "open")
    )
    out.rejections = dict(rejections)
    out.waited = len(waits)
    out.wait_p50_s, out.wait_p95_s = percentile(waits, 0.5), percentile(waits, 0.95)
    out.handle_p50_s, out.handle_p95_s = percentile(handles, 0.5), percentile(handles, 0.95)
    out.agents = [_agent_figures(config, a.id, a.profile, sessions, start, end) for a in config.agents]
    return out


def _agent_figures(
    config: GatewayConfig, agent_id: str, profile: str, sessions: list[StateDict], start: float, end: float
) -> AgentFigures:
    limit = config.capacity_profiles[profile].max_sessions
    changes: list[tuple[float, int]] = []
    focus_ms = 0
    for s in sessions:
        if s["agent_id"] != agent_id:
            continue
        focus_ms += int(session_record(s).get("focus_ms") or 0)
        closed = s.get("closed_at")
        begin = max(float(s["offered_at"]), start)
        finish = min(float(closed) if closed is not None else end, end)
        if finish > begin:
            changes += [(begin, 1), (finish, -1)]
    changes.sort()
    period = max(end - start, 1e-9)
    time_at: dict[int, float] = {}
    level, last = 0, start
    for at, step in changes:
        time_at[level] = time_at.get(level, 0.0) + at - last
        level, last = level + step, at
    time_at[level] = time_at.get(level, 0.0) + end - last
    width = max(limit, max(time_at, default=0)) + 1
    occupancy = [time_at.get(n, 0.0) / period for n in range(width)]
    return AgentFigures(
        agent_id,
        profile,
        limit,
        occupancy,
        focus_share=min(1.0, focus_ms / 1000 / period),
        mean_sessions=sum(n * share for n, share in enumerate(occupancy)),
    )


# ---------------------------------------------------------------------------- fidelity


def _decision(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["kind"], d.get("agent_id"), d.get("reason"))


def _session(s: StateDict) -> tuple[Any, ...]:
    return (
        s["agent_id"],
        s["state"],
        s["offered_at"],
        s.get("accepted_at"),
        s.get("ended_at"),
        s.get("closed_at"),
        s.get("outcome"),
    )


@dataclass(slots=True)
class Fidelity:
    interactions: int
    identical: int
    mismatches: list[str]

    @property
    def exact(self) -> bool:
        return self.interactions == self.identical


def fidelity(
    recorded_interactions: Iterable[StateDict],
    recorded_sessions: Iterable[StateDict],
    replayed_interactions: Iterable[StateDict],
    replayed_sessions: Iterable[StateDict],
) -> Fidelity:
    """How many interactions got the same decisions (kind, agent, reason, in order) and the
    same sessions (agent, state, offered/accepted/ended/closed times, outcome) in the replay
    as in the recording; the first mismatches described."""

    def sessions_by(rows: Iterable[StateDict]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for s in rows:
            if s.get("vendor") is not None:
                out.setdefault((s["vendor"], s["interaction_id"]), []).append(_session(s))
        return {k: sorted(v, key=lambda t: (t[2], t[0])) for k, v in out.items()}

    rec_s, rep_s = sessions_by(recorded_sessions), sessions_by(replayed_sessions)
    replayed = {(i["vendor"], i["interaction_id"]): i for i in replayed_interactions}
    total = identical = 0
    mismatches: list[str] = []
    for i in recorded_interactions:
        key = (i["vendor"], i["interaction_id"])
        total += 1
        other = replayed.get(key)
        want = [_decision(d) for d in i.get("decisions", [])]
        got = [_decision(d) for d in other.get("decisions", [])] if other else None
        if got != want:
            mismatches.append(f"{key[0]}/{key[1]}: decisions {want} recorded, {got} replayed")
        elif rec_s.get(key, []) != rep_s.get(key, []):
            mismatches.append(
                f"{key[0]}/{key[1]}: sessions {rec_s.get(key, [])} recorded, {rep_s.get(key, [])} replayed"
            )
        else:
            identical += 1
    return Fidelity(total, identical, mismatches)
