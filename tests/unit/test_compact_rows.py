"""Compact journal rows: session and interaction rows leave out the fields that hold their
default. Rows written whole, as every release up to b0d43d6 wrote them, must keep loading to
the same state, and compact rows must load to exactly the objects they were written from
(after the journal's JSON)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import Channel, Customer
from gateway.interactions import Interaction, Phase
from gateway.notices import Decision, DecisionKind
from gateway.persistence import (
    Changes,
    decision_to_state,
    interaction_from_state,
    interaction_to_state,
    session_from_state,
    session_record,
    session_to_state,
)
from gateway.records import _common as journal_json
from gateway.sessions import Account, AccountState, Note, Outcome, Session, SessionState, customer_dict

# ----------------------------------------------------------------- rows as earlier releases wrote them


def legacy_session_row(session: Session, now: float) -> dict[str, Any]:
    """A session row as releases up to b0d43d6 wrote it: every field, defaults included."""
    return {
        "id": session.id,
        "agent_id": session.agent_id,
        "channel": session.channel.value,
        "state": session.state.value,
        "vendor": session.vendor,
        "interaction_id": session.interaction_id,
        "offered_at": session.offered_at,
        "accepted_at": session.accepted_at,
        "ended_at": session.ended_at,
        "closed_at": session.closed_at,
        "queue": session.queue,
        "customer": customer_dict(session.customer) if session.customer else None,
        "subject": session.subject,
        "label": session.label,
        "profile": session.profile,
        "account": {"state": session.account.state.value, "id": session.account.id},
        "outcome": session.outcome.value if session.outcome else None,
        "notes": [{"text": n.text, "at": n.at} for n in session.notes],
        "transferred_from": session.transferred_from,
        "transferred_to": session.transferred_to,
        "units": session.units,
        "focused": session.focused,
        "focused_since": session.focused_since,
        "focus_ms_closed": session.focus_ms_closed,
        "deadline": session.deadline,
        "flagged": session.flagged,
        "as_of": now,
    }


def legacy_interaction_row(interaction: Interaction) -> dict[str, Any]:
    """An interaction row as releases up to b0d43d6 wrote it: every field."""
    return {
        "vendor": interaction.vendor,
        "interaction_id": interaction.interaction_id,
        "channel": interaction.channel.value,
        "offer_event_id": interaction.offer_event_id,
        "queue": interaction.queue,
        "target_agent": interaction.target_agent,
        "priority": interaction.priority,
        "customer": customer_dict(interaction.customer) if interaction.customer else None,
        "subject": interaction.subject,
        "created_at": interaction.created_at,
        "phase": interaction.phase.value,
        "excluded": sorted(interaction.excluded),
        "holder": interaction.holder,
        "pending": interaction.pending,
        "parallel": list(interaction.parallel),
        "wait_deadline": interaction.wait_deadline,
        "wait_seq": interaction.wait_seq,
        "account_id": interaction.account_id,
        "done_at": interaction.done_at,
        "decisions": [decision_to_state(d) for d in interaction.decisions],
        "transcript": interaction.transcript,
    }


def through_journal(row: dict[str, Any]) -> dict[str, Any]:
    """What the journal gives back of a row (its JSON, written and read)."""
    read: dict[str, Any] = journal_json.loads(journal_json.dumps(row))
    return read


def fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# ----------------------------------------------------------------- strategies

_times = st.floats(min_value=1_700_000_000, max_value=1_800_000_000, allow_nan=False)
_maybe_time = st.none() | _times
_ids = st.text(alphabet="abc-123", min_size=1, max_size=6)
_maybe_id = st.none() | _ids
_customers = st.none() | st.builds(
    Customer, address=st.none() | st.text(max_size=8), name=st.none() | st.text(max_size=8)
)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    focused = draw(st.booleans())
    return Session(
        id=draw(_ids),
        agent_id=draw(_ids),
        channel=draw(st.sampled_from(list(Channel))),
        vendor=draw(_maybe_id),
        interaction_id=draw(_maybe_id),
        offered_at=draw(_times),
        state=draw(st.sampled_from(list(SessionState))),
        queue=draw(_maybe_id),
        customer=draw(_customers),
        subject=draw(st.none() | st.text(max_size=8)),
        label=draw(st.text(max_size=8)),
        profile=draw(st.text(max_size=8)),
        account=Account(draw(st.sampled_from(list(AccountState))), draw(_maybe_id)),
        accepted_at=draw(_maybe_time),
        ended_at=draw(_maybe_time),
        closed_at=draw(_maybe_time),
        outcome=draw(st.none() | st.sampled_from(list(Outcome))),
        notes=[Note(t, at) for t, at in draw(st.lists(st.tuples(st.text(max_size=6), _times), max_size=2))],
        transferred_from=draw(_maybe_id),
        transferred_to=draw(_maybe_id),
        units=draw(st.integers(min_value=1, max_value=4)),
        focused=focused,
        # (the engine keeps it None while not focused; a row may still say otherwise)
        focused_since=draw(_maybe_time) if focused else draw(st.none() | st.just(1_750_000_000.5)),
        focus_ms_closed=draw(st.sampled_from([0.0, 0.5]) | st.floats(min_value=0, max_value=1e7)),
        deadline=draw(_maybe_time),
        flagged=draw(st.booleans()),
    )


_decisions = st.builds(
    Decision,
    st.sampled_from(list(DecisionKind)),
    agent_id=_maybe_id,
    session_id=_maybe_id,
    reason=st.none() | st.sampled_from(["no_agent", "offer_timeout"]),
)


@st.composite
def interactions(draw: st.DrawFn) -> Interaction:
    return Interaction(
        vendor=draw(_ids),
        interaction_id=draw(_ids),
        channel=draw(st.sampled_from(list(Channel))),
        offer_event_id=draw(_ids),
        queue=draw(_maybe_id),
        target_agent=draw(_maybe_id),
        priority=draw(st.sampled_from([0, 0, 5, -3])),
        customer=draw(_customers),
        subject=draw(st.none() | st.text(max_size=8)),
        created_at=draw(_times),
        phase=draw(st.sampled_from(list(Phase))),
        excluded=set(draw(st.lists(_ids, max_size=3))),
        holder=draw(_maybe_id),
        pending=draw(_maybe_id),
        parallel=draw(st.lists(_ids, max_size=3)),
        wait_deadline=draw(_maybe_time),
        wait_seq=draw(st.none() | st.integers(min_value=0, max_value=10**6)),
        account_id=draw(_maybe_id),
        done_at=draw(_maybe_time),
        transcript=draw(st.lists(st.fixed_dictionaries({"text": st.text(max_size=5), "at": _times}), max_size=2)),
        decisions=draw(st.lists(_decisions, max_size=3)),
    )


# ----------------------------------------------------------------- sessions


@settings(max_examples=200, deadline=None)
@given(sessions(), st.floats(min_value=0, max_value=3600))
def test_a_compact_session_row_and_a_whole_one_load_to_the_session_written(session: Session, later: float) -> None:
    now = session.offered_at + later
    compact = through_journal(session_to_state(session, now))
    whole = through_journal(legacy_session_row(session, now))
    expected = fields(session)
    assert fields(session_from_state(compact)) == expected
    assert fields(session_from_state(whole)) == expected
    # the public object (GET of a closed session, reports, replay summaries) is the same
    assert session_record(compact) == session_record(whole) == session.as_dict(now)
    # and so are the indexed columns the journal takes from the row
    columns = [journal_json.prepare(Changes(sessions=[row])).sessions[0][:5] for row in (compact, whole)]
    assert columns[0] == columns[1]


def test_a_new_session_row_leaves_out_what_holds_its_default() -> None:
    session = Session(
        id="s1", agent_id="a1", channel=Channel.CHAT, vendor="crm", interaction_id="i1", offered_at=1_750_000_000.0
    )
    row = session_to_state(session, 1_750_000_001.0)
    assert set(row) == {
        "id",
        "agent_id",
        "channel",
        "state",
        "vendor",
        "interaction_id",
        "offered_at",
        "label",
        "profile",
        "as_of",
    }
    assert len(journal_json.dumps(row)) < 0.6 * len(journal_json.dumps(legacy_session_row(session, 1_750_000_001.0)))


def test_a_focused_session_without_an_open_interval_keeps_saying_so() -> None:
    """A row without ``focused`` reads as focused while an interval is open (journals written
    before it was kept): a focused session whose time does not count must say focused."""
    session = Session(
        id="s1", agent_id="a1", channel=Channel.CHAT, vendor=None, interaction_id=None, offered_at=1_750_000_000.0
    )
    session.focused = True
    assert session_from_state(through_journal(session_to_state(session, 1_750_000_000.0))).focused is True
    session.focused = False
    assert session_from_state(through_journal(session_to_state(session, 1_750_000_000.0))).focused is False


# ----------------------------------------------------------------- interactions


@settings(max_examples=200, deadline=None)
@given(interactions())
def test_a_compact_interaction_row_and_a_whole_one_load_to_the_interaction_written(interaction: Interaction) -> None:
    compact = through_journal(interaction_to_state(interaction))
    whole = through_journal(legacy_interaction_row(interaction))
    expected = fields(interaction)
    assert fields(interaction_from_state(compact)) == expected
    assert fields(interaction_from_state(whole)) == expected
    for key in ("vendor", "interaction_id", "phase", "done_at"):  # the indexed columns
        assert compact.get(key) == whole.get(key)


def test_a_new_interaction_row_leaves_out_what_holds_its_default() -> None:
    interaction = Interaction(
        vendor="crm",
        interaction_id="i1",
        channel=Channel.CHAT,
        offer_event_id="o1",
        queue="support",
        target_agent=None,
        priority=0,
        customer=None,
        subject=None,
        created_at=1_750_000_000.0,
    )
    row = interaction_to_state(interaction)
    assert set(row) == {"vendor", "interaction_id", "channel", "offer_event_id", "created_at", "phase", "queue"}
