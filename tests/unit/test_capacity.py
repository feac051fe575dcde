"""Capacity rules of DESIGN section 4: the five rules, the reasons and their order, defaults."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.capacity import Load, Presence, Reason, check, within_limits
from gateway.config import CapacityProfile
from gateway.events import Channel

VOICE, CHAT, EMAIL, MANUAL = Channel.VOICE, Channel.CHAT, Channel.EMAIL, Channel.MANUAL
READY, NOT_READY, OFFLINE = Presence.READY, Presence.NOT_READY, Presence.OFFLINE


def holding(profile: CapacityProfile, **counts: int) -> Load:
    """The load of an agent holding ``counts`` sessions per channel (built with Load.plus)."""
    load = Load()
    for name, n in counts.items():
        for _ in range(n):
            load = load.plus(Channel(name), profile.weight(Channel(name)))
    return load


BLENDED = CapacityProfile(max_sessions=6, reserved_inbound=1, channels={VOICE: 1, CHAT: 6, EMAIL: 3, MANUAL: 5})


# ---------------------------------------------------------------------------- reasons


def test_rejection_reasons_are_the_exact_contract_strings() -> None:
    assert {r.value for r in Reason} == {
        "agent_at_capacity",
        "channel_at_capacity",
        "agent_not_ready",
        "agent_offline",
        "unknown_agent",
        "no_agent_available",
        "offer_timeout",
        "queue_timeout",
        "vendor_unsupported",
    }
    assert Reason.AGENT_AT_CAPACITY == "agent_at_capacity"
    assert Presence.NOT_READY == "not_ready"


# ---------------------------------------------------------------------------- defaults


def test_profile_defaults_follow_the_design() -> None:
    """Only max_sessions is required: reserved 0, caps = max_sessions, units 1, max_units =
    max_sessions, offer timeout 30 s and wrap-up 0 s for every channel."""
    p = CapacityProfile(max_sessions=4)
    assert p.reserved_inbound == 0
    assert p.unit_limit == 4
    for c in Channel:
        assert p.cap(c) == 4
        assert p.weight(c) == 1
        assert p.offer_timeout(c) == 30.0
        assert p.wrap_up(c) == 0.0


def test_partial_maps_default_only_the_missing_channels() -> None:
    p = CapacityProfile(
        max_sessions=5,
        max_units=9,
        channels={VOICE: 1},
        units={EMAIL: 3},
        offer_timeout_s={VOICE: 20},
        wrap_up_s={VOICE: 15},
    )
    assert (p.cap(VOICE), p.cap(CHAT)) == (1, 5)
    assert (p.weight(EMAIL), p.weight(CHAT)) == (3, 1)
    assert p.unit_limit == 9
    assert (p.offer_timeout(VOICE), p.offer_timeout(EMAIL)) == (20, 30.0)
    assert (p.wrap_up(VOICE), p.wrap_up(CHAT)) == (15, 0.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_sessions": 0},
        {"max_sessions": 65},
        {"max_sessions": 2, "reserved_inbound": 2},
        {"max_sessions": 6, "units": {"voice": 7}},
        {"max_sessions": 6, "max_units": 4, "units": {"voice": 6}},
        {"max_sessions": 6, "channels": {"chat": 0}},
    ],
)
def test_profiles_that_could_never_admit_a_session_are_refused(fields: Mapping[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CapacityProfile.model_validate(fields)


# ---------------------------------------------------------------------------- Load


def test_load_plus_counts_session_units_and_channel() -> None:
    load = Load().plus(EMAIL, 2)
    assert load == Load(sessions=1, units=2, email=1)
    assert load.plus(CHAT, 1) == Load(sessions=2, units=3, email=1, chat=1)
    assert load.of(EMAIL) == 1 and load.of(CHAT) == 0


def test_load_is_immutable_plus_and_minus_return_new_loads() -> None:
    load = Load()
    more = load.plus(VOICE, 1)
    assert load == Load()
    assert more.minus(VOICE, 1) == Load()
    assert more == Load(sessions=1, units=1, voice=1)


def test_load_minus_is_the_inverse_of_plus_for_every_channel_and_weight() -> None:
    base = Load(sessions=3, units=5, voice=1, chat=1, email=1)
    for channel, weight in itertools.product(Channel, (1, 2, 6)):
        assert base.plus(channel, weight).minus(channel, weight) == base


@pytest.mark.parametrize(
    ("load", "channel", "weight"),
    [
        (Load(), CHAT, 1),  # nothing held at all
        (Load(sessions=1, units=1, chat=1), EMAIL, 1),  # no e-mail held
        (Load(sessions=1, units=1, voice=1), VOICE, 6),  # fewer units held than released
    ],
)
def test_load_minus_refuses_to_release_what_is_not_held(load: Load, channel: Channel, weight: int) -> None:
    with pytest.raises(ValueError):
        load.minus(channel, weight)


def test_load_as_dict_has_the_in_use_shape_of_the_agent_object() -> None:
    assert Load(sessions=2, units=3, voice=1, email=1).as_dict() == {
        "sessions": 2,
        "units": 3,
        "voice": 1,
        "chat": 0,
        "email": 1,
        "manual": 0,
    }


# ---------------------------------------------------------------------------- rule 1: max_sessions


def test_rule1_the_last_session_is_admitted_one_more_is_agent_at_capacity() -> None:
    p = CapacityProfile(max_sessions=3)
    assert check(p, holding(p, chat=1, email=1), READY, CHAT) is None
    assert check(p, holding(p, chat=2, email=1), READY, CHAT) is Reason.AGENT_AT_CAPACITY
    assert check(p, holding(p, chat=1, email=1, voice=1), READY, EMAIL) is Reason.AGENT_AT_CAPACITY


# ---------------------------------------------------------------------------- rule 2: channel caps


def test_rule2_a_full_channel_is_channel_at_capacity_other_channels_still_admitted() -> None:
    p = CapacityProfile(max_sessions=5, channels={CHAT: 2})
    assert check(p, holding(p, chat=1), READY, CHAT) is None
    assert check(p, holding(p, chat=2), READY, CHAT) is Reason.CHANNEL_AT_CAPACITY
    assert check(p, holding(p, chat=2), READY, EMAIL) is None
    assert check(p, holding(p, chat=2), READY, VOICE) is None


def test_rule2_a_channel_missing_from_channels_is_capped_by_max_sessions_only() -> None:
    p = CapacityProfile(max_sessions=3, channels={VOICE: 1})
    assert check(p, holding(p, email=2), READY, EMAIL) is None
    assert check(p, holding(p, email=1, chat=2), READY, EMAIL) is Reason.AGENT_AT_CAPACITY


def test_rule2_a_missing_channel_filling_the_agent_alone_is_agent_at_capacity() -> None:
    """A channel missing from `channels` is "capped only by max_sessions": it has no cap of
    its own, so when it alone fills the agent the reason is rule 1's agent_at_capacity."""
    p = CapacityProfile(max_sessions=3)
    assert check(p, holding(p, chat=3), READY, CHAT) is Reason.AGENT_AT_CAPACITY
    assert check(p, holding(p, chat=3), READY, EMAIL) is Reason.AGENT_AT_CAPACITY


