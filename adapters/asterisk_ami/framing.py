"""AMI framing: bytes in, messages out; actions out as bytes. No I/O, no asyncio.

The Asterisk Manager Interface is line based: ``Key: Value`` lines, a message ends with an
empty line. :class:`Framer` accepts any split of the byte stream across reads, CRLF and bare
LF line ends (Asterisk itself accepts both), repeated keys (``Variable:``, ``Output:``),
keys in any case, the ``Asterisk Call Manager/<version>`` banner line (also when a block
follows it without an empty line in between), and both styles of ``Command`` reply:

* Asterisk <= 13: ``Response: Follows`` + ``Privilege: Command`` + ``ActionID`` + raw
  output lines (empty ones included) up to ``--END COMMAND--``;
* newer: ``Response: Success`` with one ``Output:`` header per line.

Input it cannot make sense of is never fatal: it comes out as :class:`Malformed` (with the
reason and a short excerpt) and framing goes on with the next block. Memory is bounded: a
line longer than ``max_line`` bytes or a block of more than ``max_lines`` lines is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "BANNER",
    "Banner",
    "Framer",
    "Malformed",
    "Message",
    "encode_action",
]

#: the greeting Asterisk writes first on every manager connection
BANNER = re.compile(r"Asterisk Call Manager/(\S+)\s*")
#: a header line: a token, a colon, (normally) one space, the value
_HEADER = re.compile(r"([A-Za-z0-9_.\-]+):(?: ?)(.*)")
_END_COMMAND = "--END COMMAND--"
#: the first line of an event or a response
_NEW_BLOCK = re.compile(r"(?i)(Event|Response): \S")
#: headers Asterisk writes before the raw output of a ``Response: Follows``
_FOLLOWS_HEADERS = frozenset({"privilege", "actionid"})

MAX_LINE = 64 * 1024
MAX_LINES = 4096


@dataclass(frozen=True, slots=True)
class Banner:
    """The ``Asterisk Call Manager/<version>`` line (the version is AMI's, not Asterisk's)."""

    version: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that was skipped, and why (``excerpt``: at most 120 characters of it)."""

    reason: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class Message:
    """One AMI message: its headers in order (keys as sent) and, for a ``Command`` reply,
    its output lines (from ``Output:`` headers or the raw ``Follows`` text)."""

    headers: tuple[tuple[str, str], ...]
    output: tuple[str, ...] = field(default=())

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        wanted = key.lower()
        for name, value in self.headers:
            if name.lower() == wanted:
                return value
        return default

    def getall(self, key: str) -> list[str]:
        wanted = key.lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    @property
    def kind(self) -> str:
        """``event``, ``response`` or ``action`` (by the first header), else ``unknown``."""
        first = self.headers[0][0].lower() if self.headers else ""
        return first if first in ("event", "response", "action") else "unknown"

    @property
    def name(self) -> str:
        """The event name, the response status or the action name."""
        return self.headers[0][1] if self.headers else ""

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str]:
        """Headers as a dict (first value of each key, keys as sent) for logs and tests."""
        out: dict[str, str] = {}
        for name, value in self.headers:
            out.setdefault(name, value)
        return out


Item = Banner | Message | Malformed


