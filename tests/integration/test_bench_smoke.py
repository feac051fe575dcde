"""Smoke test of ``cti-gateway bench``: with tiny sizes it runs end to end (gateway, bare
aiohttp server, load generator, desktops and the routing benchmark, each a separate
process) and prints the machine and a row for every figure. Never a timed assertion:
the figures themselves depend on the machine; only P5 (nothing lost or duplicated) and the
duplicate replay of P6 are checked, being correctness, not speed."""

from __future__ import annotations

import json
import os
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


def test_bench_cluster_figure_runs_embedded_and_each_instance_count(tmp_path: Path) -> None:
    """``--figures cluster`` starts its own redis-server and PostgreSQL, runs the embedded
    gateway and 1 and 2 instances in one run and prints one table: every setup answered
    offers and nothing failed (no timing is asserted)."""
    from tests.peers import require
    from tests.peers.postgres import postgres_bin

    require("redis-server", "redis-server")
    postgres_bin()
    out = tmp_path / "bench.json"
    args = ["--figures", "cluster", "--cluster-duration", "0.5", "--cluster-concurrency", "4"]
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", *args, "--cluster-instances", "1,2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stdout = proc.stdout
    assert "load average" in stdout
    for label in ("embedded (SQLite), 1 process", "redis + postgresql, 1 instance ", "redis + postgresql, 2 instances"):
        assert re.search(rf"^\| {re.escape(label)}", stdout, re.M), f"no {label!r} row in:\n{stdout}"
    assert "P1" not in stdout
    runs = json.loads(out.read_text())["CLUSTER"]["runs"]
    assert sorted(runs) == ["0", "1", "2"]
    for setup in runs.values():
        (run,) = setup
        assert run["offers"] > 0 and run["errors"] == {}, run
        assert set(run["decisions"]) <= {"assigned", "rejected", "queued"}, run


def test_bench_cluster_without_redis_says_what_is_missing(tmp_path: Path) -> None:
    """No --redis and no redis-server on PATH: one line naming both ways out, exit 1."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "--figures", "cluster", "--cluster-duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "the cluster figure needs Redis: pass --redis" in proc.stderr
    assert "apt-get install redis-server" in proc.stderr


def test_bench_refuses_a_store_url_of_another_kind_without_echoing_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "--figures", "cluster", "--redis", "http://u:s3cret@h/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "a redis:// URL" in proc.stderr and "s3cret" not in proc.stderr
