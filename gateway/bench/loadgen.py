"""The load generator of ``cti-gateway bench``: a separate process sending signed webhook offers.

``python -m gateway.bench.loadgen SPEC_PATH OUT_PATH``; the spec says:

* ``mode: "closed"``: ``concurrency`` requests in flight for ``duration`` seconds, each sent
  as soon as the previous one on its lane was answered (saturation: requests per second);
* ``mode: "open"``: ``count`` offers on a fixed schedule at ``rate`` per second: offer ``i``
  is due at ``t0 + i / rate`` whatever happened to the others, and every latency is measured
  from that scheduled instant, so a slow answer cannot hide the wait of the offers due after
  it (no coordinated omission).

``target`` is ``"gateway"`` (signed offers to ``/v1/vendors/{vendor}/events``) or ``"baseline"``
(the same JSON bodies to the bare server's ``/echo``). Times are ``time.monotonic()``
(CLOCK_MONOTONIC: comparable between processes of one machine). Bounded: every request
has a timeout, at most ``concurrency`` in flight, and the open schedule ends after ``count``.
The result (answers, decisions, scheduled times, errors) is written as JSON to OUT_PATH.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from adapters.webhook import signed_headers

CHANNELS = ("chat", "chat", "chat", "email", "voice")


def offer_body(run: str, n: int, queues: list[str]) -> tuple[str, str, bytes]:
    event_id = f"{run}-o{n}"
    interaction_id = f"{run}-i{n}"
    body = {
        "event_id": event_id,
        "type": "offer",
        "channel": CHANNELS[n % len(CHANNELS)],
        "interaction_id": interaction_id,
        "queue": queues[n % len(queues)],
        "customer": {"name": f"Customer {n}", "address": f"+49301234{n % 10000:04d}"},
        "subject": "Order 4711",
    }
    return event_id, interaction_id, json.dumps(body).encode()


class Gen:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.run: str = spec["run"]
        self.queues: list[str] = spec.get("queues", ["support"])
        self.target: str = spec["target"]
        base = spec["url"]
        self.url = f"{base}/echo" if self.target == "baseline" else f"{base}/v1/vendors/{spec['vendor']}/events"
        # several gateway instances (the cluster figure): offer n goes to instance n mod their count
        self.urls = [f"{u}/v1/vendors/{spec['vendor']}/events" for u in spec.get("urls") or ()] or [self.url]
        self.secret: str = spec.get("secret", "")
        self.timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout", 10.0)))
        self.answers: dict[str, dict[str, Any]] = {}  # event_id -> {decision, agent_id, interaction_id}
        self.sent: list[str] = []
        self.scheduled: dict[str, float] = {}  # interaction_id -> scheduled send (open mode)
        self.latency_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()

    async def one(self, session: aiohttp.ClientSession, n: int, due: float | None) -> None:
        event_id, interaction_id, body = offer_body(self.run, n, self.queues)
        headers = (
            signed_headers(self.secret, int(time.time()), body)
            if self.target == "gateway"
            else {"Content-Type": "application/json"}
        )
        self.sent.append(event_id)
        if due is not None:
            self.scheduled[interaction_id] = due
        url = self.urls[n % len(self.urls)]
        try:
            async with session.post(url, data=body, headers=headers, timeout=self.timeout) as response:
                payload = await response.read()
                # 409 is the webhook's answer to a rejection: a decision like any other
                answer = json.loads(payload) if response.status in (200, 409) else {}
                if not isinstance(answer, dict) or "decision" not in answer:
                    self.errors[f"http {response.status}"] += 1
                    return
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        done = time.monotonic()
        if due is not None:
            self.latency_ms.append((done - due) * 1000.0)
        decision = str(answer.get("decision"))
        self.decisions[decision] += 1
        self.answers[event_id] = {
            "decision": decision,
            "agent_id": answer.get("agent_id"),
            "interaction_id": interaction_id,
            "reason": answer.get("reason"),
        }

    async def closed(self, session: aiohttp.ClientSession) -> tuple[float, float]:
        duration = float(self.spec["duration"])
        counter = iter(range(10**9))
        start = time.monotonic()
        stop_at = start + duration

        async def lane() -> None:
            while time.monotonic() < stop_at:
                await self.one(session, next(counter), None)

        await asyncio.gather(*(lane() for _ in range(int(self.spec["concurrency"]))))
        return start, time.monotonic()

    async def open(self, session: aiohttp.ClientSession) -> tuple[float, float]:
        rate = float(self.spec["rate"])
        count = int(self.spec["count"])
        start = time.monotonic() + 0.05
        tasks: list[asyncio.Task[None]] = []
        for n in range(count):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(session, n, due)))
        await asyncio.gather(*tasks)
        return start, time.monotonic()

    async def main(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=int(self.spec.get("concurrency", 256)))
        async with aiohttp.ClientSession(connector=connector) as session:
            if self.spec["mode"] == "closed":
                start, end = await self.closed(session)
            else:
                start, end = await self.open(session)
        return {
            "start": start,
            "end": end,
            "sent": self.sent,
            "answered": len(self.answers),
            "answers": self.answers,
            "scheduled": self.scheduled,
            "latency_ms": self.latency_ms,
            "decisions": dict(self.decisions),
            "errors": dict(self.errors),
        }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as f:
        spec = json.load(f)
    result = asyncio.run(Gen(spec).main())
    with open(args[1], "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
