"""``smtp_push``: an SMTP server the contact center's mail relay pushes customer e-mail to.

Each message becomes one e-mail offer (DESIGN section 8), and the SMTP reply to its ``DATA``
is the decision, given only once the offer is journaled:

* ``250 2.0.0`` — assigned to an agent, waiting in a ``wait`` queue, or a repeat of a mail
  already taken (same Message-ID): the relay may forget it;
* ``451 4.3.2`` — refused for capacity (every eligible agent full, not ready, offline, or
  the offer timed out): the relay keeps the mail and retries later, and the retry is a new
  offer (offered once, when it is finally taken);
* ``550 5.1.1`` — a recipient that maps to nothing (at ``RCPT``), or an agent the gateway
  does not know; ``554 5.6.0`` — a message the gateway cannot take (no usable content, a
  field the event model refuses); ``552`` — over ``max_message_bytes`` (aiosmtpd's limit);
* ``421 4.3.0`` / ``451 4.3.0`` — the gateway is not ready (store down, shutting down).

Idempotency: the Message-ID (without ``<>``) is the event id and the interaction id, so a
message the relay sends twice (a lost ``250``, a second relay) is offered once. A message
without a Message-ID gets a stable one from its content (``sha256:`` + the hash of the raw
message). A retry of a mail that was refused with ``451`` must become a new offer, not a
``duplicate`` of the refusal: the adapter then submits it under ``<message-id>#<n>`` for
the n-th retry, which is again idempotent (the chain of refusals is remembered for the
gateway's de-duplication window, 24 h by default).

Routing: ``recipients`` maps an address (case-insensitive) to a queue name or
``agent:<id>`` (a targeted offer); other recipients go to ``queue`` if it is set and are
refused at ``RCPT`` otherwise. A message for several recipients is one offer, routed by
the first recipient that maps.

The server runs in the gateway's own event loop (``loop.create_server`` with aiosmtpd's
``SMTP`` protocol; aiosmtpd's ``UnthreadedController`` would try to run the loop itself).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import structlog
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from pydantic import Field, field_validator

from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel
from gateway.notices import Decision, DecisionKind

from .base import Adapter, AdapterConfig, AdapterHost, Capabilities, Health
from .mail import AGENT_PREFIX, RetryChainExhausted, offer_body, parse_message, submit_mail

log = structlog.get_logger("cti_gateway.adapters.smtp_push")

#: rejection reasons that are worth a retry by the relay (a slot may free)
TEMPORARY_REASONS = frozenset(
    {
        "agent_at_capacity",
        "channel_at_capacity",
        "agent_not_ready",
        "agent_offline",
        "no_agent_available",
        "offer_timeout",
        "queue_timeout",
    }
)


class SmtpPushConfig(AdapterConfig):
    """Settings of an ``smtp_push`` vendor."""

    listen_host: str = Field(default="127.0.0.1", min_length=1)
    listen_port: int = Field(default=2525, ge=1, le=65535)
    #: recipient address -> queue name, or ``agent:<id>`` for a targeted offer
    recipients: dict[str, str] = Field(default_factory=dict)
    #: queue for recipients not in ``recipients`` (none: those are refused at RCPT)
    queue: str | None = Field(default=None, min_length=1)
    #: larger messages are refused with 552 (aiosmtpd's DATA size limit)
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    #: the name the server greets with
    hostname: str = Field(default="cti-gateway", min_length=1, max_length=255)

    @field_validator("recipients")
    @classmethod
    def _routes(cls, value: dict[str, str]) -> dict[str, str]:
        routes: dict[str, str] = {}
        for address, target in value.items():
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
            if not target or target == AGENT_PREFIX:
                raise ValueError(f"{address!r} maps to nothing (a queue name or agent:<id>)")
            routes[address.strip().lower()] = target
        return routes

    def references(self) -> Any:
        for address, target in self.recipients.items():
            if target.startswith(AGENT_PREFIX):
                yield ("recipients", address), "agent", target[len(AGENT_PREFIX) :]
            else:
                yield ("recipients", address), "queue", target
        if self.queue is not None:
            yield ("queue",), "queue", self.queue


class SmtpPushAdapter(Adapter):
    """See the module documentation."""

    name: ClassVar[str] = "smtp_push"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})
    # a transfer between agents needs nothing from the relay: the mail is already here
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=True)
    Config: ClassVar[type[AdapterConfig]] = SmtpPushConfig

    config: SmtpPushConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, SmtpPushConfig):
            raise TypeError(f"SmtpPushAdapter needs a SmtpPushConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._server: asyncio.Server | None = None
        self._handler = _Handler(self)

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one chosen for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.config.listen_port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        config = self.config
        self._server = await loop.create_server(
            lambda: SMTP(
                self._handler,
                hostname=config.hostname,
                data_size_limit=config.max_message_bytes,
                decode_data=False,
                timeout=300,
            ),
            config.listen_host,
            config.listen_port,
        )
        self._set_health(Health.UP, f"smtp://{config.listen_host}:{self.port}")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("smtp_close_slow", vendor=self.vendor)
        self._set_health(Health.DOWN, "stopped")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "listen": f"{self.config.listen_host}:{self.port}"}

    # -- routing -----------------------------------------------------------------------

    def route_of(self, address: str) -> str | None:
        """The queue or ``agent:<id>`` for a recipient address (None: refused)."""
        return self.config.recipients.get(address.strip().lower(), self.config.queue)

    async def offer(self, envelope: Envelope) -> str:
        """Turn one received message into an offer; returns the SMTP reply."""
        raw = envelope.original_content or b""
        if not isinstance(raw, bytes) or not raw.strip():
            return "554 5.6.0 empty message"
        route = next((r for r in map(self.route_of, envelope.rcpt_tos) if r is not None), None)
        if route is None:  # RCPT refused them all; aiosmtpd does not reach DATA then
            return "554 5.1.1 no valid recipient"
        try:
            message = parse_message(raw)
            body = offer_body(
                message, raw, route, envelope_sender=envelope.mail_from, recipients=list(envelope.rcpt_tos)
            )
        except InvalidEvent as exc:
            return f"554 5.6.0 {_reply_text(exc.message)}"
        except Exception as exc:  # a message the parser cannot read at all
            log.warning("smtp_unreadable_message", vendor=self.vendor, error=f"{type(exc).__name__}: {exc}")
            return "554 5.6.0 the message cannot be read"
        message_id = body["event_id"]
        with structlog.contextvars.bound_contextvars(vendor=self.vendor, message_id=message_id):
            return await self._submit_chain(body)

    async def _submit_chain(self, body: dict[str, Any]) -> str:
        try:
            decision = await submit_mail(self.host, self.vendor, body)
        except InvalidEvent as exc:
            log.info("smtp_refused", reason="invalid_event", field=exc.field, error=exc.message)
            return f"554 5.6.0 {_reply_text(f'{exc.field}: {exc.message}')}"
        except RetryChainExhausted:
            log.error("smtp_retry_chain_exhausted")
            return "451 4.3.2 too many refused attempts, try again later"
        except GatewayError as exc:
            if exc.code == "interaction_already_open":
                # the mail is here already (a resend while its first copy is being worked on)
                log.info("smtp_duplicate_open")
                return "250 2.0.0 Ok: already received"
            if exc.retryable or exc.code == "not_ready":
                log.warning("smtp_deferred", code=exc.code, error=str(exc))
                return "451 4.3.0 the gateway is not ready, try again later"
            log.warning("smtp_refused", code=exc.code, error=str(exc))
            return f"554 5.6.0 {_reply_text(exc.code)}"
        return self._reply(decision)

    def _reply(self, decision: Decision) -> str:
        if decision.kind is DecisionKind.ASSIGNED:
            log.info("smtp_assigned", agent_id=decision.agent_id, session_id=decision.session_id)
            return f"250 2.0.0 Ok: assigned as {decision.session_id}"
        if decision.kind is DecisionKind.QUEUED:
            log.info("smtp_queued")
            return "250 2.0.0 Ok: queued"
        if decision.kind is DecisionKind.REJECTED:
            reason = decision.reason or "rejected"
            log.info("smtp_rejected", reason=reason)
            if reason in TEMPORARY_REASONS:
                return f"451 4.3.2 {reason}: no agent can take it now, try again later"
            if reason == "unknown_agent":
                return f"550 5.1.1 {reason}"
            return f"554 5.6.0 {reason}"
        return "250 2.0.0 Ok"


class _Handler:
    """aiosmtpd handler hooks (coroutines, called by the SMTP protocol)."""

    def __init__(self, adapter: SmtpPushAdapter) -> None:
        self.adapter = adapter

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.adapter.route_of(address) is None:
            return "550 5.1.1 no such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: SmtpSession, envelope: Envelope
    ) -> str:
        if not self.adapter.host.ready:
            return "451 4.3.0 the gateway is not ready, try again later"
        try:
            return await self.adapter.offer(envelope)
        except Exception:  # never a dropped connection: the relay keeps the mail
            log.exception("smtp_offer_failed", vendor=self.adapter.vendor)
            return "451 4.3.0 internal error, try again later"


def _reply_text(text: str) -> str:
    """A reply line: printable ASCII, short."""
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return cleaned[:200] or "refused"
