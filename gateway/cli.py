"""The ``cti-gateway`` command line.

Each command is a subparser registered in :func:`build_parser` by an ``_add_<command>``
function; the subparser's ``handler`` default is called with the parsed arguments and
returns the exit status. Exit status 2 means the input (arguments or configuration) is
wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from .config import GatewayConfig
from .config_loader import load_config
from .errors import ConfigError

__all__ = ["build_parser", "main"]

#: Exit status for invalid input: bad arguments (argparse's own choice) or a bad config.
EXIT_INVALID = 2

#: The configuration ``run`` uses when no --config is given.
DEFAULT_CONFIG = "config/gateway.yaml"

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
    _add_run(commands)
    _add_hash_token(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway on a configuration file until SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH", help=f"the YAML file (default {DEFAULT_CONFIG})")
    parser.add_argument("--host", help="listen on this address instead of server.host")
    parser.add_argument("--port", type=int, help="listen on this port instead of server.port")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="json", choices=["json", "console"])
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from adapters.registry import default_registry

    try:
        config = load_config(args.config, vendor_check=default_registry().vendor_problems)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    # imported here: check-config must not need the server's dependencies loaded
    from aiohttp import web

    from .app import build_app
    from .logs import configure

    configure(args.log_level, args.log_format)
    try:
        app = build_app(config, registry=default_registry())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port

    def announce(_message: str) -> None:
        base = f"http://{host}:{port}"
        lines = [
            f"cti-gateway {version('cti-gateway')} listening on {base} (config {args.config}, store {config.store.url})",
            f"  agent desktops: ws://{host}:{port}/v1/agents/{{id}}/ws?token=TOKEN   supervisor stream: /v1/events/ws",
        ]
        lines += [f"  vendor {v.name} ({v.adapter}): {base}/v1/vendors/{v.name}/" for v in config.vendors]
        lines.append(
            "  tokens are configured as SHA-256 hashes: `cti-gateway hash-token TOKEN` prints one "
            "(the shipped config's sample tokens are in its comments)"
        )
        print("\n".join(lines), flush=True)

    web.run_app(app, host=host, port=port, print=announce, access_log=None, shutdown_timeout=30)
    return 0


def _add_hash_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "hash-token",
        help="print the SHA-256 hash of a token, for token_sha256 / supervisor_token_sha256",
        description="Print the hex SHA-256 of TOKEN (or of standard input's first line with '-').",
    )
    parser.add_argument("token", metavar="TOKEN")
    parser.set_defaults(handler=_hash_token)


def _hash_token(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().rstrip("\n") if args.token == "-" else args.token
    if not token:
        print("hash-token: the token is empty", file=sys.stderr)
        return EXIT_INVALID
    print(hashlib.sha256(token.encode()).hexdigest())
    return 0


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
    from adapters.registry import default_registry  # imported here: only this command needs the adapters

    try:
        config = load_config(args.path, vendor_check=default_registry().vendor_problems)
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
