"""The adapter registry: class checks, plug-in discovery, vendor settings validation."""

from __future__ import annotations

import importlib.metadata
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from adapters.base import Adapter, AdapterConfig, Capabilities
from adapters.registry import (
    BUILTIN_ADAPTERS,
    ENTRY_POINT_GROUP,
    AdapterRegistrationError,
    AdapterRegistry,
    UnknownAdapter,
    default_registry,
)
from adapters.webhook import WebhookAdapter, WebhookConfig
from gateway.cli import main
from gateway.config import VendorConfig
from gateway.config_loader import load_config_text
from gateway.errors import ConfigError
from gateway.events import Channel

from .conftest import Logs, events_named

SECRET = "0123456789abcdef-webhook-secret"


class GoodConfig(AdapterConfig):
    host: str
    port: int = 5038


class GoodAdapter(Adapter):
    name: ClassVar[str] = "good"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    capabilities: ClassVar[Capabilities] = Capabilities(can_transfer=True, max_voice_per_agent=1)
    Config: ClassVar[type[AdapterConfig]] = GoodConfig

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class ImpostorWebhook(GoodAdapter):
    name: ClassVar[str] = "webhook"


class ManualAdapter(GoodAdapter):
    name: ClassVar[str] = "manual_one"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.CHAT, Channel.MANUAL})


@dataclass
class FakeEntryPoint:
    """Quacks like :class:`importlib.metadata.EntryPoint`; ``load`` gives ``target`` or raises it."""

    name: str
    value: str
    target: Any
    group: str = ENTRY_POINT_GROUP

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def installed(monkeypatch: pytest.MonkeyPatch, *entry_points: Any) -> list[str | None]:
    """Make ``importlib.metadata.entry_points`` return ``entry_points``; returns the groups asked for."""
    asked: list[str | None] = []

    def fake(*, group: str | None = None) -> list[Any]:
        asked.append(group)
        return list(entry_points)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return asked


# -- discovery -----------------------------------------------------------------------------


def test_the_builtin_webhook_is_discovered() -> None:
    registry = AdapterRegistry.discover()

    assert registry.get("webhook") is WebhookAdapter
    assert "webhook" in registry and len(registry) >= 1
    assert registry.rejected == {}


def test_the_installed_entry_point_of_the_builtin_registers_it_once(
    monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    real = importlib.metadata.EntryPoint(
        name="webhook", value="adapters.webhook:WebhookAdapter", group=ENTRY_POINT_GROUP
    )
    asked = installed(monkeypatch, real, FakeEntryPoint("webhook_alias", "elsewhere:Webhook", WebhookAdapter))

    registry = AdapterRegistry.discover()

    assert asked == [ENTRY_POINT_GROUP]
    assert registry.names() == sorted(BUILTIN_ADAPTERS)
    assert registry.rejected == {}
    assert events_named(logs, "adapter_plugin_rejected") == []


def test_broken_plugins_are_skipped_and_logged_once_while_good_ones_register(
    monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    installed(
        monkeypatch,
        importlib.metadata.EntryPoint(name="missing", value="no_such_module_xyz:Adapter", group=ENTRY_POINT_GROUP),
        FakeEntryPoint("crashes", "crashy:Adapter", RuntimeError("import-time bug")),
        FakeEntryPoint("manual", "manual:ManualAdapter", ManualAdapter),
        FakeEntryPoint("impostor", "impostor:ImpostorWebhook", ImpostorWebhook),
        FakeEntryPoint("not_a_class", "thing:thing", object()),
        FakeEntryPoint("good", "good:GoodAdapter", GoodAdapter),
    )

    registry = AdapterRegistry.discover()

    assert registry.names() == sorted({"good", *BUILTIN_ADAPTERS})
    assert registry.get("webhook") is WebhookAdapter  # a plug-in cannot take a built-in's name
    assert registry.get("good") is GoodAdapter
    rejected = events_named(logs, "adapter_plugin_rejected")
    assert sorted(line["entry_point"] for line in rejected) == [
        "crashes",
        "impostor",
        "manual",
        "missing",
        "not_a_class",
    ]
    reasons = {line["entry_point"]: line["reason"] for line in rejected}
    assert reasons == registry.rejected
    assert "ModuleNotFoundError" in reasons["missing"] and "no_such_module_xyz" in reasons["missing"]
    assert "RuntimeError: import-time bug" in reasons["crashes"]
    assert "manual" in reasons["manual"]
    assert "'webhook' is already taken by adapters.webhook.WebhookAdapter" in reasons["impostor"]
    assert "not a subclass" in reasons["not_a_class"]
    assert all(line["log_level"] == "warning" for line in rejected)


def test_an_entry_point_seen_twice_is_loaded_and_reported_once(monkeypatch: pytest.MonkeyPatch, logs: Logs) -> None:
    broken = FakeEntryPoint("crashes", "crashy:Adapter", RuntimeError("bug"))
    installed(monkeypatch, broken, broken)

    registry = AdapterRegistry.discover()
    registry.add_entry_points([broken])

    assert len(events_named(logs, "adapter_plugin_rejected")) == 1


def test_the_default_registry_is_discovered_once() -> None:
    assert default_registry() is default_registry()
    assert "webhook" in default_registry()


# -- registering -------------------------------------------------------------------------


def variant(**attributes: Any) -> type:
    return type("Variant", (GoodAdapter,), {"__module__": __name__, **attributes})


class SyncStart(GoodAdapter):
    def start(self) -> None:  # type: ignore[override]
        pass


class NotAsyncDeliver(GoodAdapter):
    def deliver(self, notice: Any) -> None:  # type: ignore[override]
        pass


class Abstract(Adapter):
    name: ClassVar[str] = "abstract"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.CHAT})


