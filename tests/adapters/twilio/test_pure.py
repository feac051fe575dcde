"""The ``twilio`` adapter's pure parts: settings, the mapping to events, TwiML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import AdapterRegistry
from adapters.twilio import mapping, twiml
from gateway.cli import main
from gateway.config import Known, VendorConfig
from gateway.errors import ConfigError

from .client import AUTH_TOKEN, PUBLIC_URL


def problems(**settings: Any) -> list[str]:
    vendor = VendorConfig.model_validate({"name": "tw", "adapter": "twilio", **settings})
    known = Known(agents=frozenset({"a1"}), queues=frozenset({"support"}))
    try:
        AdapterRegistry.discover().validate_vendor(vendor, index=0, known=known)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def test_settings_are_checked() -> None:
    good = {"auth_token": AUTH_TOKEN, "public_url": PUBLIC_URL}
    assert problems(**good) == []
    assert problems(**good, numbers={"+1": "agent:a1", "+2": "support"}, agent_targets={"a1": "sip:a@b"}) == []
    assert problems(public_url=PUBLIC_URL) == ["vendors.0.auth_token: required"]
    assert problems(**{**good, "auth_token": "short"}) == [
        "vendors.0.auth_token: must be at least 16 characters (Twilio's are 32)"
    ]
    assert problems(**{**good, "public_url": "https://x.example/?a=1"}) == [
        "vendors.0.public_url: must be a base URL without query string or fragment"
    ]
    assert problems(**good, agent_targets={"a1": "tel:+1555"}) == [
        "vendors.0.agent_targets: 'a1': must be client:NAME or sip:URI"
    ]
    assert problems(**good, numbers={"+1": "agent:nobody", "+2": "sales"}, agent_map={"WK1": "zed"}) == [
        "vendors.0.agent_map.WK1: no agent 'zed' is configured",
        "vendors.0.numbers.+1: no agent 'nobody' is configured",
        "vendors.0.numbers.+2: no queue 'sales' is configured",
    ]
    assert problems(**good, ring_timeout=3) == ["vendors.0.ring_timeout: unknown key"]


def test_event_ids_derive_from_twilios_ids() -> None:
    """A replay maps to the same event id; the agent's leg shares its decline id between
    its status callback and the Dial action (both name the leg's CallSid)."""
    call = [("CallSid", "CA1"), ("To", "+1"), ("From", "+2"), ("CallStatus", "ringing")]
    assert mapping.call_offer(call, queue="q", agent_id=None)["event_id"] == "CA1:offer"
    assert mapping.caller_leg_end([("CallSid", "CA1"), ("CallStatus", "no-answer")]) == {
        "event_id": "CA1:no-answer",
        "type": "end",
        "interaction_id": "CA1",
    }
    assert mapping.caller_leg_end([("CallSid", "CA1"), ("CallStatus", "in-progress")]) is None
    declined = mapping.agent_leg_event("CA1", "CA9", "no-answer", "a1")
    assert declined == {"event_id": "CA9:declined", "type": "decline", "interaction_id": "CA1", "agent_id": "a1"}
    assert mapping.agent_leg_event("CA1", "CA9", "busy", "a1") == declined
    assert mapping.agent_leg_event("CA1", "CA9", "in-progress", "a1")["type"] == "accept"  # type: ignore[index]
    assert mapping.agent_leg_event("CA1", "CA9", "canceled", "a1")["type"] == "end"  # type: ignore[index]
    assert mapping.agent_leg_event("CA1", "CA9", "ringing", "a1") is None


def test_twiml_is_escaped() -> None:
    document = twiml.dial(
        'client:a<b>&"c"', action="https://x/v?agent=a&b", status_callback='https://x/s?a="1', timeout_s=9
    )
    root = ET.fromstring(document)
    dial = root.find("Dial")
    assert dial is not None and dial.get("action") == "https://x/v?agent=a&b"
    assert dial[0].text == 'a<b>&"c"' and dial[0].get("statusCallback") == 'https://x/s?a="1'
    assert ET.fromstring(twiml.hold("https://x/v?hold=1&a=<", pause_s=3))[1].text == "https://x/v?hold=1&a=<"


def test_the_example_config_passes_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    example = Path(__file__).resolve().parents[3] / "config" / "examples" / "twilio.yaml"
    assert main(["check-config", str(example)]) == 0, capsys.readouterr().err
