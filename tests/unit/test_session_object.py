"""The ack of a desktop action carries the session object of the transition it made: the same
object the push (``session.updated`` / ``session.offered``) and the supervisor stream carry,
built once for all of them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import commands, sessions
from gateway.engine import core
from gateway.notices import SessionChanged, ToAgent

from .conftest import make_engine, offer


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the session objects built (``session_body`` calls), in order."""
    calls: list[str] = []
    real = core.session_body

    def counting(snapshot: Any, now: float) -> dict[str, Any]:
        calls.append(snapshot[0])
        return real(snapshot, now)

    monkeypatch.setattr(core, "session_body", counting)
    monkeypatch.setattr(sessions, "session_body", counting)  # (Session.as_dict's)
    return calls


@pytest.mark.parametrize("action", ["accept", "end", "note", "confirm_account"])
def test_the_ack_and_the_push_show_one_object_built_once(action: str, built: list[str]) -> None:
    engine = make_engine(desktops=["a1", "a2", "a3"])
    decision = engine.handle_event(offer("i1"))
    sid, agent = decision.session_id, decision.agent_id
    assert sid is not None and agent is not None
    if action != "accept":
        commands.apply(engine, commands.accept(sid, agent))
    engine.take_changes()
    engine.drain()
    built.clear()
    command = {
        "accept": commands.accept(sid, agent),
        "end": commands.end(sid, agent),
        "note": commands.note(sid, "called back", agent),
        "confirm_account": commands.confirm_account(sid, "acc-1", agent),
    }[action]

    ack = commands.apply(engine, command)
    notices = engine.drain()

    [pushed] = [n.message["session"] for n in notices if isinstance(n, ToAgent) and "session" in n.message]
    [changed] = [n.session for n in notices if isinstance(n, SessionChanged)]
    assert built == [sid]  # one object built for the ack, the push and the stream
    assert ack == pushed == changed == engine.session(sid).as_dict(engine.clock.now())
    assert ack is not pushed  # the answer's dict is its own


def test_a_session_changed_again_after_its_notice_gets_an_object_of_its_own(built: list[str]) -> None:
    """The ack shows the session as it is after the action: a notice that shows it otherwise
    (it changed again in the same call) is not shared."""
    engine = make_engine(desktops=["a1"])
    decision = engine.handle_event(offer("i1"))
    sid = decision.session_id
    assert sid is not None
    session = engine.session(sid)
    session.subject = "changed after the notice"  # as a later step of the same call would

    answer = engine.session_object(session)

    assert answer["subject"] == "changed after the notice"
    [pushed] = [n.message["session"] for n in engine.drain() if isinstance(n, ToAgent) and "session" in n.message]
    assert pushed["subject"] != "changed after the notice"
    assert built.count(sid) == 2
