"""Smoke test of ``cti-gateway bench``: with tiny sizes it runs end to end (gateway, bare
aiohttp server, load generator, desktops and the routing benchmark, each a separate
process) and prints the machine and a row for every figure. Never a timed assertion:
the figures themselves depend on the machine; only P5 (nothing lost or duplicated) and the
duplicate replay of P6 are checked, being correctness, not speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TINY = [
    "--agents", "4",
    "--p1-duration", "0.5",
    "--p1-concurrency", "4",
    "--p2-rate", "40",
    "--p2-duration", "0.5",
    "--p3-agents", "20,60",
    "--p3-decisions", "100",
    "--p4-desktops", "12",
    "--p6-offers", "60",
]  # fmt: skip


def bench(tmp_path: Path, *extra: str) -> tuple[str, dict[str, object]]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", *TINY, "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_bench_prints_every_figure_and_the_machine(tmp_path: Path) -> None:
    stdout, results = bench(tmp_path)
    assert re.search(r"^machine: \d+ cores, .+ RAM, CPython 3\.\d+", stdout, re.M), stdout
    assert "load average" in stdout
    for figure in ("P1 durable throughput", "P2 offer latency", "P3 routing decision", "P4 RSS", "P5 lost", "P6 RSS"):
        assert re.search(rf"^\| {figure}", stdout, re.M), f"no {figure} row in:\n{stdout}"
    p5 = results["P5"]
    assert isinstance(p5, dict)
    assert p5["journal_checked"] is True
    assert (p5["lost"], p5["duplicated"]) == (0, 0), p5
    p6 = results["P6"]
    assert isinstance(p6, dict)
    assert p6["replay_duplicates"] == p6["replayed"] > 0, p6
    p4 = results["P4"]
    assert isinstance(p4, dict) and p4["connected"] == 12, p4


def test_bench_runs_one_figure(tmp_path: Path) -> None:
    stdout, results = bench(tmp_path, "--figures", "P3")
    assert re.search(r"^\| P3 routing decision", stdout, re.M), stdout
    assert "P1" not in results and "P4" not in results


@pytest.mark.parametrize("bad", [["--figures", "P9"], ["--p3-agents", "ten"], ["--repeat", "0"]])
def test_bench_refuses_bad_options(bad: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway", "bench", *bad], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
