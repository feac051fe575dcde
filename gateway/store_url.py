"""``store.url``: the one validator of the store URL, shared by the config model and the journal.

``check-config`` (through :class:`gateway.config.StoreConfig`) and ``run`` (through
:func:`gateway.records.open_journal`) parse the URL with :func:`parse_store_url`, so a URL
that passes one passes the other. Pure: no file is touched, a relative path stays relative
(the journal resolves it against its base directory).

Forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (percent-escapes
decoded), with the only query option ``synchronous=normal|full``; ``memory://``.
``redis://`` and ``rediss://`` are part of the design but refused here until a Redis store
exists. Messages never echo the URL (it may carry a password); the loader points at its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

__all__ = ["SQLITE_OPTIONS", "StoreUrl", "parse_store_url"]

#: The query options of a ``sqlite://`` URL and their allowed values (lower case).
SQLITE_OPTIONS: dict[str, tuple[str, ...]] = {"synchronous": ("normal", "full")}


@dataclass(frozen=True)
class StoreUrl:
    """A valid store URL, taken apart."""

    #: ``sqlite`` or ``memory`` (lower case).
    scheme: str
    #: sqlite: the database file as written (relative to the base directory unless absolute).
    path: str = ""
    #: sqlite: the query options, values in lower case.
    options: dict[str, str] = field(default_factory=dict)


def parse_store_url(url: str) -> StoreUrl:
    """Take ``url`` apart; raises :class:`ValueError` with a message saying what to write."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ValueError("expected a URL such as sqlite:///data/gateway.db or memory://")
    if scheme == "sqlite":
        return _sqlite(rest)
    if scheme == "memory":
        if rest.strip("/"):
            raise ValueError("memory:// takes no path, host or options: write memory://")
        return StoreUrl("memory")
    if scheme in ("redis", "rediss"):
        raise ValueError(
            f"{scheme}:// stores are not supported yet; use the embedded store, e.g. sqlite:///data/gateway.db"
        )
    raise ValueError(f"unsupported store scheme {scheme}:// (supported: sqlite://, memory://)")


def _sqlite(rest: str) -> StoreUrl:
    rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        raise ValueError("a sqlite URL has no host: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
    raw = unquote(rest[1:])
    if not raw or raw.endswith("/"):
        raise ValueError("the sqlite URL names no file")
    if raw == ":memory:":
        raise ValueError("an in-memory SQLite database cannot be shared by the journal's connections; use memory://")
    if "\x00" in raw:
        raise ValueError("the sqlite file name contains a NUL character")
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in SQLITE_OPTIONS:
            known = ", ".join(SQLITE_OPTIONS)
            raise ValueError(f"unknown sqlite option {name!r} (known: {known})")
        if name in options:
            raise ValueError(f"sqlite option {name} given twice")
        if value.lower() not in SQLITE_OPTIONS[name]:
            raise ValueError(f"{name} must be {' or '.join(SQLITE_OPTIONS[name])}")
        options[name] = value.lower()
    return StoreUrl("sqlite", raw, options)
