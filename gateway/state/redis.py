"""The shared state store on Redis: agent presence and capacity counters for several gateway
instances, every change one atomic Lua script (``gateway/state/lua/``).

Each agent is one hash, ``{prefix}agent:{id}`` with the fields ``presence``, ``reason``,
``sessions``, ``units``, ``voice``, ``chat``, ``email``, ``manual`` and ``version``; the set
``{prefix}agents`` lists the agents. ``reserve.lua`` applies the rules of
:func:`gateway.capacity.check` (same order, same reasons) and increments the counters in
the same server-side step, so whichever instances race, no cap is ever exceeded: Redis runs
one script at a time. ``occupy.lua`` counts a session without the rules (restoring) and
releases one (refusing to release what is not held); ``presence.lua`` sets presence.
A reservation may name its session (``{prefix}held:{id}``: session id -> channel and
weight): then reserving it again does not count it twice and ``release.lua`` gives it
back exactly once, with the weight it was taken with, so the counters equal the held
sessions whatever is retried or delivered twice.

The operations are those of :class:`gateway.state.base.StateStore` with the same results,
but asynchronous (``redis.asyncio``): a network round trip must not block the event loop.
See the README ("Running several instances") for how the runtime is to use them.

Failures: every call is bounded by ``timeout_s``; an unreachable, loading or failing server
raises :class:`StoreUnavailable` (``not_ready``, retryable: vendors get 503 and retry). The
client reconnects by itself on the next call (no restart), and scripts missing after a
server restart are loaded again (EVALSHA falls back to SCRIPT LOAD). The outage is logged
once and the recovery once. Messages never carry the URL (it may hold a password).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ..capacity import Load, Presence, Reason
from ..config import CapacityProfile
from ..errors import GatewayError
from ..events import Channel
from ..store_url import RedisUrl, parse_redis_url
from .base import AgentState

__all__ = ["NotHeld", "RedisStateStore", "StoreUnavailable"]

log = structlog.get_logger("cti_gateway.state.redis")

_FIELDS = ("presence", "reason", "sessions", "units", "voice", "chat", "email", "manual", "version")


class StoreUnavailable(GatewayError):
    """The shared store cannot answer now (API: 503 ``not_ready``; retry later)."""

    code = "not_ready"
    retryable = True


class NotHeld(GatewayError):
    """A release of a session the agent does not hold (a bug of the caller: nothing changed)."""

    code = "not_held"


def _script(name: str) -> str:
    return resources.files("gateway.state").joinpath("lua", name).read_text(encoding="utf-8")


def _state(reply: Sequence[Any]) -> AgentState:
    """An :class:`AgentState` from a script's reply (fields 1..9; field 0 is the reason)."""
    presence, why, sessions, units, voice, chat, email, manual, version = reply[1:10]
    return AgentState(
        presence=Presence(presence),
        reason=why or None,
        load=Load(
            sessions=int(sessions),
            units=int(units),
            voice=int(voice),
            chat=int(chat),
            email=int(email),
            manual=int(manual),
        ),
        version=int(version),
    )


