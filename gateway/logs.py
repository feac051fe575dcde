"""Structured logs: structlog, one JSON object per line on stderr (or a console format).

Context bound with ``structlog.contextvars`` (vendor, interaction, session ids) rides along
on every line logged inside that context.

structlog imports ``rich`` (and with it ``pygments``) whenever it is installed, only to
offer pretty tracebacks to its console renderer: ~2.7 MB of modules in a gateway that
never uses them (the JSON lines carry plain tracebacks, and the console format here prints
plain ones too: :func:`configure`). The command line imports structlog through
:func:`import_structlog`, which keeps ``rich`` out of the process.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structlog.typing import Processor

#: what structlog would import for its pretty tracebacks, none of which the gateway uses
_PRETTY = ("rich", "better_exceptions")


def import_structlog() -> ModuleType:
    """``import structlog``, without ``rich`` (or ``better_exceptions``) when structlog is
    not imported yet: structlog's own tracebacks are then the plain ones.

    The modules are hidden only while structlog is imported (``sys.modules[name] = None``
    makes their import fail, as if they were not installed); a later ``import rich``
    elsewhere works as usual. Once structlog is imported (a test process, a plug-in that
    imported it first), this changes nothing."""
    if "structlog" not in sys.modules:
        hidden = {name: sys.modules[name] for name in _PRETTY if name in sys.modules}
        try:
            for name in _PRETTY:
                sys.modules[name] = None  # type: ignore[assignment]  # the documented way to make an import fail
            import structlog
        finally:
            for name in _PRETTY:
                del sys.modules[name]
            sys.modules.update(hidden)
    import structlog

    return structlog


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the standard library's logging (aiohttp logs through it).

    Tracebacks are plain text in both formats, for structlog's lines and the standard
    library's (e.g. aiohttp's "Error handling request") alike, whether ``rich`` is installed
    or not."""
    structlog = import_structlog()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # a standard-library record's traceback as text, as structlog's own lines
                # have it (the JSON line showed "<traceback object at 0x...>" without it)
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(max(numeric, logging.WARNING))
