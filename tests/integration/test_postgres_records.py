"""The records store on a real PostgreSQL server (tests/peers/postgres.py): the same records
and reports as SQLite byte for byte, outages (stopped, started again) without loss or
doubling, health in /readyz and /metrics, schema checks and group commit.

The Journal contract tests shared with SQLite and memory are in test_sqlite_journal.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import structlog
from structlog.testing import capture_logs

import gateway.records.postgres as postgres_module
from gateway import serve
from gateway.app import RUNTIME, build_app
from gateway.clock import ManualClock
from gateway.config import RecordsConfig
from gateway.events import Channel
from gateway.persistence import Changes, Journal, Snapshot, StateDict
from gateway.records import (
    JournalSchemaError,
    JournalUnavailable,
    PostgresJournal,
    SqliteJournal,
    open_records,
)
from gateway.records.postgres import SCHEMA_VERSION
from gateway.store_url import parse_records_url
from tests.api.conftest import T0, Gateway, auth, make_config
from tests.peers.postgres import PostgresServer

Factory = Callable[[], PostgresJournal]


def session(sid: str, offered_at: float, state: str = "closed", **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "agent_id": "a1",
        "state": state,
        "offered_at": offered_at,
        "closed_at": offered_at + 1 if state == "closed" else None,
        "record": {"id": sid, "state": state, "account": {"state": "unidentified", "id": None}},
        **extra,
    }


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, which tests stop and start (left running after each)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def own_url(own_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    if own_server.proc is None or own_server.proc.poll() is not None:
        own_server.start()
    name = f"outage_{abs(hash(request.node.nodeid)) % 10**9}"
    own_server.execute(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    yield own_server.url(database=name)
    if own_server.proc is None or own_server.proc.poll() is not None:
        own_server.start()  # the next test gets a running server


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> Factory:
    """Short timeouts (an outage answers within a second or two); log lines captured."""
    monkeypatch.setattr(postgres_module, "log", structlog.get_logger("test.records"))

    def make(url: str) -> PostgresJournal:
        journal = open_records(url)
        journal.connect_timeout_s = journal.query_timeout_s = 2.0
        journal.ping_timeout_s = 2.0
        journal.commit_timeout_s = 5.0
        return journal

    return make  # type: ignore[return-value]


# ---------------------------------------------------------------------------- outage


@pytest.mark.asyncio
async def test_stopped_postgres_is_not_ready_then_recovers_losing_and_doubling_nothing(
    own_server: PostgresServer, own_url: str, quick: Callable[[str], PostgresJournal]
) -> None:
    before = [session(f"s{i:02}", T0 + i) for i in range(10)]
    during = session("s-during", T0 + 50)
    after = [session(f"t{i:02}", T0 + 100 + i) for i in range(5)]
    with capture_logs() as logs:
        async with quick(own_url) as journal:
            await journal.commit(Changes(sessions=before[:5], meta={"n": 1}))
            await journal.commit(Changes(sessions=before[5:]))
            assert await journal.ping() and journal.healthy

            own_server.stop()
            assert not await journal.ping()
            for _ in range(3):  # every call fails fast with not_ready; the outage is logged once
                started = time.monotonic()
                with pytest.raises(JournalUnavailable) as info:
                    await journal.commit(Changes(sessions=[during]))
                assert info.value.code == "not_ready" and info.value.retryable
                assert time.monotonic() - started < 5
            with pytest.raises(JournalUnavailable):
                await journal.records(start=None, end=None)
            with pytest.raises(JournalUnavailable):
                await journal.record("s00")
            assert not journal.healthy
            events = [e["event"] for e in logs]
            assert events.count("records_unreachable") == 1 and "records_recovered" not in events, logs
            assert "pg-test-superuser" not in repr(logs)  # the password is never logged

            own_server.start()
            await eventually(journal.ping)
            # the change refused during the outage, sent again (as a vendor retries), and new ones
            await journal.commit(Changes(sessions=[during]))
            await journal.commit(Changes(sessions=after, meta={"n": 2}))
            rows = await journal.records(start=None, end=None)
            events = [e["event"] for e in logs]
            assert events.count("records_recovered") == 1 and events.count("records_unreachable") == 1, logs
    expected = [*before, during, *after]
    assert [r["id"] for r in rows] == [s["id"] for s in expected]  # nothing lost, nothing doubled
    assert rows == expected
    async with quick(own_url) as again:  # and it is all on disk, read by a new pool
        assert await again.records(start=None, end=None) == expected
        assert (await again.load(since=0)).meta == {"n": 2}


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.asyncio
async def test_commits_racing_an_outage_every_acknowledged_one_kept_retried_ones_once(
    own_server: PostgresServer, own_url: str, quick: Callable[[str], PostgresJournal], mode: str
) -> None:
    """Writers commit without pause while PostgreSQL goes down (``immediate``: as a crash)
    and comes back: every commit acknowledged is there afterwards; every refused one, sent
    again (as vendors retry), is there once."""
    acked: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def writer(journal: PostgresJournal, name: str) -> None:
        n = 0
        while not stop.is_set():
            sid = f"{name}-{n:05}"
            n += 1
            try:
                await journal.commit(Changes(sessions=[session(sid, T0 + n)]))
            except JournalUnavailable:
                refused.append(sid)
                await asyncio.sleep(0.02)
            else:
                acked.append(sid)

    async with quick(own_url) as journal:
        tasks = [asyncio.create_task(writer(journal, f"w{i}")) for i in range(3)]
        await eventually(lambda: _at_least(acked, 30))
        await asyncio.to_thread(own_server.stop, mode)
        await eventually(lambda: _at_least(refused, 3))
        acked_before_start = len(acked)
        await asyncio.to_thread(own_server.start)
        await eventually(lambda: _at_least(acked, acked_before_start + 30))
        stop.set()
        await asyncio.gather(*tasks)
        for sid in refused:  # the retries
            await journal.commit(Changes(sessions=[session(sid, T0)]))
        rows = await journal.records(start=None, end=None)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))  # nothing doubled
    assert set(acked) <= set(ids)  # nothing acknowledged lost
    assert set(ids) == set(acked) | set(refused)


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


@pytest.mark.asyncio
async def test_a_restart_between_two_calls_costs_no_error(
    own_server: PostgresServer, own_url: str, quick: Callable[[str], PostgresJournal]
) -> None:
    """The pool's connections die with the server; the next commit and read get fresh ones
    (the broken connection is replaced and the transaction tried again) instead of a 503."""
    async with quick(own_url) as journal:
        await asyncio.gather(*(journal.commit(Changes(sessions=[session(f"s{i}", T0 + i)])) for i in range(4)))
        own_server.stop()
        own_server.start()
        await journal.commit(Changes(sessions=[session("s-after", T0 + 10)]))  # no JournalUnavailable
        assert [r["id"] for r in await journal.records(start=None, end=None)] == ["s0", "s1", "s2", "s3", "s-after"]
        assert journal.healthy and journal.stats.failed_commits == 0


@pytest.mark.asyncio
async def test_opens_while_postgres_is_down_and_creates_the_schema_once_it_answers(
    own_server: PostgresServer, own_url: str, quick: Callable[[str], PostgresJournal]
) -> None:
    own_server.stop()
    journal = quick(own_url)
    await journal.open()  # does not raise: an instance may start during an outage
    try:
        assert not await journal.ping()
        with pytest.raises(JournalUnavailable):
            await journal.commit(Changes(sessions=[session("s1", T0)]))
        own_server.start()
        await eventually(journal.ping)
        await journal.commit(Changes(sessions=[session("s1", T0)]))
        assert [r["id"] for r in await journal.records(start=None, end=None)] == ["s1"]
    finally:
        await journal.close()


# ---------------------------------------------------------------------------- schema


@pytest.mark.asyncio
async def test_schema_version_is_recorded_and_instances_opening_together_agree(postgres_url: str) -> None:
    journals = [open_records(postgres_url) for _ in range(4)]
    await asyncio.gather(*(j.open() for j in journals))  # one creates the tables, the others wait
    try:
        assert all(await asyncio.gather(*(j.ping() for j in journals)))
        await asyncio.gather(*(j.commit(Changes(sessions=[session(f"s{i}", T0 + i)])) for i, j in enumerate(journals)))
        assert len(await journals[0].records(start=None, end=None)) == 4
    finally:
        await asyncio.gather(*(j.close() for j in journals))
    async with open_records(postgres_url) as journal:  # reopened: migrated once, not again
        assert await journal.ping()
    conn = await _connect(postgres_url)
    try:
        assert await conn.fetch("SELECT version FROM cti_gateway_schema") == [(SCHEMA_VERSION,)]
    finally:
        await conn.close()


async def _connect(url: str) -> Any:
    return await asyncpg.connect(url)


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused_clearly(postgres_url: str) -> None:
    async with open_records(postgres_url):
        pass
    conn = await _connect(postgres_url)
    await conn.execute("INSERT INTO cti_gateway_schema (version) VALUES ($1)", SCHEMA_VERSION + 1)
    await conn.close()
    with pytest.raises(JournalSchemaError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this"):
        await open_records(postgres_url).open()


@pytest.mark.asyncio
async def test_a_database_with_foreign_tables_of_those_names_is_refused(postgres_url: str) -> None:
    conn = await _connect(postgres_url)
    await conn.execute("CREATE TABLE sessions (x int)")
    await conn.close()
    with pytest.raises(JournalSchemaError, match="already has tables named sessions that are not cti-gateway's"):
        await open_records(postgres_url).open()


@pytest.mark.asyncio
async def test_a_database_that_is_not_utf8_is_refused(postgres_server: PostgresServer) -> None:
    postgres_server.execute(
        "DROP DATABASE IF EXISTS cti_latin1", "CREATE DATABASE cti_latin1 ENCODING 'LATIN1' TEMPLATE template0"
    )
    with pytest.raises(JournalSchemaError, match="has the encoding LATIN1; the records need a UTF8 database"):
        await open_records(postgres_server.url(database="cti_latin1")).open()


@pytest.mark.asyncio
async def test_the_readmes_role_and_database(postgres_server: PostgresServer) -> None:
    """Created as the README says, the gateway's own role owns its tables (no superuser)."""
    postgres_server.execute(
        "DROP DATABASE IF EXISTS cti_readme",
        "DROP ROLE IF EXISTS cti_readme",
        "CREATE ROLE cti_readme LOGIN PASSWORD 'change-me'",
        "CREATE DATABASE cti_readme OWNER cti_readme ENCODING 'UTF8' TEMPLATE template0",
    )
    url = postgres_server.url(user="cti_readme", password="change-me", database="cti_readme")
    async with open_records(url) as journal:
        await journal.commit(Changes(sessions=[session("s1", T0)]))
        assert await journal.ping()
    with pytest.raises(JournalUnavailable, match="password authentication failed"):
        async with open_records(url.replace("change-me", "wrong")) as wrong:
            await wrong.records(start=None, end=None)


