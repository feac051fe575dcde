"""Snapshots of the shared log: one instance's whole state at a log position, so that an
instance that starts loads it and applies only the entries after it, and the log can be
trimmed behind it.

A snapshot holds the replica's position and engine state (:meth:`Replica.dump`, with the
engine's own versioned dump), what the runtime keeps besides the engine (the adapters'
saved values, the configuration hash recorded in the log) and the side effects of the
entries up to the position that the consumer group has not finished yet (an instance that
starts from the snapshot and takes such an entry over performs them: nothing is lost).
Encoded as JSON, compressed (zlib); :data:`FORMAT` versions the whole.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ..notices import Decision, Notice, PresenceChanged, Routed, SessionChanged, ToAgent, ToVendor, VendorAction
from ..persistence import Changes, decision_from_state, decision_to_state

__all__ = ["FORMAT", "SnapshotError", "decode", "encode", "notice_from_json", "notice_to_json"]

#: The snapshot's format (the engine's dump has its own, checked when it is loaded).
FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot that cannot be read (corrupt, or not one of ours)."""


def notice_to_json(notice: Notice) -> dict[str, Any]:
    if isinstance(notice, ToAgent):
        return {"t": "agent", "agent_id": notice.agent_id, "message": notice.message}
    if isinstance(notice, ToVendor):
        return {
            "t": "vendor",
            "vendor": notice.vendor,
            "interaction_id": notice.interaction_id,
            "action": notice.action.value,
            "data": notice.data,
            "event_id": notice.event_id,
        }
    if isinstance(notice, SessionChanged):
        return {"t": "session", "transition": notice.transition, "session": notice.session}
    if isinstance(notice, PresenceChanged):
        return {"t": "presence", "agent_id": notice.agent_id, "state": notice.state, "reason": notice.reason}
    return {
        "t": "routed",
        "vendor": notice.vendor,
        "event_id": notice.event_id,
        "event_type": notice.event_type,
        "interaction_id": notice.interaction_id,
        "channel": notice.channel,
        "decision": decision_to_state(notice.decision),
        "event": notice.event,
    }


def notice_from_json(body: dict[str, Any]) -> Notice:
    kind = body["t"]
    if kind == "agent":
        return ToAgent(body["agent_id"], body["message"])
    if kind == "vendor":
        return ToVendor(
            body["vendor"], body["interaction_id"], VendorAction(body["action"]), body["data"], body["event_id"]
        )
    if kind == "session":
        return SessionChanged(body["transition"], body["session"])
    if kind == "presence":
        return PresenceChanged(body["agent_id"], body["state"], body["reason"])
    if kind == "routed":
        decision: Decision = decision_from_state(body["decision"])
        return Routed(
            body["vendor"],
            body["event_id"],
            body["event_type"],
            body["interaction_id"],
            body["channel"],
            decision,
            body["event"],
        )
    raise SnapshotError(f"unknown notice kind {kind!r}")


def changes_to_json(changes: Changes) -> dict[str, Any]:
    return {
        "sessions": changes.sessions,
        "interactions": changes.interactions,
        "agents": changes.agents,
        "events": changes.events,
        "meta": changes.meta,
    }


def changes_from_json(body: dict[str, Any]) -> Changes:
    return Changes(
        sessions=list(body["sessions"]),
        interactions=list(body["interactions"]),
        agents=list(body["agents"]),
        events=list(body["events"]),
        meta=dict(body["meta"]),
    )


def encode(body: dict[str, Any]) -> bytes:
    """The snapshot's body as stored: JSON text (no NaN), UTF-8 (the caller compresses it)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def compress(text: bytes) -> bytes:
    return zlib.compress(text, 6)


def decode(stored: bytes) -> dict[str, Any]:
    """The body :func:`encode` wrote and :func:`compress` packed (:class:`SnapshotError` if not)."""
    try:
        body = json.loads(zlib.decompress(stored))
    except (zlib.error, ValueError) as exc:
        raise SnapshotError(f"the snapshot cannot be read: {exc}") from None
    if not isinstance(body, dict):
        raise SnapshotError("the snapshot is not an object")
    return body
