"""One client process of the allocation storm (``test_redis_store.py``): its own
:class:`RedisStateStore` (its own connections), all its attempts fired at once.

``python -m tests.integration.redis_storm PLAN.json`` where the plan holds ``url``,
``profiles`` (name -> CapacityProfile fields), ``agents`` (id -> profile name),
``op`` (``reserve``, ``release`` or ``release_session``) and ``attempts`` (``[agent,
channel]`` or ``[agent, channel, session id]``). Prints
``ready`` once connected, then waits for a line on stdin (the parent sends it when every
process is ready, so they really race), then one JSON list: per attempt ``[agent, channel,
outcome, load after]``, where outcome is the rejection reason, ``null`` (done) or ``not_held`` (a release of nothing).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway.config import CapacityProfile
from gateway.events import Channel
from gateway.state.redis import NotHeld, RedisStateStore


async def main(plan: dict[str, Any]) -> list[list[Any]]:
    profiles = {name: CapacityProfile.model_validate(fields) for name, fields in plan["profiles"].items()}
    store = RedisStateStore.from_url(plan["url"], max_connections=32, timeout_s=10.0)
    try:
        assert await store.ping()

        async def one(agent: str, channel: str, session_id: str | None = None) -> list[Any]:
            profile = profiles[plan["agents"][agent]]
            if plan["op"] == "reserve":
                reason, state = await store.reserve(agent, profile, Channel(channel), session_id=session_id)
                return [agent, channel, reason.value if reason else None, state.load.as_dict()]
            if plan["op"] == "release_session":
                assert session_id is not None
                released, state = await store.release_session(agent, session_id)
                return [agent, channel, None if released else "not_held", state.load.as_dict()]
            try:
                state = await store.release(agent, profile, Channel(channel))
            except NotHeld:
                return [agent, channel, "not_held", None]
            return [agent, channel, None, state.load.as_dict()]

        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the go signal
        return list(await asyncio.gather(*(one(*attempt) for attempt in plan["attempts"])))
    finally:
        await store.close()


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        results = asyncio.run(main(json.load(file)))
    print(json.dumps(results))