# ---------------------------------------------------------------------------- rule 3: units


def test_rule3_units_in_use_may_not_exceed_max_units() -> None:
    """Sessions are free but the weights are not: agent_at_capacity."""
    p = CapacityProfile(max_sessions=6, max_units=4, units={EMAIL: 2})
    assert check(p, holding(p, chat=2), READY, EMAIL) is None  # 2 + 2 = 4 units
    assert check(p, holding(p, chat=3), READY, EMAIL) is Reason.AGENT_AT_CAPACITY  # 3 + 2 = 5
    assert check(p, holding(p, chat=3), READY, CHAT) is None  # 3 + 1 = 4
    assert check(p, holding(p, chat=2, email=1), READY, CHAT) is Reason.AGENT_AT_CAPACITY


def test_rule3_max_units_defaults_to_max_sessions() -> None:
    p = CapacityProfile(max_sessions=4, units={EMAIL: 2})
    assert check(p, holding(p, email=1, chat=1), READY, CHAT) is None  # 3 + 1 = 4
    assert check(p, holding(p, email=1, chat=1), READY, EMAIL) is Reason.AGENT_AT_CAPACITY  # 3 + 2


# ---------------------------------------------------------------------------- rule 4: reserved_inbound


def test_rule4_manual_sessions_never_take_the_reserved_free_sessions() -> None:
    p = CapacityProfile(max_sessions=4, reserved_inbound=2)
    assert check(p, holding(p, chat=1), READY, MANUAL) is None  # 2 free after
    assert check(p, holding(p, chat=2), READY, MANUAL) is Reason.AGENT_AT_CAPACITY  # 1 free after
    assert check(p, holding(p, manual=2), READY, MANUAL) is Reason.AGENT_AT_CAPACITY


def test_rule4_inbound_sessions_may_take_the_reserved_sessions() -> None:
    p = CapacityProfile(max_sessions=4, reserved_inbound=2)
    for channel in (VOICE, CHAT, EMAIL):
        assert check(p, holding(p, chat=3), READY, channel) is None


def test_rule4_without_reservation_manual_may_take_the_last_session() -> None:
    p = CapacityProfile(max_sessions=2)
    assert check(p, holding(p, chat=1), READY, MANUAL) is None


# ---------------------------------------------------------------------------- rule 5: presence


