"""Third-party adapters, really installed: tests/plugin_example (a working ``ticket_http``
adapter) and tests/plugin_broken (one plug-in whose import fails, one that claims the name
``ticket_http`` too) are built and pip-installed into temporary directories, and found
through their ``cti_gateway.adapters`` entry points by importlib.metadata, in this process
(with the directory on ``sys.path``) and in a fresh ``cti-gateway check-config`` process
(with it on ``PYTHONPATH``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from openapi_spec_validator import validate

import adapters.registry
from adapters.registry import AdapterRegistry, UnknownAdapter

from .conftest import Logs, events_named
from .contract.harness import VENDOR, ContractGateway, contract_config

TESTS = Path(__file__).resolve().parent.parent  # tests/


def _install(packages: list[str], target: Path, scratch: Path) -> Path:
    for package in packages:
        source = scratch / package  # a copy: pip builds in the source tree
        shutil.copytree(TESTS / package, source)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
            + ["--target", str(target), str(source)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return target


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with the example plug-in installed."""
    base = tmp_path_factory.mktemp("plugins-good")
    return _install(["plugin_example"], base / "site", base)


@pytest.fixture(scope="session")
def clashing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with the example plug-in and the faulty ones installed."""
    base = tmp_path_factory.mktemp("plugins-all")
    return _install(["plugin_example", "plugin_broken"], base / "site", base)


def test_the_package_is_installed_with_its_entry_point(good: Path) -> None:
    [dist_info] = good.glob("cti_gateway_example_plugin-*.dist-info")
    assert "ticket_http = cti_gateway_example.ticket:TicketAdapter" in (dist_info / "entry_points.txt").read_text()


def test_an_installed_plugin_is_discovered(good: Path, monkeypatch: pytest.MonkeyPatch, logs: Logs) -> None:
    monkeypatch.syspath_prepend(str(good))

    registry = AdapterRegistry.discover()

    cls = registry.get("ticket_http")
    assert cls.__module__ == "cti_gateway_example.ticket" and Path(
        sys.modules[cls.__module__].__file__ or ""
    ).is_relative_to(good)
    assert registry.rejected == {} and events_named(logs, "adapter_plugin_rejected") == []
    assert {"webhook", "twilio", "chat_ws"} <= set(registry.names())


def test_broken_and_clashing_plugins_are_skipped_logged_once_and_named(
    clashing: Path, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    monkeypatch.syspath_prepend(str(clashing))

    registry = AdapterRegistry.discover()

    assert "ticket_http" not in registry and "broken_example" not in registry
    assert "webhook" in registry  # the built-ins are untouched
    lines = events_named(logs, "adapter_plugin_rejected")
    assert sorted(line["entry_point"] for line in lines) == ["broken_example", "ticket_clone", "ticket_http"]
    with pytest.raises(UnknownAdapter) as broken:
        registry.get("broken_example")
    assert str(broken.value) == (
        "adapter 'broken_example' is not available: plug-in 'broken_example' "
        "(cti_gateway_broken.broken:BrokenAdapter) was skipped: cannot be imported: "
        "ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"
    )
    with pytest.raises(UnknownAdapter) as twins:
        registry.get("ticket_http")
    assert str(twins.value) == (
        "adapter 'ticket_http' is not available: the name is claimed by several plug-ins "
        "(cti_gateway_broken.clone.TicketClone and cti_gateway_example.ticket.TicketAdapter); "
        "uninstall all but one"
    )


CONFIG = """\
capacity_profiles: {{p: {{max_sessions: 2}}}}
queues: [{{name: support}}]
agents: [{{id: a1, name: A, profile: p, queues: [support], token_sha256: "{sha}"}}]
vendors:
  - name: tickets
    adapter: ticket_http
    token: ticket-token-0123456789
    queue: support
  - name: legacy
    adapter: broken_example
"""


def check_config(site: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", config.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=config.parent,
    )


def test_check_config_names_the_plugin_and_its_error(good: Path, clashing: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(sha="0" * 64), encoding="utf-8")

    with_good = check_config(good, config)
    assert with_good.returncode == 2, with_good
    [problem] = [line for line in with_good.stderr.splitlines() if line.startswith("gateway.yaml:")]
    assert problem.startswith("gateway.yaml:10: vendors.1.adapter: unknown adapter 'broken_example' (known: ")
    assert "ticket_http" in problem  # the example plug-in is known there

    with_broken = check_config(clashing, config)
    assert with_broken.returncode == 2, with_broken
    problems = [line for line in with_broken.stderr.splitlines() if line.startswith("gateway.yaml:")]
    assert problems == [
        "gateway.yaml:6: vendors.0.adapter: adapter 'ticket_http' is not available: the name is claimed by several "
        "plug-ins (cti_gateway_broken.clone.TicketClone and cti_gateway_example.ticket.TicketAdapter); "
        "uninstall all but one",
        "gateway.yaml:10: vendors.1.adapter: adapter 'broken_example' is not available: plug-in 'broken_example' "
        "(cti_gateway_broken.broken:BrokenAdapter) was skipped: cannot be imported: "
        "ModuleNotFoundError: No module named 'not_installed_dependency_xyz'",
    ]
    output = with_broken.stdout + with_broken.stderr
    for entry_point in ("broken_example", "ticket_clone", "ticket_http"):  # logged once each
        assert output.count(f"entry_point={entry_point}") == 1, output

    config.write_text(CONFIG.format(sha="0" * 64).split("  - name: legacy")[0], encoding="utf-8")
    fine = check_config(good, config)
    assert fine.returncode == 0, fine


@pytest_asyncio.fixture
async def ticket_gateway(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ContractGateway]:
    monkeypatch.syspath_prepend(str(good))
    settings = {"token": "ticket-token-0123456789", "queue": "support"}
    gw = ContractGateway(contract_config("ticket_http", settings, tmp_path / "gw.db"), base_dir=tmp_path)
    await gw.start()
    await gw.ready()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.mark.asyncio
async def test_the_plugin_serves_its_vendor(ticket_gateway: ContractGateway) -> None:
    gw = ticket_gateway
    headers = {"Authorization": "Bearer ticket-token-0123456789"}
    base = f"{gw.base}/v1/vendors/{VENDOR}/tickets"
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"ticket_id": "T-1", "subject": "refund"}, headers=headers) as response:
            assert response.status == 200 and (await response.json())["decision"] == "assigned"
        async with http.post(base, json={"ticket_id": "T-2"}) as response:
            assert response.status == 401
        [session] = gw.sessions_of("T-1")
        assert (session.channel.value, session.subject) == ("email", "refund")
        async with http.post(f"{base}/T-1/close", headers=headers) as response:
            assert response.status == 200
    assert session.outcome is not None and session.outcome.value == "abandoned"
    assert gw.runtime.adapters[VENDOR].describe()["adapter"] == "ticket_http"
    assert adapters.registry.ENTRY_POINT_GROUP == "cti_gateway.adapters"


@pytest.mark.asyncio
async def test_the_openapi_document_lists_the_plugins_routes(ticket_gateway: ContractGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{ticket_gateway.base}/openapi.json") as response:
        doc = await response.json()
    close = doc["paths"][f"/v1/vendors/{VENDOR}/tickets/{{ticket_id}}/close"]["post"]
    assert [(p["name"], p["in"], p["required"]) for p in close["parameters"]] == [("ticket_id", "path", True)]
    assert close["summary"] == "an endpoint of the ticket_http adapter"  # the plugin gave none
    assert list(doc["paths"][f"/v1/vendors/{VENDOR}/tickets"]["post"]["requestBody"]["content"]) == ["application/json"]
    validate(doc)
