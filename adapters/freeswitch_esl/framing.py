"""FreeSWITCH event socket (ESL) framing: bytes in, messages out; nothing else.

The wire (``mod_event_socket.c``; PROTOCOLS.md section 2.1):

* every message is a block of ``Name: value`` lines ended by an empty line (LF; a CR before
  the LF is tolerated); if the block has ``Content-Length: N``, exactly ``N`` bytes of body
  follow;
* ``Content-Type`` says what it is: ``auth/request`` (the greeting), ``command/reply``
  (``Reply-Text: +OK ...`` / ``-ERR ...``), ``api/response`` (the body is the command's
  output), ``text/event-plain`` / ``text/event-json`` (the body is one event),
  ``text/disconnect-notice``, ``text/rude-rejection``, ``log/data``;
* header values are URL-encoded (``switch_url_encode``), so ``callcenter::info`` arrives as
  ``callcenter%3A%3Ainfo``; an ``event-plain`` body is itself a header block (URL-encoded)
  that may carry a nested ``Content-Length`` and body of its own.

:class:`Parser` takes the stream in chunks split anywhere (one byte at a time works) and
gives back whole :class:`Message` objects. It never raises on bad input: a block it cannot
make sense of (no ``Name: value`` line, an impossible ``Content-Length``, a header block
larger than :data:`MAX_HEADER_BYTES`) is reported as a :class:`Malformed` item and skipped,
and parsing carries on with the next block, so garbage costs the bytes it occupies and
nothing else. Memory is bounded: a header block may not exceed ``max_header_bytes`` and a
body ``max_body_bytes`` (a larger ``Content-Length`` is malformed: its bytes are skipped
as they arrive, never buffered).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

#: the largest header block accepted (FreeSWITCH's outer blocks are a few hundred bytes;
#: the ``connect`` reply of an outbound socket, the largest seen, is ~7 KiB)
MAX_HEADER_BYTES = 64 * 1024
#: the largest body accepted (a ``show channels as json`` on a big switch can be large)
MAX_BODY_BYTES = 16 * 1024 * 1024

#: a header name: printable, no space, no colon
_HEADER_NAME = re.compile(r"[!-9;-~\x80-\U0010ffff]+")

AUTH_REQUEST = "auth/request"
COMMAND_REPLY = "command/reply"
API_RESPONSE = "api/response"
EVENT_PLAIN = "text/event-plain"
EVENT_JSON = "text/event-json"
DISCONNECT_NOTICE = "text/disconnect-notice"
RUDE_REJECTION = "text/rude-rejection"


@dataclass(frozen=True, slots=True)
class Message:
    """One ESL message: its (decoded) outer headers and raw body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes the parser skipped, and why (for a log line)."""

    reason: str
    sample: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded FreeSWITCH event: its headers (values URL-decoded) and optional body."""

    headers: dict[str, str]
    body: str = ""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)


class EventError(ValueError):
    """An event body that cannot be decoded."""


@dataclass(slots=True)
class Parser:
    """Incremental ESL stream parser (see the module documentation)."""

    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    #: headers of the message whose body is being read, and its length
    _pending: dict[str, str] | None = None
    _body_length: int = 0
    #: bytes of an oversize body still to throw away
    _skip: int = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message | Malformed]:
        """Add ``data``; return every message (or skipped piece) it completes, in order."""
        self._buffer += data
        out: list[Message | Malformed] = []
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                del self._buffer[:taken]
                self._skip -= taken
                if self._skip:
                    return out
            if self._pending is not None:
                if len(self._buffer) < self._body_length:
                    return out
                body = bytes(self._buffer[: self._body_length])
                del self._buffer[: self._body_length]
                out.append(Message(self._pending, body))
                self._pending = None
                continue
            # skip blank lines between messages (some peers send an extra LF)
            start = 0
            while start < len(self._buffer) and self._buffer[start] in (0x0A, 0x0D):
                start += 1
            if start:
                del self._buffer[:start]
            end, sep = _block_end(self._buffer)
            if end < 0:
                if len(self._buffer) > self.max_header_bytes:
                    sample = bytes(self._buffer[:64])
                    self._buffer.clear()
                    out.append(Malformed(f"header block longer than {self.max_header_bytes} bytes", sample))
                return out
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + sep]
            if end > self.max_header_bytes:
                out.append(Malformed(f"header block longer than {self.max_header_bytes} bytes", raw[:64]))
                continue
            headers, problem = parse_headers(raw)
            if problem is not None:
                out.append(Malformed(problem, raw[:64]))
                continue
            length_text = headers.get("Content-Length")
            if length_text is None:
                out.append(Message(headers))
                continue
            length = _length(length_text)
            if length is None:
                out.append(Malformed(f"bad Content-Length {length_text[:32]!r}", raw[:64]))
                continue
            if length > self.max_body_bytes:
                out.append(Malformed(f"Content-Length {length} above {self.max_body_bytes}", raw[:64]))
                self._skip = length
                continue
            self._pending, self._body_length = headers, length


