"""Loading the YAML configuration: interpolation, file:line errors, the shipped files, the CLI."""

from __future__ import annotations

import gc
import hashlib
import json
import re
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import pytest

from adapters.registry import default_registry
from gateway.cli import main
from gateway.config import GatewayConfig, Known, OnFull, QueuePolicy, VendorConfig
from gateway.config_loader import load_config, load_config_apart, load_config_text
from gateway.errors import ConfigError
from gateway.events import Channel
from gateway.records import open_journal

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "gateway.yaml"
MINIMAL = ROOT / "config" / "examples" / "minimal.yaml"
NAME = "gateway.yaml"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path so that messages name the file plainly: ``gateway.yaml:3: ...``."""
    monkeypatch.chdir(tmp_path)


def write(text: str) -> Path:
    path = Path(NAME)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(text: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    return load_config(write(text), environ={} if environ is None else environ)


def problems(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    return info.value.problems


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- the shipped files -------------------------------------------------------------------


def test_shipped_config_loads_with_the_documented_sample_tokens() -> None:
    config = load_config(SHIPPED, environ={})

    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.supervisor_token_sha256 == sha256("supervisor-sample")
    assert config.store.url == "sqlite:///data/gateway.db"
    blended = config.capacity_profiles["blended"]
    assert (blended.max_sessions, blended.reserved_inbound) == (6, 1)
    assert blended.channels == {Channel.VOICE: 1, Channel.CHAT: 6, Channel.EMAIL: 3, Channel.MANUAL: 5}
    assert blended.weight(Channel.VOICE) == 1
    assert blended.offer_timeout(Channel.EMAIL) == 120
    assert blended.wrap_up(Channel.VOICE) == 30
    assert "chat_heavy" in config.capacity_profiles
    queues = {queue.name: queue for queue in config.queues}
    assert (queues["support"].policy, queues["support"].on_full) == (QueuePolicy.LONGEST_IDLE, OnFull.REJECT)
    assert (queues["sales"].policy, queues["sales"].on_full) == (QueuePolicy.LEAST_BUSY, OnFull.WAIT)
    assert queues["sales"].max_wait_s == 120
    tokens = {agent.id: agent.token_sha256 for agent in config.agents}
    assert tokens == {"a1001": sha256("agent-a1001-sample"), "a1002": sha256("agent-a1002-sample")}
    [vendor] = config.vendors
    assert (vendor.name, vendor.adapter) == ("crm-hooks", "webhook")
    assert vendor.settings()["secret"]
    assert config.reference_problems() == []


def test_shipped_config_mentions_its_sample_tokens_in_comments() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    for token in ("supervisor-sample", "agent-a1001-sample", "agent-a1002-sample", "${CRM_HOOK_SECRET}"):
        assert token in text


def test_minimal_example_loads() -> None:
    config = load_config(MINIMAL, environ={})
    assert list(config.capacity_profiles) == ["single"]
    assert [agent.id for agent in config.agents] == ["a1001"]


# -- environment interpolation -----------------------------------------------------------

_ENV_DOC = """\
    server:
      host: ${HOST}
      port: ${PORT}
    store: {url: "sqlite:///${DATA_DIR}/gw.db"}
    capacity_profiles:
      p: {max_sessions: 1}
    vendors:
      - name: hooks
        adapter: webhook
        secret: "${SECRET}"
        template: "literal $${NOT_A_VAR} and $$ and $ stay"
