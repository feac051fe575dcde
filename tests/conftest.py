"""Test-suite wide settings.

Hypothesis profiles: ``dev`` (the default: quick, for the edit-test loop) and ``ci`` (many
more examples, no deadline, a fresh random seed per run, failures printed with a
``@reproduce_failure`` blob). CI sets ``CI=true``, which selects ``ci``;
``HYPOTHESIS_PROFILE=<name>`` selects a profile explicitly and wins over ``CI``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.peers.postgres import PostgresServer

settings.register_profile("dev", max_examples=200)
settings.register_profile("ci", max_examples=2000, deadline=None, derandomize=False, print_blob=True)


def _profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes") else "dev"


settings.load_profile(_profile())


# ---------------------------------------------------------------------------- PostgreSQL
# One real PostgreSQL server for the session (started on first use), a fresh database per
# test. Tests that stop the server start one of their own (tests.peers.postgres).

_pg_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database (owned by the superuser) on the session's server."""
    name = f"cti_test_{os.getpid()}_{next(_pg_databases)}"
    postgres_server.execute(f"CREATE DATABASE {name}")
    return postgres_server.url(database=name)
