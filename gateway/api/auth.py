"""Who is calling: bearer tokens, principals, access rules and a per-principal rate limit.

Tokens
    ``Authorization: Bearer <token>``, or ``?token=<token>`` for clients that cannot set a
    header (a browser's ``WebSocket``). When both are present the header wins; a present but
    malformed ``Authorization`` header is refused (no fall-back to the query). Mind that a
    ``?token=`` URL may end up in proxy and access logs: prefer the header where possible.

    The configuration holds only the hex SHA-256 of each token (``server.supervisor_token_sha256``,
    ``agents[].token_sha256``). The presented token is hashed, the configured hashes are
    looked up by that hash (a dict: the same cost with 10 agents or 100,000), and the one
    found (or a dummy, when none is) is compared with :func:`hmac.compare_digest`. Every
    token, right or wrong, costs one SHA-256, one lookup and one constant-time comparison,
    so the time taken says nothing about how close a guess was: a caller cannot steer the
    SHA-256 of its guesses towards a configured hash, so where the lookup lands tells it
    nothing either. A token whose hash is configured twice (two agents, or an agent and the
    supervisor) is ambiguous and refused; :class:`TokenAuthority` logs such configurations
    at start.

Access rules (DESIGN section 6)
    * no or unknown token: 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``;
    * an **agent** reads and acts on its own agent and its own sessions only (403
      ``forbidden`` otherwise); ``GET /v1/agents`` shows it its colleagues' id, name,
      presence and free capacity, without sessions (for transfers);
    * the **supervisor** reads everything (agents, sessions, reports, the event stream) and
      may also act on behalf of any agent: presence changes, manual sessions and session
      actions (the engine gets ``actor=None``, i.e. no ownership check). This is what a
      team lead needs to put a forgotten agent offline or end a stuck session. The agent
      desktop WebSocket is the one thing it cannot open (it would count as the agent's
      desktop); it watches through ``/v1/events/ws`` instead.
    * ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` need no token (probes
      and Prometheus scrapers usually have none; they expose no personal data).

Rate limit
    One token bucket per principal (the supervisor, or one agent): ``rate`` requests per
    second refilled, ``burst`` at most (defaults 50/s, burst 100). REST requests and agent
    WebSocket messages draw from it; an empty bucket answers 429 ``rate_limited`` with
    ``Retry-After`` (REST) or an ``error`` message of that code (WebSocket).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog
from aiohttp import hdrs

from gateway.config import GatewayConfig
from gateway.errors import GatewayError

__all__ = [
    "ApiError",
    "Principal",
    "RateLimiter",
    "TokenAuthority",
    "forbidden",
    "token_from_request",
]

log = structlog.get_logger("cti_gateway.api.auth")

#: Longer "tokens" are refused without hashing (nobody configures a 4 KiB secret).
MAX_TOKEN_CHARS = 4096

SUPERVISOR: Literal["supervisor"] = "supervisor"
AGENT: Literal["agent"] = "agent"


class ApiError(GatewayError):
    """An error of the HTTP layer itself, with its status and extra response headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.headers = dict(headers or {})
        self.extra = extra

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.extra}


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="cti-gateway"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the supervisor, or one agent."""

    kind: Literal["agent", "supervisor"]
    agent_id: str | None = None

    @property
    def is_supervisor(self) -> bool:
        return self.kind == SUPERVISOR

    @property
    def actor(self) -> str | None:
        """What the engine's ``actor=`` gets: the agent's id, or None (no ownership check)."""
        return None if self.is_supervisor else self.agent_id

    @property
    def key(self) -> str:
        """Rate-limit bucket key."""
        return SUPERVISOR if self.is_supervisor else f"agent:{self.agent_id}"

    def may_act_for(self, agent_id: str) -> bool:
        return self.is_supervisor or self.agent_id == agent_id

    def require_agent(self, agent_id: str) -> None:
        """403 unless the caller is the supervisor or that agent."""
        if not self.may_act_for(agent_id):
            raise forbidden(f"agent {self.agent_id} may not access agent {agent_id}")

    def require_supervisor(self) -> None:
        if not self.is_supervisor:
            raise forbidden("this needs the supervisor token")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenAuthority:
    """Maps a presented token to a :class:`Principal`: one lookup by the token's SHA-256.

    One small tuple per configured token (its hash as configured, the principal's kind and
    agent id: strings the configuration already holds); the :class:`Principal` is made when
    a token is presented. 10,000 agents: ~1 MB (a hash's bytes, two tuples and a principal
    each cost ~2.8 MB)."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        #: hex SHA-256 (lower case) -> (that hash, the principal's kind and agent id), or
        #: (that hash, None, None) when two principals share it: refused
        self._by_hash: dict[str, tuple[str, str | None, str | None]] = {}
        self._count = 0
        seen: dict[str, Principal] = {}
        for sha, principal in entries:
            self._count += 1
            lowered = sha.strip().lower()
            sha = sha if sha == lowered else lowered  # the configuration's own string when it is the same
            if sha in seen:
                log.error(
                    "duplicate_token_hash",
                    first=_describe(seen[sha]),
                    second=_describe(principal),
                    effect="the token is refused for both",
                )
                self._by_hash[sha] = (sha, None, None)
            else:
                seen[sha] = principal
                self._by_hash[sha] = (sha, principal.kind, principal.agent_id)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> TokenAuthority:
        entries: list[tuple[str, Principal]] = []
        if config.server.supervisor_token_sha256:
            entries.append((config.server.supervisor_token_sha256, Principal(SUPERVISOR)))
        for agent in config.agents:
            if agent.token_sha256:
                entries.append((agent.token_sha256, Principal(AGENT, agent.id)))
        return cls(entries)

    def __len__(self) -> int:
        return self._count

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose hash matches ``token`` (None: no match, or ambiguous)."""
        digest = _digest(token)
        stored, kind, agent_id = self._by_hash.get(digest, _NOT_FOUND)
        # the stored hash (or a dummy) compared in constant time, found or not
        if hmac.compare_digest(digest, stored) and kind is not None:
            return Principal(SUPERVISOR) if kind == SUPERVISOR else Principal(AGENT, agent_id)
        return None


#: What a token whose hash is not configured is compared with (no hex digest equals it).
_NOT_FOUND: tuple[str, str | None, str | None] = ("-" * 64, None, None)


def _describe(principal: Principal) -> str:
    return SUPERVISOR if principal.is_supervisor else f"agent {principal.agent_id}"


class RequestHead(Protocol):
    """What a token is read from: an aiohttp request, or the head of a desktop's WebSocket
    handshake read by the gateway's own desktop connection (:mod:`.desktop_socket`)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...


def token_from_request(request: RequestHead) -> str:
    """The bearer token of a request (header, else ``?token=``), or 401."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
    else:
        token = request.query.get("token", "")
        if not token:
            raise unauthorized("a bearer token is required (Authorization: Bearer <token>, or ?token=)")
    if len(token) > MAX_TOKEN_CHARS:
        raise unauthorized("invalid token")
    return token


class RateLimiter:
    """Token buckets, one per principal key: ``rate`` per second, at most ``burst``."""

    def __init__(
        self, rate: float = 50.0, burst: float = 100.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one token; returns 0.0 if allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0  # disabled
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def check(self, key: str) -> None:
        """Take one token or raise 429 ``rate_limited`` (with ``Retry-After``)."""
        wait = self.take(key)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests: at most {self.rate:g}/s (burst {self.burst:g}); retry in {wait:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


def authenticate(request: RequestHead, authority: TokenAuthority, limiter: RateLimiter | None = None) -> Principal:
    """The request's principal (401 if none), after taking one token of its rate limit (429)."""
    token = token_from_request(request)
    principal = authority.authenticate(token)
    if principal is None:
        raise unauthorized("invalid token")
    if limiter is not None:
        limiter.check(principal.key)
    return principal