# ---------------------------------------------------------------------------- writes


@pytest.mark.asyncio
async def test_group_commit_concurrent_commits_share_transactions_in_order(postgres_url: str) -> None:
    async with open_records(postgres_url) as journal:
        await asyncio.gather(
            *(journal.commit(Changes(sessions=[session("s", T0, note=str(i))], meta={"i": i})) for i in range(200))
        )
        assert journal.stats.commits == 200
        assert journal.stats.transactions < 200  # shared
        record = await journal.record("s")
        assert record is not None and record["note"] == "199"  # the later row wins
        assert (await journal.load(since=0)).meta == {"i": 199}


@pytest.mark.asyncio
async def test_what_postgresql_cannot_store_fails_its_caller_only(postgres_url: str) -> None:
    """A NUL in a key column is valid for SQLite but not for a PostgreSQL text column: the
    commit that carries it fails (ValueError: the runtime answers 400), the others in the same
    group commit are written."""
    async with open_records(postgres_url) as journal:
        bad = Changes(events=[{"vendor": "crm", "event_id": "e\x00", "at": T0}])
        results = await asyncio.gather(
            journal.commit(Changes(sessions=[session("s1", T0)])),
            journal.commit(bad),
            journal.commit(Changes(sessions=[session("s2", T0 + 1, agent_id=5)])),
            journal.commit(Changes(sessions=[session("s3", T0 + 2, note="nul in JSON \x00 is fine")])),
            return_exceptions=True,
        )
        assert results[0] is None and results[3] is None
        assert isinstance(results[1], ValueError) and "NUL" in str(results[1])
        assert isinstance(results[2], ValueError) and "agent_id must be a string" in str(results[2])
        rows = await journal.records(start=None, end=None)
        assert [r["id"] for r in rows] == ["s1", "s3"] and rows[1]["note"] == "nul in JSON \x00 is fine"
        assert await journal.record("e\x00") is None