"""


def test_interpolation_of_whole_and_embedded_values_and_the_escape() -> None:
    environ = {"HOST": "0.0.0.0", "PORT": "9090", "DATA_DIR": "/var/lib/gw", "SECRET": "s3cr3t"}
    config = load(_ENV_DOC, environ)

    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9090
    assert config.store.url == "sqlite:////var/lib/gw/gw.db"
    settings = config.vendors[0].settings()
    assert settings["secret"] == "s3cr3t"
    assert settings["template"] == "literal ${NOT_A_VAR} and $$ and $ stay"


def test_interpolation_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_PORT", "7070")
    write("server: {port: '${GW_TEST_PORT}'}\ncapacity_profiles: {p: {max_sessions: 1}}\n")
    assert load_config(NAME).server.port == 7070


def test_missing_variables_are_reported_at_their_line_once() -> None:
    assert problems(_ENV_DOC, {"HOST": "h"}) == [
        "gateway.yaml:3: server.port: environment variable PORT is not set",
        "gateway.yaml:4: store.url: environment variable DATA_DIR is not set",
        "gateway.yaml:10: vendors.0.secret: environment variable SECRET is not set",
    ]


def test_malformed_reference_is_an_error() -> None:
    assert problems("""\
        capacity_profiles: {p: {max_sessions: 1}}
        vendors:
          - {name: v, adapter: webhook, secret: "${SECRET"}
    """) == [
        "gateway.yaml:3: vendors.0.secret: malformed ${...}: write ${NAME} (letters, digits, _) or $${ for a literal ${"
    ]


def test_interpolated_values_are_never_echoed() -> None:
    found = problems(
        """\
        capacity_profiles: {p: {max_sessions: 1}}
        agents:
          - {id: a1, profile: "${PROFILE}"}
          - {id: a2, profile: "x-${PROFILE}"}
        """,
        {"PROFILE": "hunter2-secret"},
    )

    assert found == [
        "gateway.yaml:3: agents.0.profile: unknown capacity profile '${PROFILE}'",
        "gateway.yaml:4: agents.1.profile: unknown capacity profile 'x-${PROFILE}'",
    ]


# -- unknown keys, duplicate keys, shape ---------------------------------------------------


def test_unknown_keys_at_top_level_and_nested_are_reported_at_the_key() -> None:
    assert problems("""\
        capacity_profiles:
          p:
            max_sessions: 2
            max_session: 3
        queus: []
        server:
          port: 1
          extra:
            nested: true
    """) == [
        "gateway.yaml:4: capacity_profiles.p.max_session: unknown key",
        "gateway.yaml:5: queus: unknown key",
        "gateway.yaml:8: server.extra: unknown key",
    ]


def test_duplicate_keys_are_errors() -> None:
    assert problems("""\
        capacity_profiles:
          p: {max_sessions: 1}
        agents:
          - id: a1
            profile: p
            profile: p
        capacity_profiles:
          p: {max_sessions: 2}
    """) == [
        "gateway.yaml:6: agents.0.profile: duplicate key (first given on line 5)",
        "gateway.yaml:7: capacity_profiles: duplicate key (first given on line 1)",
    ]


def test_merge_keys_are_not_duplicates() -> None:
    config = load("""\
        capacity_profiles:
          base: &base {max_sessions: 4, reserved_inbound: 1}
          big:
            <<: *base
            max_sessions: 8
    """)
    assert config.capacity_profiles["big"].max_sessions == 8
    assert config.capacity_profiles["big"].reserved_inbound == 1


def test_missing_required_fields_point_at_the_deepest_existing_node() -> None:
    assert problems("""\
        server: {port: 1}
        agents:
          - id: a1
            name: Ada
    """) == [
        "gateway.yaml:1: capacity_profiles: required",
        "gateway.yaml:3: agents.0.profile: required",
    ]


def test_type_errors_name_the_value_line_and_drop_pydantic_prefixes() -> None:
    assert problems("""\
        server:
          port: eighty
        capacity_profiles:
          p:
            max_sessions: 2
            channels: {fax: 1}
        queues:
          - name: q
            policy: round_robin
    """) == [
        "gateway.yaml:2: server.port: input should be a valid integer, unable to parse string as an integer",
        "gateway.yaml:6: capacity_profiles.p.channels.fax: "
        "invalid key: input should be 'voice', 'chat', 'email' or 'manual'",
        "gateway.yaml:9: queues.0.policy: input should be 'longest_idle', 'least_busy' or 'offer_all'",
    ]


def test_server_limits_have_defaults_and_bounds_reported_at_their_lines() -> None:
    defaults = load("""\
        capacity_profiles: {p: {max_sessions: 1}}
    """).server
    assert (defaults.idle_timeout_s, defaults.max_connections_per_address, defaults.max_desktops_per_agent) == (
        30.0,
        256,
        4,
    )
    assert problems("""\
        server:
          idle_timeout_s: 0
          max_connections_per_address: -1
          max_desktops_per_agent: 0
        capacity_profiles: {p: {max_sessions: 1}}
    """) == [
        "gateway.yaml:2: server.idle_timeout_s: input should be greater than or equal to 1",
        "gateway.yaml:3: server.max_connections_per_address: input should be greater than or equal to 0",
        "gateway.yaml:4: server.max_desktops_per_agent: input should be greater than or equal to 1",
    ]
    off = load("""\
        server: {max_connections_per_address: 0, idle_timeout_s: 3600, max_desktops_per_agent: 64}
        capacity_profiles: {p: {max_sessions: 1}}
    """).server
    assert (off.max_connections_per_address, off.idle_timeout_s, off.max_desktops_per_agent) == (0, 3600, 64)


def test_retention_has_defaults_and_bounds_reported_at_their_lines() -> None:
    defaults = load("""\
        capacity_profiles: {p: {max_sessions: 1}}
    """).retention
    assert (defaults.dedup_window_s, defaults.cached_events, defaults.cached_finished) == (86_400.0, 10_000, 1_000)
    assert problems("""\
        retention:
          dedup_window_s: 59
          cached_events: 99
          cached_finished: 9
          keep: forever
        capacity_profiles: {p: {max_sessions: 1}}
    """) == [
        "gateway.yaml:2: retention.dedup_window_s: input should be greater than or equal to 60",
        "gateway.yaml:3: retention.cached_events: input should be greater than or equal to 100",
        "gateway.yaml:4: retention.cached_finished: input should be greater than or equal to 10",
        "gateway.yaml:5: retention.keep: unknown key",
    ]
    assert problems("""\
        retention: {dedup_window_s: 2592001, cached_events: 10000001, cached_finished: many}
        capacity_profiles: {p: {max_sessions: 1}}
    """) == [
        "gateway.yaml:1: retention.cached_events: input should be less than or equal to 10000000",
        "gateway.yaml:1: retention.cached_finished: input should be a valid integer, "
        "unable to parse string as an integer",
        "gateway.yaml:1: retention.dedup_window_s: input should be less than or equal to 2592000",
    ]
    chosen = load("""\
        retention: {dedup_window_s: 3600, cached_events: 100, cached_finished: 10}
        capacity_profiles: {p: {max_sessions: 1}}
    """).retention
    assert (chosen.dedup_window_s, chosen.cached_events, chosen.cached_finished) == (3600.0, 100, 10)


LARGE = """\
    store: {url: "${STORE}"}
    capacity_profiles: {p: {max_sessions: 2}}
    queues: [{name: q}]
    vendors: [{name: crm, adapter: webhook, secret: "0123456789abcdef0123", tolerance_s: 60}]
    agents:
