"""What HTTP adapters (the webhook, Twilio) share at their intake: a refusal that carries its
response, and a bounded, timed read of the request body.

Both run before anything reaches the gateway, so a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from gateway.api.errors import error_response, json_error
from gateway.errors import GatewayError, InvalidEvent


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
    content = request.content
    if content.is_eof():
        # the whole body arrived with the request (a small one usually does): take it from
        # the buffer, no wait and no timer
        body = content.read_nowait(limit + 1)
        if len(body) > limit:
            raise Refused(413, "body_too_large", f"the body exceeds {limit} bytes")
        return body
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


def answer_failure(exc: Exception, log: structlog.typing.FilteringBoundLogger, prefix: str) -> web.Response:
    """The answer to a request that ended in ``exc`` (logged as ``<prefix>_refused``, or
    ``<prefix>_internal_error`` with the traceback for a bug): the refusal's own response,
    400 for an invalid event, the gateway error's status (503 with ``Retry-After: 1``), or
    500 ``internal_error`` (which changed nothing: the runtime rebuilds after a failure)."""
    if isinstance(exc, Refused):
        log.info(f"{prefix}_refused", status=exc.status, code=exc.code, reason=exc.message)
        return exc.response()
    if isinstance(exc, InvalidEvent):
        log.info(f"{prefix}_refused", status=400, code=exc.code, field=exc.field, reason=exc.message)
        return error_response(exc)
    if isinstance(exc, GatewayError):
        response = error_response(exc)
        log.info(f"{prefix}_refused", status=response.status, code=exc.code, reason=exc.message)
        if response.status == 503:
            response.headers["Retry-After"] = "1"
        return response
    log.exception(f"{prefix}_internal_error")
    return json_error(500, "internal_error", "the gateway failed to process the request")