@pytest.mark.asyncio
async def test_log_positions_keep_each_row_as_of_its_latest_entry(postgres_url: str) -> None:
    """Several instances write the entries of one log, possibly out of order or twice: with
    positions, a row is never replaced by one of an older entry."""
    async with open_records(postgres_url) as journal:

        async def note(sid: str) -> Any:
            record = await journal.record(sid)
            assert record is not None
            return record["note"]

        await journal.commit(
            Changes(sessions=[session("s", T0, note="p5")], agents=[{"id": "a1", "v": 5}], meta={"k": 5}), position=5
        )
        await journal.commit(
            Changes(sessions=[session("s", T0, note="p3")], agents=[{"id": "a1", "v": 3}], meta={"k": 3}), position=3
        )
        assert await note("s") == "p5"  # the older entry, written last, changed nothing
        snap = await journal.load(since=0)
        assert snap.agents == [{"id": "a1", "v": 5}] and snap.meta == {"k": 5}
        await journal.commit(Changes(sessions=[session("s", T0, note="p5 again")]), position=5)
        assert await note("s") == "p5 again"  # the same entry again: applied (idempotent)
        # out of order inside one group commit too
        await asyncio.gather(
            *(journal.commit(Changes(sessions=[session("g", T0, note=str(p))]), position=p) for p in (9, 7, 12, 8))
        )
        assert await note("g") == "12"
        # an older entry's other rows are written: only what it would make older is skipped
        await journal.commit(Changes(sessions=[session("s", T0, note="p4"), session("new", T0 + 1)]), position=4)
        assert await note("s") == "p5 again" and await journal.record("new") is not None
        # without a position (the Journal protocol's commit): the later commit wins
        await journal.commit(Changes(sessions=[session("s", T0, note="unordered")]))
        assert await note("s") == "unordered"
        for bad in (-1, 2**63, True, 1.5, "7"):
            with pytest.raises(ValueError, match="position must be an integer"):
                await journal.commit(Changes(sessions=[session("x", T0)]), position=bad)  # type: ignore[arg-type]
        assert await journal.record("x") is None


