"""``store.url``: the one validator of the store URL, shared by the config model and the journal.

``check-config`` (through :class:`gateway.config.StoreConfig`) and ``run`` (through
:func:`gateway.records.open_journal`) parse the URL with :func:`parse_store_url`, so a URL
that passes one passes the other. Pure: no file is touched, a relative path stays relative
(the journal resolves it against its base directory).

Forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (percent-escapes
decoded), with the only query option ``synchronous=normal|full``; ``memory://``.
``redis://[user:password@]host[:port][/db]`` and ``rediss://`` (TLS) are checked by
:func:`parse_redis_url` (used by :class:`gateway.state.redis.RedisStateStore`) and then
refused as a store: only the shared capacity store exists so far, a gateway cannot run on
Redis end to end yet. Messages never echo the URL (it may carry a password); the loader
points at its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["REDIS_NOT_YET", "SQLITE_OPTIONS", "RedisUrl", "StoreUrl", "parse_redis_url", "parse_store_url"]

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
        parse_redis_url(url)  # a malformed URL is named as such first
        raise ValueError(f"{scheme}:// {REDIS_NOT_YET}")
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


#: Why a valid ``redis://`` URL is refused as ``store.url`` (check-config and run alike).
REDIS_NOT_YET = (
    "stores are not supported yet: the shared capacity store (atomic reserve/release on Redis) exists, "
    "but events, sessions and timers are not shared between instances yet, so a gateway cannot run on it; "
    "use the embedded store, e.g. sqlite:///data/gateway.db"
)


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
