"""``X-Twilio-Signature`` computed exactly as Twilio does: every real vector in
tests/fixtures/twilio_signature_vectors.jsonl, and agreement with the ``twilio`` package's
own RequestValidator on random requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from adapters.twilio.signature import compute_signature, signature_valid, url_variants

from ..scripted import fixture_bytes
from .client import MultiParams


def vectors() -> list[dict[str, Any]]:
    lines = fixture_bytes("twilio_signature_vectors.jsonl").decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _params(vector: dict[str, Any]) -> list[tuple[str, str]]:
    if "params_multi" in vector:
        return [(k, v) for k, v in vector["params_multi"]]
    return list(vector.get("params", {}).items())


def test_the_fixture_has_every_kind_of_vector() -> None:
    names = " ".join(v["name"] for v in vectors())
    assert len(vectors()) == 5
    for kind in ("docs_example", "port", "duplicate", "json_body"):
        assert kind in names


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: v["name"].split(" ")[0])
def test_every_real_vector_is_accepted(vector: dict[str, Any]) -> None:
    token = vector["token"].encode()
    body = vector.get("body", "").encode()
    assert signature_valid(token, vector["url"], vector["signature"], params=_params(vector), body=body)
    # and Twilio's own validator agrees on the same vector
    validator = RequestValidator(vector["token"])
    payload: Any = vector["body"] if "body" in vector else MultiParams(_params(vector))
    assert validator.validate(vector["url"], payload, vector["signature"])


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: v["name"].split(" ")[0])
def test_any_change_to_a_vector_is_refused(vector: dict[str, Any]) -> None:
    token = vector["token"].encode()
    params = _params(vector)
    body = vector.get("body", "").encode()
    signature = vector["signature"]
    assert not signature_valid(b"54321", vector["url"], signature, params=params, body=body)
    assert not signature_valid(token, vector["url"].replace("foo=1", "foo=2"), signature, params=params, body=body)
    assert not signature_valid(token, vector["url"].replace("https:", "http:"), signature, params=params, body=body)
    assert not signature_valid(token, vector["url"], signature[:-2] + "A=", params=params, body=body)
    assert not signature_valid(token, vector["url"], "", params=params, body=body)
    if "body" in vector:
        assert not signature_valid(token, vector["url"], signature, params=params, body=body + b" ")
    else:
        tampered = [(k, v + "0") if k in ("Digits", "To") else (k, v) for k, v in params]
        assert not signature_valid(token, vector["url"], signature, params=tampered)
        assert not signature_valid(token, vector["url"], signature, params=[*params, ("Extra", "1")])


def test_the_port_variants() -> None:
    assert url_variants("https://a.example/x?y=1") == ("https://a.example/x?y=1", "https://a.example:443/x?y=1")
    assert url_variants("http://a.example:8080/x") == ("http://a.example/x", "http://a.example:8080/x")
    assert url_variants("http://[::1]/x") == ("http://[::1]/x", "http://[::1]:80/x")


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    path=st.sampled_from(["/voice", "/v1/vendors/tw/status?agent=a%201", "/x?bodyless=1&b=2"]),
    params=st.lists(st.tuples(_text.filter(bool), _text), max_size=6),
)
def test_agrees_with_the_twilio_package(token: str, path: str, params: list[tuple[str, str]]) -> None:
    url = "https://gw.example.test" + path
    expected = RequestValidator(token).compute_signature(url, MultiParams(params))
    assert compute_signature(token.encode(), url, params) == expected
    assert signature_valid(token.encode(), url, expected, params=params)
