"""A real gateway with an ``smtp_push`` vendor, and helpers to send it mail with smtplib."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest_asyncio

from ..contract.harness import ContractGateway, contract_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mail(
    message_id: str | None = "m-1@customer.test",
    *,
    subject: str = "Where is my parcel?",
    text: str = "Hello, my parcel did not arrive.",
    sender: str = "Jo Customer <jo@customer.test>",
    to: str = "a1@support.test",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    if message_id is not None:
        message["Message-ID"] = f"<{message_id}>"
    message.set_content(text)
    return message


async def send(port: int, message: EmailMessage | bytes, *, to: list[str] | None = None) -> tuple[int, str]:
    """Send one message over real SMTP (smtplib, in a thread); returns the DATA reply."""

    def run() -> tuple[int, str]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            sender = "relay@mta.test"
            recipients = to or ["a1@support.test"]
            code, reply = client.mail(sender)
            assert code == 250, (code, reply)
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                if code >= 400:
                    return code, reply.decode()
            raw = message if isinstance(message, bytes) else message.as_bytes()
            code, reply = client.data(raw)
            return code, reply.decode()

    return await asyncio.to_thread(run)


class SmtpGateway(ContractGateway):
    smtp_port: int = 0


def settings(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "listen_port": port,
        "recipients": {"a1@support.test": "agent:a1", "a2@support.test": "agent:a2", "help@support.test": "support"},
        **extra,
    }


@pytest_asyncio.fixture
async def smtp_gw(tmp_path: Path) -> AsyncIterator[SmtpGateway]:
    port = free_port()
    gw = SmtpGateway(
        contract_config("smtp_push", settings(port, max_message_bytes=64 * 1024), tmp_path / "gw.db"), tmp_path
    )
    gw.smtp_port = port
    await gw.start()
    await gw.ready()
    try:
        yield gw
    finally:
        await gw.stop()
