"""Twilio's webhook parameters -> normalized event data (pure; no HTTP, no host).

Event ids are derived from Twilio's own ids, so a request Twilio repeats (a retry, a
replay) maps to the same event id and the gateway answers it as a ``duplicate``:

===========================================  ==================  =========================
 request                                      event               event id
===========================================  ==================  =========================
 voice URL (incoming call)                    offer               ``<CallSid>:offer``
 caller's leg status completed/busy/
 no-answer/failed/canceled                    end                 ``<CallSid>:<status>``
 agent's leg answered (``in-progress``)       accept (agent)      ``<leg CallSid>:answered``
 agent's leg no-answer/busy/failed            decline (agent)     ``<leg CallSid>:declined``
 (or the Dial action with that DialCallStatus)
 agent's leg canceled (the caller gave up)    end                 ``<leg CallSid>:canceled``
 agent's leg completed (the call is over)     end                 ``<leg CallSid>:completed``
 TaskRouter assignment callback               offer (agent)       ``<ReservationSid>:assignment``
 TaskRouter reservation.accepted              accept (agent)      ``<ReservationSid>:accepted``
 TaskRouter reservation.rejected/timeout/
 canceled/rescinded                           decline (agent)     ``<ReservationSid>:<kind>``
 TaskRouter task.canceled/completed/deleted   end                 ``<TaskSid>:<kind>``
===========================================  ==================  =========================

The agent's leg is the ``<Client>`` / ``<Sip>`` call the gateway's ``<Dial>`` placed: the
agent not answering it (or refusing it) is a *decline* of the offered session (the engine
re-routes a queue call, or rejects a call targeted at that agent); the caller hanging up,
whichever leg reports it, is the *end* of the interaction (an offered session is withdrawn
as abandoned, an active one completed); either way the agent's slot is free again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AGENT_LEG_DECLINED",
    "CALLER_LEG_FINAL",
    "Params",
    "agent_leg_event",
    "assignment_offer",
    "call_offer",
    "caller_leg_end",
    "first",
    "task_attributes",
    "taskrouter_event",
]

Params = Sequence[tuple[str, str]]

#: The caller's call is over: the interaction ends.
CALLER_LEG_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
#: The agent did not take the call Twilio rang: the offered session is declined.
AGENT_LEG_DECLINED = frozenset({"no-answer", "busy", "failed"})
#: The agent answered.
AGENT_LEG_ANSWERED = frozenset({"in-progress", "answered"})
#: TaskRouter reservation events that take the offer back from the worker.
RESERVATION_DECLINED = {
    "reservation.rejected": "rejected",
    "reservation.timeout": "timeout",
    "reservation.canceled": "canceled",
    "reservation.rescinded": "rescinded",
}
TASK_ENDED = {"task.canceled": "canceled", "task.completed": "completed", "task.deleted": "deleted"}
#: TaskRouter task channels -> gateway channels (anything else: voice)
TASK_CHANNELS = {"voice": "voice", "chat": "chat", "sms": "chat", "whatsapp": "chat", "email": "email"}


class MissingParameter(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"the {name} parameter is required")
        self.name = name


def first(params: Params, name: str) -> str | None:
    """The first value of parameter ``name`` (None when absent or empty)."""
    for key, value in params:
        if key == name and value != "":
            return value
    return None


def required(params: Params, name: str) -> str:
    value = first(params, name)
    if value is None:
        raise MissingParameter(name)
    return value


def _customer(address: str | None, name: str | None) -> dict[str, str] | None:
    customer = {k: v[:512] for k, v in (("address", address), ("name", name)) if v}
    return customer or None


def _base(event_id: str, kind: str, interaction_id: str) -> dict[str, Any]:
    return {"event_id": event_id[:256], "type": kind, "interaction_id": interaction_id[:256]}


def call_offer(params: Params, *, queue: str | None, agent_id: str | None) -> dict[str, Any]:
    """The voice URL's incoming call -> a voice offer to ``queue`` or ``agent_id``."""
    call_sid = required(params, "CallSid")
    data = _base(f"{call_sid}:offer", "offer", call_sid)
    data["channel"] = "voice"
    data["agent_id" if agent_id is not None else "queue"] = agent_id if agent_id is not None else queue
    customer = _customer(first(params, "From") or first(params, "Caller"), first(params, "CallerName"))
    if customer:
        data["customer"] = customer
    called = first(params, "To") or first(params, "Called")
    data["attributes"] = {"to": called, "direction": first(params, "Direction")}
    return data


