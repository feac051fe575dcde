"""Journals (durable engine state and session records) and the session report.

* :class:`SqliteJournal` - the embedded store (``store: sqlite:///...``), WAL + group commit.
* :class:`MemoryJournal` - ``store: memory://``, for tests and demos: nothing survives the process.
* :class:`PostgresJournal` - ``records: {url: postgresql://...}``, the session records of
  several instances (same schema and content as SQLite's).
* :func:`open_journal` - the journal a ``store.url`` names (not opened yet: call ``open()``).
* :func:`open_records` - the records store a ``records.url`` names (not opened yet).
* :mod:`gateway.records.report` - report columns, rows, CSV and JSON.

Every journal implements :class:`gateway.persistence.Journal`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..persistence import Journal
from ..store_url import parse_records_url, parse_store_url
from ._common import JournalSchemaError, JournalUnavailable
from .lock import JournalLocked
from .memory import MemoryJournal
from .report import REPORT_COLUMNS, report_row, report_rows, to_csv, to_json
from .sqlite import SCHEMA_VERSION, JournalStats, SqliteJournal

if TYPE_CHECKING:
    from .postgres import PostgresJournal

__all__ = [
    "REPORT_COLUMNS",
    "SCHEMA_VERSION",
    "JournalSchemaError",
    "JournalStats",
    "JournalLocked",
    "JournalUnavailable",
    "MemoryJournal",
    "PostgresJournal",
    "SqliteJournal",
    "open_journal",
    "open_records",
    "report_row",
    "report_rows",
    "sqlite_path",
    "to_csv",
    "to_json",
]


def __getattr__(name: str) -> Any:
    """``PostgresJournal`` is imported on first use (asyncpg is large; most gateways never
    use it)."""
    if name == "PostgresJournal":
        from .postgres import PostgresJournal

        return PostgresJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _problem(message: str) -> ConfigError:
    return ConfigError([f"store.url: {message}"])


def sqlite_path(url: str, *, base_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The absolute file path and query options of a ``sqlite://`` URL.

    ``sqlite:///data/gateway.db`` is the relative path ``data/gateway.db`` (resolved against
    ``base_dir``, default the current directory, now: a later ``chdir`` does not move it);
    ``sqlite:////var/lib/cti-gateway/gateway.db`` is absolute. Percent-escapes are decoded.
    The only query option is ``synchronous=normal|full``. The URL is checked by
    :func:`gateway.store_url.parse_store_url`, as the configuration's ``store.url`` is.
    """
    try:
        parsed = parse_store_url(url)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if parsed.scheme != "sqlite":
        raise _problem("not a sqlite:// URL")
    path = Path(parsed.path)
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return path.absolute(), dict(parsed.options)


def open_journal(url: str, *, base_dir: Path | None = None) -> Journal:
    """The journal for ``store.url`` (not opened yet). Raises :class:`ConfigError` if unusable.

    ``sqlite:///relative.db`` (relative to ``base_dir`` or the current directory),
    ``sqlite:////absolute.db``, optional ``?synchronous=full``; ``memory://``.
    ``redis://`` and ``rediss://`` are the shared log of several instances
    (:mod:`gateway.cluster`), not a journal: their records go to ``records.url``
    (:func:`open_records`). The URL is checked by :func:`gateway.store_url.parse_store_url`,
    the validator of the config model.
    """
    try:
        parsed = parse_store_url(url)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if parsed.scheme == "memory":
        return MemoryJournal()
    if parsed.redis is not None:
        raise _problem(f"{parsed.scheme}:// is the shared log of several instances, not a journal (records.url)")
    path, options = sqlite_path(url, base_dir=base_dir)
    synchronous = options.get("synchronous", "normal").upper()
    return SqliteJournal(path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")


def open_records(url: str) -> PostgresJournal:
    """The records store for ``records.url`` (not opened yet). Raises :class:`ConfigError` if
    unusable, with the words of ``check-config`` (:func:`gateway.store_url.parse_records_url`)."""
    try:
        where = parse_records_url(url)
    except ValueError as exc:
        raise ConfigError([f"records.url: {exc}"]) from None
    from .postgres import PostgresJournal  # imported when used: asyncpg costs ~10 MB of memory

    return PostgresJournal(where)
