"""What HTTP adapters (the webhook, Twilio) share at their intake: a refusal that carries its
response, and a bounded, timed read of the request body.

Both run before anything reaches the gateway, so a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.api.errors import json_error


class Refused(Exception):
    """A request refused at the adapter's door; :meth:`response` is the answer."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        response = json_error(self.status, self.code, self.message, **self.extra)
        if self.status == 413:
            response.force_close()  # do not linger reading the rest of an oversize body
        return response


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """At most ``limit`` bytes of body, or :class:`Refused` (413 over the limit, 408 when it
    does not arrive within ``timeout_s``); never buffers more than ``limit + 1`` bytes."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise Refused(408, "request_timeout", "the body did not arrive in time") from None
    if size > limit:
        raise Refused(413, "body_too_large", f"the body exceeds {limit} bytes")
    return b"".join(chunks)
