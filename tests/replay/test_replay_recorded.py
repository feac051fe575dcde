"""Replay of a run recorded by a real gateway (signed webhook offers, desktop accepts/ends
over HTTP, a SQLite journal), and the ``cti-gateway replay`` command on it."""

from __future__ import annotations

import hashlib
import heapq
import html.parser
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from adapters.webhook import signed_headers
from gateway import serve
from gateway.app import RUNTIME, build_app
from gateway.cli import main
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.config_loader import load_config
from gateway.records.report import report_rows, to_csv
from gateway.replay import compare, load_journal, summarize

T0 = 1_750_000_000.0
SECRET = "replay-webhook-secret-0123456789"
SUP = "replay-supervisor-token-0123"
AGENTS = ("a1", "a2", "a3")


def token(agent: str) -> str:
    return f"{agent}-replay-token-0123456789"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_data(db: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha(SUP)},
        "store": {"url": f"sqlite:///{db}"},
        "capacity_profiles": {
            "std": {
                "max_sessions": 2,
                "wrap_up_s": {"voice": 10, "chat": 3},
                "offer_timeout_s": {"voice": 8, "chat": 8, "email": 8},
            }
        },
        "queues": [
            {"name": "support", "policy": "longest_idle", "on_full": "reject"},
            {"name": "sales", "policy": "least_busy", "on_full": "wait", "max_wait_s": 40},
        ],
        "agents": [
            {
                "id": a,
                "name": a.upper(),
                "profile": "std",
                "queues": ["support", "sales"],
                "token_sha256": sha(token(a)),
            }
            for a in AGENTS
        ],
        "vendors": [{"name": "crm", "adapter": "webhook", "secret": SECRET}],
    }


