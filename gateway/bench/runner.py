"""``cti-gateway bench``: P1-P6 measured in one run, every party a separate process.

The figures (issue 9; DESIGN's targets in brackets):

* **P1** durable throughput: messages handled per second by the gateway (signed webhook
  offers + the desktops' accept and end, each journaled before its answer), closed loop at
  saturation, divided by the requests per second a bare aiohttp JSON handler answers to the
  same load generator in the same run [>= 0.5].
* **P2** latency from an offer's *scheduled* send to ``session.offered`` at the desktop, open
  loop at half P1's saturated offer rate [p99 <= 5 ms, p99.9 <= 15 ms].
* **P3** one routing decision, the Engine alone, at the smallest and largest agent counts
  [<= 20 us at 100k, ratio <= 2].
* **P4** the gateway's RSS with N connected desktops [<= 200 MB at 10k].
* **P5** offers lost or duplicated over every offer of the run: sent event ids against the
  answers, the offers the desktops received and the gateway's journal [0].
* **P6** RSS growth at steady traffic (over the second half of the run), extrapolated to
  1,000,000 offers [flat within 50 MB],
  and a replay of old event ids still answered ``duplicate``.

Only loopback addresses; every process is bounded in time and stopped by PID.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from .machine import describe, describe_line

FIGURES = ("P1", "P2", "P3", "P4", "P5", "P6")
#: what ``--figures`` may name: P1-P6 (the default) and ``CLUSTER`` (needs Redis and PostgreSQL:
#: only when asked for; see :mod:`.cluster`)
SELECTABLE = (*FIGURES, "CLUSTER")
SECRET = "bench-webhook-secret-0123456789"
VENDOR = "crm"
QUEUES = ["support", "sales"]
TARGETS = {
    "P1": ">= 0.5",
    "P2": "p99 <= 5 ms, p99.9 <= 15 ms",
    "P3": "<= 20 us at 100k, ratio <= 2",
    "P4": "<= 200 MB at 10k",
    "P5": "0",
    "P6": "flat within 50 MB after 1M offers",
}


class BenchError(RuntimeError):
    """A process of the bench failed (its stderr tail is in the message)."""


@dataclass
class BenchOptions:
    figures: tuple[str, ...] = FIGURES
    repeat: int = 1
    agents: int = 100  # agents of the traffic gateway (P1, P2, P5, P6)
    p1_duration: float = 5.0
    p1_concurrency: int = 32
    p2_rate: float | None = None  # default: half of P1's saturated offer rate (100/s without P1)
    p2_duration: float = 10.0
    p3_sizes: tuple[int, ...] = (1_000, 100_000)
    p3_decisions: int = 20_000
    p4_desktops: int = 10_000
    p6_offers: int = 20_000
    p6_rate: float | None = None  # default: half of P1's saturated offer rate (100/s without P1)
    store: str = "sqlite"  # or "memory"
    loop: str = "uvloop"  # the gateway's event loop: "uvloop" (what `run` uses) or "asyncio"
    workdir: str | None = None
    # the cluster figure: instance counts next to the embedded default, and where Redis and
    # PostgreSQL are (None: started here when their binaries are found)
    cluster_instances: tuple[int, ...] = (1, 2, 3)
    cluster_duration: float = 5.0
    cluster_concurrency: int = 64
    redis_url: str | None = None
    postgres_url: str | None = None
    verbose: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token_of(agent_id: str) -> str:
    return f"bench-token-{agent_id}"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """A child process: its stderr goes to a file (quoted when it fails), stopped by PID."""

    def __init__(
        self, name: str, argv: list[str], workdir: Path, stdout: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.err_path = workdir / f"{name}.stderr"
        self._err: IO[bytes] = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=self._err,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=_raise_fd_limit,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise BenchError(f"{self.name} did not finish within {timeout:.0f} s:\n{self.tail()}") from None

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._err.close()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return int(self.popen.returncode)


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def run_child(name: str, module: str, spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """Run a one-shot child process (load generator, routing) and return its JSON result."""
    out = workdir / f"{name}.json"
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = Proc(name, [*_module(module), str(spec_path), str(out)], workdir)
    try:
        code = proc.wait(timeout)
    finally:
        proc.stop()
    if code != 0:
        raise BenchError(f"{name} exited with {code}:\n{proc.tail()}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{proc.name} did not answer {url} within {timeout:.0f} s:\n{proc.tail()}")


class Gateway:
    """A gateway process on a free loopback port with ``agents`` agents (each its own token)."""

    def __init__(self, name: str, workdir: Path, agents: int, store: str, loop: str = "uvloop") -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.agent_ids = [f"b{n:05d}" for n in range(agents)]
        self.db = self.workdir / "journal.db"
        config = {
            "server": {
                "host": "127.0.0.1",
                "port": self.port,
                "rate_limit_per_s": 0,
                "max_connections_per_address": 0,
            },
            "store": {"url": f"sqlite:///{self.db}" if store == "sqlite" else "memory://"},
            "capacity_profiles": {"blended": {"max_sessions": 8, "channels": {"voice": 1}}},
            "queues": [{"name": "support"}, {"name": "sales", "policy": "least_busy"}],
            "agents": [
                {
                    "id": a,
                    "profile": "blended",
                    "queues": QUEUES,
                    "token_sha256": hashlib.sha256(token_of(a).encode()).hexdigest(),
                }
                for a in self.agent_ids
            ],
            "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
        }
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc = Proc(
            name,
            [*_module("gateway"), "run", "--config", str(path), "--log-level", "warning"],
            self.workdir,
            env={"CTI_GATEWAY_LOOP": loop},
        )
        wait_http(self.url + "/readyz", self.proc, timeout=120)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        code = self.proc.stop()
        if code not in (0, -signal.SIGTERM):
            raise BenchError(f"the gateway exited with {code}:\n{self.proc.tail()}")

    def journal_events(self) -> set[str]:
        if not self.db.exists():
            return set()
        with sqlite3.connect(self.db) as db:
            return {row[0] for row in db.execute("SELECT event_id FROM events WHERE vendor = ?", (VENDOR,))}


class BareServer:
    """The bare aiohttp server (:mod:`gateway.bench.baseline`) on a free loopback port, on
    the gateway's event loop: the floor of P4 (what aiohttp keeps per open WebSocket)."""

    def __init__(self, name: str, workdir: Path, loop: str = "uvloop") -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(name, [*_module("gateway.bench.baseline"), str(self.port), "--loop", loop], self.workdir)
        wait_http(self.url + "/healthz", self.proc)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        self.proc.stop()