def caller_leg_end(params: Params) -> dict[str, Any] | None:
    """The caller's call status callback -> an end, or None for a progress status."""
    call_sid = required(params, "CallSid")
    status = first(params, "CallStatus")
    if status not in CALLER_LEG_FINAL:
        return None
    return _base(f"{call_sid}:{status}", "end", call_sid)


def agent_leg_event(parent_sid: str, leg_sid: str, status: str | None, agent_id: str) -> dict[str, Any] | None:
    """A status of the agent's leg (the call the gateway's ``<Dial>`` placed) -> an event."""
    if status in AGENT_LEG_ANSWERED:
        data = _base(f"{leg_sid}:answered", "accept", parent_sid)
    elif status in AGENT_LEG_DECLINED:
        data = _base(f"{leg_sid}:declined", "decline", parent_sid)
    elif status in ("canceled", "completed"):
        data = _base(f"{leg_sid}:{status}", "end", parent_sid)
        return data
    else:
        return None
    data["agent_id"] = agent_id
    return data


def task_attributes(params: Params) -> dict[str, Any]:
    """``TaskAttributes`` (a JSON object in a form field); {} when absent or not an object."""
    raw = first(params, "TaskAttributes")
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def worker_agent(params: Params, agent_map: Mapping[str, str]) -> str:
    """The gateway agent of the reservation's worker: ``agent_map[WorkerSid]``, else the
    worker's ``agent_id`` attribute, else the WorkerSid itself (refused as ``unknown_agent``)."""
    worker_sid = required(params, "WorkerSid")
    if worker_sid in agent_map:
        return agent_map[worker_sid]
    raw = first(params, "WorkerAttributes")
    if raw is not None:
        try:
            attributes = json.loads(raw)
        except ValueError:
            attributes = None
        if isinstance(attributes, dict) and isinstance(attributes.get("agent_id"), str) and attributes["agent_id"]:
            return str(attributes["agent_id"])
    return worker_sid


def assignment_offer(params: Params, agent_id: str) -> dict[str, Any]:
    """A TaskRouter assignment callback -> an offer of the task to the reserved worker's agent."""
    task_sid = required(params, "TaskSid")
    reservation_sid = required(params, "ReservationSid")
    attributes = task_attributes(params)
    channel_name = first(params, "TaskChannelUniqueName") or str(attributes.get("channel") or "voice")
    data = _base(f"{reservation_sid}:assignment", "offer", task_sid)
    data["channel"] = TASK_CHANNELS.get(channel_name.lower(), "voice")
    data["agent_id"] = agent_id
    address = attributes.get("from") or attributes.get("caller")
    name = attributes.get("name") or attributes.get("customer_name")
    customer = _customer(str(address) if address else None, str(name) if name else None)
    if customer:
        data["customer"] = customer
    data["attributes"] = {
        "reservation_sid": reservation_sid,
        "worker_sid": first(params, "WorkerSid"),
        "task_queue_sid": first(params, "TaskQueueSid"),
    }
    if attributes.get("account_id") not in (None, ""):
        data["attributes"]["account_id"] = str(attributes["account_id"])[:256]
    return data


def taskrouter_event(params: Params, agent_map: Mapping[str, str]) -> dict[str, Any] | None:
    """A TaskRouter event callback -> accept / decline / end, or None for the others."""
    kind = first(params, "EventType") or ""
    if kind == "reservation.accepted" or kind in RESERVATION_DECLINED:
        task_sid = required(params, "TaskSid")
        reservation_sid = first(params, "ReservationSid") or required(params, "ResourceSid")
        suffix = "accepted" if kind == "reservation.accepted" else RESERVATION_DECLINED[kind]
        data = _base(f"{reservation_sid}:{suffix}", "accept" if suffix == "accepted" else "decline", task_sid)
        data["agent_id"] = worker_agent(params, agent_map)
        return data
    if kind in TASK_ENDED:
        task_sid = first(params, "TaskSid") or required(params, "ResourceSid")
        return _base(f"{task_sid}:{TASK_ENDED[kind]}", "end", task_sid)
    return None