class Framer:
    """Incremental AMI parser: :meth:`feed` bytes, get the complete items so far."""

    def __init__(self, *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self._buffer = bytearray()
        self._skipping_line = False  # inside a line that was too long: drop up to its end
        self._headers: list[tuple[str, str]] = []
        self._output: list[str] = []
        self._lines = 0
        self._follows = False  # inside a ``Response: Follows`` block
        self._follows_output = False  # its output has started
        self._follows_done = False  # ``--END COMMAND--`` seen
        self._bad: str | None = None  # the block is malformed: the first reason

    def feed(self, data: bytes) -> list[Item]:
        items: list[Item] = []
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            raw = bytes(self._buffer[start:end])
            start = end + 1
            if self._skipping_line:
                self._skipping_line = False
                continue
            if len(raw) > self.max_line:
                items.extend(self._line_too_long(raw))
                continue
            items.extend(self._line(raw.removesuffix(b"\r").decode("utf-8", errors="replace")))
        del self._buffer[:start]
        if len(self._buffer) > self.max_line:
            items.extend(self._line_too_long(bytes(self._buffer[:120])))
            self._buffer.clear()
            self._skipping_line = True
        return items

    def _line_too_long(self, raw: bytes) -> Iterator[Item]:
        yield Malformed(f"line longer than {self.max_line} bytes skipped", _excerpt(raw.decode("utf-8", "replace")))

    def _line(self, line: str) -> Iterator[Item]:
        if self._follows and not self._follows_done:
            if self._output and not self._output[-1].strip() and _NEW_BLOCK.match(line):
                # an empty line, then an event or a response: the command output never
                # ended (a stray "Response: Follows"); give up on it, not on what follows
                yield Malformed("Response: Follows without --END COMMAND--", _excerpt("\n".join(self._output)))
                self._reset()
            else:
                self._follows_line(line)
                return
        if not line.strip():
            yield from self._end_block()
            return
        if not self._headers and self._bad is None:
            banner = BANNER.fullmatch(line)
            if banner:
                yield Banner(banner.group(1))
                return
        self._lines += 1
        if self._lines > self.max_lines:
            if self._bad is None:
                self._bad = f"block longer than {self.max_lines} lines"
            return
        match = _HEADER.fullmatch(line)
        if match is None:
            if not self._headers and self._bad is None:
                # garbage before any header: skip this line alone, keep the block that follows
                self._lines -= 1
                yield Malformed("not an AMI header line", _excerpt(line))
                return
            if self._bad is None:
                self._bad = "not an AMI header line"
                self._headers.append(("", line))
            return
        key, value = match.group(1), match.group(2)
        self._headers.append((key, value))
        if len(self._headers) == 1 and key.lower() == "response" and value.strip().lower() == "follows":
            self._follows = True

    def _follows_line(self, line: str) -> None:
        if not self._follows_output:
            match = _HEADER.fullmatch(line)
            if match and match.group(1).lower() in _FOLLOWS_HEADERS:
                self._headers.append((match.group(1), match.group(2)))
                return
            self._follows_output = True
        self._lines += 1
        if line.endswith(_END_COMMAND):
            head = line[: -len(_END_COMMAND)]
            if head:
                self._output.append(head)
            self._follows_done = True
            return
        if self._lines > self.max_lines:
            self._bad = f"command output longer than {self.max_lines} lines without --END COMMAND--"
            self._follows_done = True
            return
        self._output.append(line)

    def _end_block(self) -> Iterator[Item]:
        if not self._headers and self._bad is None:
            self._reset()
            return  # blank lines between blocks
        headers, output, bad = self._headers, self._output, self._bad
        self._reset()
        if bad is not None:
            text = "\n".join(f"{k}: {v}" if k else v for k, v in headers)
            yield Malformed(bad, _excerpt(text))
            return
        if not output:
            output = [value for key, value in headers if key.lower() == "output"]
        yield Message(tuple(headers), tuple(output))

    def _reset(self) -> None:
        self._headers = []
        self._output = []
        self._lines = 0
        self._follows = self._follows_output = self._follows_done = False
        self._bad = None

    @property
    def pending(self) -> int:
        """Bytes and lines held for an incomplete block (for tests and metrics)."""
        return len(self._buffer) + self._lines


def _excerpt(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def encode_action(name: str, action_id: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """``Action: name`` + ``ActionID`` + headers, CRLF line ends, an empty line at the end.

    Raises :class:`ValueError` for a key that is not a token or a value with CR, LF or NUL
    in it (which would smuggle extra headers or actions onto the wire).
    """
    lines = [("Action", name), ("ActionID", action_id), *headers]
    out: list[str] = []
    for key, value in lines:
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid AMI header name {key!r}")
        if _VALUE_FORBIDDEN.search(value):
            raise ValueError(f"AMI header {key} has a line break or NUL in its value")
        out.append(f"{key}: {value}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")
