"""The listening sockets of ``cti-gateway run``, bound before anything else is opened.

aiohttp binds its port after the application's startup (the journal opened and restored),
so a gateway started on a port that another process holds used to open the journal first
and fail afterwards. :func:`bind` takes the port first, the way asyncio's ``create_server``
would (every address ``host`` resolves to; ``""``/``None``: every interface), and raises
:class:`PortInUse` with a one-line message naming the process that holds it when this
machine can tell (Linux ``/proc``; best effort).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from .errors import GatewayError

__all__ = ["PortInUse", "bind", "port_holder"]


class PortInUse(GatewayError):
    """The address to listen on is taken (or cannot be used)."""

    code = "port_in_use"


def _where(host: str | None, port: int) -> str:
    shown = host or "0.0.0.0"
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def bind(host: str | None, port: int, *, backlog: int = 128) -> list[socket.socket]:
    """Listening sockets for ``host:port``; :class:`PortInUse` if one cannot be bound."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUse(f"cannot listen on {_where(host, port)}: {exc.strerror}") from None
    seen: set[tuple[int, object]] = set()
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise PortInUse(_refusal(host, port, exc)) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _refusal(host: str | None, port: int, exc: OSError) -> str:
    where = _where(host, port)
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        who = f"by {holder}" if holder else "by another process"
        return f"cannot listen on {where}: the port is in use {who}; stop it or choose another port (--port)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def port_holder(port: int) -> str | None:
    """``pid 1234 (python3 -m gateway run ...)`` of a process listening on TCP ``port``, if
    this machine tells (Linux ``/proc``, processes this user may inspect); else None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) in targets:
                            return f"pid {entry.name} ({_command(entry.name)})"
    return None


def _command(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
    return (text[:120] + "...") if len(text) > 120 else text or "?"
