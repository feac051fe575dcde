"""smtp_push over real SMTP (stdlib smtplib) against a real gateway: the reply is the
decision, given after the offer is journaled; the edges of the protocol and of MIME."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import pytest

from gateway.sessions import SessionState

from ..contract.harness import VENDOR
from .conftest import SmtpGateway, mail, send

pytestmark = pytest.mark.asyncio


def sessions(gw: SmtpGateway, interaction_id: str) -> list[str]:
    return [s.id for s in gw.sessions_of(interaction_id)]


async def test_a_mail_for_an_agent_is_offered_and_answered_250_once_journaled(smtp_gw: SmtpGateway) -> None:
    code, reply = await send(smtp_gw.smtp_port, mail("m-1@customer.test"))
    assert code == 250, reply

    [session] = smtp_gw.sessions_of("m-1@customer.test")
    assert (session.agent_id, session.channel.value, session.state) == ("a1", "email", SessionState.OFFERED)
    assert session.subject == "Where is my parcel?"
    assert session.customer is not None and session.customer.address == "jo@customer.test"
    assert session.customer.name == "Jo Customer"
    assert session.id in reply
    stored = await smtp_gw.runtime.journal.record(session.id)
    assert stored is not None, "answered 250 before the offer was journaled"


async def test_the_same_message_id_twice_is_offered_once(smtp_gw: SmtpGateway) -> None:
    assert (await send(smtp_gw.smtp_port, mail("twice@customer.test")))[0] == 250
    code, _ = await send(smtp_gw.smtp_port, mail("twice@customer.test"))
    assert code == 250
    assert len(sessions(smtp_gw, "twice@customer.test")) == 1


async def test_at_capacity_451_keeps_the_mail_with_the_relay_and_the_retry_is_offered_once(
    smtp_gw: SmtpGateway,
) -> None:
    for n in (1, 2):  # the profile takes two e-mails
        assert (await send(smtp_gw.smtp_port, mail(f"fill-{n}@c.test")))[0] == 250
    code, reply = await send(smtp_gw.smtp_port, mail("third@c.test"))
    assert (code, reply.split()[0]) == (451, "4.3.2"), reply
    assert "channel_at_capacity" in reply
    assert sessions(smtp_gw, "third@c.test") == []

    code, _ = await send(smtp_gw.smtp_port, mail("third@c.test"))  # the relay retries too early
    assert code == 451

    [first] = smtp_gw.sessions_of("fill-1@c.test")
    await smtp_gw.runtime.act(lambda e: e.accept(first.id))
    await smtp_gw.runtime.act(lambda e: e.end(first.id))
    code, _ = await send(smtp_gw.smtp_port, mail("third@c.test"))
    assert code == 250
    code, _ = await send(smtp_gw.smtp_port, mail("third@c.test"))  # and once more: a duplicate now
    assert code == 250
    assert len(sessions(smtp_gw, "third@c.test")) == 1


async def test_a_mail_without_message_id_gets_a_stable_id_from_its_content(smtp_gw: SmtpGateway) -> None:
    raw = mail(None).as_bytes()
    assert (await send(smtp_gw.smtp_port, raw))[0] == 250
    assert (await send(smtp_gw.smtp_port, raw))[0] == 250
    offered = [s for s in smtp_gw.engine.sessions.values() if (s.interaction_id or "").startswith("sha256:")]
    assert len(offered) == 1


async def test_a_queue_recipient_is_routed_by_the_queue(smtp_gw: SmtpGateway) -> None:
    code, _ = await send(smtp_gw.smtp_port, mail("q@c.test", to="help@support.test"), to=["Help@Support.test"])
    assert code == 250
    [session] = smtp_gw.sessions_of("q@c.test")
    assert session.queue == "support"


async def test_an_unknown_recipient_is_refused_at_rcpt(smtp_gw: SmtpGateway) -> None:
    code, reply = await send(smtp_gw.smtp_port, mail("nobody@c.test"), to=["nobody@support.test"])
    assert code == 550 and "5.1.1" in reply


async def test_an_oversize_mail_is_refused_permanently_and_offers_nothing(smtp_gw: SmtpGateway) -> None:
    """The limit is advertised (EHLO SIZE, so a relay such as Postfix bounces it itself), and
    a client that sends more anyway gets a permanent 5xx from aiosmtpd."""

    def ehlo_size() -> int:
        with smtplib.SMTP("127.0.0.1", smtp_gw.smtp_port, timeout=10) as client:
            client.ehlo()
            return int(client.esmtp_features["size"])

    assert await asyncio.to_thread(ehlo_size) == 64 * 1024
    code, reply = await send(smtp_gw.smtp_port, mail("big@c.test", text=("x" * 70 + "\n") * 1200))
    assert 500 <= code < 600, reply
    assert sessions(smtp_gw, "big@c.test") == []


async def test_multipart_quoted_printable_base64_and_charsets_are_decoded(smtp_gw: SmtpGateway) -> None:
    message = EmailMessage()
    message["From"] = "=?iso-8859-1?q?J=F6rg_M=FCller?= <joerg@c.test>"
    message["To"] = "a1@support.test"
    message["Subject"] = "=?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?="
    message["Message-ID"] = "<mime@c.test>"
    message.set_content(
        "Sehr geehrte Damen und Herren, die Rechnung ist zu hoch: 100 €.", charset="iso-8859-15", cte="quoted-printable"
    )
    message.add_alternative("<p>HTML version</p>", subtype="html", cte="base64")
    assert (await send(smtp_gw.smtp_port, message))[0] == 250

    [session] = smtp_gw.sessions_of("mime@c.test")
    assert session.subject == "Grüße aus Köln"
    assert session.customer is not None and session.customer.name == "Jörg Müller"
    interaction = smtp_gw.engine.interactions[(VENDOR, "mime@c.test")]
    assert interaction.subject == "Grüße aus Köln"


async def test_broken_mime_is_taken_or_refused_with_a_reason_never_a_dropped_connection(smtp_gw: SmtpGateway) -> None:
    broken = (
        b"From: \xff\xfe weird <x@c.test>\r\nTo: a1@support.test\r\nSubject: =?bogus-charset?q?hi?=\r\n"
        b"Message-ID: <broken@c.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\xff\r\n"
    )
    code, reply = await send(smtp_gw.smtp_port, broken)
    assert code == 250, reply
    [session] = smtp_gw.sessions_of("broken@c.test")
    assert session.state is SessionState.OFFERED

    code, reply = await send(smtp_gw.smtp_port, b"\r\n")
    assert code == 554 and "5.6.0" in reply


async def test_not_ready_defers_with_451(smtp_gw: SmtpGateway) -> None:
    await smtp_gw.runtime.stop_intake()
    code, reply = await send(smtp_gw.smtp_port, mail("late@c.test"))
    assert code == 451 and "4.3.0" in reply
