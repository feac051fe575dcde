"""Fixtures for the integration tests that run real gateway processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .live import GatewayProcess, free_port, write_config

GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Make (not start) gateway processes; every one still running at teardown is killed.

    ``gateway_process(config)`` writes the config dict (its ``server.port`` set to a free
    port unless given) to ``tmp_path/<name>.yaml`` and returns a process that runs
    ``python -m gateway run --config <that file>``. ``args=[...]`` replaces the arguments
    after ``python -m gateway`` entirely (then give ``port`` too).
    """
    made: list[GatewayProcess] = []

    def make(
        config: Mapping[str, Any] | None = None,
        *,
        name: str = "gateway",
        args: Sequence[str] | None = None,
        port: int | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> GatewayProcess:
        port = port if port is not None else free_port()
        if args is None:
            assert config is not None
            config = dict(config)
            config["server"] = {"host": "127.0.0.1", **config.get("server", {}), "port": port}
            path = write_config(tmp_path / f"{name}.yaml", config)
            args = ["run", "--config", str(path)]
        process = GatewayProcess(args, port=port, cwd=cwd or tmp_path, log_dir=tmp_path, env=env)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()
