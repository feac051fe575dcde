"""HTTP error bodies and status codes, shared by every handler of the API.

Every error the API answers has the body ``{"error": {"code": ..., "message": ..., ...}}``
(DESIGN section 6): ``code`` is stable (clients match on it), ``message`` is for humans,
extra keys add detail (``field`` for ``invalid_event``).

* :func:`json_error` builds such a response from parts;
* :func:`status_for` maps a :class:`~gateway.errors.GatewayError` to its HTTP status;
* :func:`error_response` does both for an exception.

A handler never lets an exception escape as a traceback: it answers
``json_error(500, "internal_error", ...)`` for anything that is not a ``GatewayError``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import (
    ActionError,
    CapacityRejected,
    ConfigError,
    Forbidden,
    GatewayError,
    InvalidEvent,
    InvalidState,
    NotFound,
)

__all__ = ["STATUS_BY_CODE", "error_response", "json_error", "status_for"]

#: Codes whose status does not follow from the exception's class; checked first.
STATUS_BY_CODE: dict[str, int] = {
    "interaction_already_open": 409,
    "unauthorized": 401,
    "bad_signature": 401,
    "unknown_vendor": 404,
    "body_too_large": 413,
    "invalid_request": 400,
    "not_ready": 503,
}

#: By class, most specific first (the first ``isinstance`` match wins).
_STATUS_BY_CLASS: tuple[tuple[type[GatewayError], int], ...] = (
    (InvalidEvent, 400),
    (NotFound, 404),
    (Forbidden, 403),
    (InvalidState, 409),
    (CapacityRejected, 409),
    (ActionError, 400),
    (ConfigError, 500),
)


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """``{"error": {"code": code, "message": message, **extra}}`` with ``status``."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def status_for(exc: GatewayError) -> int:
    """The HTTP status of a gateway error.

    By code first: ``interaction_already_open`` 409, ``unauthorized`` / ``bad_signature``
    401, ``unknown_vendor`` 404, ``body_too_large`` 413, ``invalid_request`` 400,
    ``not_ready`` 503. Then by class:
    :class:`~gateway.errors.InvalidEvent` 400, ``NotFound`` 404, ``Forbidden`` 403,
    ``InvalidState`` 409, ``CapacityRejected`` 409, any other ``ActionError`` 400,
    ``ConfigError`` 500. Anything else: 500.
    """
    status = STATUS_BY_CODE.get(exc.code)
    if status is not None:
        return status
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: GatewayError) -> web.Response:
    """The JSON error response for ``exc``: its ``to_dict()`` under ``error``, :func:`status_for` status."""
    body = exc.to_dict()
    code = str(body.pop("code"))
    message = str(body.pop("message"))
    return json_error(status_for(exc), code, message, **body)