class Desktops:
    """The desktops process: connects every agent, prints ``ready N`` once they are."""

    def __init__(
        self, name: str, gateway: Gateway | BareServer, mode: str, agents: list[str], timeout: float = 600.0
    ) -> None:
        self.out = gateway.workdir / f"{name}.json"
        spec = {
            "url": gateway.url,
            "mode": mode,
            "agents": [[a, token_of(a)] for a in agents],
            "duration": timeout,
        }
        spec_path = gateway.workdir / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        self.proc = Proc(
            name,
            [*_module("gateway.bench.desktops"), str(spec_path), str(self.out)],
            gateway.workdir,
            subprocess.PIPE,
        )
        assert self.proc.popen.stdout is not None
        line = self.proc.popen.stdout.readline().decode().strip()  # bounded by the process's own timeouts
        if not line.startswith("ready "):
            self.proc.stop()
            raise BenchError(f"the desktops did not connect ({line!r}):\n{self.proc.tail()}")
        self.connected = int(line.split()[1])

    def stop(self) -> dict[str, Any]:
        code = self.proc.stop(timeout=120)
        if code != 0:
            raise BenchError(f"the desktops exited with {code}:\n{self.proc.tail()}")
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def loadgen(workdir: Path, name: str, **spec: Any) -> dict[str, Any]:
    bound = float(spec.get("duration", 0)) + float(spec.get("count", 0)) / float(spec.get("rate", 1e9)) + 120
    spec.setdefault("vendor", VENDOR)
    spec.setdefault("secret", SECRET)
    spec.setdefault("queues", QUEUES)
    return run_child(name, "gateway.bench.loadgen", spec, workdir, timeout=bound)


