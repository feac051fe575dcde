"""The shared log on Redis: one stream (``{prefix}log``) that every instance appends its
commands to and applies in order, and a consumer group on it (``effects``) that hands each
entry to one instance for the side effects that must happen once.

Every call is bounded; an unreachable, loading or failing server raises
:class:`StoreUnavailable` (API: 503 ``not_ready``, retryable). The client reconnects by
itself on the next call; the outage is logged once (``store_unreachable``) and the recovery
once (``store_recovered``). Messages never carry the URL's password.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ..errors import GatewayError
from ..store_url import RedisUrl

__all__ = ["GROUP", "Entry", "RedisLog", "StoreUnavailable"]

log = structlog.get_logger("cti_gateway.cluster.log")

#: The consumer group that performs each entry's side effects once.
GROUP = "effects"

#: (entry ID, fields)
Entry = tuple[str, dict[str, str]]

# Append one command; returns the entry ID (the server's clock gives its time).
_APPEND = """
return redis.call('XADD', KEYS[1], '*', 'c', ARGV[1], 'r', ARGV[2])
"""

# Append a timer tick for the deadline ARGV[1] (ms) unless one is not due yet by the
# server's clock ({0, ms to wait}) or an entry at or after the deadline exists already
# ({0, its ID}: applying it fires the timers): so N instances asking produce one tick.
_TICK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = tonumber(ARGV[1])
if now < due then return {0, tostring(due - now)} end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local ms = tonumber(string.match(last[1][1], '^(%d+)-'))
  if ms >= due then return {0, last[1][1]} end
end
return {1, redis.call('XADD', KEYS[1], '*', 'c', ARGV[2], 'r', '')}
"""


# Read entries after ARGV[1] (exclusive) with the trim mark: {mark or '', rows}. Entries
# before the mark may have been removed (XTRIM MINID): a reader behind it missed some.
_READ = """
local rows = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
return {redis.call('GET', KEYS[2]) or '', rows}
"""

# Where an instance is in the log (its last applied entry), stamped with the server's clock:
# the trim never removes an entry a live instance has not applied yet.
_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
return now
"""

# Write a snapshot (one hash: position, format, configuration hash, state) only if it is
# newer than the one there: {1} written, {0, 'ms-seq'} an as new or newer one is there.
_SNAPSHOT = """
local cur = redis.call('HMGET', KEYS[1], 'ms', 'seq')
local ms, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur[1] then
  local cms, cseq = tonumber(cur[1]), tonumber(cur[2])
  if ms < cms or (ms == cms and seq <= cseq) then return {0, cur[1] .. '-' .. cur[2]} end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ms', ARGV[1], 'seq', ARGV[2], 'format', ARGV[3], 'config', ARGV[4],
  'written', ARGV[5], 'state', ARGV[6])
return {1, ARGV[1] .. '-' .. ARGV[2]}
"""

# Trim the log to the oldest entry still needed: not past the newest snapshot's position,
# nor past any entry pending in the consumer group or not yet delivered to it, nor past
# the last entry applied by any live instance (one that reported within ARGV[2] ms; the
# others are forgotten). Entries before the mark (KEYS[3]) are gone.
# Returns {entries removed, mark}; {0, ''} with no snapshot or no group (nothing trimmed).
_TRIM = """
local snap = redis.call('HMGET', KEYS[2], 'ms', 'seq')
if not snap[1] then return {0, ''} end
local min_ms, min_seq = tonumber(snap[1]), tonumber(snap[2])
local function keep(id, next)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  if not a then return end
  local ms, seq = tonumber(a), tonumber(b)
  if next then seq = seq + 1 end
  if ms < min_ms or (ms == min_ms and seq < min_seq) then min_ms, min_seq = ms, seq end
end
local found = false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  if info['name'] == ARGV[1] then
    found = true
    keep(info['last-delivered-id'], true)
  end
end
if not found then return {0, ''} end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[2] then keep(pending[2], false) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[2])
local positions = redis.call('HGETALL', KEYS[4])
for i = 1, #positions, 2 do
  local id, at = string.match(positions[i + 1], '^(%S+) (%d+)$')
  if at and now - tonumber(at) <= stale then keep(id, false) else redis.call('HDEL', KEYS[4], positions[i]) end
