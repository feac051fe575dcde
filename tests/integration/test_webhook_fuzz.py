"""Fuzzing the vendor webhook of a real gateway process with raw, correctly signed bodies.

A signature only proves who sent a body, not that the body is sane: a vendor with a bug (or
a stolen secret) can send anything. Hypothesis builds event bodies around a valid offer,
message, update or end, with any field replaced by any JSON value (wrong types, lone
surrogates such as ``"\\ud800"`` in strings and keys, objects nested hundreds deep, huge
and non-finite numbers, timestamps at the ends of the calendar with extreme offsets), then
encodes them in ways a sender could (ASCII escapes, raw UTF-8, invalid UTF-8), or sends raw
byte soup. Every body is signed with the vendor's secret and POSTed to ``python -m gateway
run`` on a SQLite journal.

Asserted: no answer is a 5xx, ever; afterwards the gateway is healthy (``/readyz`` ready, a
normal offer is assigned) and still is after a restart on the same journal (whatever it
stored can be loaded back).

``CI=true`` selects the hypothesis ``ci`` profile (2000 examples; see tests/conftest.py),
the default is 200.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.webhook import signed_headers

from .conftest import GatewayFactory
from .live import GatewayProcess, sha, sqlite_url

pytestmark = pytest.mark.slow

VENDOR = "crm"
SECRET = "fuzz-webhook-secret-0123456789"
TOKENS = {"supervisor": "fuzz-supervisor-token", "a1": "fuzz-a1-token", "a2": "fuzz-a2-token", "probe": "fuzz-probe"}


def fuzz_config(db: Path) -> dict[str, Any]:
    return {
        "server": {"supervisor_token_sha256": sha(TOKENS["supervisor"])},
        "store": {"url": sqlite_url(db)},
        "capacity_profiles": {"std": {"max_sessions": 4}},
        "queues": [
            {"name": "support", "on_full": "wait", "max_waiting": 50},
            {"name": "sales"},
            {"name": "probe"},  # nobody but the probe agent, whom no fuzzed event names
        ],
        "agents": [
            {
                "id": "a1",
                "name": "A1",
                "profile": "std",
                "queues": ["support", "sales"],
                "token_sha256": sha(TOKENS["a1"]),
            },
            {"id": "a2", "name": "A2", "profile": "std", "queues": ["support"], "token_sha256": sha(TOKENS["a2"])},
            {
                "id": "probe",
                "name": "Probe",
                "profile": "std",
                "queues": ["probe"],
                "token_sha256": sha(TOKENS["probe"]),
            },
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }


# ---------------------------------------------------------------------------- strategies

#: pieces of text: plain, non-ASCII, lone and paired surrogates, controls, separators
PIECES = ["a", "Zoë", "\ud800", "\udfff", "\udc00x", "\ud83d\ude00", "😀", "\x00", "\u2028", "\ufeff", "\\", '"']
PIECES += ["é" * 50, "x" * 300]
# (kept cheap to draw: the whole run must stay well under a minute with CI's example count)
texts = st.one_of(
    st.sampled_from(PIECES), st.lists(st.sampled_from(PIECES), max_size=4).map("".join), st.text(max_size=8)
)
numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 2**64, 10**4000]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)


def nested(depth: int, leaf: Any = 1, as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


deep_values = st.builds(nested, st.integers(1, 700), scalars, st.booleans())

#: timestamps at and past the ends of the calendar, with extreme offsets, and malformed ones
DATES = [
    f"{date}T{time}{offset}"
    for date in ("0001-01-01", "0001-01-02", "1969-12-31", "2026-02-29", "2026-13-01", "9999-12-31", "2026-11-25")
    for time in ("00:00:00", "23:59:59", "24:00:00", "12:00:60", "12:00:00.9999999")
    for offset in ("Z", "+00:00", "+01:00", "-01:00", "+23:59", "-23:59", "+24:00", "")
]
timestamps = st.one_of(
    st.sampled_from(DATES), st.sampled_from([0, -1, 1e20, 253402300800, -62135596800, "now", "", None]), scalars
)

FIELDS = [
    "event_id",
    "type",
    "channel",
    "interaction_id",
    "agent_id",
    "queue",
    "priority",
    "customer",
    "subject",
    "text",
    "occurred_at",
    "attributes",
    "vendor",
    "unknown_field",
]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["offer", "offer", "message", "update", "end"]))
    body: dict[str, Any] = {
        "event_id": draw(st.one_of(st.integers(0, 300).map(lambda n: f"ev-{n}"), texts)),
        "type": kind,
        "interaction_id": draw(st.integers(0, 40).map(lambda n: f"int-{n}")),
    }
    if kind == "offer":
        body["channel"] = draw(st.sampled_from(["voice", "chat", "email"]))
        if draw(st.booleans()):
            body["queue"] = draw(st.sampled_from(["support", "sales", "nope"]))
        else:
            body["agent_id"] = draw(st.sampled_from(["a1", "a2", "ghost"]))
    if draw(st.booleans()):
        body["customer"] = {"name": draw(texts), "address": draw(texts)}
    if draw(st.booleans()):
        body["text"] = draw(texts)
    if draw(st.booleans()):
        body["attributes"] = draw(st.dictionaries(texts, st.one_of(json_values, deep_values), max_size=4))
    if draw(st.booleans()):
        body["occurred_at"] = draw(timestamps)
    # then break some fields: any JSON value, a deep one, or drop it
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            body.pop(field, None)
        else:
            body[field] = draw(json_values if choice == 1 else deep_values if choice == 2 else timestamps)
    return body


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    how = draw(st.integers(0, 9))
    if how == 0:  # byte soup and broken JSON
        return draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from(
                    [
                        b"",
                        b"{",
                        b"[" * 60_000,
                        b'{"attributes": ' + b"[" * 30_000,
                        b"1" * 5000,
                        b'{"priority": 1' + b"0" * 4400 + b"}",
                        b'{"event_id": "\xff\xfe"}',
                        b"NaN",
                        b'{"attributes": {"x": Infinity}}',
                        b"\xef\xbb\xbf{}",
                        b'{"event_id": "e", "event_id": "f"}',
                    ]
                ),
            )
        )
    body = draw(events())
    encoding = draw(st.sampled_from(["ascii", "ascii", "utf-8", "surrogatepass"]))
    if encoding == "ascii":
        return json.dumps(body).encode()
    text = json.dumps(body, ensure_ascii=False)
    # a sender may encode lone surrogates as invalid UTF-8 (CESU-style) or fail to
    return text.encode("utf-8", "surrogatepass" if encoding == "surrogatepass" else "replace")


# ---------------------------------------------------------------------------- the client


class Poster:
    """Signed POSTs over one keep-alive connection (re-opened when the server closed it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, raw: bytes) -> tuple[int, bytes]:
        headers = signed_headers(SECRET, int(time.time()), raw)
        for attempt in range(2):
            try:
                self.conn.request("POST", f"/v1/vendors/{VENDOR}/events", body=raw, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.reopen()
                return response.status, data
            except (ConnectionError, http.client.HTTPException):
                self.reopen()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {TOKENS[who]}", "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def reopen(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def assert_healthy(proc: GatewayProcess, poster: Poster, event_id: str) -> None:
    status, checks = poster.call("GET", "/readyz", "supervisor")
    assert status == 200, checks
    raw = json.dumps(
        {"event_id": event_id, "type": "offer", "channel": "chat", "interaction_id": event_id, "agent_id": "probe"}
    ).encode()
    status, body = poster.post(raw)
    assert status == 200 and json.loads(body)["decision"] == "assigned", (status, body, proc.stderr()[-3000:])


# ---------------------------------------------------------------------------- the test


def test_fuzzed_signed_webhook_bodies_never_get_a_5xx_and_leave_the_gateway_healthy(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    proc = gateway_process(fuzz_config(tmp_path / "fuzz.db"), name="fuzz")
    proc.start()
    poster = Poster(proc.port)
    for agent in ("a1", "a2", "probe"):
        status, body = poster.call("PUT", f"/v1/agents/{agent}/presence", agent, {"state": "ready"})
        assert status == 200, body
    statuses: Counter[int] = Counter()
    server_errors: list[tuple[int, bytes, bytes]] = []
    posting: list[float] = []

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw=raw_bodies())
    def post_one(raw: bytes) -> None:
        t0 = time.monotonic()
        status, answer = poster.post(raw)
        posting.append(time.monotonic() - t0)
        statuses[status] += 1
        if status >= 500:
            server_errors.append((status, raw[:300], answer[:300]))
        assert status < 500, (status, raw[:300], answer[:500])
        assert status in (200, 400, 404, 409, 413), (status, answer[:500])

    started = time.monotonic()
    post_one()
    took = time.monotonic() - started
    assert not server_errors, server_errors[:3]
    assert statuses[400] and statuses[200], statuses  # both sides were exercised
    assert_healthy(proc, poster, "probe-1")
    poster.conn.close()

    # whatever it journaled can be loaded back
    proc.terminate()
    proc.start()
    poster = Poster(proc.port)
    assert_healthy(proc, poster, "probe-2")
    poster.conn.close()
    print(
        f"fuzzed webhook: {sum(statuses.values())} bodies in {took:.1f} s ({sum(posting):.1f} s waiting for answers,"
        f" slowest {max(posting):.3f} s), statuses {dict(statuses)}"
    )
