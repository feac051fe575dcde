"""Session ids: what ``uuid.uuid4().hex`` gave (a random version-4 UUID in 32 hex digits),
read from the operating system's random source in batches."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from gateway import ids
from gateway.clock import ManualClock
from gateway.engine import Engine

from .conftest import make_config


def test_ids_are_random_version_4_uuids_in_hex() -> None:
    made = [ids.new_id() for _ in range(3 * ids.BATCH + 7)]  # several batches and a part
    assert len(set(made)) == len(made)
    for text in made:
        assert re.fullmatch("[0-9a-f]{32}", text)
        parsed = uuid.UUID(hex=text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == text
    # 122 random bits each: every hex digit but the fixed version digit takes many values
    for position in (0, 5, 13, 20, 31):
        assert len({text[position] for text in made}) > 8


def test_the_engine_names_its_sessions_with_them() -> None:
    engine = Engine(make_config(), clock=ManualClock(1_700_000_000.0))
    engine.set_presence("a1", "ready")
    session = engine.new_session("a1", actor="a1")
    assert uuid.UUID(hex=session.id).version == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids.new_id()  # the parent holds a batch read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, "".join(ids.new_id() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(ids.new_id() for _ in range(4))
    assert len(child) == len(parent) == 4 * 32
    assert {child[i : i + 32] for i in range(0, 128, 32)}.isdisjoint({parent[i : i + 32] for i in range(0, 128, 32)})
