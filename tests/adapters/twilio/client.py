"""A Twilio stand-in for tests: posts form-encoded webhooks signed by the ``twilio``
package's own :class:`~twilio.request_validator.RequestValidator` (an independent signer),
to the gateway's real address, while signing the public URL Twilio would have called (the
gateway sits behind a proxy at ``PUBLIC_URL``)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from twilio.request_validator import RequestValidator

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://cti.example.test/proxy"


class MultiParams:
    """Form parameters with repeated names, as RequestValidator reads them (``getall``)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def __iter__(self) -> Any:
        return iter({name for name, _ in self.pairs})

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


@dataclass
class Answer:
    status: int
    text: str
    content_type: str

    def twiml(self) -> ET.Element:
        assert self.content_type == "text/xml", (self.status, self.content_type, self.text)
        return ET.fromstring(self.text)

    def json(self) -> Any:
        return json.loads(self.text)

    def verb(self) -> str:
        """The first verb of the TwiML answer (``Dial``, ``Reject``, ``Pause`` ...)."""
        return self.twiml()[0].tag

    def dialed(self) -> str | None:
        """``client:NAME`` / the SIP URI a ``<Dial>`` answer rings, else None."""
        root = self.twiml()
        dial = root.find("Dial")
        if dial is None:
            return None
        noun = dial[0]
        return f"client:{noun.text}" if noun.tag == "Client" else noun.text


class TwilioClient:
    def __init__(self, base: str, vendor: str, token: str = AUTH_TOKEN, public_url: str = PUBLIC_URL) -> None:
        self.base = base
        self.vendor = vendor
        self.validator = RequestValidator(token)
        self.public_url = public_url

    def path(self, endpoint: str) -> str:
        return f"/v1/vendors/{self.vendor}/{endpoint.lstrip('/')}"

    def sign(self, path_qs: str, params: Sequence[tuple[str, str]]) -> str:
        signature: str = self.validator.compute_signature(self.public_url + path_qs, MultiParams(params))
        return signature

    async def post(
        self,
        endpoint: str,
        params: dict[str, str] | Sequence[tuple[str, str]],
        *,
        signature: str | None = None,
        sign: bool = True,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        pairs = list(params.items()) if isinstance(params, dict) else list(params)
        path = self.path(endpoint)
        all_headers = dict(headers or {})
        if sign:
            all_headers["X-Twilio-Signature"] = signature if signature is not None else self.sign(path, pairs)
        body: Any = data if data is not None else aiohttp.FormData(pairs)
        async with aiohttp.ClientSession() as http, http.post(self.base + path, data=body, headers=all_headers) as r:
            return Answer(r.status, await r.text(), r.content_type)

    async def follow(self, url: str, params: dict[str, str]) -> Answer:
        """Request a URL the gateway gave in TwiML (an action, a ``<Redirect>``), as Twilio would."""
        assert url.startswith(self.public_url), url
        path_qs = url.removeprefix(self.public_url)
        pairs = list(params.items())
        headers = {"X-Twilio-Signature": self.sign(path_qs, pairs)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.base + path_qs, data=aiohttp.FormData(pairs), headers=headers) as r,
        ):
            return Answer(r.status, await r.text(), r.content_type)


def incoming(call_sid: str, to: str, *, status: str = "ringing", caller: str = "+15550009999") -> dict[str, str]:
    """The voice URL's parameters for an incoming call."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Direction": "inbound",
        "From": caller,
        "Caller": caller,
        "To": to,
        "Called": to,
        "CallerName": "Ada Lovelace",
    }
