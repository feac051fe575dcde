"""Netstring framing of Kamailio ``evapi`` (``modparam("evapi", "netstring_format", 1)``).

Each message on the TCP connection is ``<decimal length>:<payload>,`` (D. J. Bernstein's
netstrings). :class:`NetstringDecoder` takes the bytes of the stream in whatever pieces the
socket delivers them and gives back complete payloads; :func:`encode` frames one payload.

Garbage (a length that is not a decimal number, a frame not closed by ``,``) is logged by
the caller and skipped: the decoder drops bytes up to the next place where a frame of a
JSON object starts (``<digits>:{``), which is what evapi carries, and counts what it
dropped in :attr:`NetstringDecoder.skipped`. If no frame can be found within
``max_frame`` bytes, or a length announces more than ``max_frame``, it raises
:class:`FramingError` and the connection is dropped and opened again.
"""

from __future__ import annotations

import re

__all__ = ["MAX_FRAME", "FramingError", "NetstringDecoder", "encode"]

#: the largest payload accepted (evapi messages are small JSON objects)
MAX_FRAME = 1 << 20
#: digits of the largest length accepted
_MAX_DIGITS = len(str(MAX_FRAME))
#: where a frame carrying a JSON object may start (used to resynchronise after garbage)
_FRAME_START = re.compile(rb"(?<!\d)(\d{1,%d}):\{" % _MAX_DIGITS)
_TAIL = re.compile(rb"\d{1,%d}:?\Z" % _MAX_DIGITS)


class FramingError(ValueError):
    """The stream cannot be resynchronised: drop the connection."""


def encode(payload: bytes) -> bytes:
    """``payload`` as one netstring."""
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        #: bytes dropped as garbage so far
        self.skipped = 0
        #: short descriptions of the garbage seen since the last :meth:`take_problems`
        self._problems: list[str] = []

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def take_problems(self) -> list[str]:
        """What was skipped since the last call (for the caller to log), oldest first."""
        problems, self._problems = self._problems, []
        return problems

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream; return every payload now complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while self._buffer:
            frame = self._next()
            if frame is None:
                break
            frames.append(frame)
        if len(self._buffer) > self.max_frame + _MAX_DIGITS + 2:
            raise FramingError(f"no complete netstring in {len(self._buffer)} buffered bytes")
        return frames

    def _next(self) -> bytes | None:
        buf = self._buffer
        colon = buf.find(b":", 0, _MAX_DIGITS + 1)
        if colon < 0:
            if len(buf) <= _MAX_DIGITS and buf.isdigit():
                return None  # the length is still arriving
            self._skip("a length that is not a number")
            return None if not self._buffer else self._next()
        digits = bytes(buf[:colon])
        if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
            self._skip("a length that is not a number")
            return None if not self._buffer else self._next()
        length = int(digits)
        if length > self.max_frame:
            raise FramingError(f"a netstring announces {length} bytes (limit {self.max_frame})")
        end = colon + 1 + length
        if len(buf) < end + 1:
            return None  # the payload is still arriving
        if buf[end] != ord(","):
            self._skip("a netstring not closed by ','")
            return None if not self._buffer else self._next()
        payload = bytes(buf[colon + 1 : end])
        del buf[: end + 1]
        return payload

    def _skip(self, why: str) -> None:
        """Drop bytes up to the next plausible frame start (at least one byte)."""
        match = next(
            (
                m
                for m in _FRAME_START.finditer(self._buffer, 1)
                if int(m.group(1)) <= self.max_frame and m.group(1)[:1] != b"0"
            ),
            None,
        )
        if match is not None:
            drop = match.start()
        else:
            # keep a tail that may begin the next frame ("12" or "123:" of "123:{...")
            tail = _TAIL.search(self._buffer, 1)
            drop = tail.start() if tail is not None else len(self._buffer)
        self.skipped += drop
        self._problems.append(f"{why}: skipped {drop} bytes {bytes(self._buffer[: min(drop, 40)])!r}")
        del self._buffer[:drop]
