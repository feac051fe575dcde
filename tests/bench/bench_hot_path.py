"""The measurements behind docs/performance.md's P1/P2 analysis (issue 9): not tests, no
timing asserted; each prints what it measured. Processes as in ``cti-gateway bench``
(gateway, bare aiohttp server, load generator, desktops; loopback, bounded in time).

CPU per message of several source trees, interleaved (rounds alternate the order, so no
tree always runs first on a machine whose load drifts)::

    git archive 473b6af gateway adapters | tar -x -C /tmp/before     # a tree to compare
    .venv/bin/python tests/bench/bench_hot_path.py cpu --seconds 8 --rounds 4 \\
        before=/tmp/before now=.

A tree runs with ``PYTHONPATH`` set to it; ``NAME=TREE+noorjson`` hides orjson from it (as
CI had it before orjson was a dependency).

Open-loop latency at one rate, the bare server's answer next to the gateway's answer and
``session.offered`` at the desktop (P2), same run, interleaved::

    .venv/bin/python tests/bench/bench_hot_path.py latency --rate 93 --seconds 5 --rounds 3 [--store memory]

Where the gateway's time goes under P1's load (py-spy, installed by hand: it is no
dependency), as collapsed stacks, with the share of samples per package::

    .venv/bin/python tests/bench/bench_hot_path.py profile --seconds 20 --out /tmp/p1.txt
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.bench.runner import Desktops, Gateway, baseline_load, loadgen, pct

NO_ORJSON = Path(tempfile.gettempdir()) / "cti-gateway-no-orjson"


def _tree_env(spec: str) -> str:
    tree, _, flag = spec.partition("+")
    paths = [str(Path(tree).resolve())]
    if flag == "noorjson":
        NO_ORJSON.mkdir(exist_ok=True)
        (NO_ORJSON / "orjson.py").write_text('raise ImportError("orjson hidden for a comparison")\n')
        paths.append(str(NO_ORJSON))
    return os.pathsep.join(paths)


def _fmt(lat: list[float]) -> str:
    if not lat:
        return "no samples"
    return f"p50 {pct(lat, 50):6.1f}  p99 {pct(lat, 99):7.1f}  p99.9 {pct(lat, 99.9):7.1f}  max {max(lat):7.1f} ms"


def cpu(args: argparse.Namespace) -> None:
    variants = [(name, _tree_env(spec)) for name, _, spec in (v.partition("=") for v in args.variants)]
    work = Path(tempfile.mkdtemp(prefix="hot-path-cpu-"))
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    bare: list[float] = []
    print(f"load average {os.getloadavg()}", flush=True)
    try:
        for r in range(args.rounds):
            b, used = baseline_load(work, f"base{r}", run=f"b{r}", mode="closed", duration=args.seconds, concurrency=32)
            bare.append(used * 1000 / max(1, b["answered"]))
            for name, env in variants if r % 2 == 0 else variants[::-1]:
                os.environ["PYTHONPATH"] = env
                try:
                    gw = Gateway(f"{name}{r}", work, args.agents, args.store)
                    desk = Desktops("desktops", gw, "work", gw.agent_ids)
                finally:
                    del os.environ["PYTHONPATH"]
                try:
                    c0 = gw.cpu()
                    g = loadgen(
                        work,
                        f"lg{name}{r}",
                        run=f"{name}{r}",
                        target="gateway",
                        url=gw.url,
                        mode="closed",
                        duration=args.seconds,
                        concurrency=32,
                    )
                    used = gw.cpu() - c0
                finally:
                    stopped = desk.stop()
                    gw.stop()
                acks = sum(1 for t in stopped["ack_times"] if g["start"] <= t <= g["end"])
                msgs = g["answered"] + acks
                results[name].append(used * 1000 / max(1, msgs))
                print(
                    f"round {r} {name:10s} {results[name][-1]:.3f} ms CPU/msg  "
                    f"{g['answered'] / (g['end'] - g['start']):.0f} offers/s  errors {g['errors']}  "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bare aiohttp: median {statistics.median(bare):.3f} ms CPU/request  {[round(x, 3) for x in bare]}")
    for name, values in results.items():
        m = statistics.median(values)
        ratio = statistics.median(bare) / m
        print(f"{name:10s} median {m:.3f} ms CPU/msg -> P1 by CPU {ratio:.2f}  {[round(x, 3) for x in values]}")


def latency(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="hot-path-latency-"))
    count = max(10, int(args.rate * args.seconds))
    print(f"{args.rate}/s open loop, {count} requests a run, store {args.store}, load average {os.getloadavg()}")
    bare: list[float] = []
    answers: list[float] = []
    runs: list[dict[str, Any]] = []
    gw = Gateway("gateway", work, args.agents, args.store)
    desk = Desktops("desktops", gw, "work", gw.agent_ids)
    try:
        for r in range(args.rounds):
            b, _ = baseline_load(
                work, f"base{r}", run=f"b{r}", mode="open", rate=args.rate, count=count, concurrency=512
            )
            bare += b["latency_ms"]
            print(f"run {r} bare aiohttp answer  {_fmt(b['latency_ms'])}  load {os.getloadavg()[0]:.1f}", flush=True)
            time.sleep(0.5)
            g = loadgen(
                work,
                f"lgg{r}",
                run=f"g{r}",
                target="gateway",
                url=gw.url,
                mode="open",
                rate=args.rate,
                count=count,
                concurrency=512,
            )
            answers += g["latency_ms"]
            runs.append(g)
            print(f"run {r} gateway answer       {_fmt(g['latency_ms'])}  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        stopped = desk.stop()
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)
    arrived = stopped["offered"]
    offered = [(arrived[i] - due) * 1000.0 for g in runs for i, due in g["scheduled"].items() if i in arrived]
    print(f"all runs: bare aiohttp answer    {_fmt(bare)}")
    print(f"all runs: gateway answer         {_fmt(answers)}")
    print(f"all runs: session.offered (P2)   {_fmt(offered)}")


def profile(args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="hot-path-profile-"))
    gw = Gateway("gateway", work, args.agents, args.store)
    desk = Desktops("desktops", gw, "work", gw.agent_ids)
    try:
        recorder = subprocess.Popen(
            [
                spy,
                "record",
                "-r",
                "200",
                "-d",
                str(int(args.seconds)),
                "-p",
                str(gw.proc.pid),
                "-f",
                "raw",
                "-o",
                args.out,
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        c0 = gw.cpu()
        g = loadgen(
            work, "lg", run="prof", target="gateway", url=gw.url, mode="closed", duration=args.seconds, concurrency=32
        )
        used = gw.cpu() - c0
        recorder.wait(timeout=args.seconds + 60)
    finally:
        stopped = desk.stop()
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)
    acks = sum(1 for t in stopped["ack_times"] if g["start"] <= t <= g["end"])
    per = used * 1000 / max(1, g["answered"] + acks)
    print(f"{g['answered']} offers, {acks} desktop actions, {per:.3f} ms CPU/msg")
    shares(args.out)


PACKAGES = (
    "aiosqlite",
    "gateway/records",
    "gateway/api",
    "gateway/engine",
    "gateway/",
    "adapters/",
    "aiohttp/",
    "structlog/",
    "pydantic",
    "asyncio/",
    "json/",
    "prometheus",
    "sortedcontainers",
)


def shares(path: str) -> None:
    """Self samples per package of a py-spy raw (collapsed) profile."""
    per: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack or not n.isdigit():
                continue  # (py-spy --nonblocking may write a torn line: skipped)
            leaf = stack.split(";")[-1]
            where = re.search(r"\((.*)\)", leaf)
            file = where.group(1) if where else leaf
            per[next((p for p in PACKAGES if p in file), "other (the loop's C code, stdlib)")] += int(n)
            total += int(n)
    for name, n in per.most_common():
        print(f"  {n / max(1, total) * 100:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("cpu", "latency", "profile"):
        p = sub.add_parser(name)
        p.add_argument("--seconds", type=float, default=8.0)
        p.add_argument("--agents", type=int, default=100)
        p.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
        if name == "cpu":
            p.add_argument("--rounds", type=int, default=4)
            p.add_argument("variants", nargs="+", metavar="NAME=TREE[+noorjson]")
        elif name == "latency":
            p.add_argument("--rounds", type=int, default=3)
            p.add_argument("--rate", type=float, required=True)
        else:
            p.add_argument("--out", default="p1-profile.txt")
    args = parser.parse_args()
    {"cpu": cpu, "latency": latency, "profile": profile}[args.what](args)


if __name__ == "__main__":
    main()
