"""The command line's output into a pipe whose reader has gone away (``cti-gateway replay
... | head``): the command stops quietly with 141 (128 + SIGPIPE, as a shell reports it),
never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_stdout_ends_the_command_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command writes: its first write gets EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "config/gateway.yaml"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == 141


def test_an_open_stdout_still_gets_the_output() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "config/gateway.yaml"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("config/gateway.yaml: OK")
