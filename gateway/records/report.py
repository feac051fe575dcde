"""The session report (``GET /v1/reports/sessions``, DESIGN section 6): columns, rows, CSV, JSON.

A row is built from the public session object (:meth:`gateway.sessions.Session.as_dict`),
which the journal keeps under ``record`` in each session state dict. Times are RFC 3339 UTC
strings as in the API; durations are whole milliseconds; absent values are ``None`` in JSON
and empty fields in CSV.

CSV cells are safe to open in a spreadsheet: a text cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return (which a spreadsheet may run as a formula; OWASP
"CSV injection") gets a leading ``'``. Only text cells: the numbers (the ``*_ms``
durations, never negative) are written as they are. The JSON report is never altered.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from ..persistence import StateDict, session_record

#: The report columns, in CSV header order (a contract: clients parse by these names).
REPORT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "interaction_id",
    "vendor",
    "channel",
    "agent_id",
    "queue",
    "offered_at",
    "accepted_at",
    "ended_at",
    "closed_at",
    "handle_ms",
    "wrap_ms",
    "focus_ms",
    "outcome",
    "account_id",
    "transferred_from",
    "transferred_to",
)

#: Columns copied from the session object key of the same name.
_SAME_NAME = tuple(c for c in REPORT_COLUMNS if c not in ("session_id", "account_id"))


def report_row(session: Mapping[str, Any]) -> dict[str, Any]:
    """One report row (keys: :data:`REPORT_COLUMNS`, in order) from a public session object."""
    row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS)
    row["session_id"] = session.get("id")
    for column in _SAME_NAME:
        row[column] = session.get(column)
    account = session.get("account")
    row["account_id"] = account.get("id") if isinstance(account, Mapping) else None
    return row


def report_rows(state_dicts: Iterable[StateDict]) -> list[dict[str, Any]]:
    """Report rows from journal session state dicts (as :meth:`Journal.records` returns them)."""
    return [report_row(session_record(state)) for state in state_dicts]


def to_json(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts with exactly the report columns, in order."""
    return [{column: row.get(column) for column in REPORT_COLUMNS} for row in rows]


#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One CSV cell: ``None`` empty, a text that could start a formula prefixed with ``'``."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text (RFC 4180: CRLF line ends, fields quoted when needed): header line, then rows.

    Text cells that a spreadsheet would run as a formula are escaped (:func:`csv_cell`).
    """
    out = io.StringIO()
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in REPORT_COLUMNS])
    return out.getvalue()
