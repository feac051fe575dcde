"""The session snapshot's shortcuts say exactly what the plain code said."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import Channel, Customer
from gateway.persistence import session_record, session_to_state
from gateway.records import _common as journal_json
from gateway.sessions import (
    ISO_CACHE_SIZE,
    Account,
    AccountState,
    Note,
    Outcome,
    Session,
    SessionState,
    _iso,
    customer_dict,
    iso,
)


def plain_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_cached_timestamps_are_formatted_as_before(ts: float) -> None:
    assert iso(ts) == plain_iso(ts)
    assert iso(ts) == plain_iso(ts)  # from the cache


def test_the_timestamp_cache_is_bounded() -> None:
    for n in range(ISO_CACHE_SIZE * 2):
        iso(1_700_000_000 + n / 7)
    assert _iso.cache_info().currsize <= ISO_CACHE_SIZE
    assert iso(None) is None


@given(st.none() | st.text(max_size=20), st.none() | st.text(max_size=20))
def test_customer_dict_is_model_dump(address: str | None, name: str | None) -> None:
    customer = Customer(address=address, name=name)
    assert customer_dict(customer) == customer.model_dump()
    assert list(customer_dict(customer)) == list(customer.model_dump())


_times = st.floats(min_value=1_700_000_000, max_value=1_800_000_000, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(list(SessionState)),
    st.none() | st.builds(Customer, address=st.none() | st.text(max_size=8), name=st.none() | st.text(max_size=8)),
    st.lists(st.tuples(st.text(max_size=10), _times), max_size=3),
    st.booleans(),
    st.none() | _times,
    st.floats(min_value=0, max_value=1e7),
    st.floats(min_value=0, max_value=3600),
)
def test_the_journaled_row_gives_back_the_session_object_it_was_written_with(
    state: SessionState,
    customer: Customer | None,
    notes: list[tuple[str, float]],
    focused: bool,
    accepted_at: float | None,
    focus_ms_closed: float,
    later: float,
) -> None:
    """A session row holds no copy of the public session object: it is made of the row's
    fields when read (GET /v1/sessions/{id}, reports), and must be what it was when written,
    after the row went through the journal's JSON."""
    offered = 1_750_000_000.25
    session = Session(
        id="s-1",
        agent_id="a1",
        channel=Channel.CHAT,
        vendor="crm",
        interaction_id="i-1",
        offered_at=offered,
        state=state,
        queue="sales",
        customer=customer,
        subject="subject",
        label="Chat: x",
        profile="blended",
        account=Account(AccountState.IDENTIFIED, "acc-9"),
        accepted_at=accepted_at,
        ended_at=offered + 5 if state in (SessionState.WRAP_UP, SessionState.CLOSED) else None,
        closed_at=offered + 9 if state is SessionState.CLOSED else None,
        outcome=Outcome.COMPLETED if state is SessionState.CLOSED else None,
        notes=[Note(text, at) for text, at in notes],
        transferred_from="s-0",
        focused=focused,
        focused_since=offered + 1 if focused else None,
        focus_ms_closed=focus_ms_closed,
        deadline=offered + 30,
        flagged=focused,
    )
    now = offered + later
    written = session_to_state(session, now)
    assert "record" not in written  # no second copy of the session in every row
    read = journal_json.loads(journal_json.dumps(written))
    assert session_record(read) == session.as_dict(now)


def test_rows_of_earlier_releases_give_the_object_they_hold() -> None:
    old = {"id": "s-1", "state": "closed", "record": {"id": "s-1", "focus_ms": 7}}  # no fields to make one of
    assert session_record(old) == {"id": "s-1", "focus_ms": 7}
