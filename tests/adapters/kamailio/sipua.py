"""A small SIP user agent over UDP for the tests: callers that place, cancel and hang up
calls when the test says so, and agent phones that ring, answer or refuse.

SIPp plays the callers and phones of the end-to-end tests; this UA is for the contract
driver, which needs a caller it can CANCEL at any moment and phones that ring until told
otherwise. It speaks just enough RFC 3261 for that (no retransmissions: loopback UDP).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from dataclasses import dataclass, field


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0]

    @property
    def code(self) -> int:
        return int(self.first_line.split(" ", 2)[1])

    def get(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def encode(self) -> bytes:
        lines = [self.first_line, *(f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length")]
        body = self.body.encode()
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_COMPACT = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length"}


def parse(data: bytes) -> SipMessage:
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    first, *rest = head.split("\r\n")
    headers = []
    for line in rest:
        name, _, value = line.partition(":")
        name = name.strip()
        headers.append((_COMPACT.get(name, name), value.strip()))
    return SipMessage(first, headers, body)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: SipAgent) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.owner._received(parse(data), addr)


@dataclass
class Call:
    call_id: str
    user: str
    branch: str
    from_tag: str
    responses: list[SipMessage] = field(default_factory=list)
    final: asyncio.Future[SipMessage] | None = None
    to_tag: str = ""
    route: list[str] = field(default_factory=list)
    remote_target: str = ""

    def codes(self) -> list[int]:
        return [r.code for r in self.responses]


class SipAgent:
    """One UDP endpoint on 127.0.0.1: a caller (``invite``/``cancel``/``bye``) and/or a
    phone (``mode``: ``ring`` forever, ``answer`` at once, ``busy``)."""

    def __init__(self, mode: str = "ring") -> None:
        self.mode = mode
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, Call] = {}
        #: INVITEs this endpoint received as a phone, by Call-ID
        self.rang: dict[str, SipMessage] = {}
        #: Call-IDs of the BYEs it received
        self.byes: list[str] = []
        self._cseq = itertools.count(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send(self, message: SipMessage, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(message.encode(), addr)

    # ---------------------------------------------------------------- caller side

    async def invite(self, proxy: tuple[str, int], user: str, call_id: str) -> Call:
        call = Call(call_id, user, f"z9hG4bK{uuid.uuid4().hex[:16]}", uuid.uuid4().hex[:10])
        call.final = asyncio.get_running_loop().create_future()
        self.calls[call_id] = call
        host, port = proxy
        self._send(
            SipMessage(
                f"INVITE sip:{user}@{host}:{port} SIP/2.0",
                [
                    ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={call.branch};rport"),
                    ("Max-Forwards", "70"),
                    ("From", f'"Test Caller" <sip:caller@127.0.0.1:{self.port}>;tag={call.from_tag}'),
                    ("To", f"<sip:{user}@{host}:{port}>"),
                    ("Call-ID", call_id),
                    ("CSeq", "1 INVITE"),
                    ("Contact", f"<sip:caller@127.0.0.1:{self.port}>"),
                ],
            ),
            proxy,
        )
        return call

    def cancel(self, proxy: tuple[str, int], call_id: str) -> None:
        call = self.calls[call_id]
        host, port = proxy
        self._send(
            SipMessage(
                f"CANCEL sip:{call.user}@{host}:{port} SIP/2.0",
                [
                    ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={call.branch};rport"),
                    ("Max-Forwards", "70"),
                    ("From", f'"Test Caller" <sip:caller@127.0.0.1:{self.port}>;tag={call.from_tag}'),
                    ("To", f"<sip:{call.user}@{host}:{port}>"),
                    ("Call-ID", call_id),
                    ("CSeq", "1 CANCEL"),
                ],
            ),
            proxy,
        )

    def bye(self, proxy: tuple[str, int], call_id: str) -> None:
        call = self.calls[call_id]
        host, port = proxy
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport"),
            ("Max-Forwards", "70"),
            ("From", f'"Test Caller" <sip:caller@127.0.0.1:{self.port}>;tag={call.from_tag}'),
            ("To", f"<sip:{call.user}@{host}:{port}>;tag={call.to_tag}"),
            ("Call-ID", call_id),
            ("CSeq", "2 BYE"),
        ]
        headers += [("Route", r) for r in call.route]
        self._send(SipMessage(f"BYE {call.remote_target} SIP/2.0", headers), proxy)

    def _caller_response(self, message: SipMessage, addr: tuple[str, int]) -> None:
        call = self.calls.get(message.get("Call-ID"))
        if call is None:
            return
        cseq = message.get("CSeq")
        if not cseq.endswith("INVITE"):
            return
        call.responses.append(message)
        if message.code < 200:
            return
        tag = re.search(r";tag=([^;>\s]+)", message.get("To"))
        call.to_tag = tag.group(1) if tag else ""
        if message.code < 300:
            call.route = list(reversed(message.all("Record-Route")))
            contact = re.search(r"<([^>]+)>", message.get("Contact"))
            call.remote_target = contact.group(1) if contact else message.get("Contact")
            ack_uri, branch = call.remote_target, f"z9hG4bK{uuid.uuid4().hex[:16]}"
        else:
            ack_uri, branch = f"sip:{call.user}@{addr[0]}:{addr[1]}", call.branch
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", message.get("From")),
            ("To", message.get("To")),
            ("Call-ID", call.call_id),
            ("CSeq", "1 ACK"),
        ]
        if message.code < 300:
            headers += [("Route", r) for r in call.route]
        self._send(SipMessage(f"ACK {ack_uri} SIP/2.0", headers), addr)
        if call.final is not None and not call.final.done():
            call.final.set_result(message)

    # ---------------------------------------------------------------- phone side

    def _reply(self, request: SipMessage, code: int, text: str, addr: tuple[str, int], to_tag: str = "") -> None:
        headers = [
            (k, v) for k, v in request.headers if k.lower() in ("via", "from", "call-id", "cseq", "record-route")
        ]
        to = request.get("To")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        headers.insert(2, ("To", to))
        headers.append(("Contact", f"<sip:phone@127.0.0.1:{self.port}>"))
        self._send(SipMessage(f"SIP/2.0 {code} {text}", headers), addr)

    def _phone_request(self, message: SipMessage, addr: tuple[str, int]) -> None:
        call_id = message.get("Call-ID")
        tag = "ph" + call_id.encode().hex()[:12]
        if message.method == "INVITE":
            self.rang[call_id] = message
            self._reply(message, 100, "Trying", addr)
            if self.mode == "busy":
                self._reply(message, 486, "Busy Here", addr, tag)
                return
            self._reply(message, 180, "Ringing", addr, tag)
            if self.mode == "answer":
                self._reply(message, 200, "OK", addr, tag)
        elif message.method == "CANCEL":
            self._reply(message, 200, "OK", addr, tag)
            invite = self.rang.get(call_id)
            if invite is not None:
                self._reply(invite, 487, "Request Terminated", addr, tag)
        elif message.method == "BYE":
            self.byes.append(call_id)
            self._reply(message, 200, "OK", addr, tag)

    def _received(self, message: SipMessage, addr: tuple[str, int]) -> None:
        if message.is_request:
            if message.method != "ACK":
                self._phone_request(message, addr)
        else:
            self._caller_response(message, addr)