# ---------------------------------------------------------------------------- same as SQLite


class Both:
    """Every commit to SQLite and PostgreSQL (both real): the gateway under test writes the
    same changes to both stores; it reads from SQLite."""

    def __init__(self, sqlite: SqliteJournal, postgres: PostgresJournal) -> None:
        self.sqlite, self.postgres = sqlite, postgres

    async def open(self) -> None:
        await self.sqlite.open()
        await self.postgres.open()

    async def close(self) -> None:
        await self.sqlite.close()
        await self.postgres.close()

    async def commit(self, changes: Changes, *, position: int | None = None) -> None:
        await asyncio.gather(self.sqlite.commit(changes), self.postgres.commit(changes, position=position))

    async def load(self, *, since: float, recent: int | None = None) -> Snapshot:
        return await self.sqlite.load(since=since, recent=recent)

    async def event(self, vendor: str, event_id: str) -> StateDict | None:
        return await self.sqlite.event(vendor, event_id)

    async def interaction(self, vendor: str, interaction_id: str) -> StateDict | None:
        return await self.sqlite.interaction(vendor, interaction_id)

    async def record(self, session_id: str) -> StateDict | None:
        return await self.sqlite.record(session_id)

    async def records(self, *, start: float | None, end: float | None, limit: int | None = None) -> list[StateDict]:
        return await self.sqlite.records(start=start, end=end, limit=limit)

    async def ping(self) -> bool:
        return await self.sqlite.ping() and await self.postgres.ping()