def baseline_load(workdir: Path, name: str, **spec: Any) -> tuple[dict[str, Any], float]:
    """Start the bare aiohttp server, drive it with the load generator (``spec``: its
    options), stop it; returns the load generator's result and the server's CPU seconds."""
    port = free_port()
    base = Proc(name, [*_module("gateway.bench.baseline"), str(port)], workdir)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", base)
        cpu0 = cpu_seconds(base.pid)
        result = loadgen(workdir, f"loadgen-{name}", target="baseline", url=f"http://127.0.0.1:{port}", **spec)
        return result, cpu_seconds(base.pid) - cpu0
    finally:
        base.stop()


class Bench:
    def __init__(self, options: BenchOptions, emit: Callable[[str], None] = print) -> None:
        self.o = options
        self.emit = emit
        self.results: dict[str, Any] = {"machine": describe(), "runs": {}}
        self.runs: list[dict[str, Any]] = []  # every gateway load run (for P5)

    def log(self, text: str) -> None:
        if self.o.verbose:
            print(f"bench: {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ traffic: P1, P2, P5, P6
    def traffic(self, workdir: Path) -> None:
        want = set(self.o.figures)
        gw = Gateway("gateway", workdir, self.o.agents, self.o.store, self.o.loop)
        desktops: Desktops | None = None
        try:
            desktops = Desktops("desktops", gw, "work", gw.agent_ids)
            self.log(f"{desktops.connected} desktops ready")
            p1: list[dict[str, float]] = []
            if "P1" in want or "P2" in want:
                for r in range(self.o.repeat if "P1" in want else 1):
                    p1.append(self.p1_once(workdir, gw, r))
                    self.log(f"P1 run {r + 1}: {p1[-1]}")
                self.results["P1"] = {"runs": p1}
            if "P2" in want:
                rate = self.o.p2_rate or (statistics.median(x["offers_per_s"] for x in p1) / 2 if p1 else 100.0)
                p2 = []
                for r in range(self.o.repeat):
                    count = max(10, int(rate * self.o.p2_duration))
                    time.sleep(0.5)
                    result = loadgen(
                        workdir,
                        f"loadgen-p2-{r}",
                        run=f"p2r{r}",
                        target="gateway",
                        url=gw.url,
                        mode="open",
                        rate=rate,
                        count=count,
                        concurrency=512,
                    )
                    self.runs.append(result)
                    p2.append({"rate": rate, "count": count, "run": f"p2r{r}"})
                self.results["P2"] = {"runs": p2}
            if "P6" in want:
                saturated = statistics.median(x["offers_per_s"] for x in p1) if p1 else 200.0
                self.p6(workdir, gw, self.o.p6_rate or saturated / 2)
        finally:
            stopped = desktops.stop() if desktops is not None else None
            gw.stop()
        if stopped is not None:
            acks = sorted(stopped["ack_times"])
            for run in self.results.get("P1", {}).get("runs", []):
                run["desktop_acks"] = bisect.bisect_right(acks, run["end"]) - bisect.bisect_left(acks, run["start"])
            self.latency(stopped)
            self.p5(gw, stopped)

    def p1_once(self, workdir: Path, gw: Gateway, r: int) -> dict[str, float]:
        b, base_cpu = baseline_load(
            workdir,
            f"baseline-{r}",
            run=f"base{r}",
            mode="closed",
            duration=self.o.p1_duration,
            concurrency=self.o.p1_concurrency,
        )
        cpu0 = gw.cpu()
        g = loadgen(
            workdir,
            f"loadgen-p1-{r}",
            run=f"p1r{r}",
            target="gateway",
            url=gw.url,
            mode="closed",
            duration=self.o.p1_duration,
            concurrency=self.o.p1_concurrency,
        )
        gw_cpu = gw.cpu() - cpu0
        self.runs.append(g)
        b_s = b["end"] - b["start"]
        g_s = g["end"] - g["start"]
        return {
            "run": f"p1r{r}",
            "baseline_req_per_s": b["answered"] / b_s,
            "baseline_cpu_ms_per_req": base_cpu * 1000 / max(1, b["answered"]),
            "offers_per_s": g["answered"] / g_s,
            "gateway_cpu_s": gw_cpu,
            "offers": g["answered"],
            "start": g["start"],
            "end": g["end"],
            "assigned": g["decisions"].get("assigned", 0),
            "errors": {
                **{f"gateway {k}": v for k, v in g["errors"].items()},
                **{f"baseline {k}": v for k, v in b["errors"].items()},
            },
        }

    def p6(self, workdir: Path, gw: Gateway, rate: float) -> None:
        import threading

        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                try:
                    samples.append((time.monotonic(), gw.rss()))
                except (OSError, BenchError):
                    return

        thread = threading.Thread(target=sample, daemon=True)
        rss0 = gw.rss()
        thread.start()
        try:
            result = loadgen(
                workdir,
                "loadgen-p6",
                run="p6",
                target="gateway",
                url=gw.url,
                mode="open",
                rate=rate,
                count=self.o.p6_offers,
                concurrency=512,
            )
        finally:
            done.set()
            thread.join()
        self.runs.append(result)
        rss1 = gw.rss()
        # a replay of the first offers of the run: every one must be answered `duplicate`
        replay_n = min(200, self.o.p6_offers)
        replay = loadgen(
            workdir,
            "loadgen-p6-replay",
            run="p6",
            target="gateway",
            url=gw.url,
            mode="open",
            rate=1000,
            count=replay_n,
            concurrency=64,
        )
        start, end = result["start"], result["end"]
        # growth: RSS over the second half of the run, per offer (the first half fills what
        # the gateway keeps of recent work: retention.cached_events ids, 10,000 by default,
        # and cached_finished interactions and sessions; run enough offers for that)
        warm = [s for s in samples if s[0] >= start + (end - start) * 0.5] or samples
        first = warm[0][1] if warm else rss0
        slope = 0.0
        if len(warm) >= 3:
            xs = [t - warm[0][0] for t, _ in warm]
            ys = [float(v) for _, v in warm]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            var = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
        offers_per_s = result["answered"] / max(1e-9, end - start)
        per_offer = slope / offers_per_s if offers_per_s else 0.0
        self.results["P6"] = {
            "offers": result["answered"],
            "rate": offers_per_s,
            "rss_start": rss0,
            "rss_after_warmup": first,
            "rss_end": rss1,
            "bytes_per_offer": per_offer,
            "extrapolated_1m_mb": per_offer * 1_000_000 / 2**20,
            "replayed": replay_n,
            "replay_duplicates": replay["decisions"].get("duplicate", 0),
            "replay_errors": sum(replay["errors"].values()),
        }

    def latency(self, desk: dict[str, Any]) -> None:
        offered: dict[str, float] = desk["offered"]
        p2 = self.results.get("P2")
        if not p2:
            return
        for run in p2["runs"]:
            result = next(x for x in self.runs if x["sent"] and x["sent"][0].startswith(run["run"] + "-"))
            lat = [(offered[i] - due) * 1000.0 for i, due in result["scheduled"].items() if i in offered]
            answers = [a for a in result["answers"].values() if a["decision"] == "assigned"]
            run.update(
                {
                    "assigned": len(answers),
                    "measured": len(lat),
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "p999": pct(lat, 99.9),
                    "max": max(lat) if lat else float("nan"),
                    "answer_p99": pct(result["latency_ms"], 99),
                }
            )

    def p5(self, gw: Gateway, desk: dict[str, Any]) -> None:
        """Lost: an offer the gateway acknowledged (answered) that its journal does not hold,
        or one answered ``assigned`` that no desktop was offered. Duplicated: an offer a
        desktop received twice, or a journal entry nobody sent. Requests that failed (no
        answer: a vendor retries them) are counted apart, with whether the journal has them."""
        journal = gw.journal_events()
        checked = self.o.store == "sqlite"
        offered: dict[str, float] = desk["offered"]
        sent: list[str] = []
        failed_journaled = failed_not_journaled = acked_not_journaled = assigned_not_offered = 0
        errors: dict[str, int] = {}
        for run in self.runs:
            sent.extend(run["sent"])
            for kind, n in run["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
            for event_id in run["sent"]:
                answer = run["answers"].get(event_id)
                if answer is None:
                    if event_id in journal:
                        failed_journaled += 1
                    else:
                        failed_not_journaled += 1
                    continue
                if checked and event_id not in journal:
                    acked_not_journaled += 1
                if answer["decision"] == "assigned" and answer["interaction_id"] not in offered:
                    assigned_not_offered += 1
        sent_set = set(sent)
        phantom = len(journal - sent_set) if checked else 0
        desk_dupes = sum(desk["duplicates"].values())
        self.results["P5"] = {
            "offers": len(sent),
            "journal_checked": checked,
            "lost": acked_not_journaled + assigned_not_offered,
            "answered_not_journaled": acked_not_journaled,
            "assigned_not_offered": assigned_not_offered,
            "duplicated": desk_dupes + phantom + (len(sent) - len(sent_set)),
            "offered_twice": desk_dupes,
            "journal_not_sent": phantom,
            "failed": failed_journaled + failed_not_journaled,
            "failed_journaled": failed_journaled,
            "request_errors": errors,
            "desktop_errors": desk["errors"],
        }

    # ------------------------------------------------------------------ P3, P4
    def p3(self, workdir: Path) -> None:
        sizes = []
        for size in self.o.p3_sizes:
            runs = [
                run_child(
                    f"routing-{size}-{r}",
                    "gateway.bench.routing",
                    {"agents": size, "decisions": self.o.p3_decisions},
                    workdir,
                    timeout=900,
                )
                for r in range(self.o.repeat)
            ]
            sizes.append(
                {
                    "agents": size,
                    "us": statistics.median(x["us_median"] for x in runs),
                    # (what take_changes() + drain() add per decision: not part of the figure)
                    "us_changes": statistics.median(x.get("us_changes_median", 0.0) for x in runs),
                    "us_cpu": statistics.median(x.get("us_cpu_median", 0.0) for x in runs),
                    # (the choice proper, measured in other batches: not part of the figure)
                    "us_choice": statistics.median(x.get("us_choice_median", 0.0) for x in runs),
                    "choice_share": statistics.median(x.get("choice_share", 0.0) for x in runs),
                    "runs": runs,
                }
            )
            self.log(
                f"P3 {size}: {sizes[-1]['us']:.1f} us (CPU {sizes[-1]['us_cpu']:.1f} us)"
                f" (then take_changes + drain {sizes[-1]['us_changes']:.1f} us per decision;"
                f" of a decision, the choice proper: {sizes[-1]['us_choice']:.1f} us,"
                f" {sizes[-1]['choice_share']:.0%});"
                " per run " + ", ".join(f"{x['us_median']:.1f}" for x in runs)
            )
        self.results["P3"] = {"sizes": sizes}

    def p4(self, workdir: Path) -> None:
        """``--repeat`` runs, each the gateway and then (interleaved, same desktops) the bare
        aiohttp WebSocket server: what aiohttp itself keeps per open socket, the floor."""
        runs = []
        for r in range(self.o.repeat):
            run = self._p4_run(workdir, r)
            runs.append(run)
            self.log(f"P4 run {r + 1}: {run}")
        n = self.o.p4_desktops
        self.results["P4"] = {
            "desktops": n,
            "connected": min(x["connected"] for x in runs),
            "rss_before": statistics.median(x["rss_before"] for x in runs),
            "rss_connected": statistics.median(x["rss_connected"] for x in runs),
            "per_desktop": statistics.median((x["rss_connected"] - x["rss_before"]) / n for x in runs),
            "bare_before": statistics.median(x["bare_before"] for x in runs),
            "bare_connected": statistics.median(x["bare_connected"] for x in runs),
            "bare_per_socket": statistics.median((x["bare_connected"] - x["bare_before"]) / n for x in runs),
            "errors": {k: v for x in runs for k, v in x["errors"].items()},
            "runs": runs,
        }

    def _p4_run(self, workdir: Path, r: int) -> dict[str, Any]:
        gw = Gateway(f"gateway-p4-{r}", workdir, self.o.p4_desktops, self.o.store, self.o.loop)
        before, after, desk = _rss_with_desktops(gw, "desktops-p4", gw.agent_ids)
        # the floor: the bare aiohttp server holding as many sockets, right after
        bare = BareServer(f"bare-p4-{r}", workdir, self.o.loop)
        bare_before, bare_after, bare_desk = _rss_with_desktops(bare, "desktops-p4-bare", gw.agent_ids)
        return {
            "connected": desk["connected"],
            "rss_before": before,
            "rss_connected": after,
            "bare_connected_sockets": bare_desk["connected"],
            "bare_before": bare_before,
            "bare_connected": bare_after,
            "errors": {**desk["errors"], **{f"bare {k}": v for k, v in bare_desk["errors"].items()}},
        }

    # ------------------------------------------------------------------ all
    def run(self) -> dict[str, Any]:
        want = set(self.o.figures)
        self.results["loop"] = self.o.loop
        self.emit(describe_line(self.results["machine"]) + f"; gateway loop {self.o.loop}")
        with tempfile.TemporaryDirectory(prefix="cti-bench-", dir=self.o.workdir) as tmp:
            workdir = Path(tmp)
            if want & {"P1", "P2", "P5", "P6"}:
                self.traffic(workdir)
            if "P3" in want:
                self.p3(workdir)
            if "P4" in want:
                self.p4(workdir)
            if want & set(FIGURES):
                self.emit(table(self.results, self.o))
            if "CLUSTER" in want:
                self.cluster(workdir)
        return self.results

    def cluster(self, workdir: Path) -> None:
        from .cluster import ClusterBench, cluster_table

        o = self.o
        self.results["CLUSTER"] = ClusterBench(
            workdir,
            instances=o.cluster_instances,
            duration=o.cluster_duration,
            concurrency=o.cluster_concurrency,
            repeat=o.repeat,
            redis_url=o.redis_url,
            postgres_url=o.postgres_url,
            loop=o.loop,
            log=self.log,
        ).run()
        self.emit(cluster_table(self.results["CLUSTER"]))


def _rss_with_desktops(
    server: Gateway | BareServer, name: str, agent_ids: list[str]
) -> tuple[int, int, dict[str, Any]]:
    """``server``'s RSS before any socket and with an idle desktop per agent connected, and
    what the desktops process reported; ``server`` is stopped afterwards."""
    desktops: Desktops | None = None
    try:
        time.sleep(0.5)
        before = server.rss()
        desktops = Desktops(name, server, "idle", agent_ids)
        time.sleep(1.0)
        after = server.rss()
    finally:
        desk = desktops.stop() if desktops is not None else None
        server.stop()
    assert desk is not None
    return before, after, desk


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def rows(results: dict[str, Any], o: BenchOptions) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    if "P1" in results and "P1" in o.figures:
        runs = results["P1"]["runs"]
        # messages: every offer answered, plus every desktop action acknowledged, in the run's window
        msgs = [(x["offers"] + x["desktop_acks"]) / (x["end"] - x["start"]) for x in runs]
        by_rate = [m / x["baseline_req_per_s"] for m, x in zip(msgs, runs, strict=True)]
        # the same ratio from CPU time: what a saturated gateway would reach against a saturated
        # bare server (the load generator shares the cores and may saturate first)
        cpu_msg = [x["gateway_cpu_s"] * 1000 / max(1, x["offers"] + x["desktop_acks"]) for x in runs]
        by_cpu = [x["baseline_cpu_ms_per_req"] / c if c else float("nan") for c, x in zip(cpu_msg, runs, strict=True)]
        base = statistics.median(x["baseline_req_per_s"] for x in runs)
        base_cpu = statistics.median(x["baseline_cpu_ms_per_req"] for x in runs)
        out.append(
            (
                "P1 durable throughput",
                f"{statistics.median(by_rate):.2f} by rate, {statistics.median(by_cpu):.2f} by CPU",
                f"{statistics.median(msgs):,.0f} msgs/s ({statistics.median(x['offers_per_s'] for x in runs):,.0f} "
                f"offers/s, {statistics.median(cpu_msg):.3f} ms CPU/msg) vs bare aiohttp {base:,.0f} req/s "
                f"({base_cpu:.3f} ms CPU/req); per run by rate {', '.join(f'{r:.2f}' for r in by_rate)}, "
                f"by CPU {', '.join(f'{r:.2f}' for r in by_cpu)}"
                + "".join(f"; errors {x['errors']}" for x in runs if x["errors"]),
                TARGETS["P1"],
            )
        )
    if "P2" in results and "P2" in o.figures:
        runs = [r for r in results["P2"]["runs"] if "p99" in r]
        if runs:
            med = {k: statistics.median(r[k] for r in runs) for k in ("p50", "p99", "p999", "max")}
            out.append(
                (
                    "P2 offer latency (open loop)",
                    f"p99 {med['p99']:.1f} ms, p99.9 {med['p999']:.1f} ms",
                    f"p50 {med['p50']:.1f} ms, max {med['max']:.1f} ms at {runs[0]['rate']:,.0f} offers/s "
                    f"({sum(r['measured'] for r in runs):,} offers); p99 per run "
                    + ", ".join(f"{r['p99']:.1f}" for r in runs),
                    TARGETS["P2"],
                )
            )
    if "P3" in results:
        sizes = results["P3"]["sizes"]
        small, large = sizes[0], sizes[-1]
        out.append(
            (
                "P3 routing decision",
                f"{large['us']:.1f} us at {large['agents']:,}",
                f"{small['us']:.1f} us at {small['agents']:,}; ratio {large['us'] / small['us']:.2f}"
                + (
                    f"; CPU time {large['us_cpu']:.1f} us at {large['agents']:,}, {small['us_cpu']:.1f} us at"
                    f" {small['agents']:,}"
                    if large.get("us_cpu")
                    else ""
                )
                + (
                    f"; then take_changes + drain {large['us_changes']:.1f} us per decision"
                    if large.get("us_changes")
                    else ""
                )
                + (
                    f"; choice proper (select + index upkeep) {large['choice_share']:.0%} of a decision"
                    f" at {large['agents']:,}, {small['choice_share']:.0%} at {small['agents']:,}"
                    if large.get("choice_share")
                    else ""
                ),
                TARGETS["P3"],
            )
        )
    if "P4" in results:
        p4 = results["P4"]
        out.append(
            (
                f"P4 RSS, {p4['desktops']:,} desktops",
                _mb(p4["rss_connected"]),
                f"{_mb(p4['rss_before'])} before any socket, {p4['per_desktop'] / 1024:.1f} KB per desktop; "
                f"{p4['connected']:,} connected; per run "
                + ", ".join(_mb(x["rss_connected"]) for x in p4["runs"])
                + f"; bare aiohttp WebSocket server: {p4['bare_per_socket'] / 1024:.1f} KB per socket "
                f"({_mb(p4['bare_before'])} before, {_mb(p4['bare_connected'])} with as many)"
                + (f"; errors {p4['errors']}" if p4["errors"] else ""),
                TARGETS["P4"],
            )
        )
    if "P5" in results and ("P5" in o.figures):
        p5 = results["P5"]
        out.append(
            (
                "P5 lost / duplicated",
                f"{p5['lost']} / {p5['duplicated']}",
                f"over {p5['offers']:,} offers (answers, desktops"
                + (", journal)" if p5["journal_checked"] else "; memory store: no journal)")
                + (
                    f"; {p5['failed']} requests failed ({p5['failed_journaled']} of them journaled: a retry "
                    f"is a duplicate) {p5['request_errors']}"
                    if p5["failed"]
                    else ""
                )
                + (f"; desktop errors {p5['desktop_errors']}" if p5["desktop_errors"] else ""),
                TARGETS["P5"],
            )
        )
    if "P6" in results:
        p6 = results["P6"]
        out.append(
            (
                "P6 RSS growth at steady load",
                f"{p6['extrapolated_1m_mb']:,.0f} MB per 1M offers",
                f"{p6['bytes_per_offer']:,.0f} B/offer over {p6['offers']:,} offers at {p6['rate']:,.0f}/s; "
                f"RSS {_mb(p6['rss_start'])}, at half {_mb(p6['rss_after_warmup'])}, end {_mb(p6['rss_end'])}; "
                "replayed ids answered duplicate: "
                f"{p6['replay_duplicates']}/{p6['replayed']}",
                TARGETS["P6"],
            )
        )
    return out


def table(results: dict[str, Any], o: BenchOptions) -> str:
    data = rows(results, o)
    head = ("figure", "measured", "detail", "target")
    widths = [max(len(head[i]), *(len(r[i]) for r in data)) if data else len(head[i]) for i in range(4)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in data]
    return "\n".join([line, sep, *body])
