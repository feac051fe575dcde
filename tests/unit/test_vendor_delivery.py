"""Delivering late decisions and session actions to the vendors' adapters
(:func:`gateway.runtime.deliver_to_vendor`, used by one gateway and by a cluster's
effects loop alike): one adapter that refuses or fails never stops delivery to the
others, and each failure is logged with what it was."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.errors import GatewayError
from gateway.notices import ToVendor, VendorAction
from gateway.runtime import deliver_to_vendor


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.got: list[ToVendor] = []

    async def deliver(self, notice: ToVendor) -> None:
        self.got.append(notice)
        if self.fail is not None:
            raise self.fail


def notice(vendor: str) -> ToVendor:
    return ToVendor(vendor=vendor, interaction_id="i1", action=VendorAction.ENDED)


@pytest.mark.asyncio
async def test_a_refusing_or_broken_adapter_does_not_stop_delivery_to_the_others() -> None:
    adapters: dict[str, Any] = {
        "refuses": Recorder(GatewayError("the vendor said no", code="vendor_error")),
        "broken": Recorder(RuntimeError("a bug")),
        "fine": Recorder(),
    }
    with capture_logs() as entries:
        for vendor in ("refuses", "broken", "fine", "not-configured"):
            await deliver_to_vendor(adapters, notice(vendor))
    assert [n.vendor for n in adapters["fine"].got] == ["fine"]
    assert len(adapters["refuses"].got) == len(adapters["broken"].got) == 1
    by_event = {e["event"]: e for e in entries}
    assert by_event["vendor_delivery_failed"]["vendor"] == "refuses"
    assert by_event["vendor_delivery_failed"]["log_level"] == "warning"
    assert "the vendor said no" in by_event["vendor_delivery_failed"]["error"]
    assert by_event["vendor_delivery_crashed"]["vendor"] == "broken"
    assert by_event["vendor_delivery_crashed"]["log_level"] == "error"
    assert by_event["vendor_delivery_crashed"]["action"] == "ended"
    assert len(entries) == 2  # nothing logged for the good one or an unknown vendor


@pytest.mark.asyncio
async def test_a_cancelled_delivery_is_not_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError):
        adapters: dict[str, Any] = {"v": Recorder(asyncio.CancelledError())}
        await deliver_to_vendor(adapters, notice("v"))
