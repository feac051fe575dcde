"""Journals (durable engine state and session records) and the session report.

* :class:`SqliteJournal` - the embedded store (``store: sqlite:///...``), WAL + group commit.
* :class:`MemoryJournal` - ``store: memory://``, for tests and demos: nothing survives the process.
* :func:`open_journal` - the journal a ``store.url`` names (not opened yet: call ``open()``).
* :mod:`gateway.records.report` - report columns, rows, CSV and JSON.

Both journals implement :class:`gateway.persistence.Journal`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote

from ..errors import ConfigError
from ..persistence import Journal
from ._common import JournalSchemaError, JournalUnavailable
from .memory import MemoryJournal
from .report import REPORT_COLUMNS, report_row, report_rows, to_csv, to_json
from .sqlite import SCHEMA_VERSION, JournalStats, SqliteJournal

__all__ = [
    "REPORT_COLUMNS",
    "SCHEMA_VERSION",
    "JournalSchemaError",
    "JournalStats",
    "JournalUnavailable",
    "MemoryJournal",
    "SqliteJournal",
    "open_journal",
    "report_row",
    "report_rows",
    "sqlite_path",
    "to_csv",
    "to_json",
]

_SQLITE = "sqlite://"


def _problem(url: str, message: str) -> ConfigError:
    return ConfigError([f"store.url: {message} (got {url!r})"])


def sqlite_path(url: str, *, base_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The absolute file path and query options of a ``sqlite://`` URL.

    ``sqlite:///data/gateway.db`` is the relative path ``data/gateway.db`` (resolved against
    ``base_dir``, default the current directory, now: a later ``chdir`` does not move it);
    ``sqlite:////var/lib/cti-gateway/gateway.db`` is absolute. Percent-escapes are decoded.
    The only query option is ``synchronous=normal|full``.
    """
    if not url.startswith(_SQLITE):
        raise _problem(url, "not a sqlite:// URL")
    rest = url[len(_SQLITE) :]
    rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        raise _problem(
            url,
            "a sqlite URL has no host: write sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    raw = unquote(rest[1:])
    if not raw or raw.endswith("/"):
        raise _problem(url, "the sqlite URL names no file")
    if raw == ":memory:":
        raise _problem(url, "an in-memory SQLite database cannot be shared by the journal's connections; use memory://")
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = sorted(set(options) - {"synchronous"})
    if unknown:
        raise _problem(url, f"unknown sqlite option(s) {', '.join(unknown)} (known: synchronous)")
    if "synchronous" in options and options["synchronous"].upper() not in ("NORMAL", "FULL"):
        raise _problem(url, "synchronous must be normal or full")
    path = Path(raw)
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return path.absolute(), options


def open_journal(url: str, *, base_dir: Path | None = None) -> Journal:
    """The journal for ``store.url`` (not opened yet). Raises :class:`ConfigError` if unusable.

    ``sqlite:///relative.db`` (relative to ``base_dir`` or the current directory),
    ``sqlite:////absolute.db``, optional ``?synchronous=full``; ``memory://``.
    ``redis://`` and ``rediss://`` are part of the design but not supported yet.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _problem(url, "expected a URL such as sqlite:///data/gateway.db or memory://")
    if scheme == "sqlite":
        path, options = sqlite_path(url, base_dir=base_dir)
        synchronous = options.get("synchronous", "NORMAL").upper()
        return SqliteJournal(path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")
    if scheme == "memory":
        if rest.strip("/"):
            raise _problem(url, "memory:// takes no path")
        return MemoryJournal()
    if scheme in ("redis", "rediss"):
        raise _problem(
            url,
            f"{scheme}:// stores are not supported yet; use the embedded store, e.g. sqlite:///data/gateway.db",
        )
    raise _problem(url, f"unsupported store scheme {scheme}:// (supported: sqlite://, memory://)")
