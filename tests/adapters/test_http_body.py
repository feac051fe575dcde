"""adapters.http.read_body: the body whole or a clear refusal, whether it arrived with the
request (taken from the buffer at once) or arrives later (read under the body timeout)."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from adapters.http import Refused, read_body


def request_with(*chunks: bytes, complete: bool) -> tuple[web.Request, StreamReader]:
    payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        payload.feed_data(chunk)
    if complete:
        payload.feed_eof()
    return make_mocked_request("POST", "/v1/vendors/crm/events", payload=payload), payload


@pytest.mark.asyncio
async def test_a_body_that_arrived_whole_is_read_from_the_buffer() -> None:
    request, _ = request_with(b'{"a":', b"1}", complete=True)
    assert await read_body(request, 100, timeout_s=5) == b'{"a":1}'
    request, _ = request_with(b"x" * 100, complete=True)
    assert await read_body(request, 100, timeout_s=5) == b"x" * 100  # exactly the limit


@pytest.mark.asyncio
async def test_a_body_over_the_limit_is_refused_whether_or_not_it_arrived_whole() -> None:
    request, _ = request_with(b"x" * 60, b"x" * 41, complete=True)
    with pytest.raises(Refused) as whole:
        await read_body(request, 100, timeout_s=5)
    request, payload = request_with(b"x" * 60, complete=False)
    later = asyncio.get_running_loop().call_soon(lambda: (payload.feed_data(b"x" * 41), payload.feed_eof()))
    with pytest.raises(Refused) as streamed:
        await read_body(request, 100, timeout_s=5)
    later.cancel()
    assert (
        (whole.value.status, whole.value.code)
        == (streamed.value.status, streamed.value.code)
        == (
            413,
            "body_too_large",
        )
    )


@pytest.mark.asyncio
async def test_a_body_still_arriving_is_awaited_then_times_out_if_it_stalls() -> None:
    request, payload = request_with(b'{"a":', complete=False)
    asyncio.get_running_loop().call_soon(lambda: (payload.feed_data(b"1}"), payload.feed_eof()))
    assert await read_body(request, 100, timeout_s=5) == b'{"a":1}'
    request, _ = request_with(b'{"a":', complete=False)  # the rest never comes
    with pytest.raises(Refused) as stalled:
        await read_body(request, 100, timeout_s=0.05)
    assert (stalled.value.status, stalled.value.code) == (408, "request_timeout")
