"""The ``records:`` section (PostgreSQL records of several instances): one URL validator for
``check-config`` and ``run``, its messages at the line, never the password, and how it
combines with ``store``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.config_loader import load_config
from gateway.errors import ConfigError
from gateway.records import PostgresJournal, open_records
from gateway.startup import banner
from gateway.store_url import (
    PostgresUrl,
    parse_records_url,
    records_problem,
    records_problem_for,
)

NAME = "gateway.yaml"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def problems(text: str) -> list[str]:
    Path(NAME).write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(NAME, environ={"PG_PASSWORD": "s3cret-from-env"})
    return info.value.problems


EMBEDDED = (
    "keeps the session records in its own journal and serves the reports from there; records.url "
    "(PostgreSQL) is for several instances on store: redis://. Remove the records section, or see the "
    "README, 'Running several instances'"
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:s3cret@db/cti", "unsupported records scheme mysql:// (supported: postgresql://, postgres://)"),
        ("db.example.org/cti", "expected a URL such as postgresql://USER:PASSWORD@HOST:5432/DATABASE"),
        ("postgresql://u:s3cret@/cti", "the postgresql URL names no host: write postgresql://USER:PASSWORD@HOST"),
        ("postgresql://db:5432/cti", "the postgresql URL names no user: write postgresql://USER:PASSWORD@HOST"),
        ("postgresql://u:s3cret@db:5432", "the postgresql URL names no database (one path segment)"),
        ("postgresql://u:s3cret@db:5432/", "the postgresql URL names no database (one path segment)"),
        ("postgresql://u:s3cret@db/cti/x", "the postgresql URL names no database (one path segment)"),
        ("postgresql://u:s3cret@db:99999/cti", "the postgresql URL's port must be a number from 1 to 65535"),
        ("postgresql://u:s3cret@db:port/cti", "the postgresql URL's port must be a number from 1 to 65535"),
        ("postgresql://u:s3cret@db:0/cti", "the postgresql URL's port must be a number from 1 to 65535"),
        ("postgresql://u:s3cret@db/cti?timeout=3", "unknown postgresql option 'timeout' (known: sslmode)"),
        ("postgresql://u:s3cret@db/cti?sslmode=maybe", "sslmode must be one of disable, allow, prefer, require"),
        ("postgresql://u:s3cret@db/cti?sslmode=require&sslmode=disable", "postgresql option sslmode given twice"),
        ("postgresql://u:s3cret@db/cti#x", "the postgresql URL takes no #fragment"),
        ("postgresql://u:s3cret%00@db/cti", "the postgresql password contains a NUL character"),
    ],
)
def test_records_urls_that_run_cannot_open_are_errors_at_their_line(url: str, message: str) -> None:
    found = problems(f"""\
        capacity_profiles: {{p: {{max_sessions: 1}}}}
        records:
          url: "{url}"
    """)
    mine = [p for p in found if p.startswith(f"{NAME}:3: records.url: ")]
    assert len(mine) == 1 and mine[0].startswith(f"{NAME}:3: records.url: {message}"), found
    # run refuses it with the same words: one validator for check-config and run
    with pytest.raises(ConfigError) as info:
        open_records(url)
    assert info.value.problems == [f"records.url: {mine[0].split('records.url: ', 1)[1]}"]
    assert not any("s3cret" in p for p in found)  # the URL may carry a password: never echoed


def test_an_interpolated_password_is_never_printed() -> None:
    found = problems("""\
        capacity_profiles: {p: {max_sessions: 1}}
        records: {url: "postgresql://gw:${PG_PASSWORD}@db:70000/cti"}
    """)
    assert any("records.url: the postgresql URL's port" in p for p in found), found
    assert not any("s3cret-from-env" in p for p in found)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://gw:pw@db.internal:6432/cti", PostgresUrl("db.internal", "gw", "cti", 6432, "pw")),
        ("postgres://gw@db/cti", PostgresUrl("db", "gw", "cti", 5432, None)),
        (
            "POSTGRESQL://g%40w:p%3Aw%2F@[::1]/c%20ti?sslmode=Verify-Full",
            PostgresUrl("::1", "g@w", "c ti", 5432, "p:w/", "verify-full"),
        ),
    ],
)
def test_records_urls_taken_apart(url: str, expected: PostgresUrl) -> None:
    parsed = parse_records_url(url)
    assert parsed == expected
    assert parsed.password is None or parsed.password not in repr(parsed)
    assert parsed.password is None or parsed.password not in parsed.describe()
    journal = open_records(url)  # run takes it (nothing connects before open())
    assert isinstance(journal, PostgresJournal) and journal.where == expected


def test_describe_names_everything_but_the_password() -> None:
    assert parse_records_url("postgresql://gw:pw@db:6432/cti").describe() == "postgresql://gw@db:6432/cti"
    assert parse_records_url("postgresql://gw:pw@[::1]/cti").describe() == "postgresql://gw@[::1]:5432/cti"


@pytest.mark.parametrize("store", [None, "sqlite:///data/gateway.db", "memory://"])
def test_the_embedded_store_refuses_a_records_section_at_its_line(store: str | None) -> None:
    store_line = f'store: {{url: "{store}"}}\n' if store else ""
    found = problems(
        "capacity_profiles: {p: {max_sessions: 1}}\n" + store_line + 'records: {url: "postgresql://gw:s3cret@db/cti"}\n'
    )
    scheme = (store or "sqlite://").split("://")[0]
    line = 3 if store else 2
    assert found == [f"{NAME}:{line}: records: the embedded store ({scheme}://) {EMBEDDED}"]
    # the same in check-config (exit 2, every problem as file:line: field: message)
    assert main(["check-config", NAME]) == 2


def test_an_empty_records_section_is_no_section() -> None:
    Path(NAME).write_text("capacity_profiles: {p: {max_sessions: 1}}\nrecords:\n", encoding="utf-8")
    assert load_config(NAME, environ={}).records is None


def test_a_records_section_needs_its_url() -> None:
    found = problems("""\
        capacity_profiles: {p: {max_sessions: 1}}
        store: {url: "sqlite:///g.db"}
        records: {pool: 3}
    """)
    assert f"{NAME}:3: records.url: required" in found, found
    assert f"{NAME}:3: records.pool: unknown key" in found, found


def test_how_store_and_records_combine() -> None:
    """The rule itself, for every store scheme: the embedded ones refuse records, a shared
    one (redis://, rediss://; refused as a store until the multi-instance runtime lands)
    needs them."""
    assert records_problem_for("sqlite", False) is None
    assert records_problem_for("memory", False) is None
    refused = records_problem_for("sqlite", True)
    assert refused is not None and refused[0] == "records" and EMBEDDED in refused[1]
    for scheme in ("redis", "rediss"):
        assert records_problem_for(scheme, True) is None
        missing = records_problem_for(scheme, False)
        assert missing == (
            "store.url",
            f"a {scheme}:// store needs a records section, e.g. records: "
            "{url: postgresql://USER:PASSWORD@HOST:5432/DB}: the session records and reports of several "
            "instances live in PostgreSQL",
        )
    # an invalid store URL is reported on its own, not as a combination problem
    assert records_problem("ftp://x", True) is None
    assert records_problem("memory://", True) == refused[:1] + (refused[1].replace("sqlite", "memory"),)


def test_the_start_banner_names_the_records_store_without_its_password() -> None:
    config = GatewayConfig.model_validate(
        {
            "store": {"url": "memory://"},
            "records": {"url": "postgresql://gw:s3cret@db.internal:6432/cti?sslmode=require"},
            "capacity_profiles": {"p": {"max_sessions": 1}},
        }
    )
    first = banner(config, version="1", host="127.0.0.1", port=8080, config_path="g.yaml", vendor_routes=[])[0]
    assert first.endswith("(config g.yaml, store memory://, records postgresql://gw@db.internal:6432/cti)")
    assert "s3cret" not in first
    without = config.model_copy(update={"records": None})
    assert banner(without, version="1", host="127.0.0.1", port=8080, config_path="g.yaml", vendor_routes=[])[
        0
    ].endswith("(config g.yaml, store memory://)")
