"""Commands: every replicated command survives its encoding, the dispatch gives what the
engine's own call gives, and two replicas fed the same log entries end identical."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway import commands
from gateway.cluster.replica import Replica, parse_entry_id
from gateway.cluster.shared_config import decode_caps, encode_caps, local_view, shared_part
from gateway.commands import REPLICATED, Command, CommandError
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.interactions import VendorCapabilities
from gateway.records import MemoryJournal

from .conftest import T0, event, make_config, make_engine, offer, snapshot

SAMPLES = [
    commands.event(offer("i1", agent="a1", channel="voice", attributes={"k": [1, "x", None]})),
    commands.event(event("message", "i1", text="héllo \u2603")),
    commands.tick(),
    commands.presence("a1", "not_ready", "lunch", "a1"),
    commands.accept("s1", "a1"),
    commands.decline("s1", None),
    commands.end("s1", "a1"),
    commands.focus("a1", None, "a1"),
    commands.focus(None, "s1", "sup"),
    commands.note("s1", "a note", "a1"),
    commands.confirm_account("s1", "acct-9", "a1"),
    commands.reset_account("s1", "a1"),
    commands.send("s1", "hi", "a1"),
    commands.new_session("a1", "callback", "a1"),
    commands.transfer("s1", None, "support", "consult", "a1"),
    commands.desktop_connected("a1", True),
    commands.desktop_disconnected("a1"),
    commands.desktop_connected("a2", True, "gw-1"),
    commands.desktop_disconnected("a2", "gw-1"),
    commands.desktops_gone("gw-1"),
    commands.adapter_state("adapter/crm/uidvalidity", {"n": 7}),
    commands.config("ab" * 32),
    commands.config("cd" * 32, shared_part(make_config()), encode_caps({"crm": VendorCapabilities()})),
    commands.reload("ef" * 32, "cd" * 32, shared_part(make_config()), encode_caps({"crm": VendorCapabilities()})),
]


def test_every_replicated_command_has_a_sample() -> None:
    assert {c.name for c in SAMPLES} == REPLICATED


@pytest.mark.parametrize("command", SAMPLES, ids=lambda c: c.name)
def test_encoding_round_trips(command: Command) -> None:
    text = command.encode()
    json.loads(text)  # plain JSON
    assert Command.decode(text) == command
    assert Command.decode(text.encode()) == command


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "[]",
        '{"c": "event"}',
        '{"c": "launch_missiles", "a": {}}',
        '{"c": "tick", "a": []}',
        '{"c": "event", "a": {"event": {"vendor": "x"}}}',
    ],
)
def test_decoding_refuses_what_is_not_a_command(text: str) -> None:
    with pytest.raises(CommandError):
        Command.decode(text)


def test_a_reload_carries_the_shared_configuration_and_not_what_belongs_to_one_instance() -> None:
    """The shared part of a configuration goes into the log and comes back as the same
    configuration on an instance (its own address, store, records and retention put back);
    store and records URLs (with their passwords) never go into the log."""
    own = make_config().model_copy(
        update={"store": make_config().store.model_copy(update={"url": "redis://:s3cret@redis:6379/0"})}
    )
    caps = {"crm": VendorCapabilities(can_transfer=False, max_voice_per_agent=1)}
    text = commands.reload("ef" * 32, None, shared_part(own), encode_caps(caps)).encode()
    assert "s3cret" not in text and "redis:" not in text and '"port"' not in text
    back = Command.decode(text)
    assert local_view(back.args["config"], own) == own
    assert decode_caps(back.args["caps"]) == caps


def test_reconfigure_is_not_replicated() -> None:
    with pytest.raises(CommandError, match="not replicated"):
        commands.reconfigure(make_config(), {}).encode()


def test_unknown_command_is_refused_by_apply() -> None:
    with pytest.raises(CommandError):
        commands.apply(make_engine(), Command("launch_missiles", {}))


def test_dispatch_gives_what_the_engine_calls_give() -> None:
    """The same steps, once as commands and once as the engine's own calls, on twin engines."""
    by_command, by_call = make_engine(), make_engine()
    run = commands.apply

    first = offer("i1", agent="a1", channel="chat")
    assert run(by_command, commands.event(first)) == by_call.handle_event(first)
    sid = next(iter(by_call.sessions))
    now = by_call.clock.now()
    assert run(by_command, commands.accept(sid, "a1")) == by_call.accept(sid, actor="a1").as_dict(now)
    assert run(by_command, commands.note(sid, "n", "a1")) == by_call.note(sid, "n", actor="a1").as_dict(now)
    focused = run(by_command, commands.focus(None, sid, "a1"))
    by_call.focus("a1", sid, actor="a1")
    assert focused == {"session": by_call.session(sid).as_dict(now), "agent": by_call.agent("a1")}
    assert run(by_command, commands.presence("a2", "not_ready", "x", None)) == by_call.set_presence(
        "a2", "not_ready", "x"
    )
    hello = run(by_command, commands.desktop_connected("a1", True))
    assert hello == by_call.desktop_connected("a1")
    assert run(by_command, commands.desktop_connected("a1", False)) == by_call.agent("a1")
    assert run(by_command, commands.end(sid, "a1")) == by_call.end(sid, actor="a1").as_dict(now)
    with pytest.raises(GatewayError) as refused:
        run(by_command, commands.accept("nope", "a1"))
    assert refused.value.code == "session_not_found"
    assert snapshot(by_command) == snapshot(by_call)


