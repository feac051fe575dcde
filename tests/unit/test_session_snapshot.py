"""The session snapshot's shortcuts say exactly what the plain code said."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import Customer
from gateway.sessions import ISO_CACHE_SIZE, _iso, customer_dict, iso


def plain_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_cached_timestamps_are_formatted_as_before(ts: float) -> None:
    assert iso(ts) == plain_iso(ts)
    assert iso(ts) == plain_iso(ts)  # from the cache


def test_the_timestamp_cache_is_bounded() -> None:
    for n in range(ISO_CACHE_SIZE * 2):
        iso(1_700_000_000 + n / 7)
    assert _iso.cache_info().currsize <= ISO_CACHE_SIZE
    assert iso(None) is None


@given(st.none() | st.text(max_size=20), st.none() | st.text(max_size=20))
def test_customer_dict_is_model_dump(address: str | None, name: str | None) -> None:
    customer = Customer(address=address, name=name)
    assert customer_dict(customer) == customer.model_dump()
    assert list(customer_dict(customer)) == list(customer.model_dump())