async def record_a_run(tmp_path: Path) -> tuple[Path, Path, GatewayConfig]:
    """Drive a real gateway through ~40 offers; returns (journal, config file, config)."""
    db = tmp_path / "journal.db"
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config_data(db)))
    config = load_config(config_file)
    clock = ManualClock(T0)
    app = build_app(config, clock=clock, base_dir=tmp_path)
    runner, _limiter = await serve.start(app, config.server, host="127.0.0.1", port=0, shutdown_timeout=5.0)
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    runtime = app[RUNTIME]
    todo: list[tuple[float, int, str, Any]] = []
    seq = 0

    def later(at: float, kind: str, arg: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(todo, (at, seq, kind, arg))

    for n in range(1, 41):
        later(T0 + 5 * n, "offer", n)
        if n % 5 == 4:  # these customers hang up after 25 s if nobody took them
            later(T0 + 5 * n + 25, "hang_up", n)
    seen: set[str] = set()
    answered: set[str] = set()
    try:
        async with aiohttp.ClientSession() as http:

            async def webhook(body: dict[str, Any]) -> dict[str, Any]:
                raw = json.dumps(body).encode()
                headers = signed_headers(SECRET, int(clock.now()), raw)
                async with http.post(f"{base}/v1/vendors/crm/events", data=raw, headers=headers) as response:
                    answer: dict[str, Any] = await response.json()
                    assert response.status in (200, 409), answer  # 409: rejected
                    return answer

            async def session_action(sid: str, agent: str, action: str) -> None:
                headers = {"Authorization": f"Bearer {token(agent)}"}
                async with http.post(f"{base}/v1/sessions/{sid}/{action}", json={}, headers=headers) as response:
                    assert response.status == 200, await response.text()

            for agent in AGENTS:  # ready in configuration order (what the replay assumes)
                await runtime.act(lambda e, a=agent: e.set_presence(a, "ready"))
            while todo:
                at, _seq, kind, arg = heapq.heappop(todo)
                deadline = runtime.engine.next_deadline()
                while deadline is not None and deadline < at:  # timers fire at their own time
                    clock.set(deadline)
                    await runtime.act(lambda e: e.tick())
                    deadline = runtime.engine.next_deadline()
                clock.set(at)
                if kind == "offer":
                    n = arg
                    body: dict[str, Any] = {
                        "event_id": f"ev-{n}",
                        "type": "offer",
                        "interaction_id": f"i-{n}",
                        "channel": ("chat", "chat", "voice", "email")[n % 4],
                    }
                    if n % 6 == 0:
                        body["agent_id"] = AGENTS[n % 3]
                    else:
                        body["queue"] = "sales" if n % 3 == 1 else "support"
                    await webhook(body)
                elif kind == "hang_up":
                    await webhook({"event_id": f"hang-{arg}", "type": "end", "interaction_id": f"i-{arg}"})
                elif kind in ("accept", "decline", "end"):
                    sid, agent = arg
                    session = runtime.engine.sessions.get(sid)
                    wanted = "active" if kind == "end" else "offered"
                    if session is not None and session.state.value == wanted:
                        await session_action(sid, agent, kind)
                elif kind == "tick":
                    await runtime.act(lambda e: e.tick())
                elif kind == "vendor_end":
                    sid, interaction = arg
                    session = runtime.engine.sessions.get(sid)
                    if session is not None and session.state.value == "active":
                        await webhook({"event_id": f"end-{interaction}", "type": "end", "interaction_id": interaction})
                # every new offer gets the desktop's answer by a fixed rule
                for agent in AGENTS:
                    for session in runtime.engine.open_sessions(agent):
                        if session.id in seen:
                            if session.state.value == "active" and session.id not in answered:
                                answered.add(session.id)
                                n = int(session.interaction_id.split("-")[1])  # type: ignore[union-attr]
                                handle = 12 + (n * 7) % 30
                                if n % 2:
                                    later(clock.now() + handle, "vendor_end", (session.id, session.interaction_id))
                                else:
                                    later(clock.now() + handle, "end", (session.id, agent))
                            continue
                        seen.add(session.id)
                        n = int(session.interaction_id.split("-")[1])  # type: ignore[union-attr]
                        if n % 7 == 3 and session.transferred_from is None:
                            later(clock.now() + 2, "decline", (session.id, agent))
                        elif n % 7 == 5:
                            pass  # nobody answers: it expires
                        else:
                            later(clock.now() + 1 + n % 3, "accept", (session.id, agent))
                if not todo:  # let the last wrap-ups and timeouts run out
                    deadline = runtime.engine.next_deadline()
                    if deadline is not None and deadline < T0 + 3600:
                        later(deadline, "tick", None)
    finally:
        await runner.cleanup()
    return db, config_file, config


@pytest_asyncio.fixture
async def recorded(tmp_path: Path) -> tuple[Path, Path, GatewayConfig]:
    return await record_a_run(tmp_path)


@pytest.mark.asyncio
async def test_replaying_the_recorded_config_takes_exactly_the_recorded_decisions(
    recorded: tuple[Path, Path, GatewayConfig],
) -> None:
    db, _file, config = recorded
    recording = load_journal(db)
    # the recording is varied enough to mean something
    kinds = {d["kind"] for i in recording.interactions for d in i["decisions"]}
    reasons = {d.get("reason") for i in recording.interactions for d in i["decisions"]}
    outcomes = {s["outcome"] for s in recording.sessions}
    assert {"assigned", "queued", "rejected"} <= kinds, kinds
    assert {"agent_at_capacity", "no_agent_available"} <= reasons, reasons
    assert {"completed", "declined", "expired"} <= outcomes, outcomes
    recorded_figures = summarize(
        "recorded",
        config,
        sessions=recording.sessions,
        interactions=recording.interactions,
        start=recording.start,
        end=recording.end,
    )
    assert recorded_figures.abandoned >= 1 and recorded_figures.waited >= 1

    result = compare(recording, config, [])
    check = result.fidelity
    assert check.interactions == 40
    assert check.mismatches == []
    assert check.exact
    recorded_s, replayed_s = result.summaries
    assert replayed_s.rejections == recorded_s.rejections
    assert (replayed_s.handled, replayed_s.abandoned, replayed_s.waited) == (
        recorded_s.handled,
        recorded_s.abandoned,
        recorded_s.waited,
    )
    for replayed_agent, recorded_agent in zip(replayed_s.agents, recorded_s.agents, strict=True):
        assert replayed_agent.occupancy == pytest.approx(recorded_agent.occupancy)
    # and the inbound events got the same decisions, one by one (every offer is replayed;
    # a hang-up after the interaction ended changes nothing and need not be)
    replayed_events = {(e["vendor"], e["event_id"]): e["decision"] for e in result.results[0].events}
    assert {e["event_id"] for e in recording.events if e["type"] == "offer"} <= {k[1] for k in replayed_events}
    compared = 0
    for row in recording.events:
        decision = replayed_events.get((row["vendor"], row["event_id"]))
        if decision is not None:
            compared += 1
            assert {k: v for k, v in decision.items() if k != "session_id"} == {
                k: v for k, v in row["decision"].items() if k != "session_id"
            }
    assert compared >= 40 + 10


class _Checker(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


@pytest.mark.asyncio
async def test_the_command_compares_alternatives_and_draws_the_plots(
    recorded: tuple[Path, Path, GatewayConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, config_file, _config = recorded
    override = tmp_path / "roomy.yaml"
    override.write_text("capacity_profiles:\n  std:\n    max_sessions: 4\n")
    png, page = tmp_path / "out.png", tmp_path / "out.html"
    args = ["replay", str(db), "--config", str(config_file), "--override", str(override)]
    assert main([*args, "--set", "capacity_profiles.std.max_sessions=1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "takes the recorded decisions for 40 of 40 interactions" in out
    assert "recorded" in out and "replayed" in out and "roomy" in out and "std.max_sessions=1" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000

    assert main([*args, "--format", "json", "--on-reject", "retry:30:2", "--plot", str(page)]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [run["name"] for run in report["runs"]]
    assert names == ["recorded", "replayed", "replayed (on-reject retry:30:2)", "roomy"]
    recorded_run, replayed_run, _, roomy = report["runs"]
    assert report["fidelity"] == {"interactions": 40, "identical": 40, "mismatches": []}
    assert replayed_run["rejections"] == recorded_run["rejections"]
    # twice the room: no agent is ever at capacity, and some retried customers come back
    assert roomy["rejections"].get("agent_at_capacity", 0) == 0 < recorded_run["rejections"]["agent_at_capacity"]
    assert report["runs"][2]["retries"] > 0
    checker = _Checker()
    checker.feed(page.read_text())
    checker.close()
    assert {"html", "table", "svg"} <= set(checker.tags)

    assert main([*args, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run,metric,agent,value"
    assert any(line.startswith("roomy,rejected.") or line.startswith("roomy,fate.handled,") for line in lines)


def test_bad_alternatives_are_reported_like_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config_data(tmp_path / "j.db")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("capacity_profiles:\n  std:\n    max_sesions: 4\n")
    status = main(
        [
            "replay",
            str(tmp_path / "missing.db"),
            "--config",
            str(config_file),
            "--override",
            str(bad),
            "--set",
            "capacity_profiles.std.max_sessions=0",
            "--set",
            "agents.a9.profile=std",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert f"replay: {bad}: capacity_profiles.std.max_sesions:" in err
    assert "replay: --set agents.a9.profile=std: agents has no entry 'a9'" in err
    status = main(
        [
            "replay",
            str(tmp_path / "missing.db"),
            "--config",
            str(config_file),
            "--set",
            "capacity_profiles.std.max_sessions=0",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "capacity_profiles.std.max_sessions:" in err and "Traceback" not in err
    assert main(["replay", str(tmp_path / "missing.db"), "--config", str(config_file)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["replay", "x.db", "--config", str(config_file), "--on-reject", "retry:x"]) == 2
    assert "retry:SECONDS[:N]" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_a_session_report_csv_and_a_time_window_can_be_replayed(
    recorded: tuple[Path, Path, GatewayConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, config_file, _config = recorded
    recording = load_journal(db)
    # the report the gateway serves (GET /v1/reports/sessions?format=csv), from the same journal
    report = tmp_path / "report.csv"
    report.write_text(to_csv(report_rows(recording.sessions)), newline="")
    assert main(["replay", str(report), "--config", str(config_file), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    offered = {s["interaction_id"] for s in recording.sessions if not s.get("transferred_from")}
    recorded_run, replayed_run = out["runs"]
    # only interactions that reached an agent are in a report; each is replayed
    assert recorded_run["offers"] == replayed_run["offers"] == len(offered)
    accepted = {s["interaction_id"] for s in recording.sessions if s.get("accepted_at") is not None}
    assert recorded_run["fate"]["handled"] == len(accepted)

    # a window: only the offers made in it
    middle = recording.start + 100
    window = ["--start", str(recording.start), "--end", str(middle)]
    assert main(["replay", str(db), "--config", str(config_file), "--format", "json", *window]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"][0]["offers"] == sum(1 for e in recording.events if e["type"] == "offer" and e["at"] < middle)
    assert out["fidelity"]["identical"] == out["fidelity"]["interactions"] == out["runs"][0]["offers"]

    bad = tmp_path / "bad.csv"
    bad.write_text("session_id,agent_id\nx,y\n")
    assert main(["replay", str(bad), "--config", str(config_file)]) == 2
    assert f"replay: {bad}:1: not a session report: no column" in capsys.readouterr().err