def _block_end(buffer: bytearray) -> tuple[int, int]:
    """Index of the empty line that ends the header block at the start of ``buffer`` and
    the length of the separator, or ``(-1, 0)``."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    candidates = [(i, n) for i, n in ((lf, 2), (crlf, 4)) if i >= 0]
    return min(candidates) if candidates else (-1, 0)


def _length(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def parse_headers(raw: bytes) -> tuple[dict[str, str], str | None]:
    """``Name: value`` lines (values URL-decoded) -> dict; the first occurrence of a name
    wins. Returns ``(headers, None)`` or ``({}, reason)`` when no line is a header."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    headers: dict[str, str] = {}
    bad = 0
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or _HEADER_NAME.fullmatch(name) is None:
            bad += 1
            continue
        if name not in headers:
            value = value.strip()
            headers[name] = unquote(value, errors="replace") if "%" in value else value
    if not headers:
        return {}, "not a header block"
    if bad > len(headers):
        return {}, "mostly not header lines"
    return headers, None


def parse_event(message: Message) -> Event:
    """The event carried by a ``text/event-plain`` or ``text/event-json`` message."""
    if message.content_type == EVENT_JSON:
        return parse_event_json(message.body)
    return parse_event_plain(message.body)


def parse_event_plain(body: bytes) -> Event:
    """An ``event-plain`` body: URL-encoded header lines, an empty line, then (when the
    headers carry ``Content-Length``) the event's own body."""
    end, sep = _block_end(bytearray(body))
    head, rest = (body, b"") if end < 0 else (body[:end], body[end + sep :])
    headers, problem = parse_headers(head)
    if problem is not None:
        raise EventError(problem)
    if "Event-Name" not in headers:
        raise EventError("no Event-Name")
    inner = ""
    length_text = headers.get("Content-Length")
    if length_text is not None:
        length = _length(length_text)
        if length is None or length > len(rest):
            raise EventError(f"bad event Content-Length {length_text[:32]!r}")
        inner = rest[:length].decode("utf-8", errors="replace")
    return Event(headers, inner)


def parse_event_json(body: bytes) -> Event:
    """An ``event-json`` body: one JSON object of string values (``_body`` is the body)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventError("not a JSON object")
    headers = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if k != "_body"}
    if "Event-Name" not in headers:
        raise EventError("no Event-Name")
    inner = data.get("_body", "")
    return Event(headers, inner if isinstance(inner, str) else "")


def encode_event_plain(headers: dict[str, str], body: str = "") -> bytes:
    """Serialize an event like ``switch_event_serialize`` does, inside its outer framing
    (used by tests and by nothing on the gateway's side)."""
    lines = [f"{name}: {quote(value, safe='')}\n" for name, value in headers.items()]
    payload = "".join(lines)
    if body:
        raw = body.encode()
        payload += f"Content-Length: {len(raw)}\n\n"
        inner = payload.encode() + raw
    else:
        inner = (payload + "\n").encode()
    return f"Content-Length: {len(inner)}\nContent-Type: {EVENT_PLAIN}\n\n".encode() + inner


def command(line: str, *args: str) -> bytes:
    """One client command (``auth``, ``event``, ``api`` ...) ready for the wire. Arguments
    may not contain CR, LF or NUL (they would start a second command)."""
    parts = [line, *args]
    for part in parts:
        if any(c in part for c in "\r\n\0"):
            raise ValueError(f"an argument of ESL command {line!r} contains a line break or NUL")
    return (" ".join(parts) + "\n\n").encode()
