"""The routing indexes: EligibilityIndex (who may get work, in policy order) and WaitingLists."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from gateway.config import QueuePolicy
from gateway.events import Channel
from gateway.router import AgentView, EligibilityIndex, WaitingLists

VOICE, CHAT, EMAIL = Channel.VOICE, Channel.CHAT, Channel.EMAIL
ALL_ROOM = {VOICE: True, CHAT: True, EMAIL: True}


def view(
    agent_id: str,
    *,
    idle: tuple[float, int] = (0.0, 0),
    share: float = 0.0,
    sessions: int = 0,
    queues: tuple[str, ...] = ("q",),
    room: dict[Channel, bool] | None = None,
) -> AgentView:
    return AgentView(
        agent_id=agent_id,
        queues=queues,
        room=dict(ALL_ROOM if room is None else room),
        idle_since=idle,
        busy_share=share,
        sessions=sessions,
    )


def index(policy: QueuePolicy = QueuePolicy.LONGEST_IDLE, *views: AgentView) -> EligibilityIndex:
    idx = EligibilityIndex({"q": policy})
    for v in views:
        idx.update(v)
    return idx


# ---------------------------------------------------------------------------- EligibilityIndex


def test_longest_idle_orders_by_idle_since_oldest_first() -> None:
    idx = index(
        QueuePolicy.LONGEST_IDLE,
        view("a", idle=(30.0, 1)),
        view("b", idle=(10.0, 2)),
        view("c", idle=(20.0, 3)),
    )
    assert idx.eligible("q", CHAT) == ["b", "c", "a"]


def test_longest_idle_same_time_is_ordered_by_sequence_then_agent_id() -> None:
    idx = index(
        QueuePolicy.LONGEST_IDLE,
        view("a", idle=(10.0, 5)),
        view("b", idle=(10.0, 4)),
        view("d", idle=(0.0, 0)),
        view("c", idle=(0.0, 0)),
    )
    assert idx.eligible("q", CHAT) == ["c", "d", "b", "a"]


def test_least_busy_orders_by_share_then_sessions_then_idle_then_id() -> None:
    idx = index(
        QueuePolicy.LEAST_BUSY,
        view("busy", share=0.5, sessions=1, idle=(1.0, 1)),
        view("many", share=0.25, sessions=3, idle=(1.0, 2)),
        view("few", share=0.25, sessions=1, idle=(5.0, 3)),
        view("few-older", share=0.25, sessions=1, idle=(2.0, 4)),
        view("idle", share=0.0, sessions=0, idle=(9.0, 5)),
    )
    assert idx.eligible("q", CHAT) == ["idle", "few-older", "few", "many", "busy"]


def test_an_agent_without_room_for_a_channel_is_only_missing_from_that_channel() -> None:
    idx = index(
        QueuePolicy.LONGEST_IDLE,
        view("a", idle=(1.0, 1), room={VOICE: False, CHAT: True, EMAIL: True}),
        view("b", idle=(2.0, 2)),
    )
    assert idx.eligible("q", VOICE) == ["b"]
    assert idx.eligible("q", CHAT) == ["a", "b"]
    assert idx.eligible("q", EMAIL) == ["a", "b"]


def test_candidates_skip_excluded_agents_and_keep_the_order() -> None:
    idx = index(QueuePolicy.LONGEST_IDLE, *(view(a, idle=(float(i), i)) for i, a in enumerate(["a", "b", "c", "d"])))
    assert list(idx.candidates("q", CHAT, exclude={"a", "c"})) == ["b", "d"]
    assert list(idx.candidates("q", CHAT, exclude=["b"])) == ["a", "c", "d"]
    assert list(idx.candidates("q", CHAT, exclude={"a", "b", "c", "d"})) == []


def test_update_moves_an_agent_when_its_idle_time_changes() -> None:
    """Being offered work sends an agent to the back of a longest_idle queue."""
    idx = index(QueuePolicy.LONGEST_IDLE, view("a", idle=(1.0, 1)), view("b", idle=(2.0, 2)))
    idx.update(view("a", idle=(3.0, 3)))
    assert idx.eligible("q", CHAT) == ["b", "a"]


def test_update_moves_an_agent_when_its_load_changes_under_least_busy() -> None:
    idx = index(QueuePolicy.LEAST_BUSY, view("a"), view("b", idle=(1.0, 1)))
    assert idx.eligible("q", CHAT) == ["a", "b"]
    idx.update(view("a", share=1 / 3, sessions=1))
    assert idx.eligible("q", CHAT) == ["b", "a"]


def test_update_removes_and_readds_an_agent_as_its_room_changes() -> None:
    idx = index(QueuePolicy.LONGEST_IDLE, view("a"), view("b", idle=(1.0, 1)))
    idx.update(view("a", room={VOICE: False, CHAT: False, EMAIL: False}))
    assert idx.eligible("q", CHAT) == ["b"]
    assert idx.eligible("q", VOICE) == ["b"]
    idx.update(view("a"))
    assert idx.eligible("q", CHAT) == ["a", "b"]


def test_repeated_identical_updates_do_not_duplicate_entries() -> None:
    idx = index(QueuePolicy.LONGEST_IDLE, view("a"), view("a"), view("a"))
    assert idx.eligible("q", CHAT) == ["a"]


def test_each_queue_orders_by_its_own_policy_and_unknown_queues_are_ignored() -> None:
    idx = EligibilityIndex({"idle": QueuePolicy.LONGEST_IDLE, "busy": QueuePolicy.LEAST_BUSY})
    both = ("idle", "busy", "not-configured")
    idx.update(view("a", idle=(1.0, 1), share=0.5, sessions=1, queues=both))
    idx.update(view("b", idle=(2.0, 2), share=0.0, sessions=0, queues=both))
    assert idx.eligible("idle", CHAT) == ["a", "b"]
    assert idx.eligible("busy", CHAT) == ["b", "a"]
    assert idx.eligible("not-configured", CHAT) == []
    assert list(idx.candidates("not-configured", CHAT)) == []


def test_an_agent_is_only_listed_in_its_own_queues() -> None:
    idx = EligibilityIndex({"q": QueuePolicy.LONGEST_IDLE, "other": QueuePolicy.LONGEST_IDLE})
    idx.update(view("a", queues=("q",)))
    assert idx.eligible("q", CHAT) == ["a"]
    assert idx.eligible("other", CHAT) == []


def test_manual_is_not_a_routable_channel() -> None:
    idx = index(QueuePolicy.LONGEST_IDLE, view("a"))
    assert idx.eligible("q", Channel.MANUAL) == []


# ---------------------------------------------------------------------------- WaitingLists


def test_waiting_list_add_len_contains_and_count() -> None:
    w = WaitingLists()
    w.add("k1", "q", CHAT, 0)
    w.add("k2", "q", EMAIL, 0)
    w.add("k3", "other", CHAT, 0)
    assert len(w) == 3
    assert "k2" in w and "k9" not in w
    assert w.count("q") == 2
    assert w.count("other") == 1
    assert w.count("nobody") == 0


def test_waiting_list_refuses_a_key_twice() -> None:
    w = WaitingLists()
    w.add("k1", "q", CHAT, 0)
    with pytest.raises(ValueError):
        w.add("k1", "q", EMAIL, 3)
    assert len(w) == 1


def test_waiters_are_ordered_by_priority_then_arrival() -> None:
    w = WaitingLists()
    w.add("low-1", "q", CHAT, 0)
    w.add("high-1", "q", CHAT, 5)
    w.add("low-2", "q", CHAT, 0)
    w.add("high-2", "q", CHAT, 5)
    w.add("negative", "q", CHAT, -1)
    assert [x.key for x in w.waiters()] == ["high-1", "high-2", "low-1", "low-2", "negative"]


def test_remove_returns_the_waiter_once() -> None:
    w = WaitingLists()
    added = w.add("k1", "q", CHAT, 2)
    assert w.remove("k1") == added
    assert w.remove("k1") is None
    assert len(w) == 0 and w.count("q") == 0
    assert w.best_for(["q"], lambda c: True, lambda k: False) is None


def _never(_key: Hashable) -> bool:
    return False


def test_best_for_picks_the_best_head_over_all_queues_and_channels() -> None:
    w = WaitingLists()
    w.add("q-chat", "q", CHAT, 0)
    w.add("other-email", "other", EMAIL, 0)
    w.add("other-voice-urgent", "other", VOICE, 3)
    best = w.best_for(["q", "other"], lambda c: True, _never)
    assert best is not None and best.key == "other-voice-urgent"
    w.remove("other-voice-urgent")
    best = w.best_for(["q", "other"], lambda c: True, _never)
    assert best is not None and best.key == "q-chat"  # same priority: earlier arrival


def test_best_for_only_looks_at_the_agents_queues() -> None:
    w = WaitingLists()
    w.add("elsewhere", "other", CHAT, 9)
    w.add("mine", "q", CHAT, 0)
    best = w.best_for(["q"], lambda c: True, _never)
    assert best is not None and best.key == "mine"


def test_best_for_skips_channels_the_agent_has_no_room_for() -> None:
    w = WaitingLists()
    w.add("call", "q", VOICE, 9)
    w.add("mail", "q", EMAIL, 0)
    best = w.best_for(["q"], lambda c: c is not VOICE, _never)
    assert best is not None and best.key == "mail"
    assert w.best_for(["q"], lambda c: False, _never) is None


def test_best_for_skips_interactions_the_agent_refuses_and_takes_the_next_one() -> None:
    w = WaitingLists()
    w.add("declined-before", "q", CHAT, 5)
    w.add("next", "q", CHAT, 5)
    w.add("later", "q", CHAT, 0)
    best = w.best_for(["q"], lambda c: True, lambda key: key == "declined-before")
    assert best is not None and best.key == "next"
    assert w.best_for(["q"], lambda c: True, lambda key: True) is None
    assert len(w) == 3  # best_for only looks, it does not take


def test_fifo_within_priority_survives_removals_from_the_middle() -> None:
    w = WaitingLists()
    for key in ("k1", "k2", "k3", "k4"):
        w.add(key, "q", CHAT, 0)
    w.remove("k2")
    w.add("k5", "q", CHAT, 0)
    assert [x.key for x in w.waiters()] == ["k1", "k3", "k4", "k5"]