class NotAConfig(BaseModel):
    pass


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        pytest.param(variant(name=""), "name must be a non-empty identifier", id="empty-name"),
        pytest.param(variant(name="my-adapter"), "name must be a non-empty identifier", id="dash-name"),
        pytest.param(variant(name=7), "name must be a non-empty identifier", id="int-name"),
        pytest.param(variant(channels=frozenset()), "channels must be a non-empty frozenset", id="no-channels"),
        pytest.param(variant(channels={Channel.CHAT}), "channels must be a non-empty frozenset", id="set"),
        pytest.param(variant(channels=frozenset({"chat"})), "channels must be a non-empty frozenset", id="strings"),
        pytest.param(variant(channels=frozenset({Channel.MANUAL})), "must not include manual", id="manual"),
        pytest.param(variant(capabilities={"can_reject": True}), "capabilities must be", id="capabilities"),
        pytest.param(variant(Config=NotAConfig), "Config must be a subclass", id="config-model"),
        pytest.param(variant(Config=None), "Config must be a subclass", id="no-config"),
        pytest.param(SyncStart, "start must be a coroutine function", id="sync-start"),
        pytest.param(NotAsyncDeliver, "deliver must be a coroutine function", id="sync-deliver"),
        pytest.param(Abstract, "abstract methods not implemented: start, stop", id="abstract"),
        pytest.param(object, "not a subclass of adapters.base.Adapter", id="not-an-adapter"),
        pytest.param(GoodAdapter("v", GoodConfig(host="h"), None), "not a subclass", id="instance"),  # type: ignore[arg-type]
    ],
)
def test_invalid_classes_are_refused_with_a_clear_reason(cls: Any, problem: str) -> None:
    registry = AdapterRegistry()

    with pytest.raises(AdapterRegistrationError) as info:
        registry.register(cls)

    assert problem in str(info.value)
    assert len(registry) == 0


def test_every_problem_of_a_class_is_named() -> None:
    with pytest.raises(AdapterRegistrationError) as info:
        AdapterRegistry().register(variant(name="", channels=frozenset(), Config=None))

    message = str(info.value)
    assert message.startswith(f"{__name__}.Variant: ")
    assert "name must" in message and "channels must" in message and "Config must" in message


def test_registering_the_same_class_again_is_harmless_and_another_class_is_refused() -> None:
    registry = AdapterRegistry()

    assert registry.register(GoodAdapter) is GoodAdapter
    assert registry.register(GoodAdapter) is GoodAdapter
    with pytest.raises(AdapterRegistrationError, match="'good' is already taken"):
        registry.register(variant())
    assert registry.names() == ["good"]


def test_unknown_adapter_lists_the_known_ones() -> None:
    registry = AdapterRegistry()
    registry.register(GoodAdapter)
    registry.register(WebhookAdapter)

    with pytest.raises(KeyError) as info:
        registry.get("asterisk")

    assert isinstance(info.value, UnknownAdapter) and isinstance(info.value, ConfigError)
    assert str(info.value) == "unknown adapter 'asterisk' (known: good, webhook)"
    assert info.value.code == "unknown_adapter"


# -- vendor settings -----------------------------------------------------------------------


@pytest.fixture
def registry() -> AdapterRegistry:
    registry = AdapterRegistry()  # the webhook and a test adapter (the list of known names is stable)
    registry.register(WebhookAdapter)
    registry.register(GoodAdapter)
    return registry


def vendor(adapter: str = "webhook", name: str = "hooks", **settings: Any) -> VendorConfig:
    return VendorConfig.model_validate({"name": name, "adapter": adapter, **settings})