@pytest.mark.parametrize("channel", [VOICE, CHAT, EMAIL])
def test_rule5_inbound_needs_a_ready_agent(channel: Channel) -> None:
    p = CapacityProfile(max_sessions=3)
    assert check(p, Load(), READY, channel) is None
    assert check(p, Load(), NOT_READY, channel) is Reason.AGENT_NOT_READY
    assert check(p, Load(), OFFLINE, channel) is Reason.AGENT_OFFLINE


def test_rule5_manual_sessions_allowed_in_any_presence_but_offline() -> None:
    p = CapacityProfile(max_sessions=3)
    assert check(p, Load(), READY, MANUAL) is None
    assert check(p, Load(), NOT_READY, MANUAL) is None
    assert check(p, Load(), OFFLINE, MANUAL) is Reason.AGENT_OFFLINE


# ---------------------------------------------------------------------------- order of reasons


def test_offline_comes_before_every_capacity_reason() -> None:
    p = CapacityProfile(max_sessions=2, channels={CHAT: 1})
    full = holding(p, chat=1, email=1)
    assert check(p, full, OFFLINE, CHAT) is Reason.AGENT_OFFLINE
    assert check(p, full, OFFLINE, MANUAL) is Reason.AGENT_OFFLINE


def test_not_ready_comes_before_channel_and_agent_capacity() -> None:
    p = CapacityProfile(max_sessions=2, channels={CHAT: 1})
    assert check(p, holding(p, chat=1, email=1), NOT_READY, CHAT) is Reason.AGENT_NOT_READY


def test_channel_at_capacity_comes_before_agent_at_capacity() -> None:
    """Rule 2 and rule 1 both broken: channel_at_capacity."""
    p = CapacityProfile(max_sessions=2, channels={CHAT: 1})
    assert check(p, holding(p, chat=1, email=1), READY, CHAT) is Reason.CHANNEL_AT_CAPACITY


def test_channel_at_capacity_comes_before_a_units_overflow() -> None:
    """Rule 2 and rule 3 both broken: channel_at_capacity."""
    p = CapacityProfile(max_sessions=4, max_units=4, units={VOICE: 3}, channels={VOICE: 1})
    assert check(p, holding(p, voice=1), READY, VOICE) is Reason.CHANNEL_AT_CAPACITY


def test_manual_under_not_ready_still_gets_capacity_reasons() -> None:
    """Presence passes for manual under not_ready, so the capacity reasons decide."""
    p = CapacityProfile(max_sessions=3, reserved_inbound=1, channels={MANUAL: 1})
    assert check(p, holding(p, manual=1), NOT_READY, MANUAL) is Reason.CHANNEL_AT_CAPACITY
    assert check(p, holding(p, chat=2), NOT_READY, MANUAL) is Reason.AGENT_AT_CAPACITY


def _oracle(
    profile: CapacityProfile, counts: Mapping[Channel, int], presence: Presence, channel: Channel
) -> str | None:
    """DESIGN section 4 written out independently: every rule checked *after* the allocation,
    the first reason of the contract order wins."""
    after = dict(counts)
    after[channel] += 1
    sessions = sum(after.values())
    units = sum(n * profile.units.get(c, 1) for c, n in after.items())
    max_units = profile.max_units or profile.max_sessions
    reasons = []
    if presence is OFFLINE:
        reasons.append("agent_offline")
    if presence is NOT_READY and channel is not MANUAL:
        reasons.append("agent_not_ready")
    if channel in profile.channels and after[channel] > profile.channels[channel]:
        reasons.append("channel_at_capacity")  # only a listed channel has a cap of its own
    if (
        sessions > profile.max_sessions
        or units > max_units
        or (channel is MANUAL and profile.max_sessions - sessions < profile.reserved_inbound)
    ):
        reasons.append("agent_at_capacity")
    return reasons[0] if reasons else None


@pytest.mark.parametrize(
    "profile",
    [
        CapacityProfile(max_sessions=3),
        CapacityProfile(max_sessions=4, reserved_inbound=2, channels={VOICE: 1, EMAIL: 2, MANUAL: 3}),
        CapacityProfile(max_sessions=4, max_units=5, units={VOICE: 3, EMAIL: 2}, channels={CHAT: 3}),
        CapacityProfile(max_sessions=3, reserved_inbound=1, max_units=3, units={VOICE: 3}),
    ],
    ids=["plain", "reserved+caps", "weighted", "exclusive-voice"],
)
def test_check_agrees_with_the_rules_on_every_small_load(profile: CapacityProfile) -> None:
    """Exhaustive over every load of up to 4 sessions per channel, every presence, every channel."""
    compared = 0
    for numbers in itertools.product(range(5), repeat=4):
        counts = dict(zip(Channel, numbers, strict=True))
        load = holding(profile, **{c.value: n for c, n in counts.items()})
        for presence, channel in itertools.product(Presence, Channel):
            expected = _oracle(profile, counts, presence, channel)
            got = check(profile, load, presence, channel)
            assert (got.value if got else None) == expected, (counts, presence, channel)
            compared += 1
    assert compared == 5**4 * 3 * 4


