"""smtp_push behind a real MTA: a private Postfix instance relays to the adapter. Three mails
for an agent whose e-mail cap is 2: two are offered, the third is deferred by Postfix with
the adapter's 451 (visible in its queue); once the agent ends a session, Postfix's retry
delivers the third, which is offered exactly once."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.postfix import Postfix

from .conftest import SmtpGateway, mail

pytestmark = pytest.mark.asyncio


@pytest.fixture
def postfix(smtp_gw: SmtpGateway) -> Iterator[Postfix]:
    # not under tmp_path: pytest makes it 0700, and Postfix's daemons run as user postfix
    directory = Path(tempfile.mkdtemp(prefix="cti-postfix-"))
    mta = Postfix(directory, smtp_gw.smtp_port)
    try:
        mta.start()
        yield mta
    finally:
        mta.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_postfix_keeps_the_mail_refused_at_capacity_and_delivers_it_once_a_slot_frees(
    smtp_gw: SmtpGateway, postfix: Postfix
) -> None:
    ids = [f"pf-{n}@customer.test" for n in (1, 2, 3)]
    for message_id in ids:
        await _submit(postfix, message_id)

    await smtp_gw.until(lambda: sum(len(smtp_gw.sessions_of(i)) for i in ids) == 2, timeout=30, what="two offers")
    listing = await postfix.until_queue(lambda text: "451 4.3.2" in text, timeout=30)
    assert len(Postfix.queue_ids(listing)) == 1, listing
    offered = {i for i in ids if smtp_gw.sessions_of(i)}
    [held] = set(ids) - offered

    first = smtp_gw.sessions_of(sorted(offered)[0])[0]
    await smtp_gw.runtime.act(lambda e: e.accept(first.id))
    await smtp_gw.runtime.act(lambda e: e.end(first.id))

    await smtp_gw.until(lambda: smtp_gw.sessions_of(held), timeout=30, what="the deferred mail offered")
    await postfix.until_queue(lambda text: "Mail queue is empty" in text, timeout=30)
    for message_id in ids:
        assert len(smtp_gw.sessions_of(message_id)) == 1, (
            f"{message_id} offered {len(smtp_gw.sessions_of(message_id))} times"
        )
    [session] = smtp_gw.sessions_of(held)
    assert (session.agent_id, session.subject) == ("a1", f"About {held}")


async def _submit(postfix: Postfix, message_id: str) -> None:
    message = mail(message_id, subject=f"About {message_id}").as_bytes()
    await asyncio.to_thread(postfix.submit, message, "jo@customer.test", "a1@support.test")
