"""The ``chat_ws`` adapter's pure parts: settings, frames -> events, notices -> frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.chat_ws import ChatWsConfig, FrameError, event_for, notice_frame
from gateway.cli import main
from gateway.notices import ToVendor, VendorAction


def test_settings_are_checked() -> None:
    config = ChatWsConfig.model_validate({"url": "wss://chat.example.com/ws", "token": "sekrit-xyz"})
    assert config.queue is None and "sekrit" not in repr(config)
    with pytest.raises(ValueError, match="ws:// or wss://"):
        ChatWsConfig.model_validate({"url": "https://chat.example.com/ws", "token": "t"})
    with pytest.raises(ValueError, match="Extra inputs"):
        ChatWsConfig.model_validate({"url": "wss://x/ws", "token": "t", "tokn": "x"})


def test_event_ids_come_from_the_platforms_ids() -> None:
    start = {"type": "chat.start", "chat_id": 42, "agent_id": "p-ada", "text": "hi", "priority": 3}
    assert event_for(start, default_queue="q", agent_map={"p-ada": "a1"}) == {
        "interaction_id": "42",
        "event_id": "42:start",
        "type": "offer",
        "channel": "chat",
        "agent_id": "a1",
        "text": "hi",
        "priority": 3,
    }
    assert event_for({"type": "chat.start", "chat_id": "c"}, default_queue="q", agent_map={})["queue"] == "q"
    message = {"type": "chat.message", "chat_id": "c", "message_id": "m7", "text": "x"}
    assert event_for(message, default_queue=None, agent_map={})["event_id"] == "c:message:m7"
    assert event_for({"type": "chat.end", "chat_id": "c"}, default_queue=None, agent_map={})["event_id"] == "c:end"


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"type": "chat.typing", "chat_id": "c"}, "unknown_type", "type"),
        ({"type": "chat.end"}, "invalid_frame", "chat_id"),
        ({"type": "chat.end", "chat_id": ["c"]}, "invalid_frame", "chat_id"),
        ({"type": "chat.end", "chat_id": "c" * 300}, "invalid_frame", "chat_id"),
        ({"type": "chat.message", "chat_id": "c", "text": "x"}, "invalid_frame", "message_id"),
        ({"type": "chat.message", "chat_id": "c", "message_id": "m", "text": 5}, "invalid_frame", "text"),
        ({"type": "chat.start", "chat_id": "c"}, "invalid_frame", "queue"),
    ],
)
def test_bad_frames_name_the_field(frame: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(FrameError) as info:
        event_for(frame, default_queue=None, agent_map={})
    assert (info.value.code, info.value.field) == (code, field)


def test_notices_become_frames() -> None:
    late = ToVendor("v", "c1", VendorAction.DECISION, {"decision": "assigned", "agent_id": "a1", "session_id": "s"})
    assert notice_frame(late) == {"type": "chat.assigned", "chat_id": "c1", "agent_id": "a1", "session_id": "s"}
    rejected = ToVendor("v", "c1", VendorAction.DECISION, {"decision": "rejected", "reason": "queue_timeout"})
    assert notice_frame(rejected) == {"type": "chat.rejected", "chat_id": "c1", "reason": "queue_timeout"}
    reply = ToVendor("v", "c1", VendorAction.REPLY, {"agent_id": "a1", "session_id": "s", "text": "hi"})
    assert notice_frame(reply) == {
        "type": "agent.message",
        "chat_id": "c1",
        "agent_id": "a1",
        "session_id": "s",
        "text": "hi",
    }
    moved = ToVendor(
        "v",
        "c1",
        VendorAction.TRANSFERRED,
        {"agent_id": "a2", "session_id": "t", "mode": "blind", "from_agent_id": "a1"},
    )
    assert notice_frame(moved)["type"] == "chat.transferred" and notice_frame(moved)["from_agent_id"] == "a1"
    assert notice_frame(ToVendor("v", "c1", VendorAction.ENDED, {"agent_id": "a1"}))["type"] == "chat.ended"


def test_the_example_config_passes_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_PLATFORM_TOKEN", "platform-token")
    example = Path(__file__).resolve().parents[3] / "config" / "examples" / "chat_ws.yaml"
    assert main(["check-config", str(example)]) == 0, capsys.readouterr().err