@pytest_asyncio.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Start gateways (served as ``run`` serves them) on a journal (and a records store)."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(journal: Journal, records: Journal | None = None, clock: ManualClock | None = None) -> Gateway:
        clock = clock or ManualClock(T0)
        config = make_config()
        app = build_app(config, clock=clock, journal=journal, records=records)
        runner, limiter = await serve.start(app, config.server, host="127.0.0.1", port=0, shutdown_timeout=5.0)
        host, port = runner.addresses[0][:2]
        http = aiohttp.ClientSession()
        cleanups.append(runner.cleanup)
        cleanups.append(http.close)
        return Gateway(app=app, base=f"http://{host}:{port}", http=http, clock=clock, limiter=limiter)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def scenario(gw: Gateway) -> list[str]:
    """A day in miniature: every outcome, transfers, focus, notes, accounts, wrap-up, text a
    spreadsheet would run, and non-ASCII text; returns the session ids."""
    await gw.ready("a1", "a2", "a3")
    ids: list[str] = []
    chat = await gw.offer("a1", channel="chat", subject='=HYPERLINK("x") ünïcode ✓ "quoted", comma')
    ids.append(chat)
    await gw.json("POST", f"/v1/sessions/{chat}/accept", "a1")
    await gw.json("POST", f"/v1/sessions/{chat}/focus", "a1")
    await gw.advance(12.345)
    await gw.json("POST", f"/v1/sessions/{chat}/note", "a1", json={"text": "-1 Rückruf 📞"})
    await gw.json("POST", f"/v1/sessions/{chat}/confirm_account", "a1", json={"account_id": "@acct-7"})
    await gw.json("POST", f"/v1/sessions/{chat}/end", "a1")
    voice = await gw.offer("a2", channel="voice", vendor="pbx")
    ids.append(voice)
    await gw.json("POST", f"/v1/sessions/{voice}/accept", "a2")
    await gw.advance(61.0005)
    await gw.json("POST", f"/v1/sessions/{voice}/end", "a2")
    await gw.advance(30)  # wrap-up ends: closed
    declined = await gw.offer("a3", channel="email")
    ids.append(declined)
    await gw.json("POST", f"/v1/sessions/{declined}/decline", "a3")
    expired = await gw.offer("a1", channel="voice")
    ids.append(expired)
    await gw.advance(21)  # offer_timeout_s voice 20
    moved = await gw.offer("a3", channel="chat", vendor="pbx")
    ids.append(moved)
    await gw.json("POST", f"/v1/sessions/{moved}/accept", "a3")
    transfer = await gw.json("POST", f"/v1/sessions/{moved}/transfer", "a3", json={"to_agent": "a2", "mode": "blind"})
    ids.append(transfer["target"]["id"])
    manual = await gw.json("POST", "/v1/agents/a1/sessions", "a1", status=201, json={"label": 'Rückruf, "Müller"'})
    ids.append(manual["id"])
    await gw.advance(0.001)
    open_chat = await gw.offer(queue="support", channel="chat", customer={"address": "+4930", "name": "=1+2"})
    ids.append(open_chat)
    formula = gw.event("offer", interaction="=cmd|' /C calc'!A0, \"x\"", channel=Channel.EMAIL, agent_id="a3")
    decision = await gw.runtime.act(lambda e: e.handle_event(formula))
    assert decision.session_id is not None
    ids.append(decision.session_id)
    abandoned = await gw.offer("a2", channel="chat")
    ids.append(abandoned)
    await gw.runtime.act(lambda e: e.handle_event(gw.event("end", interaction=_interaction_of(gw, abandoned))))
    return ids


def _interaction_of(gw: Gateway, session_id: str) -> str:
    interaction = gw.runtime.engine.sessions[session_id].interaction_id
    assert interaction is not None
    return interaction


async def raw(gw: Gateway, path: str) -> tuple[int, str, bytes]:
    async with gw.http.get(gw.url(path), headers=auth("supervisor")) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


@pytest.mark.asyncio
async def test_records_and_reports_are_byte_identical_to_sqlites(
    tmp_path: Path, postgres_url: str, started: Callable[..., Awaitable[Gateway]]
) -> None:
    """One gateway runs a scenario, writing every change to SQLite and PostgreSQL; then a
    gateway on the same SQLite journal serves the records and reports from PostgreSQL (its
    records store, as several instances do): every byte is the same."""
    clock = ManualClock(T0)
    first = await started(Both(SqliteJournal(tmp_path / "a.db"), open_records(postgres_url)), clock=clock)
    ids = await scenario(first)
    paths = [
        "/v1/reports/sessions",
        "/v1/reports/sessions?format=csv",
        f"/v1/reports/sessions?from={T0 + 1}&to={T0 + 200}",
        f"/v1/reports/sessions?format=csv&from={T0 + 50}",
        *(f"/v1/sessions/{sid}" for sid in ids),
    ]
    from_sqlite = [await raw(first, path) for path in paths]
    await first.http.close()
    await first.app.shutdown()
    await first.app.cleanup()

    second = await started(SqliteJournal(tmp_path / "a.db"), records=open_records(postgres_url), clock=clock)
    assert second.runtime.separate_records
    # closed sessions are no longer in the engine: those come from the records store
    assert any(sid not in second.runtime.engine.sessions for sid in ids)
    from_postgres = [await raw(second, path) for path in paths]
    assert from_postgres == from_sqlite
    report = json.loads(from_sqlite[0][2])["sessions"]
    assert len(report) == len(ids) >= 9
    outcomes = {row["outcome"] for row in report}
    assert {"completed", "declined", "expired", "abandoned", "transferred", None} <= outcomes, outcomes
    csv_text = from_sqlite[1][2].decode()
    assert "'@acct-7" in csv_text and '"\'=cmd|\' /C calc\'!A0, ""x"""' in csv_text, csv_text


