"""The machine a benchmark ran on: cores, CPU model, RAM, Python, load average."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def describe() -> dict[str, Any]:
    """A dict describing this machine now (load average included)."""
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "platform": platform.platform(),
        "load_average": load,
    }


def describe_line(info: dict[str, Any]) -> str:
    ram = info["ram_bytes"]
    load = info["load_average"]
    return (
        f"machine: {info['cores']} cores, {info['cpu']}, {ram / 2**30:.1f} GiB RAM, "
        if ram
        else f"machine: {info['cores']} cores, {info['cpu']}, "
    ) + (
        f"{info['python']}, {info['platform']}, load average "
        + (" ".join(f"{x:.2f}" for x in load) if load else "unknown")
    )