def test_validate_vendor_returns_the_adapters_settings(registry: AdapterRegistry) -> None:
    settings = registry.validate_vendor(vendor(secret=SECRET, tolerance_s="60"), index=0)

    assert isinstance(settings, WebhookConfig)
    assert settings.secret.get_secret_value() == SECRET
    assert settings.tolerance_s == 60
    assert registry.validate_vendor(vendor("good", host="pbx"), index=1) == GoodConfig(host="pbx")


@pytest.mark.parametrize(
    ("settings", "problems"),
    [
        ({"secret": SECRET, "colour": "red"}, ["vendors.2.colour: unknown key"]),
        ({}, ["vendors.2.secret: required"]),
        ({"secret": "short-secret"}, ["vendors.2.secret: must be at least 16 characters"]),
        (
            {"secret": SECRET, "tolerance_s": 9999},
            ["vendors.2.tolerance_s: input should be less than or equal to 3600"],
        ),
        (
            {"secret": 12345, "callback_url": "not a url", "x": 1},
            [
                "vendors.2.secret: input should be a valid string",
                "vendors.2.callback_url: input should be a valid URL, relative URL without a base",
                "vendors.2.x: unknown key",
            ],
        ),
    ],
)
def test_validate_vendor_errors(registry: AdapterRegistry, settings: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        registry.validate_vendor(vendor(**settings), index=2)

    assert info.value.problems == problems
    assert "short-secret" not in str(info.value)


def test_validate_vendor_unknown_adapter(registry: AdapterRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        registry.validate_vendor(vendor("asterisk_ami"), index=0)

    assert info.value.problems == ["vendors.0.adapter: unknown adapter 'asterisk_ami' (known: good, webhook)"]


def test_validate_vendor_without_index_names_the_vendor(registry: AdapterRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        registry.validate_vendor(vendor(name="crm-hooks"))

    assert info.value.problems == ["vendors.crm-hooks.secret: required"]


def test_vendor_problems_are_paths_from_the_root(registry: AdapterRegistry) -> None:
    assert registry.vendor_problems(vendor(secret=SECRET), 0) == []
    assert registry.vendor_problems(vendor("good", port="x", extra=1), 3) == [
        (("vendors", 3, "host"), "required"),
        (("vendors", 3, "port"), "input should be a valid integer, unable to parse string as an integer"),
        (("vendors", 3, "extra"), "unknown key"),
    ]


# -- the config loader hook and check-config ---------------------------------------------------


CONFIG = textwrap.dedent(
    """\
    capacity_profiles: {p: {max_sessions: 1}}
    vendors:
      - name: hooks
        adapter: webhook
        secret: "${HOOK_SECRET}"
        colour:
          red
      - {name: short, adapter: webhook, secret: "${SHORT}"}
      - {name: pbx, adapter: asterisk_ami}
      - name: bare
        adapter: webhook
      - {adapter: webhook}
    """
)


def test_the_loader_reports_vendor_settings_at_their_lines(registry: AdapterRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(CONFIG, "gw.yaml", environ={"SHORT": "tiny"}, vendor_check=registry.vendor_problems)

    assert info.value.problems == [
        "gw.yaml:5: vendors.0.secret: environment variable HOOK_SECRET is not set",  # reported once
        "gw.yaml:6: vendors.0.colour: unknown key",
        "gw.yaml:8: vendors.1.secret: must be at least 16 characters",
        "gw.yaml:9: vendors.2.adapter: unknown adapter 'asterisk_ami' (known: good, webhook)",
        "gw.yaml:10: vendors.3.secret: required",
        "gw.yaml:12: vendors.4.name: required",  # and the entries valid alone are still checked
    ]
    assert "tiny" not in str(info.value)


def test_the_loader_without_a_vendor_check_leaves_settings_alone() -> None:
    config = load_config_text(
        "capacity_profiles: {p: {max_sessions: 1}}\nvendors: [{name: v, adapter: webhook, colour: red}]\n",
        "gw.yaml",
        environ={},
    )
    assert config.vendors[0].settings() == {"colour": "red"}


def test_check_config_reports_an_unknown_webhook_setting_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("gateway.yaml").write_text(
        textwrap.dedent(
            f"""\
            capacity_profiles: {{p: {{max_sessions: 1}}}}
            vendors:
              - name: crm-hooks
                adapter: webhook
                secret: {SECRET}
                tolerance: 60
            """
        ),
        encoding="utf-8",
    )

    assert main(["check-config", "gateway.yaml"]) == 2
    assert capsys.readouterr().err == "gateway.yaml:6: vendors.0.tolerance: unknown key\n"


class MappedConfig(AdapterConfig):
    agent_map: dict[str, str] = {}
    queue_map: dict[str, str] = {}
    agent_contacts: dict[str, str] = {}


class MappedAdapter(GoodAdapter):
    name: ClassVar[str] = "mapped"
    Config: ClassVar[type[AdapterConfig]] = MappedConfig


def test_agents_and_queues_named_in_vendor_settings_must_be_configured(registry: AdapterRegistry) -> None:
    registry.register(MappedAdapter)
    text = textwrap.dedent(
        """\
        capacity_profiles: {p: {max_sessions: 1}}
        queues: [{name: support}]
        agents: [{id: a1, name: A, profile: p, queues: [support]}]
        vendors:
          - name: pbx
            adapter: mapped
            agent_map:
              "PJSIP/1001": a1
              "PJSIP/1002": a9
            queue_map: {sales-q: sales, support-q: support}
            agent_contacts: {a1: "sip:a1@x", ghost: "sip:g@x"}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "gw.yaml", environ={}, vendor_check=registry.vendor_problems)

    assert info.value.problems == [
        "gw.yaml:9: vendors.0.agent_map.PJSIP/1002: no agent 'a9' is configured",
        "gw.yaml:10: vendors.0.queue_map.sales-q: no queue 'sales' is configured",
        "gw.yaml:11: vendors.0.agent_contacts.ghost: no agent 'ghost' is configured",
    ]


# -- lazy discovery (what `cti-gateway run` uses) -----------------------------------------


def _plugins() -> list[Any]:
    return [
        importlib.metadata.EntryPoint(name="webhook", value=BUILTIN_ADAPTERS["webhook"], group=ENTRY_POINT_GROUP),
        FakeEntryPoint("crashes", "crashy:Adapter", RuntimeError("import-time bug")),
        FakeEntryPoint("impostor", "impostor:ImpostorWebhook", ImpostorWebhook),
        FakeEntryPoint("good", "good:GoodAdapter", GoodAdapter),
    ]


def test_a_lazy_registry_answers_as_a_full_discovery(monkeypatch: pytest.MonkeyPatch, logs: Logs) -> None:
    """``discover(lazy=True)`` imports a built-in when it is asked for (tests/unit/test_footprint.py
    checks the modules of a real ``run``); every answer is a full discovery's: plug-ins loaded
    and rejected at discovery, one claiming a built-in's name refused for it, the unknown
    adapter's message listing every adapter."""
    installed(monkeypatch, *_plugins())
    full = AdapterRegistry.discover()
    full_logs = [dict(line) for line in logs]
    logs.clear()

    lazy = AdapterRegistry.discover(lazy=True)

    # at discovery: the plug-ins, as in a full discovery (the impostor loads the webhook first)
    assert lazy.rejected == full.rejected
    assert sorted(line["entry_point"] for line in logs) == sorted(line["entry_point"] for line in full_logs)
    assert "'webhook' is already taken by adapters.webhook.WebhookAdapter" in lazy.rejected["impostor"]
    assert lazy.get("webhook") is WebhookAdapter and lazy.get("good") is GoodAdapter
    assert lazy.get("twilio") is full.get("twilio")
    assert "kamailio" in lazy and "nope" not in lazy
    with pytest.raises(UnknownAdapter) as unknown:
        lazy.get("nope")
    assert str(unknown.value) == str(pytest.raises(UnknownAdapter, full.get, "nope").value)
    assert lazy.refusal("crashes") == full.refusal("crashes")
    assert lazy.names() == full.names() == sorted({"good", *BUILTIN_ADAPTERS})
    assert list(lazy) == list(full) and len(lazy) == len(full)


def test_a_lazy_registry_validates_vendors_as_a_full_one(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch)
    vendors = [
        VendorConfig.model_validate({"name": "crm", "adapter": "webhook", "secret": SECRET}),
        VendorConfig.model_validate({"name": "crm2", "adapter": "webhook", "secret": "short", "extra": 1}),
        VendorConfig.model_validate({"name": "x", "adapter": "nope"}),
    ]
    full, lazy = AdapterRegistry.discover(), AdapterRegistry.discover(lazy=True)

    for index, vendor in enumerate(vendors):
        assert lazy.vendor_problems(vendor, index) == full.vendor_problems(vendor, index)


def test_a_builtin_that_cannot_be_imported_is_refused_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    installed(monkeypatch)
    monkeypatch.setitem(BUILTIN_ADAPTERS, "twilio", "no_such_module_xyz:TwilioAdapter")

    lazy = AdapterRegistry.discover(lazy=True)
    assert events_named(logs, "adapter_plugin_rejected") == []  # not asked for yet
    assert lazy.get("webhook") is WebhookAdapter
    with pytest.raises(UnknownAdapter) as refused:
        lazy.get("twilio")

    assert "adapter 'twilio' is not available: plug-in 'twilio' (no_such_module_xyz:TwilioAdapter) was skipped" in str(
        refused.value
    )
    [line] = events_named(logs, "adapter_plugin_rejected")
    assert line["entry_point"] == "twilio"
