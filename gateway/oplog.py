"""The operator's log: what the gateway decided and what changed, one line each.

:func:`log_notice` is called by the runtime for every notice it delivers (after the change
is durable), so the log says what really happened:

* ``event_routed`` (info) - every inbound vendor event and its answer: ``decision``, and
  ``agent_id`` + ``session_id`` for an assignment, ``reason`` for a rejection,
  ``first_decision`` for a duplicate.
* ``late_decision`` (info) - a decision made after the synchronous answer (an interaction
  that waited in a queue assigned or timed out, a re-route), told to the vendor.
* ``session_changed`` (info) - a session's lifecycle step (``transition``: offered,
  accepted, created, ended, closed, declined, expired, abandoned, transferred, ...) with
  its agent, channel and interaction; focus, note and account steps at debug.
* ``agent_presence`` (info) - an agent's presence change (``state``, ``reason``).

:class:`AccessLogger` writes the optional HTTP access log (``server.access_log``) as
``http_request`` lines through the same structured log. It logs the path without the
query string: a browser's desktop socket carries its token as ``?token=``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .notices import DecisionKind, Notice, PresenceChanged, Routed, SessionChanged, ToVendor, VendorAction

__all__ = ["QUIET_TRANSITIONS", "AccessLogger", "info_enabled", "log_notice"]

log = structlog.get_logger("cti_gateway.ops")
access_log = structlog.get_logger("cti_gateway.access")


def info_enabled() -> bool:
    """Whether info lines (and so the debug ones too) may be written at the configured level."""
    check = getattr(log, "is_enabled_for", None)
    return True if check is None else bool(check(logging.INFO))


#: Session steps logged at debug: frequent, and not a change of the session's life.
QUIET_TRANSITIONS = frozenset({"focused", "unfocused", "note", "account", "updated"})


def log_notice(notice: Notice) -> None:
    """Log one delivered notice (desktop messages are not logged: the changes behind them are)."""
    if not info_enabled():
        return  # nothing below would be written: build none of it (several notices a message)
    if isinstance(notice, Routed):
        decision = notice.decision
        fields: dict[str, Any] = {
            "vendor": notice.vendor,
            "event_id": notice.event_id,
            "event_type": notice.event_type,
            "interaction_id": notice.interaction_id,
            "channel": notice.channel,
            "decision": decision.kind.value,
        }
        answer = decision.original if decision.kind is DecisionKind.DUPLICATE and decision.original else decision
        if decision.kind is DecisionKind.DUPLICATE:
            fields["first_decision"] = answer.kind.value
        if answer.kind is DecisionKind.ASSIGNED:
            fields.update(agent_id=answer.agent_id, session_id=answer.session_id)
        elif answer.kind is DecisionKind.REJECTED:
            fields["reason"] = answer.reason
        log.info("event_routed", **fields)
    elif isinstance(notice, SessionChanged):
        session = notice.session
        emit = log.debug if notice.transition in QUIET_TRANSITIONS else log.info
        emit(
            "session_changed",
            transition=notice.transition,
            session_id=session.get("id"),
            agent_id=session.get("agent_id"),
            channel=session.get("channel"),
            state=session.get("state"),
            vendor=session.get("vendor"),
            interaction_id=session.get("interaction_id"),
            queue=session.get("queue"),
            outcome=session.get("outcome"),
        )
    elif isinstance(notice, PresenceChanged):
        log.info("agent_presence", agent_id=notice.agent_id, state=notice.state, reason=notice.reason)
    elif isinstance(notice, ToVendor) and notice.action is VendorAction.DECISION:
        data = notice.data
        log.info(
            "late_decision",
            vendor=notice.vendor,
            interaction_id=notice.interaction_id,
            event_id=notice.event_id,
            decision=data.get("decision"),
            **{key: data[key] for key in ("agent_id", "session_id", "reason") if data.get(key) is not None},
        )


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log as structured ``http_request`` lines (``server.access_log``)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        access_log.info(
            "http_request",
            method=request.method,
            path=request.path,  # never the query: it may carry ?token=
            status=response.status,
            duration_ms=round(time * 1000, 1),
            bytes=response.body_length,
            remote=request.remote,
        )