"""


def test_load_config_apart_gives_what_load_config_gives_without_keeping_the_tree() -> None:
    """A large file is checked in a child process: the same configuration comes back (and
    the same problems, every one), vendor settings and interpolation included."""
    registry = default_registry()
    agents = "".join(f"      - {{id: a{n}, profile: p, queues: [q], name: 'Agent {n}'}}\n" for n in range(300))
    path = write(LARGE + agents)
    environ = {"STORE": "memory://"}
    checked: list[str] = []

    def check(vendor: VendorConfig, index: int, known: Known) -> list[tuple[tuple[str | int, ...], str]]:
        checked.append(vendor.name)
        return list(registry.vendor_problems(vendor, index, known))

    direct = load_config(path, environ=environ, vendor_check=check)
    assert checked == ["crm"]
    apart = load_config_apart(path, environ=environ, vendor_check=check, min_bytes=0)
    assert checked == ["crm"]  # checked in the child process, whose memory is gone with it
    assert apart == direct
    small = load_config_apart(path, environ=environ, vendor_check=check)  # below the size: read here
    assert checked == ["crm", "crm"] and small == direct
    assert len(apart.agents) == 300 and apart.store.url == "memory://"
    assert apart.vendors[0].settings() == {"secret": "0123456789abcdef0123", "tolerance_s": 60}
    # problems: the same list, in the same order
    bad = Path("bad.yaml")
    broken = LARGE.replace("tolerance_s: 60", "tolerance_s: soon")
    bad.write_text(textwrap.dedent(broken + agents + "      - {id: a0, profile: nope}\n"))
    with pytest.raises(ConfigError) as direct_info:
        load_config(bad, environ=environ, vendor_check=registry.vendor_problems)
    with pytest.raises(ConfigError) as apart_info:
        load_config_apart(bad, environ=environ, vendor_check=registry.vendor_problems, min_bytes=0)
    assert apart_info.value.problems == direct_info.value.problems
    assert len(apart_info.value.problems) == 3  # tolerance_s, duplicate agent, unknown profile
    with pytest.raises(ConfigError) as missing:
        load_config_apart(path, environ={}, min_bytes=0)
    assert missing.value.problems == ["gateway.yaml:1: store.url: environment variable STORE is not set"]


def test_load_config_apart_reads_a_file_that_does_not_survive_json_itself() -> None:
    """A value JSON cannot carry exactly (infinity) never comes back changed: the file is
    then read in this process."""
    path = write("""\
        capacity_profiles: {p: {max_sessions: 2}}
        vendors: [{name: crm, adapter: custom, limit: .inf}]
    """)
    apart = load_config_apart(path, environ={}, min_bytes=0)
    assert apart == load_config(path, environ={})
    assert apart.vendors[0].settings() == {"limit": float("inf")}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://example.org",
            "unsupported store scheme ftp:// (supported: sqlite://, memory://, redis://, rediss://)",
        ),
        ("redis://", "the redis URL names no host: write redis://HOST:6379/0"),
        ("redis://cache:6379/zero", "the redis database must be a number, e.g. /0"),
        ("redis://cache:99999/0", "the redis URL's port must be a number from 1 to 65535"),
        ("redis://u:secret@cache/0?timeout=1", "a redis URL takes no options"),
        ("memory://abc", "memory:// takes no path, host or options: write memory://"),
        ("sqlite:///x.db?foo=1", "unknown sqlite option 'foo' (known: synchronous)"),
        ("sqlite:///x.db?synchronous=off", "synchronous must be normal or full"),
        ("sqlite://host/x.db", "a sqlite URL has no host"),
        ("sqlite:///", "the sqlite URL names no file"),
        ("sqlite:///:memory:", "an in-memory SQLite database cannot be shared"),
        ("data/gateway.db", "expected a URL such as sqlite:///data/gateway.db or memory://"),
    ],
)
def test_store_urls_that_run_cannot_open_are_config_errors_at_their_line(url: str, message: str) -> None:
    found = problems(f"""\
        capacity_profiles: {{p: {{max_sessions: 1}}}}
        store:
          url: "{url}"
    """)
    assert len(found) == 1 and found[0].startswith(f"{NAME}:3: store.url: {message}"), found
    # the journal refuses it with the same words: one validator for check-config and run
    with pytest.raises(ConfigError) as info:
        open_journal(url)
    assert info.value.problems == [f"store.url: {found[0].split('store.url: ', 1)[1]}"]
    assert "secret" not in found[0]  # a URL may carry a password: never echoed


@pytest.mark.parametrize("url", ["sqlite:///data/g.db", "SQLITE:////var/lib/g.db?synchronous=FULL", "memory://"])
def test_store_urls_that_check_config_accepts_open(url: str, tmp_path: Path) -> None:
    config = load(f"capacity_profiles: {{p: {{max_sessions: 1}}}}\nstore: {{url: '{url}'}}\n")
    assert config.store.url == url
    open_journal(config.store.url, base_dir=tmp_path)  # does not raise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "gateway.yaml:1: yaml: the file is empty (capacity_profiles is required)"),
        ("# only a comment\n", "gateway.yaml:1: yaml: the file is empty (capacity_profiles is required)"),
        ("\n- a\n- b\n", "gateway.yaml:2: yaml: the top level must be a mapping of sections, not a sequence"),
        ("just text\n", "gateway.yaml:1: yaml: the top level must be a mapping of sections, not a single value"),
        (
            "server:\n  port: [1\n",
            "gateway.yaml:3: yaml: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 2)",
        ),
        ("server: 1\n  port: 2\n", "gateway.yaml:2: yaml: mapping values are not allowed here"),
        (
            "a: 1\n---\nb: 2\n",
            "gateway.yaml:2: yaml: found another document (expected a single document in the stream at line 1)",
        ),
        (
            "a: 1\nb: \x01\n",
            "gateway.yaml:2: yaml: unacceptable character #x0001: special characters are not allowed",
        ),
    ],
)
def test_yaml_level_errors(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# -- values YAML would construct as something else ---------------------------------------


@pytest.mark.parametrize(
    "value", ["2024-13-45", "2024-02-30", "2001-12-14", "2001-12-14 21:59:43.10 -25:00", "2001-12-14t21:59:43.10-05:00"]
)
def test_date_like_values_stay_strings(value: str) -> None:
    config = load(f"capacity_profiles: {{p: {{max_sessions: 1}}}}\nqueues: [{{name: {value.replace(' ', '_')}}}]\n")
    assert config.queues[0].name == value.replace(" ", "_")
    config = load(f"capacity_profiles: {{p: {{max_sessions: 1}}}}\nagents: [{{id: a, name: {value}, profile: p}}]\n")
    assert config.agents[0].name == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int x", "not valid as !!int: must be an integer (quote it if it is text)"),
        ("0x_", "not valid as !!int: must be an integer (quote it if it is text)"),
        ("!!float x", "not valid as !!float: must be a number (quote it if it is text)"),
        ("!!bool x", "not valid as !!bool: must be true or false (quote it if it is text)"),
        ("!!binary eA==", "unsupported YAML tag !!binary (write a plain value)"),
        ("!!set {a, b}", "unsupported YAML tag !!set (write a plain mapping or list)"),
        ("!!omap [a: 1]", "unsupported YAML tag !!omap (write a plain mapping or list)"),
        ("!python/name:os.system x", "unsupported YAML tag !python/name:os.system (write a plain value)"),
    ],
)
def test_values_their_tag_cannot_read_are_reported_at_their_line(value: str, message: str) -> None:
    assert problems(f"""\
        capacity_profiles: {{p: {{max_sessions: 1}}}}
        agents:
          - id: a
            name: {value}
            profile: nope
    """) == [
        f"gateway.yaml:4: agents.0.name: {message}",
        "gateway.yaml:5: agents.0.profile: unknown capacity profile 'nope'",
    ]


def test_timestamp_tag_is_the_text_and_bad_tags_in_keys_and_lists_are_each_reported() -> None:
    assert load("capacity_profiles: {p: {max_sessions: 1}}\nqueues: [{name: !!timestamp x}]\n").queues[0].name == "x"
    assert problems("""\
        capacity_profiles: {p: {max_sessions: 1}}
        server:
          !!int x: 1
          port: [!!float y, !!bool z]
          !!str host: localhost
          !!int desktop_grace_s: 1
    """) == [
        "gateway.yaml:3: server.x: not valid as !!int: must be an integer (quote it if it is text)",
        "gateway.yaml:3: server.x: unknown key",
        "gateway.yaml:4: server.port: input should be a valid integer",
        "gateway.yaml:4: server.port.0: not valid as !!float: must be a number (quote it if it is text)",
        "gateway.yaml:4: server.port.1: not valid as !!bool: must be true or false (quote it if it is text)",
        "gateway.yaml:6: server.desktop_grace_s: not valid as !!int: must be an integer (quote it if it is text)",
    ]


DEEP_FLOW = "x: " + "[" * 5000 + "]" * 5000
DEEP_BLOCK = "x:" + "".join(f"\n{' ' * i}k:" for i in range(1, 300))


@pytest.mark.parametrize("text", [DEEP_FLOW, DEEP_BLOCK])
def test_deep_nesting_is_refused_with_its_line(text: str) -> None:
    found = problems("capacity_profiles: {p: {max_sessions: 1}}\n" + text + "\n")
    assert len(found) == 1 and re.fullmatch(r"gateway\.yaml:\d+: yaml: nested deeper than 64 levels", found[0])
    deep_but_fine = "x: " + "[" * 60 + "]" * 60
    assert problems("capacity_profiles: {p: {max_sessions: 1}}\n" + deep_but_fine + "\n") == [
        "gateway.yaml:2: x: unknown key"
    ]


@pytest.mark.parametrize("breaker", ["\r", "\x85", "\u2028", "\u2029"])
def test_lines_are_counted_by_newlines_as_editors_count_them(breaker: str) -> None:
    """YAML also breaks lines at CR, NEL and U+2028/2029 (here inside a quoted value); the
    line reported is the one an editor shows (by ``\n``), never one past the end of the
    file (found by the fuzz test)."""
    head = "capacity_profiles: {p: {max_sessions: 1}}\n"
    assert problems(f"{head}note: 'a{breaker}b'\nunknown: 1\n") == [
        f"{NAME}:2: note: unknown key",
        f"{NAME}:3: unknown: unknown key",
    ]
    with pytest.raises(ConfigError) as info:
        load_config_text(f"{head}note: 'a{breaker}b\n", NAME, environ={})
    assert info.value.problems == [
        f"{NAME}:3: yaml: found unexpected end of stream (while scanning a quoted scalar at line 2)"
    ]


def test_invalid_utf8_is_reported_with_its_line() -> None:
    Path(NAME).write_bytes(b"capacity_profiles: {}\nname: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(NAME)
    assert info.value.problems == ["gateway.yaml:2: yaml: not valid UTF-8 text"]


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("missing.yaml")
    assert info.value.problems == ["missing.yaml: cannot read: No such file or directory"]


def test_load_config_text_uses_the_given_filename() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("capacity_profiles: {p: {max_sessions: 0}}\n", "inline.yaml", environ={})
    assert info.value.problems == [
        "inline.yaml:1: capacity_profiles.p.max_sessions: input should be greater than or equal to 1"
    ]


# -- capacity profile rules --------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("max_sessions: 0", "3: capacity_profiles.p.max_sessions: input should be greater than or equal to 1"),
        ("max_sessions: 65", "3: capacity_profiles.p.max_sessions: input should be less than or equal to 64"),
        (
            "max_sessions: 6\n    units: {voice: 7}",
            "4: capacity_profiles.p.units.voice: 7 exceeds max_units (6): a voice session could never be admitted",
        ),
        (
            "max_sessions: 6\n    max_units: 4\n    units: {chat: 5}",
            "5: capacity_profiles.p.units.chat: 5 exceeds max_units (4): a chat session could never be admitted",
        ),
        (
            "max_sessions: 6\n    reserved_inbound: 6",
            "2: capacity_profiles.p: reserved_inbound (6) must be below max_sessions (6), "
            "or no manual session could ever start",
        ),
        (
            "max_sessions: 6\n    channels: {voice: 0}",
            "4: capacity_profiles.p.channels.voice: 0 can never admit a voice session (minimum 1)",
        ),
    ],
)
def test_profile_rules(profile: str, expected: str) -> None:
    text = "capacity_profiles:\n  p:\n    " + profile + "\n"
    assert problems(text) == [f"{NAME}:{expected}"]


def test_several_problems_of_one_profile_are_reported_at_their_own_lines() -> None:
    assert problems("""\
        capacity_profiles:
          p:
            max_sessions: 2
            reserved_inbound: 2
            channels:
              chat: 0
            units: {voice: 3}
    """) == [
        "gateway.yaml:2: capacity_profiles.p: reserved_inbound (2) must be below max_sessions (2), "
        "or no manual session could ever start",
        "gateway.yaml:6: capacity_profiles.p.channels.chat: 0 can never admit a chat session (minimum 1)",
        "gateway.yaml:7: capacity_profiles.p.units.voice: 3 exceeds max_units (2): "
        "a voice session could never be admitted",
    ]


# -- references and many problems at once -----------------------------------------------


def test_unknown_profile_and_queue_references() -> None:
    assert problems("""\
        capacity_profiles:
          blended: {max_sessions: 6}
        queues:
          - name: support
        agents:
          - id: a1001
            profile: blendid
            queues: [support, sails]
    """) == [
        "gateway.yaml:7: agents.0.profile: unknown capacity profile 'blendid'",
        "gateway.yaml:8: agents.0.queues.1: unknown queue 'sails'",
    ]


def test_all_problems_are_reported_together_sorted_by_line() -> None:
    found = problems(
        """\
        vendors:
          - {name: hooks, adapter: webhook, secret: "${HOOK_SECRET}"}
        agents:
          - {id: a1, profile: p, colour: red}
        capacity_profiles:
          p:
            max_sessions: 65
        server:
          port: 1
          port: 2
        """
    )
    assert found == [
        "gateway.yaml:2: vendors.0.secret: environment variable HOOK_SECRET is not set",
        "gateway.yaml:4: agents.0.colour: unknown key",
        "gateway.yaml:7: capacity_profiles.p.max_sessions: input should be less than or equal to 64",
        "gateway.yaml:10: server.port: duplicate key (first given on line 9)",
    ]


def test_one_pass_reports_shape_errors_references_profile_rules_store_and_vendor_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # before: a shape error anywhere hid the references, the profile rules of a profile with
    # another problem, and the store URL (refused only by `run`, without a line)
    write("""\
        server: {port: 99999}
        store: {url: "memory://abc"}
        capacity_profiles:
          p:
            max_sessions: 2
            reserved_inbound: 2
            colour: red
            units: {voice: 3}
            channels: {chat: 0, fax: 1}
          q:
            max_sessions: 70
            units: {voice: 80}
            max_units: 0
        queues:
          - {name: support, policy: fastest}
          - {name: support}
        agents:
          - {id: a1, profile: r, queues: [support, sails]}
          - {id: a1, profile: p, queues: [support], token_sha256: xyz}
        vendors:
          - {name: hooks, adapter: webhook, secret: short}
          - {name: hooks, adapter: carrier-pigeon}
    """)
    assert main(["check-config", NAME]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gateway.yaml:1: server.port: input should be less than or equal to 65535",
        "gateway.yaml:2: store.url: memory:// takes no path, host or options: write memory://",
        "gateway.yaml:4: capacity_profiles.p: reserved_inbound (2) must be below max_sessions (2), "
        "or no manual session could ever start",
        "gateway.yaml:7: capacity_profiles.p.colour: unknown key",
        "gateway.yaml:8: capacity_profiles.p.units.voice: 3 exceeds max_units (2): "
        "a voice session could never be admitted",
        "gateway.yaml:9: capacity_profiles.p.channels.chat: 0 can never admit a chat session (minimum 1)",
        "gateway.yaml:9: capacity_profiles.p.channels.fax: invalid key: "
        "input should be 'voice', 'chat', 'email' or 'manual'",
        "gateway.yaml:11: capacity_profiles.q.max_sessions: input should be less than or equal to 64",
        "gateway.yaml:13: capacity_profiles.q.max_units: input should be greater than or equal to 1",
        "gateway.yaml:15: queues.0.policy: input should be 'longest_idle', 'least_busy' or 'offer_all'",
        "gateway.yaml:16: queues.1.name: duplicate queue 'support'",
        "gateway.yaml:18: agents.0.profile: unknown capacity profile 'r'",
        "gateway.yaml:18: agents.0.queues.1: unknown queue 'sails'",
        "gateway.yaml:19: agents.1.id: duplicate agent 'a1'",
        "gateway.yaml:19: agents.1.token_sha256: string should match pattern '^[0-9a-fA-F]{64}$'",
        "gateway.yaml:21: vendors.0.secret: must be at least 16 characters",
        "gateway.yaml:22: vendors.1.adapter: unknown adapter 'carrier-pigeon' "
        f"(known: {', '.join(default_registry().names())})",
        "gateway.yaml:22: vendors.1.name: duplicate vendor 'hooks'",
    ]


# -- the command line ----------------------------------------------------------------------


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    write("""\
        capacity_profiles: {p: {max_sessions: 2}, q: {max_sessions: 3}}
        queues: [{name: support}]
        agents: [{id: a1, profile: p}, {id: a2, profile: q, queues: [support]}]
    """)
    assert main(["check-config", NAME]) == 0
    captured = capsys.readouterr()
    assert captured.out == "gateway.yaml: OK (2 capacity profiles, 1 queue, 2 agents, 0 vendors)\n"
    assert captured.err == ""


def test_check_config_prints_every_problem_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    write("""\
        capacity_profiles: {p: {max_sessions: 0}}
        agents: [{id: a1, profile: nope, x: 1}]
    """)
    assert main(["check-config", NAME]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "gateway.yaml:1: capacity_profiles.p.max_sessions: input should be greater than or equal to 1",
        "gateway.yaml:2: agents.0.profile: unknown capacity profile 'nope'",
        "gateway.yaml:2: agents.0.x: unknown key",
    ]


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "nowhere.yaml"]) == 2
    assert capsys.readouterr().err == "nowhere.yaml: cannot read: No such file or directory\n"


def test_check_config_of_the_shipped_file(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["check-config", "config/gateway.yaml"]) == 0
    assert capsys.readouterr().out == ("config/gateway.yaml: OK (2 capacity profiles, 2 queues, 2 agents, 1 vendor)\n")


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_python_dash_m_gateway(tmp_path: Path) -> None:
    write("capacity_profiles: {p: {max_sessions: 1}}\nqueues: [{name: q, policy: nope}]\n")

    def check_config(path: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "check-config", path]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)

    bad = check_config(str(tmp_path / NAME))
    good = check_config("config/gateway.yaml")

    assert (bad.returncode, bad.stdout) == (2, "")
    policies = "'longest_idle', 'least_busy' or 'offer_all'"
    assert bad.stderr == f"{tmp_path / NAME}:2: queues.0.policy: input should be {policies}\n"
    assert (good.returncode, good.stderr) == (0, "")
    assert good.stdout == "config/gateway.yaml: OK (2 capacity profiles, 2 queues, 2 agents, 1 vendor)\n"


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_run_refuses_a_port_that_is_not_one(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    # before: a traceback (OverflowError from bind) once the gateway had started
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", str(SHIPPED), "--port", port])
    assert info.value.code == 2
    assert f"argument --port: '{port}' is not a port number (0..65535)" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["max_sessions", "reserved_inbound", "max_units"])
def test_a_mapping_where_a_number_belongs_is_an_error_at_its_line_not_a_traceback(field: str) -> None:
    """Regression (found by the config fuzz test): the one-pass profile rules took a mapping
    in a scalar field for a per-channel map and compared it with a number."""
    fields = "max_sessions: 3, " if field != "max_sessions" else ""
    text = f"capacity_profiles:\n  p: {{{fields}{field}: {{a: 1}}}}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "gw.yaml", environ={})
    assert info.value.problems == [f"gw.yaml:2: capacity_profiles.p.{field}: input should be a valid integer"]


# -- parallel offers (issue 13) --------------------------------------------------------------


def test_offer_all_queues_load_with_and_without_offer_to() -> None:
    config = load("""\
        capacity_profiles: {p: {max_sessions: 2}}
        queues:
          - {name: vip, policy: offer_all, offer_to: 3, on_full: wait, max_wait_s: 20}
          - {name: urgent, policy: offer_all}
    """)
    vip, urgent = config.queues
    assert (vip.policy, vip.offer_to, vip.on_full) == (QueuePolicy.OFFER_ALL, 3, OnFull.WAIT)
    assert (urgent.policy, urgent.offer_to) == (QueuePolicy.OFFER_ALL, None)


def test_offer_to_problems_are_reported_at_their_line_by_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    write("""\
        capacity_profiles: {p: {max_sessions: 2}}
        queues:
          - name: a
            offer_to: 2
          - name: b
            policy: least_busy
            offer_to: 2
          - name: c
            policy: offer_all
            offer_to: 0
          - {name: d, policy: offer_all, offer_to: many}
    """)
    assert main(["check-config", NAME]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gateway.yaml:4: queues.0.offer_to: offer_to applies to policy: offer_all only (this queue's is longest_idle)",
        "gateway.yaml:7: queues.1.offer_to: offer_to applies to policy: offer_all only (this queue's is least_busy)",
        "gateway.yaml:10: queues.2.offer_to: input should be greater than or equal to 1",
        "gateway.yaml:11: queues.3.offer_to: input should be a valid integer, unable to parse string as an integer",
    ]


# -- configured agents as compact records (P4) ---------------------------------------------


def _agents_config(n: int) -> dict[str, object]:
    return {
        "capacity_profiles": {"p": {"max_sessions": 2}},
        "queues": [{"name": "support"}, {"name": "sales"}],
        "agents": [
            {"id": f"agent-{i:05d}", "profile": "p", "queues": ["support", "sales"], "token_sha256": f"{i:064x}"}
            for i in range(n)
        ],
    }


def test_configured_agents_are_slotted_records_dumped_as_the_model_was() -> None:
    config = load(
        """\
        capacity_profiles: {p: {max_sessions: 2}}
        queues: [{name: support}, {name: sales}]
        agents:
          - {id: a1, name: Ann, profile: p, queues: [support, sales], token_sha256: "%s"}
          - {id: a2, profile: p, queues: [support, sales]}
          - {id: a3, profile: p}
        """
        % ("ab" * 32)
    )
    a1, a2, a3 = config.agents

    assert not hasattr(a1, "__dict__")  # no per-instance dict, no set of fields set
    assert (a1.id, a1.name, a1.profile, a1.queues, a1.token_sha256) == (
        "a1",
        "Ann",
        "p",
        ("support", "sales"),
        "ab" * 32,
    )
    assert a1.queues is a2.queues  # one tuple for every agent with the same queues
    assert (a3.name, a3.queues, a3.token_sha256) == ("", (), None)
    dumped = config.model_dump(mode="json")["agents"]
    assert dumped[0] == {
        "id": "a1",
        "name": "Ann",
        "profile": "p",
        "queues": ["support", "sales"],
        "token_sha256": "ab" * 32,
    }
    assert dumped == [a.model_dump(mode="json") for a in config.agents]
    assert config.model_dump()["agents"][2] == {
        "id": "a3",
        "name": "",
        "profile": "p",
        "queues": [],
        "token_sha256": None,
    }
    # through JSON (load_config_apart, the cluster's log) and back: equal
    assert GatewayConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(AttributeError):
        a1.name = "Bob"  # type: ignore[misc]


def test_configured_agents_keep_the_models_errors_at_their_lines() -> None:
    assert problems("""\
        capacity_profiles: {p: {max_sessions: 2}}
        agents:
          - just-a-name
          - {id: "bad id", profile: p}
          - {id: a3, profile: p, bogus: 1}
          - {id: a4}
          - {id: a5, profile: p, queues: support}
        """) == [
        "gateway.yaml:3: agents.0: input should be a valid dictionary or instance of AgentConfig",
        "gateway.yaml:4: agents.1.id: string should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'",
        "gateway.yaml:5: agents.2.bogus: unknown key",
        "gateway.yaml:6: agents.3.profile: required",
        "gateway.yaml:7: agents.4.queues: input should be a valid list",
    ]


def test_a_configured_agent_holds_a_quarter_of_a_kilobyte() -> None:
    """What 2,000 agents parsed from JSON (as the running gateway gets its configuration)
    keep: ~255 B per agent (the record, its id and token hash); a pydantic model per agent
    kept ~675 B here (its ``__dict__`` and set of fields set, its own queue list)."""
    text = json.dumps(_agents_config(2000))
    GatewayConfig.model_validate_json(text)  # pydantic's own caches, warmed
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        config = GatewayConfig.model_validate_json(text)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(config.agents) == 2000
    assert kept / 2000 < 400, f"{kept / 2000:.0f} B per agent"
