"""The ``cti-gateway`` command line.

Each command is a subparser registered in :func:`build_parser` by an ``_add_<command>``
function; the subparser's ``handler`` default is called with the parsed arguments and
returns the exit status. Exit status 2 means the input (arguments or configuration) is
wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from .config import GatewayConfig
from .config_loader import load_config
from .errors import ConfigError

__all__ = ["build_parser", "main"]

#: Exit status for invalid input: bad arguments (argparse's own choice) or a bad config.
EXIT_INVALID = 2

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cti-gateway`` command; ``argv`` defaults to ``sys.argv[1:]``."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cti-gateway",
        description="Route inbound calls, chats and e-mails from contact-center systems "
        "to multi-session agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('cti-gateway')}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_check_config(commands)
    return parser


def _add_check_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate a configuration file",
        description=(
            "Validate a YAML configuration file, ${ENV} interpolation included. "
            "Prints every problem as 'file:line: field: message' to stderr and exits 2, "
            "or prints a summary and exits 0."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="the YAML configuration file")
    parser.set_defaults(handler=_check_config)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.path}: OK ({_summary(config)})")
    return 0


def _summary(config: GatewayConfig) -> str:
    counts = (
        (len(config.capacity_profiles), "capacity profile"),
        (len(config.queues), "queue"),
        (len(config.agents), "agent"),
        (len(config.vendors), "vendor"),
    )
    return ", ".join(f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts)
