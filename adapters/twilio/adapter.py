"""The ``twilio`` adapter: Twilio Voice and TaskRouter webhooks (see the package docstring)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

import structlog
from aiohttp import web
from pydantic import AnyHttpUrl, ConfigDict, Field, SecretStr, field_validator

from gateway.api.errors import json_error
from gateway.errors import ActionError, GatewayError
from gateway.events import Channel, parse_event
from gateway.notices import Decision, DecisionKind

from ..base import Adapter, AdapterConfig, AdapterHost, Capabilities, Health, Route
from ..http import Refused, answer_failure, read_body
from . import mapping, twiml
from .signature import SETTINGS_HEADER, SIGNATURE_HEADER, signature_valid

__all__ = ["TwilioAdapter", "TwilioConfig"]

log = structlog.get_logger(__name__)

#: The contract's webhook body limit (DESIGN section 6); Twilio's requests are a few KiB.
MAX_BODY_BYTES = 64 * 1024
MIN_TOKEN_CHARS = 16
_AGENT_PREFIX = "agent:"
_TARGET = re.compile(r"(client:[^\s<>&]+|sips?:[^\s<>&]+)")
_ROUTE_VALUE = re.compile(r"\S+")


class TwilioConfig(AdapterConfig):
    """Settings of a ``twilio`` vendor (the keys beside ``name`` and ``adapter``)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    #: the account's auth token: the key of ``X-Twilio-Signature``; never shown anywhere
    auth_token: SecretStr
    #: the base URL Twilio calls (what it signs): e.g. ``https://cti.example.com`` or, behind
    #: a proxy that strips a prefix, ``https://example.com/cti``; the request's path and
    #: query string are appended to it to check signatures
    public_url: AnyHttpUrl
    #: called number (``To``) -> gateway queue, or ``agent:ID`` for an agent's direct line
    numbers: dict[str, str] = Field(default_factory=dict)
    #: queue of calls to numbers not in ``numbers`` (none: such calls are rejected)
    queue: str | None = None
    #: agent -> what ``<Dial>`` rings: ``client:NAME`` (``<Client>``) or ``sip:...`` (``<Sip>``);
    #: an agent not listed is rung as ``client:<agent id>``
    agent_targets: dict[str, str] = Field(default_factory=dict)
    #: TaskRouter WorkerSid -> agent (else the worker's ``agent_id`` attribute)
    agent_map: dict[str, str] = Field(default_factory=dict)
    #: how long ``<Dial>`` rings the agent before it counts as not answered (a decline)
    ring_timeout_s: int = Field(default=20, ge=5, le=600)
    #: a waiting caller hears this (``<Play>``) between checks; none: silence (``<Pause>``)
    hold_music_url: AnyHttpUrl | None = None
    #: how often a waiting caller's call asks the gateway again (``<Pause>`` + ``<Redirect>``)
    hold_poll_s: int = Field(default=10, ge=1, le=600)
    #: ``callerId`` of the agent's leg (none: the caller's number, Twilio's default)
    caller_id: str | None = Field(default=None, min_length=1, max_length=64)
    #: request body limit; the contract's 64 KiB unless lowered
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    #: a slow client gets 408 after this long without the whole body
    body_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("auth_token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (Twilio's are 32)")
        return value

    @field_validator("public_url")
    @classmethod
    def _base_only(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.query or value.fragment:
            raise ValueError("must be a base URL without query string or fragment")
        return value

    @field_validator("numbers")
    @classmethod
    def _routes(cls, value: dict[str, str]) -> dict[str, str]:
        for number, target in value.items():
            if not number.strip() or not _ROUTE_VALUE.fullmatch(target) or target == _AGENT_PREFIX:
                raise ValueError(f"{number!r}: a queue name or agent:ID")
        return value

    @field_validator("agent_targets")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for agent, target in value.items():
            if not _TARGET.fullmatch(target):
                raise ValueError(f"{agent!r}: must be client:NAME or sip:URI")
        return value

    def references(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        yield from super().references()
        for number, target in self.numbers.items():
            if target.startswith(_AGENT_PREFIX):
                yield ("numbers", number), "agent", target.removeprefix(_AGENT_PREFIX)
            else:
                yield ("numbers", number), "queue", target

    @property
    def base_url(self) -> str:
        return str(self.public_url).rstrip("/")


class _Ignored(Exception):
    """A signed request the gateway has nothing to do for (answered 204, logged)."""


Handler = Callable[[web.Request, mapping.Params], Awaitable[web.Response]]


class TwilioAdapter(Adapter):
    """Twilio Voice (TwiML) and TaskRouter webhooks, every request signature-checked."""

    name: ClassVar[str] = "twilio"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE, Channel.CHAT, Channel.EMAIL})
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=False)
    Config: ClassVar[type[AdapterConfig]] = TwilioConfig

    config: TwilioConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, TwilioConfig):
            raise TypeError(f"TwilioAdapter needs a TwilioConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._token = config.auth_token.get_secret_value().encode("utf-8")
        self._prefix = f"{config.base_url}/v1/vendors/{quote(vendor, safe='')}"

    def routes(self) -> list[Route]:
        form, xml = "application/x-www-form-urlencoded", twiml.CONTENT_TYPE
        signed = "; signed by Twilio (X-Twilio-Signature under the auth token)"
        return [
            Route(
                "POST",
                "/voice",
                self._wrap("voice", self._voice),
                "Twilio incoming-call URL and the URL of each agent leg and hold loop: answers TwiML" + signed,
                form,
                xml,
            ),
            Route(
                "POST",
                "/status",
                self._wrap("status", self._status),
                "Twilio status callbacks of the caller's call and of the agent's leg" + signed,
                form,
                xml,
            ),
            Route(
                "POST",
                "/taskrouter/assignment",
                self._wrap("assignment", self._assignment),
                "TaskRouter assignment callback: answers the assignment instruction (JSON)" + signed,
                form,
                "application/json",
            ),
            Route(
                "POST",
                "/taskrouter/events",
                self._wrap("taskrouter_event", self._taskrouter_event),
                "TaskRouter event callback (task canceled, completed, ...): answers 204" + signed,
                form,
                "",
            ),
        ]

    async def start(self) -> None:
        self._set_health(Health.UP)

    async def stop(self) -> None:
        self._set_health(Health.DOWN, "stopped")

    # -- the checks every request passes --------------------------------------------------

    def _wrap(self, kind: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            tokens = dict(structlog.contextvars.bind_contextvars(vendor=self.vendor, twilio_request=kind))
            try:
                params = await self._signed_params(request)
                return await handler(request, params)
            except Refused as refused:
                log.warning("twilio_refused", status=refused.status, code=refused.code, reason=refused.message)
                return refused.response()
            except mapping.MissingParameter as exc:
                log.info("twilio_refused", status=400, code="invalid_event", field=exc.name, reason=str(exc))
                return json_error(400, "invalid_event", str(exc), field=exc.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return answer_failure(exc, log, "twilio")
            finally:
                structlog.contextvars.reset_contextvars(**tokens)

        return handle

    async def _signed_params(self, request: web.Request) -> mapping.Params:
        """The request's form parameters once its body arrived within the limits and its
        signature matched; :class:`Refused` otherwise (nothing else happens then)."""
        routed_vendor = request.match_info.get("vendor")
        if routed_vendor is not None and routed_vendor != self.vendor:
            raise Refused(404, "unknown_vendor", f"no vendor {routed_vendor!r} here")
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, "body_too_large", f"the body exceeds {limit} bytes")
        given = request.headers.get(SIGNATURE_HEADER)
        if given is None:
            raise Refused(403, "bad_signature", f"{SIGNATURE_HEADER} header missing")
        settings = request.headers.get(SETTINGS_HEADER)
        if settings is not None and "algorithm=hmac_sha1" not in settings.replace(" ", "").lower():
            raise Refused(
                403, "bad_signature", "SharedKey signatures are not supported: let Twilio sign with the auth token"
            )
        body = await read_body(request, limit, self.config.body_timeout_s)
        url = self.config.base_url + request.raw_path
        json_body = "bodySHA256" in dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        params: list[tuple[str, str]] = []
        malformed = False
        if not json_body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text, malformed = body.decode("utf-8", "replace"), True
            try:
                params = parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
            except ValueError:
                malformed = True
        # the signature first: a forged request learns nothing but 403
        if not signature_valid(self._token, url, given, params=params, body=body):
            raise Refused(403, "bad_signature", "the signature does not match")
        if malformed:
            raise Refused(400, "invalid_event", "the body is not UTF-8 form data (at most 1000 fields)")
        if json_body:
            raise Refused(415, "unsupported_media_type", "Twilio's voice and TaskRouter callbacks are form-encoded")
        return params

    async def _submit(self, data: dict[str, Any]) -> Decision:
        event = parse_event(data, vendor=self.vendor, received_at=self.host.clock.now())
        structlog.contextvars.bind_contextvars(interaction_id=event.interaction_id, event_id=event.event_id)
        if not self.host.ready:
            raise GatewayError("the gateway takes no events now; retry later", code="not_ready", retryable=True)
        decision = await self.host.submit(event)
        log.info("twilio_event", event_type=event.type.value, decision=decision.kind.value)
        return decision

    async def _submit_session_change(self, data: dict[str, Any]) -> None:
        """Submit an accept / decline / end; one the state makes moot (the session is no
        longer offered, the interaction unknown) is logged and ignored."""
        try:
            await self._submit(data)
        except ActionError as exc:
            log.info("twilio_event_ignored", event_type=data["type"], code=exc.code, reason=exc.message)

    # -- voice ---------------------------------------------------------------------------

    def _url(self, path: str, **query: str) -> str:
        suffix = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return f"{self._prefix}{path}" + (f"?{suffix}" if suffix else "")

    def _route(self, called: str | None) -> tuple[str | None, str | None]:
        """(queue, agent) of a called number; (None, None) when it is not routed here."""
        target = self.config.numbers.get(called or "")
        if target is None:
            return self.config.queue, None
        if target.startswith(_AGENT_PREFIX):
            return None, target.removeprefix(_AGENT_PREFIX)
        return target, None

    async def _voice(self, request: web.Request, params: mapping.Params) -> web.Response:
        """The incoming-call URL (and the ``<Dial>`` action and hold ``<Redirect>``, which
        request it again for the same call): TwiML for the call's current decision."""
        call_sid = mapping.required(params, "CallSid")
        dial_status = mapping.first(params, "DialCallStatus")
        dialed_agent = request.query.get("agent")
        if dial_status is not None and dialed_agent:
            leg_sid = mapping.first(params, "DialCallSid") or f"{call_sid}-dial"
            leg = mapping.agent_leg_event(call_sid, leg_sid, dial_status, dialed_agent)
            if leg is not None and leg["type"] != "accept":
                await self._submit_session_change(leg)
            if dial_status in ("completed", "answered"):
                return _twiml(twiml.hangup())  # the agent took the call and it is over
        called = mapping.first(params, "To") or mapping.first(params, "Called")
        queue, agent = self._route(called)
        if queue is None and agent is None:
            log.warning("twilio_number_not_routed", to=called)
            return _twiml(twiml.reject("rejected"))
        decision = await self._submit(mapping.call_offer(params, queue=queue, agent_id=agent))
        return _twiml(self._call_twiml(call_sid, decision, mapping.first(params, "CallStatus")))

    def _call_twiml(self, call_sid: str, decision: Decision, call_status: str | None) -> str:
        first_answer = decision.original if decision.kind is DecisionKind.DUPLICATE else decision
        if decision.kind is DecisionKind.DUPLICATE:
            # Twilio asks again for a call the gateway knows: answer from where it is now
            current = self._current(call_sid)
            if current is None:
                rejected = first_answer is not None and first_answer.kind is DecisionKind.REJECTED
                return twiml.reject() if rejected and call_status in (None, "ringing", "queued") else twiml.hangup()
            if current["phase"] == "waiting" or not current.get("agent_id"):
                return self._hold(call_sid)
            return self._dial(str(current["agent_id"]))
        if decision.kind is DecisionKind.ASSIGNED and decision.agent_id is not None:
            return self._dial(decision.agent_id)
        if decision.kind is DecisionKind.QUEUED:
            return self._hold(call_sid)
        return twiml.reject() if call_status in (None, "ringing", "queued") else twiml.hangup()

    def _current(self, interaction_id: str) -> dict[str, Any] | None:
        for row in self.host.open_interactions(self.vendor):
            if row.get("interaction_id") == interaction_id:
                return row
        return None

    def target_of(self, agent_id: str) -> str:
        return self.config.agent_targets.get(agent_id, f"client:{agent_id}")

    def _dial(self, agent_id: str) -> str:
        return twiml.dial(
            self.target_of(agent_id),
            action=self._url("/voice", agent=agent_id),
            status_callback=self._url("/status", agent=agent_id),
            timeout_s=self.config.ring_timeout_s,
            caller_id=self.config.caller_id,
        )

    def _hold(self, call_sid: str) -> str:
        music = str(self.config.hold_music_url) if self.config.hold_music_url else None
        return twiml.hold(self._url("/voice", hold="1"), pause_s=self.config.hold_poll_s, music_url=music)

    async def _status(self, request: web.Request, params: mapping.Params) -> web.Response:
        """Status callbacks of the caller's call (set on the number) and of the agent's leg
        (set by the gateway's ``<Dial>``, with ``?agent=``)."""
        call_sid = mapping.required(params, "CallSid")
        status = mapping.first(params, "CallStatus")
        parent = mapping.first(params, "ParentCallSid")
        if parent is not None:
            agent = request.query.get("agent") or self._agent_of_target(mapping.first(params, "To"))
            data = mapping.agent_leg_event(parent, call_sid, status, agent) if agent else None
        else:
            data = mapping.caller_leg_end(params)
        if data is None:
            log.debug("twilio_status_ignored", call_status=status)
        else:
            await self._submit_session_change(data)
        return web.Response(status=204)

    def _agent_of_target(self, to: str | None) -> str | None:
        if not to:
            return None
        for agent, target in self.config.agent_targets.items():
            if target == to:
                return agent
        return to.removeprefix("client:") if to.startswith("client:") else None

    # -- TaskRouter ----------------------------------------------------------------------

    async def _assignment(self, request: web.Request, params: mapping.Params) -> web.Response:
        """Assignment callback: the worker TaskRouter reserved is offered the task;
        ``accept`` when the gateway assigns it, ``reject`` (TaskRouter tries another worker)."""
        agent = mapping.worker_agent(params, self.config.agent_map)
        decision = await self._submit(mapping.assignment_offer(params, agent))
        answer = decision.original if decision.kind is DecisionKind.DUPLICATE else decision
        accepted = answer is not None and answer.kind is DecisionKind.ASSIGNED
        return web.json_response({"instruction": "accept" if accepted else "reject"})

    async def _taskrouter_event(self, request: web.Request, params: mapping.Params) -> web.Response:
        data = mapping.taskrouter_event(params, self.config.agent_map)
        if data is None:
            log.debug("twilio_taskrouter_event_ignored", event_type=mapping.first(params, "EventType"))
        else:
            await self._submit_session_change(data)
        return web.Response(status=204)


def _twiml(document: str) -> web.Response:
    return web.Response(text=document, content_type=twiml.CONTENT_TYPE, charset="utf-8")
