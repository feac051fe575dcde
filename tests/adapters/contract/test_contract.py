"""The adapter contract: one set of tests, run against every adapter's driver (see
:mod:`.driver`). A new adapter joins by adding ``drivers/<name>.py`` with ``DRIVER``.

Each test starts the driver's peer, then a real gateway (SQLite journal, system clock) with
the driver's vendor, and checks what DESIGN section 3 promises of every adapter: an offer
becomes a session, a refusal reaches the vendor, a late decision reaches the vendor, the
vendor's end closes the session, health follows the link (connection-based adapters) and
malformed input changes nothing and stops nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.sessions import SessionState

from . import drivers
from .driver import Driver
from .harness import ContractGateway, contract_config

pytestmark = pytest.mark.asyncio

DRIVERS = sorted(info.name for info in pkgutil.iter_modules(drivers.__path__))


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    module = importlib.import_module(f"{drivers.__name__}.{request.param}")
    instance: Driver = module.DRIVER()
    return instance


@pytest_asyncio.fixture
async def gateway(driver: Driver, tmp_path: Path) -> AsyncIterator[ContractGateway]:
    await driver.start_peer(tmp_path)
    gw = ContractGateway(contract_config(driver.adapter, driver.settings(), tmp_path / "gw.db"), base_dir=tmp_path)
    try:
        await gw.start()
        driver.bind(gw)
        await gw.ready()
        if driver.connection_based:
            await gw.until(lambda: gw.health() == "up", what="the adapter to connect")
        yield gw
    finally:
        await gw.stop()
        await driver.stop_peer()


def capacity_of(gw: ContractGateway, driver: Driver) -> int:
    return gw.engine.profile_of("a1").cap(driver.channel)


async def test_lifecycle_and_health(driver: Driver, gateway: ContractGateway) -> None:
    """Started, the adapter is up (in /readyz too); stopped, it releases its resources."""
    assert gateway.health() == "up"
    status, body = await gateway.readyz()
    assert status == 200 and body["adapters"]["vendor-under-test"] == "up", body


async def test_an_offer_becomes_a_session_on_the_agent(driver: Driver, gateway: ContractGateway) -> None:
    await driver.offer("one", agent="a1")
    sessions = await gateway.until(lambda: gateway.sessions_of(driver.interaction_id("one")), what="the session")
    assert [(s.agent_id, s.channel, s.state) for s in sessions] == [("a1", driver.channel, SessionState.OFFERED)]
    assert await driver.assigned_at_vendor("one", "a1")


async def test_a_refusal_reaches_the_vendor(driver: Driver, gateway: ContractGateway) -> None:
    """The agent is full for the channel: the next offer for it is refused back to the vendor."""
    for n in range(capacity_of(gateway, driver)):
        await driver.offer(f"fill-{n}", agent="a1")
        await gateway.until(lambda n=n: gateway.sessions_of(driver.interaction_id(f"fill-{n}")), what=f"fill-{n}")
    await driver.offer("too-many", agent="a1")
    assert await driver.rejected_at_vendor("too-many")
    assert not [s for s in gateway.sessions_of(driver.interaction_id("too-many")) if s.state is not SessionState.CLOSED]


async def test_a_late_decision_reaches_the_vendor(driver: Driver, gateway: ContractGateway) -> None:
    """Offered to the queue while nobody has room, it waits; when a slot frees, the
    assignment goes back to the vendor."""
    if not driver.supports_queue:
        pytest.skip(f"{driver.adapter}: no queue offers, or no way back for a late decision")
    await gateway.runtime.act(lambda e: e.set_presence("a2", "not_ready"))
    for n in range(capacity_of(gateway, driver)):
        await driver.offer(f"fill-{n}", agent="a1")
        await gateway.until(lambda n=n: gateway.sessions_of(driver.interaction_id(f"fill-{n}")), what=f"fill-{n}")
    await driver.offer("late")
    await gateway.until(lambda: driver.interaction_id("late") in {k[1] for k in gateway.engine.waiting()}, what="wait")

    await driver.end("fill-0")
    assert await driver.assigned_at_vendor("late", "a1")


async def test_the_vendors_end_ends_the_session(driver: Driver, gateway: ContractGateway) -> None:
    if not getattr(driver, "can_end", True):
        pytest.skip(f"{driver.adapter}'s vendor cannot end an interaction (it ends on the agent's side)")
    await driver.offer("bye", agent="a1")
    [session] = await gateway.until(lambda: gateway.sessions_of(driver.interaction_id("bye")), what="the session")
    await driver.end("bye")
    await gateway.until(lambda: session.state is not SessionState.OFFERED, what="the end")
    assert session.outcome is not None and session.outcome.value in ("abandoned", "completed"), session.outcome
    assert gateway.engine.agent("a1")["in_use"]["sessions"] == 0


async def test_a_vendor_outage_and_recovery(driver: Driver, gateway: ContractGateway) -> None:
    if not driver.connection_based:
        pytest.skip(f"{driver.adapter} holds no connection to its vendor")
    await driver.outage()
    await gateway.until(lambda: gateway.health() == "down", what="health down")
    status, body = await gateway.readyz()
    # a 503 carries the failing checks in the error body (README, Operations)
    assert status == 503 and body["error"]["checks"]["adapters"]["vendor-under-test"] == "down", body

    await driver.recover()
    await gateway.until(lambda: gateway.health() == "up", timeout=20, what="health up again")
    await driver.offer("after", agent="a1")
    assert await gateway.until(lambda: gateway.sessions_of(driver.interaction_id("after")), what="a session")


async def test_malformed_input_is_skipped_and_nothing_stops(driver: Driver, gateway: ContractGateway) -> None:
    await driver.garbage()
    await driver.offer("still-works", agent="a1")
    sessions: Any = await gateway.until(lambda: gateway.sessions_of(driver.interaction_id("still-works")))
    assert [s.agent_id for s in sessions] == ["a1"]
    assert gateway.runtime.ready
