"""The multi-instance example (docker-compose.yml, deploy/nginx.conf, config/examples/cluster.yaml),
checked structurally: no Docker here (no image registry), so it is not run.

What is checked: the compose file loads and has Redis with append-only persistence,
PostgreSQL, at least two gateways built from the repository's Dockerfile with one config
file that exists, every ``${VAR}`` of that config passed in each gateway's environment, and
a load balancer whose nginx upstreams are exactly those gateways (WebSocket upgrade headers
passed on); and ``cti-gateway check-config`` on the config with that environment reports
nothing but the one known refusal of ``store: redis://`` while the multi-instance runtime
is missing (once ``redis://`` is accepted, nothing at all).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import store_url
from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def gateways(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in data["services"].items()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["run"]
    }


def config_path(service: dict[str, Any]) -> Path:
    command = service["command"]
    inside = Path(command[command.index("--config") + 1])
    # the Dockerfile copies ./config to /app/config
    assert inside.is_relative_to("/app/config"), inside
    return ROOT / "config" / inside.relative_to("/app/config")


def test_services_redis_postgres_two_gateways_and_a_load_balancer() -> None:
    data = compose()
    services = data["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["postgres"]["environment"]["POSTGRES_INITDB_ARGS"] == "--encoding=UTF8"
    gws = gateways(data)
    assert len(gws) >= 2, list(services)
    for service in gws.values():
        assert service["build"] == "." and (ROOT / "Dockerfile").is_file()
        assert set(service["depends_on"]) == {"redis", "postgres"}
        assert config_path(service).is_file()
    lb = services["lb"]
    assert set(lb["depends_on"]) == set(gws)
    assert any(str(port).endswith(":8080") for port in lb["ports"])


def test_nginx_balances_over_exactly_the_gateways_with_websocket_upgrade() -> None:
    data = compose()
    mount = next(v for v in data["services"]["lb"]["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    conf = (ROOT / mount.split(":")[0]).read_text(encoding="utf-8")
    upstream = re.search(r"upstream gateways \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(1), re.M))
    port = 8080  # the port of config/examples/cluster.yaml, checked below
    assert servers == {(name, str(port)) for name in gateways(data)}
    assert "proxy_pass http://gateways;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert conf.count("{") == conf.count("}")


def test_the_gateway_config_passes_check_config_with_the_composed_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = compose()
    for service in gateways(data).values():
        path = config_path(service)
        text = path.read_text(encoding="utf-8")
        wanted = set(re.findall(r"\$\{(\w+)\}", text))
        environment = service["environment"]
        assert wanted <= set(environment), f"{path.name} needs {sorted(wanted - set(environment))}"
        for name in wanted:
            # compose's ${VAR:?message}: required from the operator's environment; test values here
            assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", environment[name]), environment[name]
            value = "ab" * 32 if name.endswith("_SHA256") else f"test-value-of-{name.lower()}"
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(["check-config", str(path)])
        out = capsys.readouterr()
        lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
        store_line = next(i for i, line in enumerate(text.splitlines(), 1) if "redis://" in line and "url:" in line)
        try:
            store_url.parse_store_url("redis://redis:6379/0")
        except ValueError as refusal:
            # today: exactly one problem, the known refusal of redis:// (nothing else wrong)
            assert code == 2
            assert lines == [f"{path}:{store_line}: store.url: {refusal}"], lines
        else:  # the multi-instance runtime has landed: the example must be valid
            assert code == 0, lines
        assert "test-value-of-cti_pg_password" not in out.out + out.err