# ---------------------------------------------------------------------------- within_limits


def test_within_limits_detects_every_kind_of_overflow() -> None:
    p = CapacityProfile(max_sessions=3, max_units=4, channels={VOICE: 1}, units={EMAIL: 2})
    assert within_limits(p, holding(p, voice=1, email=1, chat=1))
    assert not within_limits(p, holding(p, chat=4))  # sessions
    assert not within_limits(p, holding(p, email=2, chat=1))  # units 5 > 4
    assert not within_limits(p, holding(p, voice=2))  # channel cap


# ---------------------------------------------------------------------------- worked examples


def test_blended_profile_holds_three_chats_two_emails_and_one_call() -> None:
    """The SAP-style six sessions: each of these allocations is admitted in turn."""
    load = Load()
    for channel in (CHAT, CHAT, CHAT, EMAIL, EMAIL, VOICE):
        assert check(BLENDED, load, READY, channel) is None, (load, channel)
        load = load.plus(channel, BLENDED.weight(channel))
    assert load == Load(sessions=6, units=6, voice=1, chat=3, email=2)
    assert within_limits(BLENDED, load)


def test_blended_profile_full_refuses_everything_with_the_right_reason() -> None:
    full = holding(BLENDED, chat=3, email=2, voice=1)
    assert check(BLENDED, full, READY, CHAT) is Reason.AGENT_AT_CAPACITY
    assert check(BLENDED, full, READY, EMAIL) is Reason.AGENT_AT_CAPACITY
    assert check(BLENDED, full, READY, VOICE) is Reason.CHANNEL_AT_CAPACITY  # second call
    assert check(BLENDED, full, READY, MANUAL) is Reason.AGENT_AT_CAPACITY


def test_blended_reserved_session_goes_to_inbound_not_to_manual() -> None:
    """Five in use, one free: a manual session may not take it, an inbound call may."""
    five = holding(BLENDED, chat=3, email=2)
    assert check(BLENDED, five, READY, MANUAL) is Reason.AGENT_AT_CAPACITY
    assert check(BLENDED, five, READY, VOICE) is None
    assert check(BLENDED, five, READY, CHAT) is None
    four = holding(BLENDED, chat=3, email=1)
    assert check(BLENDED, four, READY, MANUAL) is None  # one still free after it


EXCLUSIVE_VOICE = CapacityProfile(max_sessions=6, units={VOICE: 6}, max_units=6)


def test_weighted_voice_call_takes_the_whole_capacity() -> None:
    assert check(EXCLUSIVE_VOICE, Load(), READY, VOICE) is None
    on_call = holding(EXCLUSIVE_VOICE, voice=1)
    assert on_call.units == 6
    for channel in (CHAT, EMAIL, MANUAL):
        assert check(EXCLUSIVE_VOICE, on_call, READY, channel) is Reason.AGENT_AT_CAPACITY
    assert check(EXCLUSIVE_VOICE, on_call, NOT_READY, MANUAL) is Reason.AGENT_AT_CAPACITY


@pytest.mark.parametrize("other", [CHAT, EMAIL, MANUAL])
def test_weighted_voice_is_blocked_by_any_other_session(other: Channel) -> None:
    one = holding(EXCLUSIVE_VOICE, **{other.value: 1})
    assert check(EXCLUSIVE_VOICE, one, READY, VOICE) is Reason.AGENT_AT_CAPACITY
    assert check(EXCLUSIVE_VOICE, one, READY, CHAT) is None  # the others still share the room


def test_weighted_voice_is_admitted_again_once_the_other_sessions_are_gone() -> None:
    one = holding(EXCLUSIVE_VOICE, chat=1)
    assert check(EXCLUSIVE_VOICE, one.minus(CHAT, 1), READY, VOICE) is None


def test_loads_from_plus_and_minus_are_shared_values_and_their_cache_stays_bounded() -> None:
    """plus()/minus() share one object per value (a Load is immutable); the cache behind
    that is emptied when full, and the values stay exact past it."""
    from gateway import capacity

    assert Load().plus(CHAT, 1) is Load().plus(CHAT, 1)
    for units in range(capacity._LOADS_MAX + 100):
        load = Load(sessions=1, units=units, chat=1).plus(EMAIL, 3)
        assert load == Load(sessions=2, units=units + 3, chat=1, email=1)
        assert len(capacity._LOADS) <= capacity._LOADS_MAX
