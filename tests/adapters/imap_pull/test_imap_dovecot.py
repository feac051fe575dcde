"""imap_pull against a real Dovecot: mail delivered with dovecot-lda is offered within
seconds (IDLE) and flagged; what cannot be placed stays unseen until a slot frees; a
gateway restart between delivery and assignment, a dropped connection and a UIDVALIDITY
change offer nothing twice and lose nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from imapclient import IMAPClient

from gateway.config import GatewayConfig
from tests.peers.dovecot import PASSWORD, USER, Dovecot

from ..contract.harness import VENDOR, ContractGateway
from ..smtp_push.conftest import mail

pytestmark = pytest.mark.asyncio


def config(db: Path, port: int, **extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "store": {"url": f"sqlite:///{db}"},
            "capacity_profiles": {"p": {"max_sessions": 3, "channels": {"email": 2}}},
            "queues": [{"name": "mail", "on_full": "reject"}],
            "agents": [{"id": "a1", "name": "A1", "profile": "p", "queues": ["mail"]}],
            "vendors": [
                {
                    "name": VENDOR,
                    "adapter": "imap_pull",
                    "host": "127.0.0.1",
                    "port": port,
                    "username": USER,
                    "password": PASSWORD,
                    "queue": "mail",
                    "poll_interval_s": 2,
                    "timeout_s": 5,
                    **extra,
                }
            ],
        }
    )


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def gw(dovecot: Dovecot, tmp_path: Path) -> AsyncIterator[ContractGateway]:
    gateway = ContractGateway(config(tmp_path / "gw.db", dovecot.port), tmp_path)
    await gateway.start()
    await gateway.runtime.act(lambda e: e.set_presence("a1", "ready"))
    try:
        await gateway.until(lambda: gateway.health() == "up", what="the IMAP login")
        yield gateway
    finally:
        await gateway.stop()


def flags(dovecot: Dovecot) -> dict[str, set[bytes]]:
    """Message-ID -> flags, read by a second, independent IMAP client."""
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=5) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        found = client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out = {}
        for data in found.values():
            header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip().strip("<>")
            out[header] = set(data[b"FLAGS"])
        return out


def unflag(dovecot: Dovecot, *flag_names: bytes) -> None:
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=5) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX")
        client.remove_flags(client.search(["ALL"]), list(flag_names))


def offered(gw: ContractGateway, message_id: str) -> int:
    return len(gw.sessions_of(message_id))


async def deliver(dovecot: Dovecot, message_id: str, **fields: Any) -> None:
    await asyncio.to_thread(dovecot.deliver, mail(message_id, to="inbox@support.test", **fields).as_bytes())


async def test_delivered_mail_is_offered_within_seconds_and_flagged(gw: ContractGateway, dovecot: Dovecot) -> None:
    await deliver(dovecot, "i-1@c.test", subject="Refund please")
    [session] = await gw.until(lambda: gw.sessions_of("i-1@c.test"), timeout=10, what="the offer")
    assert (session.agent_id, session.subject, session.queue) == ("a1", "Refund please", "mail")
    got = await gw.until(lambda: (f := flags(dovecot)).get("i-1@c.test") and f, what="flags")
    assert {b"\\Seen", b"$CtiGateway"} <= got["i-1@c.test"]
    await gw.until(lambda: gw.runtime.adapter_state(VENDOR, "mailbox")["last_uid"] >= 1, what="the UID noted")


async def test_mail_that_cannot_be_placed_stays_unseen_until_a_slot_frees(
    gw: ContractGateway, dovecot: Dovecot
) -> None:
    for n in (1, 2, 3):
        await deliver(dovecot, f"cap-{n}@c.test")
    await gw.until(lambda: sum(offered(gw, f"cap-{n}@c.test") for n in (1, 2, 3)) == 2, what="two offers")
    await asyncio.sleep(1.5)  # a rescan or two: still nothing more
    assert sum(offered(gw, f"cap-{n}@c.test") for n in (1, 2, 3)) == 2
    current = await asyncio.to_thread(flags, dovecot)
    [left] = [m for m, f in current.items() if b"\\Seen" not in f]

    first = next(s for n in (1, 2, 3) for s in gw.sessions_of(f"cap-{n}@c.test"))
    await gw.runtime.act(lambda e: e.accept(first.id))
    await gw.runtime.act(lambda e: e.end(first.id))
    await gw.until(lambda: offered(gw, left) == 1, what="the unseen mail offered once a slot freed")
    await gw.until(lambda: b"\\Seen" in flags(dovecot)[left], what="flagged")
    assert [offered(gw, f"cap-{n}@c.test") for n in (1, 2, 3)] == [1, 1, 1]


async def test_a_gateway_restart_between_delivery_and_assignment_offers_each_once(
    gw: ContractGateway, dovecot: Dovecot
) -> None:
    await deliver(dovecot, "r-1@c.test")
    await gw.until(lambda: offered(gw, "r-1@c.test") == 1, what="the first offer")
    await gw.until(lambda: b"\\Seen" in flags(dovecot).get("r-1@c.test", set()), what="flagged")
    await gw.stop()

    await deliver(dovecot, "r-2@c.test")  # arrives while the gateway is down
    await asyncio.to_thread(unflag, dovecot, b"\\Seen", b"$CtiGateway")  # as if it died before flagging r-1
    await gw.start()
    await gw.until(lambda: offered(gw, "r-2@c.test") == 1, what="the mail that came while it was down")
    await gw.until(lambda: all(b"\\Seen" in f for f in flags(dovecot).values()), what="both flagged")
    assert offered(gw, "r-1@c.test") == 1, "offered again after the restart"


async def test_a_dropped_imap_connection_recovers(gw: ContractGateway, dovecot: Dovecot) -> None:
    await asyncio.to_thread(dovecot.stop, keep=True)
    await gw.until(lambda: gw.health() == "down", timeout=15, what="the outage noticed")
    await asyncio.to_thread(dovecot.start)
    await gw.until(lambda: gw.health() == "up", timeout=20, what="reconnected")
    await deliver(dovecot, "after@c.test")
    await gw.until(lambda: offered(gw, "after@c.test") == 1, what="offered after the reconnect")


async def test_a_uidvalidity_change_offers_nothing_twice(gw: ContractGateway, dovecot: Dovecot) -> None:
    await deliver(dovecot, "u-1@c.test")
    await gw.until(lambda: b"\\Seen" in flags(dovecot).get("u-1@c.test", set()), what="flagged")
    before = gw.runtime.adapter_state(VENDOR, "mailbox")["uidvalidity"]
    await gw.stop()

    # the mailbox is re-created: new UIDVALIDITY, flags lost (the worst case)
    await asyncio.to_thread(dovecot.stop, keep=True)
    for path in dovecot.maildir.glob("dovecot*"):  # the UID list and the indexes that remember it
        path.unlink()
    await asyncio.to_thread(dovecot.start)
    await asyncio.to_thread(unflag, dovecot, b"\\Seen", b"$CtiGateway")
    await deliver(dovecot, "u-2@c.test")

    await gw.start()
    await gw.until(lambda: offered(gw, "u-2@c.test") == 1, what="the new mail")
    await gw.until(lambda: all(b"\\Seen" in f for f in flags(dovecot).values()), what="all flagged again")
    assert gw.runtime.adapter_state(VENDOR, "mailbox")["uidvalidity"] != before
    assert offered(gw, "u-1@c.test") == 1
