"""What the e-mail adapters (``smtp_push``, ``imap_pull``) share: one RFC 5322 message into
one e-mail offer, and submitting it so that a mail refused for capacity and tried again
later is offered anew, while a mail already taken is never offered twice.

The Message-ID (without ``<>``) is the event id and the interaction id, so the same mail
seen twice (a relay's resend, an IMAP client that restarted before flagging it) is a
``duplicate`` with the first answer. A mail *refused* earlier (``rejected``, e.g. every
agent full) must not stay refused as a duplicate: :func:`submit_mail` then submits it as
``<message-id>#1``, ``#2`` ... — the next link of a chain that is itself idempotent, and
remembered for the gateway's de-duplication window (24 h by default).

Parsing is lenient (``email.policy.default``): quoted-printable, base64 and charsets are
decoded, text/plain is preferred over text/html, undecodable bytes become U+FFFD (a lone
surrogate could not be journaled), and a message without a Message-ID gets a stable one
from its content, ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from gateway.events import parse_event
from gateway.notices import Decision, DecisionKind

from .base import AdapterHost

#: the event model's limits for the fields a mail fills
MAX_SUBJECT = 4096
MAX_TEXT = 65536
MAX_ID = 256
MAX_ADDRESS = 512
#: links of a refusal chain followed before giving up (each is one refused delivery attempt)
MAX_RETRY_CHAIN = 10_000
AGENT_PREFIX = "agent:"


class RetryChainExhausted(Exception):
    """More refused attempts of one mail than :data:`MAX_RETRY_CHAIN`."""


def parse_message(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def offer_body(
    message: EmailMessage,
    raw: bytes,
    route: str,
    *,
    envelope_sender: str | None = None,
    recipients: Sequence[str] = (),
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The webhook-shaped body of the e-mail offer for ``message`` (``route``: a queue name
    or ``agent:<id>``)."""
    message_id = message_id_of(message, raw)
    subject = _header(message, "subject")
    name, address = _sender(message, envelope_sender)
    body: dict[str, Any] = {
        "event_id": message_id,
        "type": "offer",
        "channel": "email",
        "interaction_id": message_id,
        "customer": {
            "address": address[:MAX_ADDRESS] if address else None,
            "name": name[:MAX_ADDRESS] if name else None,
        },
        "subject": subject[:MAX_SUBJECT] if subject else None,
        "text": _text(message),
        "attributes": {"to": [_clean(str(r))[:320] for r in recipients[:50]], **(attributes or {})},
    }
    if route.startswith(AGENT_PREFIX):
        body["agent_id"] = route[len(AGENT_PREFIX) :]
    else:
        body["queue"] = route
    return body


async def submit_mail(host: AdapterHost, vendor: str, body: dict[str, Any]) -> Decision:
    """Submit the offer ``body`` (see the module documentation on refusal chains).

    Returns the decision that counts: the new one, or for a mail already taken the first
    answer it got (assigned or queued). Raises what :meth:`AdapterHost.submit` raises, and
    :class:`RetryChainExhausted`.
    """
    base_id = body["event_id"]
    for attempt in range(MAX_RETRY_CHAIN):
        event_id = base_id if attempt == 0 else f"{base_id}#{attempt}"[-MAX_ID:]
        event = parse_event({**body, "event_id": event_id}, vendor=vendor, received_at=host.clock.now())
        decision = await host.submit(event)
        if decision.kind is not DecisionKind.DUPLICATE or decision.original is None:
            return decision
        if decision.original.kind is not DecisionKind.REJECTED:
            return decision.original
    raise RetryChainExhausted(f"{base_id} was refused {MAX_RETRY_CHAIN} times")


def message_id_of(message: EmailMessage, raw: bytes) -> str:
    value = _header(message, "message-id")
    if value:
        value = value.strip().strip("<>").strip()
    if not value or len(value) > MAX_ID or not value.isprintable():
        return "sha256:" + hashlib.sha256(raw).hexdigest()
    return value


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except Exception:  # a header the policy cannot parse: treat as absent
        return None
    if value is None:
        return None
    text = _clean(" ".join(str(value).split()))
    return text or None


def _sender(message: EmailMessage, envelope_sender: str | None) -> tuple[str | None, str | None]:
    try:
        header = message.get("from")
        addresses = list(getattr(header, "addresses", ()) or ())
    except Exception:
        addresses = []
    if addresses and isinstance(addresses[0], Address):
        first = addresses[0]
        return (_clean(first.display_name) or None), (_clean(first.addr_spec) or None)
    pairs = getaddresses([envelope_sender or ""])
    if pairs and pairs[0][1]:
        return _clean(pairs[0][0]) or None, _clean(pairs[0][1])
    return None, None


def _text(message: EmailMessage) -> str | None:
    """The text part: text/plain preferred, else text/html; transfer encodings and charsets decoded."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    if not isinstance(content, str):
        return None
    return _clean(content)[:MAX_TEXT] or None


def _clean(text: str) -> str:
    """Undecodable bytes (surrogate escapes) become U+FFFD: lone surrogates cannot be journaled."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if text else text
