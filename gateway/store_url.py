"""``store.url``: the one validator of the store URL, shared by the config model and the journal.

``check-config`` (through :class:`gateway.config.StoreConfig`) and ``run`` (through
:func:`gateway.records.open_journal`) parse the URL with :func:`parse_store_url`, so a URL
that passes one passes the other. Pure: no file is touched, a relative path stays relative
(the journal resolves it against its base directory).

Forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (percent-escapes
decoded), with the only query option ``synchronous=normal|full``; ``memory://``;
``redis://[user:password@]host[:port][/db]`` and ``rediss://`` (TLS), taken apart by
:func:`parse_redis_url` (the shared log of several instances, :mod:`gateway.cluster`).
Messages never echo the URL (it may carry a password); the loader points at its line.

``records.url`` (the session records of several instances, on PostgreSQL):
``postgresql://user[:password]@host[:port]/database[?sslmode=...]`` (``postgres://`` too),
checked by :func:`parse_records_url` for ``check-config`` (through
:class:`gateway.config.RecordsConfig`) and ``run`` (through
:func:`gateway.records.open_records`) alike. :func:`records_problem` says whether a store
and a records section go together: the embedded store (``sqlite://``, ``memory://``) keeps
the records in its own journal and refuses a ``records`` section; a ``redis://`` store
needs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "POSTGRES_SSLMODES",
    "SQLITE_OPTIONS",
    "PostgresUrl",
    "RedisUrl",
    "StoreUrl",
    "parse_records_url",
    "parse_redis_url",
    "parse_store_url",
    "records_problem",
    "records_problem_for",
]

#: The query options of a ``sqlite://`` URL and their allowed values (lower case).
SQLITE_OPTIONS: dict[str, tuple[str, ...]] = {"synchronous": ("normal", "full")}


@dataclass(frozen=True)
class StoreUrl:
    """A valid store URL, taken apart."""

    #: ``sqlite``, ``memory``, ``redis`` or ``rediss`` (lower case).
    scheme: str
    #: sqlite: the database file as written (relative to the base directory unless absolute).
    path: str = ""
    #: sqlite: the query options, values in lower case.
    options: dict[str, str] = field(default_factory=dict)
    #: redis, rediss: the server
    redis: RedisUrl | None = None


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
        return StoreUrl(scheme, redis=parse_redis_url(url))
    raise ValueError(f"unsupported store scheme {scheme}:// (supported: sqlite://, memory://, redis://, rediss://)")


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


@dataclass(frozen=True)
class RedisUrl:
    """A valid ``redis://`` / ``rediss://`` URL, taken apart (``password`` never printed)."""

    tls: bool
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """``redis://host:port/db`` without credentials, for logs and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisUrl:
    """Take a ``redis://[user:password@]host[:port][/db]`` (``rediss://``: TLS) URL apart;
    raises :class:`ValueError` saying what is wrong (never echoing the URL)."""
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError("expected a URL such as redis://localhost:6379/0 or rediss://host:6380/0")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the redis URL's port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"the {scheme} URL names no host: write {scheme}://HOST:6379/0")
    if parts.query or parts.fragment:
        raise ValueError("a redis URL takes no options (?...) here: write [user:password@]host[:port][/db]")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("the redis database must be a number, e.g. /0")
    if port == 0:
        raise ValueError("the redis URL's port must be a number from 1 to 65535")
    return RedisUrl(
        tls=scheme == "rediss",
        host=parts.hostname,
        port=port or 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


#: The ``sslmode`` values of a ``postgresql://`` records URL (libpq's, as asyncpg takes them).
POSTGRES_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresUrl:
    """A valid ``postgresql://`` records URL, taken apart (``password`` never printed)."""

    host: str
    user: str
    database: str
    port: int = 5432
    password: str | None = field(default=None, repr=False)
    #: libpq's sslmode (:data:`POSTGRES_SSLMODES`); None: asyncpg's default (``prefer``)
    sslmode: str | None = None

    def describe(self) -> str:
        """``postgresql://user@host:port/database`` without the password, for logs and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{self.user}@{host}:{self.port}/{self.database}"


def parse_records_url(url: str) -> PostgresUrl:
    """Take a ``postgresql://user[:password]@host[:port]/database[?sslmode=MODE]`` URL apart
    (``postgres://`` is the same); raises :class:`ValueError` saying what to write (never
    echoing the URL: it may carry a password)."""
    example = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ValueError(f"expected a URL such as {example}")
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"unsupported records scheme {scheme}:// (supported: postgresql://, postgres://)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the postgresql URL's port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the postgresql URL's port must be a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError(f"the postgresql URL names no host: write {example}")
    if not parts.username:
        raise ValueError(f"the postgresql URL names no user: write {example}")
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not database or "/" in database:
        raise ValueError(f"the postgresql URL names no database (one path segment): write {example}")
    if parts.fragment:
        raise ValueError("the postgresql URL takes no #fragment")
    sslmode: str | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True) if parts.query else []:
        if name != "sslmode":
            raise ValueError(f"unknown postgresql option {name!r} (known: sslmode)")
        if sslmode is not None:
            raise ValueError("postgresql option sslmode given twice")
        if value.lower() not in POSTGRES_SSLMODES:
            raise ValueError(f"sslmode must be one of {', '.join(POSTGRES_SSLMODES)}")
        sslmode = value.lower()
    for what, text in (("user", parts.username), ("password", parts.password), ("database", database)):
        if text is not None and "\x00" in unquote(text):
            raise ValueError(f"the postgresql {what} contains a NUL character")
    return PostgresUrl(
        host=parts.hostname,
        user=unquote(parts.username),
        database=database,
        port=port or 5432,
        password=unquote(parts.password) if parts.password is not None else None,
        sslmode=sslmode,
    )


#: Why the embedded store refuses a ``records`` section (check-config and run alike).
RECORDS_EMBEDDED = (
    "the embedded store ({scheme}://) keeps the session records in its own journal and serves the "
    "reports from there; records.url (PostgreSQL) is for several instances on store: redis://. "
    "Remove the records section, or see the README, 'Running several instances'"
)
#: Why a shared store needs a ``records`` section.
RECORDS_REQUIRED = (
    "a {scheme}:// store needs a records section, e.g. records: {{url: postgresql://USER:PASSWORD@HOST:5432/DB}}: "
    "the session records and reports of several instances live in PostgreSQL"
)


def records_problem(store_url: str, has_records: bool) -> tuple[str, str] | None:
    """Whether ``store.url`` and a ``records`` section (present or not) go together: None if
    they do (or the store URL is invalid: that is reported on its own), else ``(where,
    message)`` with ``where`` ``"records"`` (the section is refused) or ``"store.url"`` (the
    section is missing)."""
    try:
        scheme = parse_store_url(store_url).scheme
    except ValueError:
        return None
    return records_problem_for(scheme, has_records)


def records_problem_for(scheme: str, has_records: bool) -> tuple[str, str] | None:
    """:func:`records_problem` for a valid store URL's scheme (lower case)."""
    if scheme in ("sqlite", "memory"):
        return ("records", RECORDS_EMBEDDED.format(scheme=scheme)) if has_records else None
    if not has_records:
        return "store.url", RECORDS_REQUIRED.format(scheme=scheme)
    return None
