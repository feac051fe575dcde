"""The generic JSON webhook adapter (DESIGN section 6, "Generic webhook event body").

One normalized event per request: ``POST /v1/vendors/{vendor}/events`` (the gateway mounts
:meth:`WebhookAdapter.routes` under ``/v1/vendors/{vendor}``). The request is checked in
this order, and nothing reaches :meth:`AdapterHost.submit` unless every check passed:

=====  =====================  ==========================================================
 413   ``body_too_large``     ``Content-Length`` above ``max_body_bytes`` (64 KiB), or more
                              than that many bytes arrive (chunked uploads are counted)
 401   ``bad_signature``      ``X-Gateway-Timestamp`` missing, not integer Unix seconds, or
                              more than ``tolerance_s`` away from the gateway's clock
                              (stale or future: a replay); ``X-Gateway-Signature`` missing
                              or not ``sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``
                              under the vendor's ``secret``. Checked before the JSON is
                              parsed.
 408   ``request_timeout``    the body did not arrive within ``body_timeout_s``
 400   ``invalid_event``      not JSON, or not a valid event; ``field`` names the culprit
                              (``body`` for malformed JSON, ``vendor`` when the body names
                              one: the vendor is the URL's); also text that is not valid
                              Unicode (a lone surrogate) anywhere, unknown fields included,
                              and what :func:`~gateway.events.check_body` refuses
 503   ``not_ready``          the gateway takes no events now (store down, shutting down,
                              rebuilding its state after a journal failure)
=====  =====================  ==========================================================

Then ``decision = await host.submit(event)``, which returns once the event is journaled:
200 for ``assigned`` / ``duplicate`` / ``queued`` / ``accepted``, 409 for ``rejected``, the
body being :meth:`Decision.as_dict`. A :class:`~gateway.errors.GatewayError` from ``submit``
is answered by :func:`gateway.api.errors.error_response`; anything else is logged and
answered 500 ``internal_error``: a client never sees a traceback.

With ``callback_url`` set, late notices (:class:`~gateway.notices.ToVendor`: a decision
taken after the synchronous answer, accepted, transferred, ended, chat replies) are POSTed
there as ``{"action", "interaction_id", "event_id", "data"}``, signed like inbound requests,
from a bounded queue by one background sender: each request has a timeout; failures are
retried with capped, jittered exponential backoff up to ``callback_max_attempts`` times. A
full queue refuses the notice (:class:`~adapters.base.DeliveryError`, retryable) rather
than dropping an older one. Only then can the vendor carry a transfer
(:meth:`WebhookAdapter.capabilities_for`: ``can_transfer``). Without ``callback_url``
transfers are refused ``vendor_unsupported`` and the other notices are counted as not
sent (:meth:`~WebhookAdapter.describe`); :meth:`~WebhookAdapter.warnings` says so, once at
start and in ``/readyz``.

Health is the intake's: UP from :meth:`~WebhookAdapter.start` to
:meth:`~WebhookAdapter.stop`. A failing callback receiver does not make the gateway
unready (it still takes every event; another instance would fail the same way): the
callbacks' own state (``ok`` / ``failing``, the last problem, counts) is in
:meth:`~WebhookAdapter.describe`, and logged once when it starts failing
(``callback_down``) and once when it recovers (``callback_up``).

Unknown event fields (top level or inside ``customer``) are ignored and reported to the
host (:meth:`AdapterHost.unknown_fields`, a metric per vendor) unless ``strict: true``,
which refuses them as 400 ``invalid_event`` naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import Enum
from typing import Any, ClassVar

import aiohttp
import structlog
from aiohttp import web
from pydantic import AnyHttpUrl, ConfigDict, Field, SecretStr, field_validator

from gateway import fastjson
from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel, check_body, drop_unknown_fields, parse_event
from gateway.notices import DecisionKind, ToVendor

from .base import (
    Adapter,
    AdapterConfig,
    AdapterHost,
    Capabilities,
    DeliveryError,
    Health,
    Route,
)
from .http import Refused, answer_failure, read_body

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookAdapter",
    "WebhookConfig",
    "sign",
    "signed_headers",
]

log = structlog.get_logger(__name__)

TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
#: The contract's body limit (DESIGN section 6): a vendor may lower it, never raise it.
MAX_BODY_BYTES = 64 * 1024
MIN_SECRET_CHARS = 16

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
#: Statuses after which a callback is tried again (others in 4xx are final refusals).
_RETRY_STATUSES = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers that sign ``body`` at ``timestamp`` (Unix seconds), JSON content type included."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


class WebhookConfig(AdapterConfig):
    """Settings of a ``webhook`` vendor (the keys beside ``name`` and ``adapter``)."""

    # merged with AdapterConfig's: a refused secret must not be echoed by ValidationError either
    model_config = ConfigDict(hide_input_in_errors=True)

    #: HMAC key shared with the vendor; never shown in reprs, logs or error messages.
    secret: SecretStr
    #: how far ``X-Gateway-Timestamp`` may be from the gateway's clock, either way
    tolerance_s: int = Field(default=300, ge=1, le=3600)
    #: request body limit; the contract's 64 KiB unless lowered
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    #: a slow client gets 408 after this long without the whole body
    body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: refuse events with fields the gateway does not know (400 ``invalid_event``); by
    #: default such fields (top level and inside ``customer``) are ignored and counted
    strict: bool = False
    #: where late notices are POSTed (none: the vendor learns only the synchronous answers)
    callback_url: AnyHttpUrl | None = None
    #: timeout of one callback request, connect to last byte
    callback_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: notices waiting to be sent; more are refused (DeliveryError, retryable)
    callback_queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    #: tries per notice, the first included, before it is given up (logged ``callback_failed``)
    callback_max_attempts: int = Field(default=5, ge=1, le=100)
    #: wait before the second try; doubles per try up to ``callback_backoff_max_s``, jittered
    callback_backoff_s: float = Field(default=0.5, gt=0, le=60)
    callback_backoff_max_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return value


@dataclass(slots=True)
class _Callback:
    notice: ToVendor
    body: bytes


class WebhookAdapter(Adapter):
    """The generic JSON webhook (see the module documentation)."""

    name: ClassVar[str] = "webhook"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE, Channel.CHAT, Channel.EMAIL})
    #: without a ``callback_url``; with one it can transfer too (:meth:`capabilities_for`)
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=False)
    Config: ClassVar[type[AdapterConfig]] = WebhookConfig

    #: what does not reach a vendor without a callback URL (the start warning names it)
    NOT_SENT_WITHOUT_CALLBACK = (
        "transfers are refused (vendor_unsupported); late decisions (after waiting in a queue, "
        "a re-route, a timeout), accepts, ends and chat replies do not reach the vendor"
    )

    @classmethod
    def capabilities_for(cls, config: AdapterConfig) -> Capabilities:
        """A webhook vendor can carry a transfer only when there is a callback URL to tell it."""
        has_callback = isinstance(config, WebhookConfig) and config.callback_url is not None
        return replace(cls.capabilities, can_transfer=has_callback)

    config: WebhookConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, WebhookConfig):
            raise TypeError(f"WebhookAdapter needs a WebhookConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._secret = config.secret.get_secret_value().encode("utf-8")
        self._queue: asyncio.Queue[_Callback] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        #: the notice the sender is working on (sent, retried or backing off)
        self._in_flight: _Callback | None = None
        #: callbacks: "ok" until a notice is given up or a try fails, then "failing" until one is sent
        self._callbacks_failing = False
        self._last_problem: str | None = None
        self._sent = 0
        self._given_up = 0
        #: notices not sent for want of a callback URL, by action
        self._not_sent: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------

    def warnings(self) -> list[str]:
        if self.config.callback_url is None:
            return [f"no callback_url: {self.NOT_SENT_WITHOUT_CALLBACK}"]
        return []

    def routes(self) -> list[Route]:
        return [Route("POST", "/events", self.handle_event)]

    async def start(self) -> None:
        if self.config.callback_url is not None and self._sender is None:
            self._queue = asyncio.Queue(maxsize=self.config.callback_queue_size)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.callback_timeout_s),
            )
            self._sender = asyncio.create_task(self._send_loop(), name=f"webhook-callbacks-{self.vendor}")
        self._set_health(Health.UP)

    async def stop(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.wait([sender])  # never raises the task's outcome; our own cancellation still propagates
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
        queue, self._queue = self._queue, None
        dropped = (queue.qsize() if queue is not None else 0) + (self._in_flight is not None)
        self._in_flight = None
        if dropped:
            log.warning("callback_notices_dropped", vendor=self.vendor, count=dropped)
        self._set_health(Health.DOWN, "stopped")

    # -- inbound -----------------------------------------------------------------------

    async def handle_event(self, request: web.Request) -> web.Response:
        """``POST .../events``: one signed event in, the decision out."""
        # vendor, then interaction_id / event_id once known; all reset when the request ends
        tokens = dict(structlog.contextvars.bind_contextvars(vendor=self.vendor))
        try:
            return await self._handle_event(request, tokens)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return answer_failure(exc, log, "webhook")
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _handle_event(self, request: web.Request, tokens: dict[str, Any]) -> web.Response:
        routed_vendor = request.match_info.get("vendor")
        if routed_vendor is not None and routed_vendor != self.vendor:
            raise Refused(404, "unknown_vendor", f"no vendor {routed_vendor!r} here")
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, "body_too_large", f"the body exceeds {limit} bytes")
        now = self.host.clock.now()
        timestamp = self._fresh_timestamp(request, now)
        body = await read_body(request, limit, self.config.body_timeout_s)
        self._verify(request, timestamp, body)
        data = _loads(body)
        if isinstance(data, dict):
            check_body(data)  # unknown fields included: invalid Unicode anywhere is refused
        ignored: list[str] = []
        if not self.config.strict:
            data, ignored = drop_unknown_fields(data)
        # (checked above, the whole body: what drop_unknown_fields kept is part of it)
        event = parse_event(data, vendor=self.vendor, received_at=now, checked=True)
        if ignored:
            self.host.unknown_fields(self.vendor, ignored)
        tokens.update(
            structlog.contextvars.bind_contextvars(interaction_id=event.interaction_id, event_id=event.event_id)
        )
        if not self.host.ready:
            raise GatewayError("the gateway takes no events now; retry later", code="not_ready", retryable=True)
        decision = await self.host.submit(event)
        status = 409 if decision.kind is DecisionKind.REJECTED else 200
        log.info("webhook_event", event_type=event.type.value, decision=decision.kind.value, status=status)
        return fastjson.json_response(decision.as_dict(), status=status)

    def _fresh_timestamp(self, request: web.Request, now: float) -> str:
        raw = request.headers.get(TIMESTAMP_HEADER)
        if raw is None:
            raise Refused(401, "bad_signature", f"{TIMESTAMP_HEADER} header missing")
        if not _TIMESTAMP.fullmatch(raw):
            raise Refused(401, "bad_signature", f"{TIMESTAMP_HEADER} must be integer Unix seconds")
        if abs(now - int(raw)) > self.config.tolerance_s:
            raise Refused(401, "bad_signature", f"{TIMESTAMP_HEADER} is more than {self.config.tolerance_s} s away")
        return raw

    def _verify(self, request: web.Request, timestamp: str, body: bytes) -> None:
        given = request.headers.get(SIGNATURE_HEADER)
        if given is None:
            raise Refused(401, "bad_signature", f"{SIGNATURE_HEADER} header missing")
        match = _SIGNATURE.fullmatch(given)
        expected = hmac.new(self._secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
        # compare even a malformed header, so the answer takes the same time either way
        candidate = match.group(1).lower() if match else "0" * 64
        if not hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii")) or match is None:
            raise Refused(401, "bad_signature", "the signature does not match")

    # -- outbound (late notices) ---------------------------------------------------------

    async def deliver(self, notice: ToVendor) -> None:
        """Queue ``notice`` for the callback URL (nothing to do without one).

        Raises :class:`DeliveryError`: retryable when the queue is full or the adapter is
        not started, not retryable for a notice that cannot be encoded as JSON.
        """
        if self.config.callback_url is None:
            # said once at start (warnings()); counted here, shown by describe() in /readyz
            self._not_sent[notice.action.value] += 1
            log.debug("callback_not_configured", vendor=self.vendor, action=notice.action.value)
            return
        if self._queue is None:
            raise DeliveryError(f"webhook {self.vendor} is not started", retryable=True)
        payload = {
            "action": notice.action.value,
            "interaction_id": notice.interaction_id,
            "event_id": notice.event_id,
            "data": notice.data,
        }
        try:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            raise DeliveryError(f"notice cannot be encoded as JSON: {exc}", retryable=False) from None
        try:
            self._queue.put_nowait(_Callback(notice, body))
        except asyncio.QueueFull:
            log.warning(
                "callback_queue_full",
                vendor=self.vendor,
                interaction_id=notice.interaction_id,
                action=notice.action.value,
                size=self._queue.maxsize,
            )
            raise DeliveryError(
                f"webhook {self.vendor}: {self._queue.maxsize} notices already wait for the callback URL",
                retryable=True,
            ) from None

    async def _send_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            item = self._in_flight = await queue.get()
            try:
                await self._send(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the sender
                log.exception("callback_internal_error", vendor=self.vendor)
            self._in_flight = None
            queue.task_done()

    async def _send(self, item: _Callback) -> None:
        config = self.config
        notice = item.notice
        context = {"vendor": self.vendor, "interaction_id": notice.interaction_id, "action": notice.action.value}
        for attempt in range(1, config.callback_max_attempts + 1):
            problem, retry_after, final = await self._post(item.body)
            if problem is None:
                self._sent += 1
                self._callbacks_ok()
                log.debug("callback_sent", attempt=attempt, **context)
                return
            self._callbacks_down(problem)
            if final or attempt == config.callback_max_attempts:
                self._given_up += 1
                log.error("callback_failed", attempts=attempt, problem=problem, **context)
                return
            delay = min(config.callback_backoff_max_s, config.callback_backoff_s * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = min(config.callback_backoff_max_s, max(delay, retry_after))
            log.warning("callback_retry", attempt=attempt, problem=problem, delay_s=round(delay, 3), **context)
            await asyncio.sleep(delay)

    def _callbacks_down(self, problem: str) -> None:
        self._last_problem = problem
        if not self._callbacks_failing:
            self._callbacks_failing = True
            log.warning("callback_down", vendor=self.vendor, url=_shown(self.config.callback_url), problem=problem)

    def _callbacks_ok(self) -> None:
        if self._callbacks_failing:
            self._callbacks_failing = False
            log.info("callback_up", vendor=self.vendor, url=_shown(self.config.callback_url))

    async def _post(self, body: bytes) -> tuple[str | None, float | None, bool]:
        """One try: ``(problem or None, Retry-After seconds, whether the refusal is final)``."""
        assert self._session is not None and self.config.callback_url is not None
        # signed anew for each try: a retry after a long backoff must not arrive stale
        headers = signed_headers(self.config.secret.get_secret_value(), int(self.host.clock.now()), body)
        try:
            async with self._session.post(str(self.config.callback_url), data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None, None, False
                final = 400 <= response.status < 500 and response.status not in _RETRY_STATUSES
                return f"HTTP {response.status}", _retry_after(response.headers.get("Retry-After")), final
        except TimeoutError:
            return f"no answer within {self.config.callback_timeout_s} s", None, False
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}", None, False

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.config.callback_url is None:
            described["callbacks"] = {"state": "off", "not_sent": dict(sorted(self._not_sent.items()))}
        else:
            described["callbacks"] = {
                "state": "failing" if self._callbacks_failing else "ok",
                "queued": self._queue.qsize() if self._queue is not None else 0,
                "sent": self._sent,
                "given_up": self._given_up,
                "last_problem": self._last_problem,
            }
        described["strict"] = self.config.strict
        return described


def _loads(body: bytes) -> Any:
    try:
        return fastjson.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "not valid JSON"
        raise InvalidEvent("body", f"malformed JSON: {message}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _shown(url: AnyHttpUrl | None) -> str:
    """The callback URL for a log line: no user info, query or fragment (they may hold secrets)."""
    if url is None:
        return ""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path or ''}"


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
