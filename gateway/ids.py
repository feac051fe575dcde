"""Random ids (session ids) without a system call and a ``uuid.UUID`` object per id.

:func:`new_id` returns what ``uuid.uuid4().hex`` returns: 32 lower-case hex digits of a
version-4 UUID (122 random bits from :func:`os.urandom`, the version and variant bits
set), unguessable as before. The random bytes are read from the operating system 256 ids
at a time; a forked child drops what its parent had read (it would repeat the parent's ids).
"""

from __future__ import annotations

import os
import threading

__all__ = ["new_id"]

#: ids per read of the operating system's random source
BATCH = 256
#: the bits of a version-4, RFC 4122 variant UUID: version nibble 4, variant bits 10
_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_SET = (0x4 << 76) | (0x2 << 62)

_buffer = b""
_next = 0
#: (the engine calls it on one thread; the lock keeps ids unique if others ever do too)
_lock = threading.Lock()


def _drop() -> None:
    global _buffer, _next, _lock
    _buffer, _next = b"", 0
    _lock = threading.Lock()  # (a fork while another thread held it leaves it held)


def new_id() -> str:
    """A new random id, formatted as ``uuid.uuid4().hex``."""
    global _buffer, _next
    with _lock:
        at = _next
        if at >= len(_buffer):
            _buffer, at = os.urandom(16 * BATCH), 0
        _next = at + 16
        chunk = _buffer[at : at + 16]
    return f"{int.from_bytes(chunk) & _CLEAR | _SET:032x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop)
