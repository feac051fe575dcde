"""TokenAuthority: one lookup by the token's SHA-256, one constant-time comparison, always."""

from __future__ import annotations

import gc
import hashlib
import hmac
import tracemalloc

import pytest

from gateway.api import auth
from gateway.api.auth import AGENT, SUPERVISOR, Principal, TokenAuthority


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authority(agents: int) -> TokenAuthority:
    entries = [(sha("boss-token"), Principal(SUPERVISOR))]
    entries += [(sha(f"token-{n}"), Principal(AGENT, f"a{n}")) for n in range(agents)]
    entries.append((sha("shared").upper(), Principal(AGENT, "x1")))  # the same hash twice:
    entries.append((" " + sha("shared"), Principal(AGENT, "x2")))  # ambiguous, refused for both
    return TokenAuthority(entries)


def test_right_tokens_find_their_principal_wrong_ones_nobody() -> None:
    tokens = authority(1000)
    assert tokens.authenticate("boss-token") == Principal(SUPERVISOR)
    assert tokens.authenticate("token-0") == Principal(AGENT, "a0")
    assert tokens.authenticate("token-999") == Principal(AGENT, "a999")
    for wrong in ("", "token-1000", "token-99 ", "TOKEN-1", "token-1" + "x" * 100, sha("token-1"), "\ud800"):
        assert tokens.authenticate(wrong) is None, wrong
    assert tokens.authenticate("shared") is None


def test_every_token_costs_one_hash_and_one_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shortcut that would make a wrong token cheaper (or dearer) than a right one: each
    is hashed once and compared once with hmac.compare_digest against a full-length hash,
    whether it matches, misses, nearly matches (a valid token's prefix) or is ambiguous;
    and once, not once per configured hash (O(1) in the number of agents)."""
    tokens = authority(100)
    compared: list[tuple[str, str]] = []
    hashed: list[str] = []
    real_compare, real_digest = hmac.compare_digest, auth._digest

    def compare(a: str, b: str) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    def digest(token: str) -> str:
        hashed.append(token)
        return real_digest(token)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    monkeypatch.setattr(auth, "_digest", digest)
    for token in ("token-7", "token-", "token-77", "nobody", "shared", "boss-token"):
        compared.clear()
        hashed.clear()
        tokens.authenticate(token)
        assert hashed == [token]
        assert len(compared) == 1, token
        presented, stored = compared[0]
        assert len(presented) == len(stored) == 64


def test_a_configured_token_costs_about_a_hundred_bytes() -> None:
    """The table keeps the configuration's own hash and id strings and one small tuple per
    token (~90 B with the dict's share; a hash's bytes, two tuples and a principal per token
    were ~300 B: 3 MB of a 10,000-agent gateway); the principal is made when a token is
    presented, and equal to the one configured."""
    agents = [(f"{n:064x}", Principal(AGENT, f"agent-{n:05d}")) for n in range(2000)]
    TokenAuthority(agents)  # warmed
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tokens = TokenAuthority(agents)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(tokens) == 2000
    assert kept / 2000 < 150, f"{kept / 2000:.0f} B per token"
    real = authority(3)
    assert real.authenticate("token-2") == Principal(AGENT, "a2") and real.authenticate("token-2") is not None
