"""``cti-gateway simulate``: demo and load traffic against a running gateway.

It plays a vendor of the generic webhook: it sends signed ``offer`` events at a steady
rate (a channel mix, to queues and/or named agents), and ``hold`` seconds after an offer
was assigned or queued it sends that interaction's ``end``, so the agents' capacity comes
back and the run leaves nothing open. Then it prints a summary: the decisions by kind and
rejection reason, the answer latency of the offers (p50 / p95 / p99 / max), the rate it
achieved, and every error (transport failures, timeouts, answers that are not decisions).

Before the first offer it asks the gateway's ``/healthz``: a gateway that is not reachable
(nothing listening, a wrong host, not a cti-gateway) stops the run at once with
:class:`GatewayUnreachable` (one line from the command, exit status 3) instead of a summary
full of connection errors. While it runs, an optional ``progress`` callback is called every
``progress_interval`` seconds (the command prints a line to stderr: sent, assigned,
rejected, queued, errors, rate).

Bounded by construction: at most ``count`` offers, none sent after ``duration`` seconds,
each request with a timeout, at most ``concurrency`` offers (and as many ends) in flight; the run ends at
the latest ``duration + hold + timeout`` seconds after it started. It refuses to send to
anything but a loopback address unless told ``allow_remote`` (load against a production
gateway should be a deliberate act).

The pure parts (options, the loopback check, the summary) are separate from the runner,
:func:`simulate`, so that benchmarks and tests can call it in-process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from adapters.webhook import signed_headers

if TYPE_CHECKING:  # pragma: no cover
    from .config import GatewayConfig

__all__ = [
    "INBOUND",
    "GatewayUnreachable",
    "SimulateOptions",
    "Summary",
    "check_url",
    "parse_channel_mix",
    "percentile",
    "simulate",
]

INBOUND = ("voice", "chat", "email")
DEFAULT_MIX = {"voice": 1.0, "chat": 2.0, "email": 1.0}

#: upper bounds of the options (the command line refuses more)
MAX_COUNT = 1_000_000
MAX_RATE = 10_000.0
MAX_DURATION_S = 3600.0
MAX_HOLD_S = 3600.0
MAX_CONCURRENCY = 1000


class SimulateError(ValueError):
    """The options cannot work (bad URL, refused remote host, empty target list ...)."""


class GatewayUnreachable(RuntimeError):
    """Nothing at the URL answers as a gateway: the run did not start."""


#: Seconds the reachability check may take at most (less when ``timeout`` is lower).
PROBE_TIMEOUT_S = 5.0


def parse_channel_mix(specs: Sequence[str]) -> dict[str, float]:
    """``["chat=3,voice=1", "email"]`` -> ``{"chat": 3.0, "voice": 1.0, "email": 1.0}``."""
    mix: dict[str, float] = {}
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, weight_text = item.partition("=")
            name = name.strip().lower()
            if name not in INBOUND:
                raise SimulateError(f"--channel: unknown channel {name!r} (one of {', '.join(INBOUND)})")
            try:
                weight = float(weight_text) if sep else 1.0
            except ValueError:
                raise SimulateError(f"--channel: the weight of {name} must be a number, not {weight_text!r}") from None
            if not (weight >= 0 and math.isfinite(weight)):
                raise SimulateError(f"--channel: the weight of {name} must be >= 0")
            mix[name] = weight
    if mix and not any(mix.values()):
        raise SimulateError("--channel: at least one channel needs a weight above 0")
    return mix or dict(DEFAULT_MIX)


def check_url(url: str, *, allow_remote: bool) -> str:
    """The base URL without a trailing slash; refuses anything but loopback unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulateError(f"--url must be an http:// or https:// URL with a host, not {url!r}")
    if parts.query or parts.fragment:
        raise SimulateError(f"--url takes no query or fragment: {url!r}")
    host = parts.hostname
    if not allow_remote and not _is_loopback(host):
        raise SimulateError(
            f"refusing to send simulated traffic to {host}: not a loopback address "
            "(pass --allow-remote to load a gateway on another host)"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it could resolve anywhere


@dataclass(frozen=True)
class SimulateOptions:
    url: str
    vendor: str
    secret: str = field(repr=False)
    rate: float = 20.0
    count: int = 100
    duration: float = 60.0
    channels: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    queues: Sequence[str] = ()
    agents: Sequence[str] = ()
    #: seconds from an assigned / queued answer to the interaction's end; None: never end
    hold: float | None = 1.0
    concurrency: int = 32
    timeout: float = 10.0
    run_id: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:8]}")
    seed: int | None = None
    allow_remote: bool = False

    def validated(self) -> SimulateOptions:
        """Check every bound; returns self (raises :class:`SimulateError`)."""
        check_url(self.url, allow_remote=self.allow_remote)
        problems = []
        if not 1 <= self.count <= MAX_COUNT:
            problems.append(f"--count must be 1..{MAX_COUNT}")
        if not 0 < self.rate <= MAX_RATE:
            problems.append(f"--rate must be > 0 and <= {MAX_RATE:g} events/s")
        if not 0 < self.duration <= MAX_DURATION_S:
            problems.append(f"--duration must be > 0 and <= {MAX_DURATION_S:g} s")
        if self.hold is not None and not 0 <= self.hold <= MAX_HOLD_S:
            problems.append(f"--hold must be 0..{MAX_HOLD_S:g} s")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            problems.append(f"--concurrency must be 1..{MAX_CONCURRENCY}")
        if not 0 < self.timeout <= 300:
            problems.append("--timeout must be > 0 and <= 300 s")
        if not self.queues and not self.agents:
            problems.append("name at least one --queue or --agent to offer to")
        if not self.vendor:
            problems.append("--vendor is required")
        if not self.secret:
            problems.append("the vendor's webhook secret is required (--secret, $CTI_WEBHOOK_SECRET or --config)")
        if not any(self.channels.get(c, 0) > 0 for c in INBOUND):
            problems.append("--channel: no channel to offer")
        if problems:
            raise SimulateError("; ".join(problems))
        return self


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Summary:
    url: str
    vendor: str
    run_id: str
    offers_planned: int
    offers_sent: int = 0
    offers_answered: int = 0
    ends_sent: int = 0
    ends_answered: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    end_latencies_ms: list[float] = field(default_factory=list)
    #: seconds from the first offer to the last offer's answer
    offer_phase_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def latency(self, values: Sequence[float] | None = None) -> dict[str, float | None]:
        data = self.latencies_ms if values is None else values
        return {
            "p50": _round(percentile(data, 50)),
            "p95": _round(percentile(data, 95)),
            "p99": _round(percentile(data, 99)),
            "max": _round(max(data) if data else None),
        }

    @property
    def offers_per_s(self) -> float:
        return self.offers_answered / self.offer_phase_s if self.offer_phase_s > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        """Every answered event (offers and ends) over the whole run."""
        answered = self.offers_answered + self.ends_answered
        return answered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def progress_line(self, elapsed_s: float) -> str:
        """One line about the run so far (the command prints one every second)."""
        rate = self.offers_answered / elapsed_s if elapsed_s > 0 else 0.0
        return (
            f"simulate {self.run_id}: {elapsed_s:5.1f} s: {self.offers_sent}/{self.offers_planned} sent, "
            f"{self.decisions['assigned']} assigned, {self.decisions['rejected']} rejected, "
            f"{self.decisions['queued']} queued, {self.ends_answered} ended, {self.error_count} errors, "
            f"{rate:.1f} offers/s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "vendor": self.vendor,
            "run_id": self.run_id,
            "offers": {"planned": self.offers_planned, "sent": self.offers_sent, "answered": self.offers_answered},
            "ends": {"sent": self.ends_sent, "answered": self.ends_answered},
            "decisions": dict(sorted(self.decisions.items())),
            "rejected": dict(sorted(self.reasons.items())),
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": self.latency(),
            "end_latency_ms": self.latency(self.end_latencies_ms),
            "offers_per_s": round(self.offers_per_s, 1),
            "events_per_s": round(self.events_per_s, 1),
            "offer_phase_s": round(self.offer_phase_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def render(self) -> str:
        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"

        lat = self.latency()
        lines = [
            f"simulate {self.run_id}: {self.offers_answered}/{self.offers_planned} offers answered by {self.url} "
            f"(vendor {self.vendor}) in {self.offer_phase_s:.2f} s: {self.offers_per_s:.1f} offers/s",
            f"  decisions: {counts(self.decisions)}",
            f"  rejected:  {counts(self.reasons)}",
            f"  ends:      {self.ends_sent} sent, {self.ends_answered} answered",
            "  latency:   " + (", ".join(f"{k} {v:.1f} ms" for k, v in lat.items() if v is not None) or "no answers"),
            f"  errors:    {counts(self.errors)}",
            f"  total:     {self.elapsed_s:.2f} s, {self.events_per_s:.1f} events/s answered (offers and ends)",
        ]
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


Progress = Callable[["Summary", float], None]


async def probe(http: aiohttp.ClientSession, base: str, *, timeout: float) -> None:
    """Check that a gateway answers at ``base``; raises :class:`GatewayUnreachable` saying why."""
    try:
        async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            status = response.status
            await response.read()
    except TimeoutError:
        raise GatewayUnreachable(f"the gateway at {base} is not reachable: no answer within {timeout:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = (
            os.strerror(error.errno).lower() if error.errno and error.errno > 0 else str(error) or type(exc).__name__
        )
        raise GatewayUnreachable(
            f"the gateway at {base} is not reachable: {reason} (is `cti-gateway run` started, on this port?)"
        ) from None
    except aiohttp.ClientError as exc:
        raise GatewayUnreachable(f"the gateway at {base} is not reachable: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise GatewayUnreachable(
            f"{base} answered GET /healthz with HTTP {status}, not 200: is it a cti-gateway (check --url)?"
        )


async def simulate(
    options: SimulateOptions,
    *,
    http: aiohttp.ClientSession | None = None,
    progress: Progress | None = None,
    progress_interval: float = 1.0,
) -> Summary:
    """Run one simulation (see the module documentation) and return its summary.

    Raises :class:`GatewayUnreachable` before sending anything if the gateway does not
    answer ``GET /healthz``. ``progress(summary, elapsed_s)`` is called every
    ``progress_interval`` seconds while the run lasts.
    """
    options.validated()
    base = check_url(options.url, allow_remote=options.allow_remote)
    endpoint = f"{base}/v1/vendors/{options.vendor}/events"
    summary = Summary(base, options.vendor, options.run_id, options.count)
    rng = random.Random(options.seed)
    channels = [c for c in INBOUND if options.channels.get(c, 0) > 0]
    weights = [options.channels[c] for c in channels]
    targets = [("queue", q) for q in options.queues] + [("agent_id", a) for a in options.agents]
    # ends have their own gate: under overload the offers queue up, and ends stuck behind
    # them would fill every agent and turn the run into a test of rejections
    offer_gate = asyncio.Semaphore(options.concurrency)
    end_gate = asyncio.Semaphore(options.concurrency)
    ends: list[asyncio.Task[None]] = []
    own = http is None
    if http is None:
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=options.timeout),
            connector=aiohttp.TCPConnector(limit=2 * options.concurrency),
        )
    loop = asyncio.get_running_loop()

    async def post(event: dict[str, Any], gate: asyncio.Semaphore) -> tuple[int, Any, float] | None:
        """One signed request: (status, body, latency ms), or None after a counted error."""
        try:
            async with gate:
                raw = json.dumps(event, separators=(",", ":")).encode()
                headers = signed_headers(options.secret, int(time.time()), raw)
                started = loop.time()
                async with http.post(endpoint, data=raw, headers=headers) as response:
                    text = await response.read()
                    took = (loop.time() - started) * 1000
                    try:
                        body = json.loads(text)
                    except ValueError:
                        body = None
                    return response.status, body, took
        except TimeoutError:
            summary.errors["timeout"] += 1
        except aiohttp.ClientError as exc:
            summary.errors[f"connection: {type(exc).__name__}"] += 1
        return None

    def unexpected(status: int, body: Any) -> None:
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        summary.errors[f"HTTP {status}" + (f" {code}" if code else "")] += 1

    async def end_later(interaction_id: str, n: int, delay: float) -> None:
        await asyncio.sleep(delay)
        summary.ends_sent += 1
        end = {"event_id": f"{options.run_id}-end-{n}", "type": "end", "interaction_id": interaction_id}
        result = await post(end, end_gate)
        if result is None:
            return
        status, body, took = result
        if status == 200 and isinstance(body, dict) and body.get("decision") in ("accepted", "duplicate"):
            summary.ends_answered += 1
            summary.end_latencies_ms.append(took)
        else:
            unexpected(status, body)

    async def offer(n: int) -> None:
        channel = rng.choices(channels, weights)[0]
        kind, target = rng.choice(targets)
        interaction_id = f"{options.run_id}-{n}"
        event: dict[str, Any] = {
            "event_id": interaction_id,
            "type": "offer",
            "channel": channel,
            "interaction_id": interaction_id,
            kind: target,
            "customer": {"name": f"Simulated customer {n}", "address": f"+49301{n:07d}"},
        }
        if channel == "email":
            event["subject"] = f"Simulated request {n}"
        summary.offers_sent += 1
        result = await post(event, offer_gate)
        if result is None:
            return
        status, body, took = result
        decision = body.get("decision") if isinstance(body, dict) else None
        if not (status in (200, 409) and decision):
            unexpected(status, body)
            return
        summary.offers_answered += 1
        summary.latencies_ms.append(took)
        summary.decisions[decision] += 1
        first = body.get("first_decision", decision)
        if first == "rejected":
            summary.reasons[str(body.get("reason"))] += 1
        elif first in ("assigned", "queued") and options.hold is not None:
            ends.append(asyncio.create_task(end_later(interaction_id, n, options.hold)))

    async def report_progress() -> None:
        assert progress is not None
        while True:
            await asyncio.sleep(progress_interval)
            progress(summary, loop.time() - started)

    try:
        await probe(http, base, timeout=min(options.timeout, PROBE_TIMEOUT_S))
    except BaseException:
        if own:
            await http.close()
        raise
    started = loop.time()
    offers: list[asyncio.Task[None]] = []
    reporter = asyncio.create_task(report_progress()) if progress is not None else None
    try:
        for n in range(options.count):
            due = started + n / options.rate
            if due - started >= options.duration:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            offers.append(asyncio.create_task(offer(n)))
        await asyncio.gather(*offers)
        summary.offer_phase_s = loop.time() - started
        while ends:  # an end may only be created once its offer is answered: all are now
            batch, ends[:] = list(ends), []
            await asyncio.gather(*batch)
    finally:
        if reporter is not None:
            reporter.cancel()
        for task in offers + ends:
            task.cancel()
        if own:
            await http.close()
    summary.elapsed_s = loop.time() - started
    return summary


def options_from_config(config: GatewayConfig, *, vendor: str | None) -> dict[str, Any]:
    """URL, vendor, secret and default targets from a loaded :class:`GatewayConfig`."""
    webhooks = [v for v in config.vendors if v.adapter == "webhook"]
    if vendor is not None:
        chosen = [v for v in webhooks if v.name == vendor]
        if not chosen:
            names = ", ".join(v.name for v in webhooks) or "none"
            raise SimulateError(
                f"--vendor {vendor!r}: no webhook vendor of that name in the config (webhook vendors: {names})"
            )
    else:
        chosen = webhooks[:1]
        if not chosen:
            raise SimulateError("the config has no webhook vendor to simulate")
    settings = chosen[0].settings()
    host = config.server.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return {
        "url": f"http://{host}:{config.server.port}",
        "vendor": chosen[0].name,
        "secret": str(settings.get("secret", "")),
        "queues": [q.name for q in config.queues],
        "agents": [] if config.queues else [a.id for a in config.agents],
    }