end
local mark = string.format('%d-%d', min_ms, min_seq)
local removed = redis.call('XTRIM', KEYS[1], 'MINID', mark)
local old = redis.call('GET', KEYS[3])
local oms, oseq = 0, 0
if old then
  local a, b = string.match(old, '^(%d+)-(%d+)$')
  oms, oseq = tonumber(a), tonumber(b)
end
-- the mark says what is gone: set only when something was removed
if removed > 0 and (min_ms > oms or (min_ms == oms and min_seq > oseq)) then
  redis.call('SET', KEYS[3], mark)
else
  mark = old or ''
end
return {removed, mark}
"""

# End this instance's turn as the snapshot writer (if it still holds it).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StoreUnavailable(GatewayError):
    """The shared store cannot answer now (API: 503 ``not_ready``; retry later)."""

    code = "not_ready"
    retryable = True


class RedisLog:
    """The log stream and its consumer group in one Redis database."""

    def __init__(
        self,
        where: RedisUrl,
        *,
        prefix: str = "cti:",
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        block_ms: int = 1000,
        max_connections: int = 64,
    ) -> None:
        self.where = where
        self.prefix = prefix
        self.key = f"{prefix}log"
        #: the newest snapshot (a hash: ms, seq, format, config, written, state)
        self.snapshot_key = f"{prefix}snapshot"
        #: entries before this ID were trimmed away (absent: never trimmed)
        self.mark_key = f"{prefix}log:trimmed"
        #: instance -> "last applied entry ID, server time of the report (ms)"
        self.positions_key = f"{prefix}log:applied"
        self.lock_key = f"{prefix}snapshot:writer"
        self.timeout_s = timeout_s
        self.block_ms = block_ms
        #: whether the last call reached the server (for /readyz and /metrics)
        self.healthy = True
        self.failures = 0
        self._pool = self._make_pool(timeout_s, connect_timeout_s, max_connections)
        self._client = aioredis.Redis(connection_pool=self._pool)
        # blocking reads wait on their own connections, so they never hold up an append
        self._blocking_pool = self._make_pool(timeout_s + block_ms / 1000.0, connect_timeout_s, 4)
        self._blocking = aioredis.Redis(connection_pool=self._blocking_pool)
        self._append = self._client.register_script(_APPEND)
        self._tick = self._client.register_script(_TICK)
        self._read = self._client.register_script(_READ)
        self._report = self._client.register_script(_REPORT)
        self._trim = self._client.register_script(_TRIM)
        self._unlock = self._client.register_script(_UNLOCK)
        # snapshots are binary (compressed): a client that does not decode replies
        self._raw_pool = self._make_pool(timeout_s + 5.0, connect_timeout_s, 2, decode=False)
        self._raw = aioredis.Redis(connection_pool=self._raw_pool)
        self._write_snapshot = self._raw.register_script(_SNAPSHOT)

    def _make_pool(
        self, timeout_s: float, connect_timeout_s: float, size: int, *, decode: bool = True
    ) -> aioredis.BlockingConnectionPool:
        where = self.where
        pool = aioredis.BlockingConnectionPool(
            host=where.host,
            port=where.port,
            db=where.db,
            username=where.username,
            password=where.password,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            # one quick retry covers a connection the server closed while idle; an outage
            # fails fast (the caller answers 503 and the vendor retries)
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
            max_connections=size,
            timeout=timeout_s,
            decode_responses=decode,
        )
        if where.tls:
            pool.connection_class = aioredis.SSLConnection
        return pool

    def __repr__(self) -> str:  # never the password
        return f"RedisLog({self.where.describe()}, key={self.key!r})"

    async def close(self) -> None:
        for client, pool in (
            (self._client, self._pool),
            (self._blocking, self._blocking_pool),
            (self._raw, self._raw_pool),
        ):
            await client.aclose()
            await pool.aclose()  # a pool given to the client is the giver's to close

    async def _call(self, what: str, coro: Any, *, extra_s: float = 0.0) -> Any:
        """Await one Redis call, bounded; connection trouble becomes :class:`StoreUnavailable`."""
        try:
            async with asyncio.timeout(self.timeout_s * 2 + extra_s):
                result = await coro
        except redis.exceptions.ResponseError as exc:
            # the server is loading its data or running a long script; the group is gone
            # (the data was lost): all pass, the caller retries
            if str(exc).startswith(("LOADING", "BUSY ", "NOGROUP")):
                self._down(what, exc)
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # the client turned our cancellation into a connection error: stay cancelled
                raise asyncio.CancelledError from None
            self._down(what, exc)
        self._up()
        return result

    def _down(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            self.healthy = False
            log.warning("store_unreachable", store=self.where.describe(), during=what, error=type(exc).__name__)
        raise StoreUnavailable(
            f"the shared store {self.where.describe()} is unreachable ({type(exc).__name__})"
        ) from None

    def _up(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("store_recovered", store=self.where.describe())

    # ------------------------------------------------------------------ the log

    async def ping(self) -> bool:
        """Whether the server answers now (never raises)."""
        try:
            return bool(await self._call("ping", self._client.ping()))
        except GatewayError:
            return False

    async def append(self, command: str, request_id: str) -> str:
        """Append one encoded command; returns its entry ID."""
        return str(await self._call("append", self._append(keys=[self.key], args=[command, request_id])))

    async def propose_tick(self, deadline_ms: int, command: str) -> tuple[bool, str]:
        """``(True, id)``: a tick was appended; ``(False, id)``: an entry at or after the
        deadline exists; ``(False, ms)``: not due yet by the server's clock (wait ms)."""
        added, value = await self._call("tick", self._tick(keys=[self.key], args=[deadline_ms, command]))
        return bool(int(added)), str(value)

    async def read(self, after: str, count: int, *, block: bool) -> list[Entry]:
        """Entries after ``after`` (oldest first); ``block``: wait up to ``block_ms`` for one."""
        if not block:
            rows = await self._call("read", self._client.xrange(self.key, f"({after}", "+", count=count))
            return [(entry_id, fields) for entry_id, fields in rows]
        reply = await self._call(
            "read",
            self._blocking.xread({self.key: after}, count=count, block=self.block_ms),
            extra_s=self.block_ms / 1000.0,
        )
        return [(entry_id, fields) for _stream, rows in reply or () for entry_id, fields in rows]

    async def read_checked(self, after: str, count: int) -> tuple[str | None, list[Entry]]:
        """Entries after ``after`` (oldest first) and the trim mark (None: never trimmed):
        entries before the mark may be gone, so a reader at ``after`` < mark missed some."""
        mark, rows = await self._call("read", self._read(keys=[self.key, self.mark_key], args=[after, count]))
        entries = [(str(entry_id), _fields(flat)) for entry_id, flat in rows]
        return (str(mark) or None), entries

    async def wait_for_entries(self, after: str) -> bool:
        """Wait up to ``block_ms`` for an entry after ``after``; whether one came."""
        reply = await self._call(
            "read",
            self._blocking.xread({self.key: after}, count=1, block=self.block_ms),
            extra_s=self.block_ms / 1000.0,
        )
        return bool(reply)

    async def length(self) -> int:
        return int(await self._call("xlen", self._client.xlen(self.key)))

    async def last_id(self) -> str:
        rows = await self._call("last", self._client.xrevrange(self.key, "+", "-", count=1))
        return str(rows[0][0]) if rows else "0-0"

    # ------------------------------------------------------------------ instances alive

    async def heartbeat(self, instance: str, ttl_ms: int) -> None:
        """Say ``instance`` is alive for ``ttl_ms`` more milliseconds."""
        await self._call("heartbeat", self._client.set(f"{self.prefix}alive:{instance}", "1", px=ttl_ms))

    async def alive(self, instances: list[str]) -> set[str]:
        """Which of ``instances`` said they were alive within their time to live."""
        if not instances:
            return set()
        found = await self._call("alive", self._client.mget([f"{self.prefix}alive:{name}" for name in instances]))
        return {name for name, value in zip(instances, found, strict=True) if value is not None}

    async def forget(self, instance: str) -> None:
        """``instance`` stops cleanly: it is not alive any more."""
        await self._call("forget", self._client.delete(f"{self.prefix}alive:{instance}"))

    # ------------------------------------------------------------------ the consumer group

    async def ensure_group(self) -> None:
        """Create the stream and its group (idempotent): the group starts at the first entry."""
        try:
            await self._call("group", self._client.xgroup_create(self.key, GROUP, id="0", mkstream=True))
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim_new(self, consumer: str, count: int) -> list[str]:
        """Entry IDs never handed to any consumer, now this one's (does not wait for any)."""
        reply = await self._call("readgroup", self._client.xreadgroup(GROUP, consumer, {self.key: ">"}, count=count))
        return [entry_id for _stream, rows in reply or () for entry_id, _fields in rows]

    async def claim_stale(self, consumer: str, min_idle_ms: int, start: str, count: int) -> tuple[str, list[str]]:
        """Entries another consumer took and has not acknowledged for ``min_idle_ms``
        (it died, or is stuck), now this one's: ``(next start, entry IDs)``."""
        reply = await self._call(
            "autoclaim",
            self._client.xautoclaim(self.key, GROUP, consumer, min_idle_ms, start_id=start, count=count),
        )
        next_start, rows = reply[0], reply[1]
        return str(next_start), [entry_id for entry_id, _fields in rows]

    async def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._call("ack", self._client.xack(self.key, GROUP, *entry_ids))

    async def pending(self) -> int:
        """How many entries are handed out and not acknowledged."""
        info = await self._call("pending", self._client.xpending(self.key, GROUP))
        return int(info["pending"])

    async def undelivered_after(self) -> str:
        """The group's last delivered entry ID: the entries after it are not handed out yet."""
        for group in await self._call("groups", self._client.xinfo_groups(self.key)):
            if group.get("name") == GROUP:
                return str(group["last-delivered-id"])
        return "0-0"

    async def pending_ids(self, count: int) -> list[str]:
        """The IDs of the (oldest ``count``) entries handed out and not acknowledged."""
        rows = await self._call("pending", self._client.xpending_range(self.key, GROUP, "-", "+", count))
        return [str(row["message_id"]) for row in rows]

    # ------------------------------------------------------------------ snapshots and trimming

    async def report_position(self, instance: str, entry_id: str) -> None:
        """Say which entry this instance applied last (the trim keeps every entry after it)."""
        await self._call("report", self._report(keys=[self.positions_key], args=[instance, entry_id]))

    async def forget_position(self, instance: str) -> None:
        await self._call("report", self._client.hdel(self.positions_key, instance))

    async def take_snapshot_turn(self, instance: str, ttl_ms: int) -> bool:
        """Whether this instance may write the next snapshot (one writer at a time)."""
        return bool(await self._call("lock", self._client.set(self.lock_key, instance, nx=True, px=ttl_ms)))

    async def end_snapshot_turn(self, instance: str) -> None:
        await self._call("lock", self._unlock(keys=[self.lock_key], args=[instance]))

    async def snapshot_meta(self) -> dict[str, str] | None:
        """The newest snapshot's position, format, configuration hash and write time (None: none)."""
        values = await self._call(
            "snapshot", self._client.hmget(self.snapshot_key, "ms", "seq", "format", "config", "written")
        )
        if values[0] is None:
            return None
        return {
            "position": f"{values[0]}-{values[1]}",
            "format": str(values[2]),
            "config": str(values[3]),
            "written": str(values[4]),
        }

    async def read_snapshot(self) -> tuple[dict[str, str], bytes] | None:
        """The newest snapshot: its meta (as :meth:`snapshot_meta`) and its state, read together."""
        values = await self._call(
            "snapshot",
            self._raw.hmget(self.snapshot_key, "ms", "seq", "format", "config", "written", "state"),
            extra_s=10.0,
        )
        if values[0] is None or values[5] is None:
            return None
        ms, seq, fmt, config, written = (v.decode() for v in values[:5])
        meta = {"position": f"{ms}-{seq}", "format": fmt, "config": config, "written": written}
        return meta, bytes(values[5])

    async def write_snapshot(self, position: str, fmt: int, config: str, written_ms: int, state: bytes) -> bool:
        """Store a snapshot at ``position`` (atomically, only if newer than the one there)."""
        ms, seq = position.split("-")
        reply = await self._call(
            "snapshot",
            self._write_snapshot(keys=[self.snapshot_key], args=[ms, seq, fmt, config, written_ms, state]),
            extra_s=10.0,
        )
        return bool(int(reply[0]))

    async def trim(self, stale_ms: int) -> tuple[int, str | None]:
        """Trim the log to the oldest entry still needed (see the script): (removed, mark)."""
        removed, mark = await self._call(
            "trim",
            self._trim(keys=[self.key, self.snapshot_key, self.mark_key, self.positions_key], args=[GROUP, stale_ms]),
        )
        return int(removed), (str(mark) or None)

    async def trim_mark(self) -> str | None:
        mark = await self._call("trim", self._client.get(self.mark_key))
        return None if mark is None else str(mark)


def _fields(flat: list[Any]) -> dict[str, str]:
    """An entry's fields from a script's reply (a flat list: name, value, ...)."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