class RedisStateStore:
    """Agent presence and counters in one Redis database, shared by every instance."""

    def __init__(
        self,
        where: RedisUrl,
        *,
        prefix: str = "cti:",
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        self.where = where
        self.prefix = prefix
        self.timeout_s = timeout_s
        #: whether the last call reached the server (for /readyz and /metrics)
        self.healthy = True
        self.failures = 0
        # a blocking pool: a burst of calls waits for a free connection (bounded by the
        # call's timeout) instead of failing with "too many connections"
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
            max_connections=max_connections,
            timeout=timeout_s,
            decode_responses=True,
        )
        if where.tls:
            pool.connection_class = aioredis.SSLConnection
        self._pool = pool
        self._client = aioredis.Redis(connection_pool=pool)
        self._reserve = self._client.register_script(_script("reserve.lua"))
        self._count = self._client.register_script(_script("occupy.lua"))
        self._release = self._client.register_script(_script("release.lua"))
        self._presence = self._client.register_script(_script("presence.lua"))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStateStore:
        """A store for ``redis://[user:password@]host[:port][/db]`` (``rediss://``: TLS)."""
        return cls(parse_redis_url(url), **options)

    def __repr__(self) -> str:  # never the password
        return f"RedisStateStore({self.where.describe()}, prefix={self.prefix!r})"

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()  # a pool given to the client is the giver's to close

    def _key(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}"

    def _held_key(self, agent_id: str) -> str:
        return f"{self.prefix}held:{agent_id}"

    @property
    def _agents_key(self) -> str:
        return f"{self.prefix}agents"

    async def _call(self, what: str, coro: Any) -> Any:
        """Await one Redis call, bounded; connection trouble becomes :class:`StoreUnavailable`."""
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                result = await coro
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith("NOTHELD"):
                raise NotHeld(str(exc).removeprefix("NOTHELD ")) from None
            if "LOADING" in str(exc) or "BUSY" in str(exc):
                self._down(what, exc)
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError) as exc:
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

    # ------------------------------------------------------------------ operations

    async def ping(self) -> bool:
        """Whether the server answers now (never raises)."""
        try:
            return bool(await self._call("ping", self._client.ping()))
        except GatewayError:
            return False

    async def get(self, agent_id: str) -> AgentState:
        """The agent's state (a new agent starts offline with nothing in use)."""
        values = await self._call("get", self._client.hmget(self._key(agent_id), list(_FIELDS)))
        presence, why, *numbers = values
        return _state(["", presence or "offline", why or "", *(n or 0 for n in numbers)])

    async def agent_ids(self) -> list[str]:
        return sorted(await self._call("agent_ids", self._client.smembers(self._agents_key)))

    async def reserve(
        self, agent_id: str, profile: CapacityProfile, channel: Channel, *, session_id: str | None = None
    ) -> tuple[Reason | None, AgentState]:
        """Take one ``channel`` session on the agent iff the capacity rules allow it (atomic).

        With ``session_id`` the reservation is that session's: reserving it again (a retry
        after a lost answer, the same event on another instance) grants it without counting
        it twice, and :meth:`release_session` gives it back exactly once."""
        cap = profile.channels.get(channel, -1)
        reply = await self._call(
            "reserve",
            self._reserve(
                keys=[self._key(agent_id), self._agents_key, self._held_key(agent_id)],
                args=[
                    channel.value,
                    profile.weight(channel),
                    cap,
                    profile.max_sessions,
                    profile.unit_limit,
                    profile.reserved_inbound,
                    agent_id,
                    session_id or "",
                ],
            ),
        )
        return (Reason(reply[0]) if reply[0] else None), _state(reply)

    async def occupy(
        self, agent_id: str, profile: CapacityProfile, channel: Channel, *, session_id: str | None = None
    ) -> AgentState:
        """Count one more ``channel`` session without the rules (restoring sessions); a
        ``session_id`` already held is not counted twice."""
        return await self._delta("occupy", agent_id, profile, channel, 1, session_id or "")

    async def release(self, agent_id: str, profile: CapacityProfile, channel: Channel) -> AgentState:
        """Give back one anonymous ``channel`` session (:class:`NotHeld` if there is none:
        nothing changes). Sessions reserved with an id are given back by :meth:`release_session`."""
        return await self._delta("release", agent_id, profile, channel, -1, "")

    async def release_session(self, agent_id: str, session_id: str) -> tuple[bool, AgentState]:
        """Give back the session ``session_id`` with the channel and weight it was reserved
        with; ``(False, state)`` if it is not held (already released: nothing changes)."""
        reply = await self._call(
            "release", self._release(keys=[self._key(agent_id), self._held_key(agent_id)], args=[session_id])
        )
        return bool(int(reply[10])), _state(reply)

    async def held(self, agent_id: str) -> dict[str, Channel]:
        """The sessions reserved on the agent with an id: session id -> channel."""
        entries = await self._call("held", self._client.hgetall(self._held_key(agent_id)))
        return {sid: Channel(entry.split(" ", 1)[0]) for sid, entry in entries.items()}

    async def reconcile(
        self, agent_id: str, profile: CapacityProfile, open_sessions: dict[str, Channel]
    ) -> tuple[list[str], list[str]]:
        """Make the agent's named reservations those of ``open_sessions`` (session id ->
        channel, what the journals hold open): a held session no journal knows (its
        instance died between reserving and journaling) is released, an open session not
        held is counted (without the rules: it exists). Each step is one atomic script and
        the whole is idempotent, so a reconcile cut short is finished by running it again.
        Returns ``(released, occupied)`` session ids."""
        held = await self.held(agent_id)
        released = [sid for sid in sorted(held) if sid not in open_sessions]
        occupied = [sid for sid in sorted(open_sessions) if sid not in held]
        for sid in released:
            await self.release_session(agent_id, sid)
        for sid in occupied:
            await self.occupy(agent_id, profile, open_sessions[sid], session_id=sid)
        if released or occupied:
            log.info("store_reconciled", agent_id=agent_id, released=released, occupied=occupied)
        return released, occupied

    async def _delta(
        self, what: str, agent_id: str, profile: CapacityProfile, channel: Channel, delta: int, session_id: str
    ) -> AgentState:
        reply = await self._call(
            what,
            self._count(
                keys=[self._key(agent_id), self._agents_key, self._held_key(agent_id)],
                args=[channel.value, profile.weight(channel), delta, agent_id, session_id],
            ),
        )
        return _state(reply)

    async def set_presence(self, agent_id: str, presence: Presence, reason: str | None) -> AgentState:
        reply = await self._call(
            "set_presence",
            self._presence(keys=[self._key(agent_id), self._agents_key], args=[presence.value, reason or "", agent_id]),
        )
        return _state(reply)
