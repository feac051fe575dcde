"""check-config on kamailio vendors: every problem at its line; the shipped example is valid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main

from .peers import EXAMPLE


def test_the_shipped_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE / "gateway.yaml")]) == 0
    assert "OK (1 capacity profile, 1 queue, 1 agent, 1 vendor)" in capsys.readouterr().out


def test_bad_kamailio_settings_are_reported_at_their_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent("""\
            capacity_profiles: {p: {max_sessions: 2}}
            queues: [{name: support}]
            agents: [{id: a1, profile: p, queues: [support]}]
            vendors:
              - name: sip
                adapter: kamailio
                host: "bad host"
                port: 70000
                agent_contacts:
                  a1: "http://phone"
                  ghost: "sip:ghost@127.0.0.1"
                queue_map: {sales: nowhere}
                keepalive: 3
        """)
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    expected = [
        "gw.yaml:7: vendors.0.host: must be a host name or an IP address",
        "gw.yaml:8: vendors.0.port: input should be less than or equal to 65535",
        "gw.yaml:10: vendors.0.agent_contacts.a1: 'http://phone' is not a sip: or sips: URI",
        "gw.yaml:13: vendors.0.keepalive: unknown key",
    ]
    assert [e.replace(f"{tmp_path}/", "") for e in err] == expected


def test_contacts_and_queues_must_name_configured_agents_and_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent("""\
            capacity_profiles: {p: {max_sessions: 2}}
            queues: [{name: support}]
            agents: [{id: a1, profile: p, queues: [support]}]
            vendors:
              - name: sip
                adapter: kamailio
                agent_contacts:
                  a1: "sip:a1@127.0.0.1:5090"
                  ghost: "sip:ghost@127.0.0.1"
                queue_map: {support: support, sales: nowhere}
        """)
    )
    assert main(["check-config", str(path)]) == 2
    assert [e.replace(f"{tmp_path}/", "") for e in capsys.readouterr().err.splitlines()] == [
        "gw.yaml:9: vendors.0.agent_contacts.ghost: no agent 'ghost' is configured",
        "gw.yaml:10: vendors.0.queue_map.sales: no queue 'nowhere' is configured",
    ]
