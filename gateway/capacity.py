"""Capacity: the five allocation rules of DESIGN section 4, as pure functions.

A session occupies its slot while ``offered``, ``active`` or ``wrap_up``. An allocation of
channel ``c`` on an agent is allowed iff all of these hold after it:

1. sessions in use <= ``max_sessions``;
2. sessions of channel ``c`` <= ``channels[c]``;
3. units in use <= ``max_units``;
4. if ``c`` is ``manual``: free sessions >= ``reserved_inbound``;
5. the agent is ``ready`` (manual sessions: any presence but ``offline``).

When several rules fail, the reason given is the first of: ``agent_offline``,
``agent_not_ready``, ``channel_at_capacity`` (rule 2), ``agent_at_capacity`` (rules 1, 3, 4).
``unknown_agent`` comes before all of them and is decided by whoever looks the agent up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .config import CapacityProfile
from .events import Channel


class Presence(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    OFFLINE = "offline"


class Reason(StrEnum):
    """Rejection reasons (exact strings, DESIGN section 4)."""

    AGENT_AT_CAPACITY = "agent_at_capacity"
    CHANNEL_AT_CAPACITY = "channel_at_capacity"
    AGENT_NOT_READY = "agent_not_ready"
    AGENT_OFFLINE = "agent_offline"
    UNKNOWN_AGENT = "unknown_agent"
    NO_AGENT_AVAILABLE = "no_agent_available"
    OFFER_TIMEOUT = "offer_timeout"
    QUEUE_TIMEOUT = "queue_timeout"
    VENDOR_UNSUPPORTED = "vendor_unsupported"


@dataclass(frozen=True, slots=True)
class Load:
    """What one agent holds: occupying sessions and units, in total and per channel."""

    sessions: int = 0
    units: int = 0
    voice: int = 0
    chat: int = 0
    email: int = 0
    manual: int = 0

    def of(self, channel: Channel) -> int:
        return int(getattr(self, _FIELD[channel]))

    def plus(self, channel: Channel, weight: int) -> Load:
        return self._moved(channel, 1, weight)

    def minus(self, channel: Channel, weight: int) -> Load:
        if self.of(channel) < 1 or self.sessions < 1 or self.units < weight:
            raise ValueError(f"release of a {channel} session that is not held: {self}")
        return self._moved(channel, -1, -weight)

    def _moved(self, channel: Channel, step: int, units: int) -> Load:
        # (dataclasses.replace would do, at several times the cost: this is the hot path)
        counts = (
            self.sessions + step,
            self.units + units,
            self.voice + step if channel is Channel.VOICE else self.voice,
            self.chat + step if channel is Channel.CHAT else self.chat,
            self.email + step if channel is Channel.EMAIL else self.email,
            self.manual + step if channel is Channel.MANUAL else self.manual,
        )
        # a Load is an immutable value and agents hold few distinct ones: one object per
        # value is shared (a frozen dataclass's __init__ costs ~5x the lookup: one
        # object.__setattr__ call per field)
        found = _LOADS.get(counts)
        if found is None:
            if len(_LOADS) >= _LOADS_MAX:
                _LOADS.clear()
            found = _LOADS[counts] = Load(*counts)
        return found

    def as_dict(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "units": self.units,
            "voice": self.voice,
            "chat": self.chat,
            "email": self.email,
            "manual": self.manual,
        }


#: the Load objects made by plus() and minus(), by their counts (a pure cache: see _moved)
_LOADS: dict[tuple[int, int, int, int, int, int], Load] = {}
_LOADS_MAX = 4096

#: Load's field of each channel (``channel.value`` costs an enum descriptor call)
_FIELD: dict[Channel, str] = {channel: channel.value for channel in Channel}


def check(profile: CapacityProfile, load: Load, presence: Presence, channel: Channel) -> Reason | None:
    """Why one more ``channel`` session may not go to an agent in this state (None: it may)."""
    if presence is Presence.OFFLINE:
        return Reason.AGENT_OFFLINE
    if channel is not Channel.MANUAL and presence is not Presence.READY:
        return Reason.AGENT_NOT_READY
    # rule 2 is the channel's own cap: a channel missing from `channels` is capped only by
    # max_sessions, so filling the agent with it is rule 1 (agent_at_capacity)
    cap = profile.channels.get(channel)
    if cap is not None and getattr(load, _FIELD[channel]) + 1 > cap:
        return Reason.CHANNEL_AT_CAPACITY
    sessions_after = load.sessions + 1
    max_sessions = profile.max_sessions
    if sessions_after > max_sessions:
        return Reason.AGENT_AT_CAPACITY
    # (profile.weight and profile.unit_limit, read directly: this runs on every allocation)
    max_units = profile.max_units
    if load.units + profile.units.get(channel, 1) > (max_sessions if max_units is None else max_units):
        return Reason.AGENT_AT_CAPACITY
    if channel is Channel.MANUAL and max_sessions - sessions_after < profile.reserved_inbound:
        return Reason.AGENT_AT_CAPACITY
    return None


def within_limits(profile: CapacityProfile, load: Load) -> bool:
    """Whether a load respects every cap of the profile (the invariant, not the admission)."""
    return (
        load.sessions <= profile.max_sessions
        and load.units <= profile.unit_limit
        and all(load.of(c) <= profile.cap(c) for c in Channel)
    )