# ---------------------------------------------------------------------------- determinism


def _replica() -> Replica:
    replica = Replica()
    config = make_config(profiles={"std": {"max_sessions": 2, "offer_timeout_s": {"chat": 5}}}, desktop_grace_s=3)
    replica.engine = Engine(config, **replica.engine_options())
    return replica


def _script() -> list[tuple[str, Command]]:
    """Log entries (ID, command): offers racing for two slots, actions, and gaps in time in
    which offer timeouts and a desktop's grace period fall due (fired by the next entry)."""
    ms = int(T0 * 1000)
    steps: list[Command] = [commands.presence(a, "ready", None, None) for a in ("a1", "a2", "a3")]
    steps += [commands.desktop_connected("a1", True), commands.desktop_connected("a2", True)]
    steps += [commands.event(offer(f"q{i}", channel="chat", event_id=f"e{i}")) for i in range(8)]
    steps += [commands.event(offer("q0", channel="chat", event_id="e0"))]  # a resend: duplicate
    steps += [commands.accept("x", "a1"), commands.desktop_disconnected("a2")]
    entries: list[tuple[str, Command]] = []
    for n, step in enumerate(steps):
        entries.append((f"{ms + n}-{n % 3}", step))
    # later: offers have expired (5 s), a2's grace period (3 s) is over
    entries.append((f"{ms + 10_000}-0", commands.tick()))
    entries.append((f"{ms + 10_001}-0", commands.event(offer("late", agent="a3", event_id="e-late"))))
    return entries


def _state(replica: Replica) -> dict[str, Any]:
    assert replica.engine is not None
    replica.clock.entry_time = replica.clock.last  # read both at the same (log) time
    try:
        return snapshot(replica.engine)
    finally:
        replica.clock.entry_time = None


async def _journaled(changes: list[Any]) -> Any:
    journal = MemoryJournal()
    await journal.open()
    for c in changes:
        await journal.commit(c)
    return await journal.load(since=0)


def test_two_replicas_fed_the_same_entries_end_identical() -> None:
    one, two = _replica(), _replica()
    results: dict[str, list[Any]] = {"one": [], "two": []}
    changes: dict[str, list[Any]] = {"one": [], "two": []}
    for entry_id, command in _script():
        # the second replica gets the entries as another instance reads them: encoded
        for name, replica, cmd in (("one", one, command), ("two", two, Command.decode(command.encode()))):
            applied = replica.apply(entry_id, cmd)
            assert applied.crash is None
            results[name].append(applied.result if applied.error is None else applied.error.code)
            changes[name].append(applied.changes)
            assert replica.engine is not None
    assert results["one"] == results["two"]
    assert _state(one) == _state(two)
    assert asyncio.run(_journaled(changes["one"])) == asyncio.run(_journaled(changes["two"]))
    # the script did what it is meant to: two slots each for a1, a2 (and a3), a duplicate,
    # expiries and a grace period fired by entry time, ids derived from entry IDs
    decisions = [r for r in results["one"] if hasattr(r, "kind")]
    assert [d.kind.value for d in decisions[:8]].count("assigned") == 6  # 3 agents x 2 slots
    assert decisions[-1].kind.value == "assigned"  # a3's expired offers freed its slots
    assert decisions[8].kind.value == "duplicate" and decisions[8].original == decisions[0]
    assert one.engine is not None
    assert one.engine.presence_of("a2").value == "offline"
    assert all(len(sid) == 20 for sid in one.engine.sessions)
    first_offer_ms = parse_entry_id(_script()[5][0])[0]
    assert decisions[0].session_id is not None and decisions[0].session_id.startswith(f"{first_offer_ms:012x}")


def test_entries_must_come_in_order() -> None:
    replica = _replica()
    replica.apply("1700000000000-1", commands.tick())
    with pytest.raises(ValueError, match="not after"):
        replica.apply("1700000000000-1", commands.tick())
    with pytest.raises(ValueError, match="not a stream entry"):
        replica.apply("garbage", commands.tick())
