"""Commands: every change to the engine as a value, and the one function that applies it.

A :class:`Command` is a name and its arguments. :func:`apply` runs it on an engine and
returns its result (a :class:`~gateway.notices.Decision` for a vendor event, JSON-able
dicts for desktop and REST actions). The runtimes take commands, never engine calls:

* the embedded runtime (:class:`gateway.runtime.Runtime`) applies each one at once and
  journals what it changed;
* the replicated runtime (:mod:`gateway.cluster`) appends each one to the shared log
  (:meth:`Command.encode`), and every instance applies every entry in the log's order
  (:meth:`Command.decode`), so all of them hold the same state.

Arguments are JSON values, except two typed ones that encode to JSON: ``event`` (a
normalized :class:`~gateway.events.Event`, encoded with its JSON model dump) and
``reconfigure``'s configuration (the embedded runtime's live reload; not replicated: the
replicated runtime appends a ``reload`` entry carrying the configuration as JSON and turns
it into a ``reconfigure`` of its own engine at the entry's position).
Applying a command reads no clock but the engine's and makes no id but the engine's, so
two engines fed the same commands at the same times end identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine, Recalled
from .events import Event
from .notices import Decision

__all__ = [
    "REPLICATED",
    "Command",
    "CommandError",
    "accept",
    "adapter_state",
    "apply",
    "config",
    "confirm_account",
    "decline",
    "desktop_connected",
    "desktop_disconnected",
    "desktops_gone",
    "end",
    "event",
    "focus",
    "new_session",
    "note",
    "presence",
    "reconfigure",
    "reload",
    "reset_account",
    "send",
    "tick",
    "transfer",
]


class CommandError(ValueError):
    """An encoded command that cannot be decoded (unknown name, missing argument)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One change to the engine: ``name`` and its arguments (see the module docstring)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        """The command as one JSON text (what goes into the shared log)."""
        if self.name not in REPLICATED:
            raise CommandError(f"command {self.name!r} is not replicated")
        args = dict(self.args)
        if self.name == "event":
            args["event"] = args["event"].model_dump(mode="json")
        return json.dumps({"c": self.name, "a": args}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def decode(cls, text: str | bytes) -> Command:
        """The command :meth:`encode` wrote; :class:`CommandError` if it is not one."""
        try:
            body = json.loads(text)
            name, args = body["c"], body["a"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"not an encoded command: {exc}") from None
        if name not in REPLICATED or not isinstance(args, dict):
            raise CommandError(f"unknown command {name!r}")
        if name == "event":
            try:
                args["event"] = Event.model_validate(args["event"])
            except (ValueError, KeyError) as exc:
                raise CommandError(f"event command with an invalid event: {exc}") from None
        return cls(name, args)


# ---------------------------------------------------------------------------- constructors


def event(ev: Event, recalled: Mapping[str, Any] | None = None) -> Command:
    """A vendor event; ``recalled``: what the journal holds of what the engine no longer
    keeps in memory for it (``{"event": row or None, "interaction": state or None}``, see
    :meth:`Engine.missing`)."""
    if recalled is None:
        return Command("event", {"event": ev})
    return Command("event", {"event": ev, "recalled": dict(recalled)})


def tick(due_ms: int | None = None) -> Command:
    """Fire the timers that are due (``due_ms``: the deadline that asked for it, kept for
    the record: the engine fires whatever is due at the entry's time)."""
    return Command("tick", {} if due_ms is None else {"due": due_ms})


def presence(agent_id: str, state: str, reason: str | None, actor: str | None) -> Command:
    return Command("presence", {"agent_id": agent_id, "state": str(state), "reason": reason, "actor": actor})


def accept(session_id: str, actor: str | None) -> Command:
    return Command("accept", {"session_id": session_id, "actor": actor})


def decline(session_id: str, actor: str | None) -> Command:
    return Command("decline", {"session_id": session_id, "actor": actor})


def end(session_id: str, actor: str | None) -> Command:
    return Command("end", {"session_id": session_id, "actor": actor})


def focus(agent_id: str | None, session_id: str | None, actor: str | None) -> Command:
    """Focus ``session_id`` (None: nothing) on ``agent_id`` (None: the session's agent)."""
    return Command("focus", {"agent_id": agent_id, "session_id": session_id, "actor": actor})


def note(session_id: str, text: str, actor: str | None) -> Command:
    return Command("note", {"session_id": session_id, "text": text, "actor": actor})


def confirm_account(session_id: str, account_id: str | None, actor: str | None) -> Command:
    return Command("confirm_account", {"session_id": session_id, "account_id": account_id, "actor": actor})


def reset_account(session_id: str, actor: str | None) -> Command:
    return Command("reset_account", {"session_id": session_id, "actor": actor})


def send(session_id: str, text: str, actor: str | None) -> Command:
    return Command("send", {"session_id": session_id, "text": text, "actor": actor})


def new_session(agent_id: str, label: str | None, actor: str | None) -> Command:
    return Command("new_session", {"agent_id": agent_id, "label": label, "actor": actor})


def transfer(session_id: str, to_agent: str | None, to_queue: str | None, mode: str, actor: str | None) -> Command:
    return Command(
        "transfer",
        {"session_id": session_id, "to_agent": to_agent, "to_queue": to_queue, "mode": mode, "actor": actor},
    )


def desktop_connected(agent_id: str, first: bool, host: str = "") -> Command:
    """A desktop socket opened (``first``: the agent had none open on this instance, named
    ``host`` in a cluster); result: ``hello``."""
    args: dict[str, Any] = {"agent_id": agent_id, "first": first}
    if host:
        args["host"] = host
    return Command("desktop_connected", args)


def desktop_disconnected(agent_id: str, host: str = "") -> Command:
    """The agent's last desktop socket on this instance closed (starts its grace period
    unless another instance holds one)."""
    args: dict[str, Any] = {"agent_id": agent_id}
    if host:
        args["host"] = host
    return Command("desktop_disconnected", args)


def desktops_gone(host: str) -> Command:
    """Cluster instance ``host`` died: its desktops count as disconnected; result: the agents
    that lost their last desktop."""
    return Command("desktops_gone", {"host": host})


def adapter_state(key: str, value: Any) -> Command:
    """An adapter's durable value (no engine change: the runtime keeps it)."""
    return Command("adapter_state", {"key": key, "value": value})


def config(digest: str, shared: Mapping[str, Any] | None = None, caps: Mapping[str, Any] | None = None) -> Command:
    """The configuration the instances run: its hash, and (since live reload on a shared
    store) its shared part and the vendors' capabilities as JSON (no engine change: the
    runtime checks it; see :mod:`gateway.cluster.shared_config`)."""
    if shared is None:
        return Command("config", {"hash": digest})
    return Command("config", {"hash": digest, "config": dict(shared), "caps": dict(caps or {})})


def reload(digest: str, base: str | None, shared: Mapping[str, Any], caps: Mapping[str, Any]) -> Command:
    """A live reload on a shared store: the new configuration's shared part and the vendors'
    capabilities (JSON), its hash, and ``base``: the hash of the configuration in force the
    requesting instance reloaded from (another reload applied first: refused, on every
    instance alike). The runtime applies it (a ``reconfigure`` of its engine)."""
    return Command("reload", {"hash": digest, "base": base, "config": dict(shared), "caps": dict(caps)})


def reconfigure(config: Any, vendor_capabilities: Mapping[str, Any]) -> Command:
    """A live reload (embedded runtime only: it carries the configuration object)."""
    return Command("reconfigure", {"config": config, "caps": vendor_capabilities})


# ---------------------------------------------------------------------------- apply


def _session(e: Engine, session: Any) -> dict[str, Any] | None:
    return None if session is None else e.session_object(session)


def _event(e: Engine, a: Mapping[str, Any]) -> Decision:
    recalled = a.get("recalled")
    if recalled is None:
        return e.handle_event(a["event"])
    return e.handle_event(
        a["event"], recalled=Recalled(event=recalled.get("event"), interaction=recalled.get("interaction"))
    )


def _tick(e: Engine, a: Mapping[str, Any]) -> None:
    e.tick()


def _presence(e: Engine, a: Mapping[str, Any]) -> dict[str, Any]:
    return e.set_presence(a["agent_id"], a["state"], a.get("reason"), actor=a.get("actor"))


def _focus(e: Engine, a: Mapping[str, Any]) -> dict[str, Any]:
    agent_id, session_id, actor = a.get("agent_id"), a.get("session_id"), a.get("actor")
    if agent_id is None:  # POST /v1/sessions/{id}/focus: the session's agent
        agent_id = e.session(str(session_id), actor=actor).agent_id
    focused = e.focus(agent_id, session_id, actor=actor)
    return {"session": _session(e, focused), "agent": e.agent(agent_id)}


def _transfer(e: Engine, a: Mapping[str, Any]) -> dict[str, Any]:
    sid = a["session_id"]
    target = e.transfer(sid, to_agent=a.get("to_agent"), to_queue=a.get("to_queue"), mode=a["mode"], actor=a["actor"])
    now = e.clock.now()
    return {"session": e.session(sid).as_dict(now), "target": target.as_dict(now)}


def _desktop_connected(e: Engine, a: Mapping[str, Any]) -> dict[str, Any]:
    agent_id = a["agent_id"]
    return e.desktop_connected(agent_id, a.get("host", "")) if a.get("first", True) else e.agent(agent_id)


def _desktop_disconnected(e: Engine, a: Mapping[str, Any]) -> None:
    # (an agent a reload removed is gone: nothing to record)
    if e.has_agent(a["agent_id"]):
        e.desktop_disconnected(a["agent_id"], a.get("host", ""))


def _desktops_gone(e: Engine, a: Mapping[str, Any]) -> list[str]:
    return e.desktops_gone(str(a["host"]))


def _reconfigure(e: Engine, a: Mapping[str, Any]) -> dict[str, Any]:
    return e.reconfigure(a["config"], vendor_capabilities=a["caps"])


def _runtime_only(e: Engine, a: Mapping[str, Any]) -> None:
    raise CommandError("kept by the runtime, not applied to the engine")


_APPLY: dict[str, Callable[[Engine, Mapping[str, Any]], Any]] = {
    "event": _event,
    "tick": _tick,
    "presence": _presence,
    "accept": lambda e, a: _session(e, e.accept(a["session_id"], actor=a["actor"])),
    "decline": lambda e, a: _session(e, e.decline(a["session_id"], actor=a["actor"])),
    "end": lambda e, a: _session(e, e.end(a["session_id"], actor=a["actor"])),
    "focus": _focus,
    "note": lambda e, a: _session(e, e.note(a["session_id"], a["text"], actor=a["actor"])),
    "confirm_account": lambda e, a: _session(
        e, e.confirm_account(a["session_id"], a.get("account_id"), actor=a["actor"])
    ),
    "reset_account": lambda e, a: _session(e, e.reset_account(a["session_id"], actor=a["actor"])),
    "send": lambda e, a: _session(e, e.send(a["session_id"], a["text"], actor=a["actor"])),
    "new_session": lambda e, a: _session(e, e.new_session(a["agent_id"], label=a.get("label"), actor=a["actor"])),
    "transfer": _transfer,
    "desktop_connected": _desktop_connected,
    "desktop_disconnected": _desktop_disconnected,
    "desktops_gone": _desktops_gone,
    "reconfigure": _reconfigure,
    "adapter_state": _runtime_only,
    "config": _runtime_only,
    "reload": _runtime_only,
}

#: The commands that go through the shared log (all but the embedded runtime's reload).
REPLICATED = frozenset(_APPLY) - {"reconfigure"}


def apply(engine: Engine, command: Command) -> Any:
    """Run ``command`` on ``engine``; its result, or the engine's :class:`GatewayError`."""
    try:
        call = _APPLY[command.name]
    except KeyError:
        raise CommandError(f"unknown command {command.name!r}") from None
    return call(engine, command.args)