# ---------------------------------------------------------------------------- health


async def metric(gw: Gateway, name: str) -> float:
    async with gw.http.get(gw.url("/metrics")) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.asyncio
async def test_readyz_and_metrics_show_the_records_store(
    tmp_path: Path,
    own_server: PostgresServer,
    own_url: str,
    quick: Callable[[str], PostgresJournal],
    started: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await started(SqliteJournal(tmp_path / "g.db"), records=quick(own_url))
    ready = await gw.json("GET", "/readyz")
    assert (ready["status"], ready["store"], ready["records"]) == ("ready", "up", "up")
    assert await metric(gw, "cti_gateway_records_up") == 1.0

    own_server.stop()
    body = await gw.json("GET", "/readyz", status=503)
    assert body["error"]["code"] == "not_ready" and body["error"]["message"] == "records store down"
    assert body["error"]["checks"]["records"] == "down" and body["error"]["checks"]["store"] == "up"
    assert await metric(gw, "cti_gateway_records_up") == 0.0
    # the report needs the records store: 503 not_ready (retry later), never a 500
    body = await gw.json("GET", "/v1/reports/sessions", "supervisor", status=503)
    assert body["error"]["code"] == "not_ready"
    # the engine's own work goes on: its journal is SQLite
    await gw.ready("a1")

    own_server.start()

    async def ready_again() -> bool:
        async with gw.http.get(gw.url("/readyz")) as response:
            return response.status == 200

    await eventually(ready_again)
    assert await metric(gw, "cti_gateway_records_up") == 1.0
    assert (await gw.json("GET", "/v1/reports/sessions", "supervisor"))["sessions"] == []


@pytest.mark.asyncio
async def test_the_embedded_store_shows_its_records_as_the_journal(
    tmp_path: Path, started: Callable[..., Awaitable[Gateway]]
) -> None:
    gw = await started(SqliteJournal(tmp_path / "g.db"))
    assert not gw.runtime.separate_records and gw.runtime.records is gw.runtime.journal
    ready = await gw.json("GET", "/readyz")
    assert (ready["store"], ready["records"]) == ("up", "up")
    assert await metric(gw, "cti_gateway_records_up") == 1.0


@pytest.mark.asyncio
async def test_records_sort_as_sqlite_does_whatever_the_databases_collation(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Equal offer times sort by id as bytes (SQLite's BINARY), not by the database's
    collation (here ICU en-US, where "a" < "B"); a session without an offer time comes first."""
    postgres_server.execute(
        "DROP DATABASE IF EXISTS cti_icu",
        "CREATE DATABASE cti_icu TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
    )
    rows = [session(sid, T0) for sid in ("b", "a", "B", "é", "_x", "A", "10", "9")]
    rows += [{**session("no-offer-time", T0), "offered_at": None}, session("early", T0 - 1)]
    changes = Changes(sessions=rows)
    async with SqliteJournal(tmp_path / "j.db") as lite, open_records(postgres_server.url(database="cti_icu")) as pg:
        await lite.commit(changes)
        await pg.commit(changes)
        for start, end, limit in ((None, None, None), (T0, None, None), (None, T0 + 1, 3)):
            expected = await lite.records(start=start, end=end, limit=limit)
            assert await pg.records(start=start, end=end, limit=limit) == expected
        order = [r["id"] for r in await pg.records(start=None, end=None)]
    assert order == ["no-offer-time", "early", "10", "9", "A", "B", "_x", "a", "b", "é"]


@pytest.mark.asyncio
async def test_the_app_opens_the_records_store_its_config_names(tmp_path: Path, postgres_url: str) -> None:
    """``records.url`` in the configuration (the model as the multi-instance runtime will
    hold it) becomes the app's records store: opened with the app, pinged by /readyz,
    closed with it."""
    config = make_config().model_copy(update={"records": RecordsConfig(url=postgres_url)})
    app = build_app(config, clock=ManualClock(T0), journal=SqliteJournal(tmp_path / "g.db"))
    runtime = app[RUNTIME]
    records = runtime.records
    assert runtime.separate_records and isinstance(records, PostgresJournal)
    assert records.where == parse_records_url(postgres_url)
    runner, _ = await serve.start(app, config.server, host="127.0.0.1", port=0, shutdown_timeout=5.0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/readyz") as response:
            body = await response.json()
        assert response.status == 200 and body["records"] == "up", body
        assert await records.ping()
    finally:
        await runner.cleanup()
    assert not await records.ping()  # closed with the app
