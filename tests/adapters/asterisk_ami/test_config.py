"""``asterisk_ami`` settings: every key of DESIGN section 8 and the documented extras are
checked by ``check-config`` with file:line errors (bad hosts and ports, unknown keys,
unmapped agents, interfaces that are not ``TECH/resource``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.asterisk_ami import AmiConfig
from gateway.cli import main

GOOD = """\
capacity_profiles: {{p: {{max_sessions: 2}}}}
queues: [{{name: support}}]
agents: [{{id: a1, profile: p, queues: [support]}}, {{id: a2, profile: p}}]
vendors:
  - name: pbx
    adapter: asterisk_ami
    host: {host}
    port: {port}
    username: gateway
    secret: ${{AMI_SECRET}}
    agent_map:
      {interface}: {agent}
    queue_map: {{sales: {queue}}}
    transfer_context: agents
    agent_extensions: {{a2: "2002"}}
"""


def check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **values: str
) -> list[str]:
    fields = {"host": "pbx.example.com", "port": "5038", "interface": "PJSIP/1001", "agent": "a1", "queue": "support"}
    fields.update(values)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMI_SECRET", "s3cret")
    Path("gateway.yaml").write_text(GOOD.format(**fields))
    code = main(["check-config", "gateway.yaml"])
    captured = capsys.readouterr()
    assert (code == 0) == (captured.err == ""), captured
    return captured.err.splitlines()


def test_a_good_configuration_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, monkeypatch, capsys) == []
    assert check(tmp_path, monkeypatch, capsys, host="10.0.0.5") == []
    assert check(tmp_path, monkeypatch, capsys, host='"::1"') == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"host": '"pbx example"'},
            "gateway.yaml:7: vendors.0.host: must be a host name",
        ),
        ({"host": "http://pbx"}, "gateway.yaml:7: vendors.0.host: must be a host name"),
        ({"host": "-pbx-"}, "gateway.yaml:7: vendors.0.host: must be a host name"),
        ({"port": "0"}, "gateway.yaml:8: vendors.0.port: input should be greater than or equal to 1"),
        ({"port": "65536"}, "gateway.yaml:8: vendors.0.port: input should be less than or equal to 65535"),
        ({"port": "ami"}, "gateway.yaml:8: vendors.0.port: input should be a valid integer"),
        ({"interface": "SIP1001"}, "gateway.yaml:11: vendors.0.agent_map: 'SIP1001' is not a queue member interface"),
        ({"agent": "nobody"}, "gateway.yaml:12: vendors.0.agent_map.PJSIP/1001: no agent 'nobody' is configured"),
        ({"queue": "nowhere"}, "gateway.yaml:13: vendors.0.queue_map.sales: no queue 'nowhere' is configured"),
    ],
)
def test_bad_settings_are_reported_at_their_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    values: dict[str, str],
    expected: str,
) -> None:
    errors = check(tmp_path, monkeypatch, capsys, **values)
    assert len(errors) == 1 and errors[0].lower().startswith(expected.lower()), errors


def test_unknown_keys_and_inconsistent_timers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("gateway.yaml").write_text(
        textwrap.dedent("""\
            capacity_profiles: {p: {max_sessions: 2}}
            agents: [{id: a1, profile: p}]
            vendors:
              - name: pbx
                adapter: asterisk_ami
                host: 127.0.0.1
                username: gateway
                secret: s3cret
                agent_map: {PJSIP/1001: a1}
                ping_interval_s: 20
                stall_timeout_s: 5
                password: oops
        """)
    )
    assert main(["check-config", "gateway.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == ["gateway.yaml:12: vendors.0.password: unknown key"]
    Path("gateway.yaml").write_text(Path("gateway.yaml").read_text().replace("    password: oops\n", ""))
    assert main(["check-config", "gateway.yaml"]) == 2
    err = capsys.readouterr().err
    assert "stall_timeout_s must be at least ping_interval_s" in err and "s3cret" not in err


def test_defaults_and_extensions() -> None:
    config = AmiConfig.model_validate(
        {"host": "pbx", "username": "gw", "secret": "x", "agent_map": {"PJSIP/1001": "a1", "Local/2002@agents/n": "a2"}}
    )
    assert (config.port, config.auth, config.transfer_context) == (5038, "md5", "default")
    assert config.extension_of("a1") == "1001" and config.extension_of("a2") == "2002"
    with pytest.raises(ValueError, match="twice"):
        AmiConfig.model_validate(
            {"host": "pbx", "username": "gw", "secret": "x", "agent_map": {"PJSIP/1001": "a1", "pjsip/1001": "a2"}}
        )
