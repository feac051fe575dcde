"""The ``cti-gateway`` command line.

Each command is a subparser registered in :func:`build_parser` by an ``_add_<command>``
function; the subparser's ``handler`` default is called with the parsed arguments and
returns the exit status. Exit status 2 means the input (arguments or configuration) is
wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from .config import GatewayConfig
from .config_loader import load_config, load_config_apart
from .errors import ConfigError, GatewayError
from .logs import import_structlog

if TYPE_CHECKING:
    from adapters.registry import AdapterRegistry

__all__ = ["build_parser", "main"]

#: Exit status for invalid input: bad arguments (argparse's own choice) or a bad config.
EXIT_INVALID = 2

#: Exit status of ``run`` when the gateway cannot start (the store cannot be opened, the
#: address is taken ...): the configuration is valid, the environment is not.
EXIT_START_FAILED = 1

#: Exit status of ``simulate`` when the gateway does not answer (nothing was sent).
EXIT_UNREACHABLE = 3

#: Exit status when stdout's reader closed the pipe early (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141

#: The configuration ``run`` uses when no --config is given.
DEFAULT_CONFIG = "config/gateway.yaml"

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cti-gateway`` command; ``argv`` defaults to ``sys.argv[1:]``."""
    import_structlog()  # before anything imports it: without rich (see gateway.logs)
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        status = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (``cti-gateway replay ... | head``): stop quietly, as other
        # command-line tools do, instead of a traceback; stdout is pointed at /dev/null so
        # the interpreter's final flush cannot raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cti-gateway",
        description="Route inbound calls, chats and e-mails from contact-center systems to multi-session agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('cti-gateway')}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_check_config(commands)
    _add_run(commands)
    _add_reload(commands)
    _add_hash_token(commands)
    _add_simulate(commands)
    _add_replay(commands)
    _add_bench(commands)
    return parser


def _load(path: str, *, apart: bool = False, registry: AdapterRegistry | None = None) -> GatewayConfig | None:
    """The validated configuration, vendors' adapter settings included; or None after
    printing every problem as ``file:line: field: message`` to stderr.

    ``apart``: a large file is checked in a child process (:func:`load_config_apart`), so
    that a long-running gateway does not keep the memory the check needed. ``registry``:
    the adapters (default: :func:`~adapters.registry.default_registry`)."""
    from adapters.registry import default_registry  # imported here: only commands reading a config need it

    load = load_config_apart if apart else load_config
    try:
        return load(path, vendor_check=(default_registry() if registry is None else registry).vendor_problems)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway on a configuration file until SIGTERM or Ctrl-C.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="PATH", help=f"the YAML file (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--host", help="listen on this address instead of server.host")
    parser.add_argument("--port", type=_port, help="listen on this port instead of server.port (0..65535)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="json", choices=["json", "console"])
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from adapters.registry import AdapterRegistry

    # only the built-in adapters the vendors use are imported (a reload imports more if needed)
    registry = AdapterRegistry.discover(lazy=True)
    config = _load(args.config, apart=True, registry=registry)
    if config is None:
        return EXIT_INVALID
    # imported here: check-config must not need the server's dependencies loaded
    import structlog

    from .app import ENDPOINTS, build_app
    from .logs import configure
    from .oplog import AccessLogger
    from .serve import run as serve
    from .startup import banner, exposed_warning, sample_credentials

    configure(args.log_level, args.log_format)
    try:
        app = build_app(config, registry=registry, config_path=args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    vendor_routes = app[ENDPOINTS].routes()

    def announce(_message: str) -> None:
        lines = banner(
            config,
            version=version("cti-gateway"),
            host=host,
            port=port,
            config_path=args.config,
            vendor_routes=vendor_routes,
        )
        print("\n".join(lines), flush=True)
        warning = exposed_warning(config, host)
        if warning:
            print("\n".join(warning), file=sys.stderr, flush=True)
            structlog.get_logger("cti_gateway.cli").warning(
                "sample_credentials_exposed", host=host, settings=sample_credentials(config)
            )

    app.on_startup.append(_handle_signals)
    # the signals are ours (see _handle_signals): aiohttp's would let a second SIGTERM cut the
    # graceful shutdown short, leaving the process hanging on the journal's threads
    # served by gateway.serve (not web.run_app): it adds the idle/request-head timeout and the
    # per-address connection limit of server.*
    access: dict[str, Any] = {"access_log_class": AccessLogger} if config.server.access_log else {"access_log": None}
    try:
        serve(app, config.server, host=host, port=port, on_listening=lambda: announce(""), **access)
    except (GatewayError, OSError) as exc:  # the store cannot be opened, the port is taken ...
        print(f"cti-gateway: cannot start: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return EXIT_START_FAILED
    structlog.get_logger("cti_gateway.cli").info("stopped")
    return 0


#: where ``reload`` finds the supervisor token (never an argument: other users could see it)
TOKEN_ENV = "CTI_SUPERVISOR_TOKEN"


def _add_reload(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "reload",
        help="make the running gateway re-read its configuration file",
        description=(
            "Validate the configuration file like check-config, then ask the gateway running on it "
            "(POST /v1/admin/reload on server.host:server.port, or --url) to re-read and apply it "
            f"without a restart. The supervisor token comes from ${TOKEN_ENV}. Exit status: 0 applied, "
            "2 the file is not valid (every problem as 'file:line: field: message'; nothing changed), "
            "1 the gateway refused or failed, 3 the gateway is not reachable. SIGHUP to the gateway "
            "process does the same (problems go to its log)."
        ),
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="PATH", help=f"the gateway's YAML file (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--url", help="the gateway's base URL (default: http://server.host:server.port of the file)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (default 60)")
    parser.set_defaults(handler=_reload)


def _reload(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"reload: set ${TOKEN_ENV} to the supervisor token", file=sys.stderr)
        return EXIT_INVALID
    url = args.url
    if not url:
        host = config.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        url = f"http://{f'[{host}]' if ':' in host else host}:{config.server.port}"
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/admin/reload",
        data=json.dumps({"config": os.path.abspath(args.config)}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310 - http(s) URL
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        print(f"reload: the gateway at {url} is not reachable: {getattr(exc, 'reason', None) or exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if status == 200:
        print(_reload_summary(args.config, body))
        return 0
    error = body.get("error", {}) if isinstance(body, dict) else {}
    problems = error.get("problems") or []
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"reload: {error.get('code', status)}: {error.get('message', raw[:200])}", file=sys.stderr)
    return EXIT_INVALID if problems else 1


def _reload_summary(path: str, body: dict[str, Any]) -> str:
    lines = [f"{path}: reloaded (generation {body.get('generation')})"]
    changes: dict[str, list[str]] = body.get("changes") or {}
    restart = changes.pop("needs_restart", None)
    for kind, names in changes.items():
        lines.append(f"  {kind.replace('_', ' ')}: {', '.join(names)}")
    if not changes:
        lines.append("  nothing changed")
    if body.get("agents_retiring"):
        lines.append(f"  removed, finishing their sessions: {', '.join(body['agents_retiring'])}")
    if restart:
        lines.append(f"  needs a restart to take effect: {', '.join(restart)}")
    return "\n".join(lines)


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return port


async def _handle_signals(app: Any) -> None:
    """SIGTERM / SIGINT: the first starts the graceful shutdown (exit status 0); another one
    while it runs ends the process at once with status 128 + signal, like SIGKILL would (the
    journal is crash-safe). SIGHUP reloads the configuration file (problems: a log line,
    ``config_reload_failed``). Installed from the application's ``on_startup``."""
    import asyncio
    import contextlib
    import signal

    import structlog
    from aiohttp import web

    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:
            structlog.get_logger("cti_gateway.cli").warning("forced_exit", signal=name)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        stopping = True
        structlog.get_logger("cti_gateway.cli").info("shutting_down", signal=name)
        raise web.GracefulExit()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except NotImplementedError:  # pragma: no cover - Windows: Ctrl-C raises KeyboardInterrupt
            pass

    from .app import RELOADER

    reloader = app[RELOADER]
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        structlog.get_logger("cti_gateway.cli").info("config_reload_requested", signal="SIGHUP")
        task = loop.create_task(reloader.reload_from_signal(), name="sighup-reload")
        reloads.add(task)  # (a reference, so that the task is not collected half-way)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError, AttributeError):  # pragma: no cover - no SIGHUP on Windows
        loop.add_signal_handler(signal.SIGHUP, on_hangup)


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
    config = _load(args.path)
    if config is None:
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


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "simulate",
        help="send demo / load traffic (signed webhook offers and ends) to a running gateway",
        description=(
            "Play a webhook vendor against a running gateway: signed offers at --rate per second "
            "(a --channel mix, to --queue and/or --agent targets), each assigned or queued one ended "
            "--hold seconds later; then print the decisions, rejection reasons, latency percentiles "
            "and errors. Bounded by --count and --duration. Sends to loopback addresses only unless "
            "--allow-remote. Prints a progress line to stderr every second (--quiet: none). "
            "Exit status: 0 without errors, 1 with errors, 2 for bad arguments, 3 when the gateway "
            "is not reachable (nothing is sent then)."
        ),
    )
    parser.add_argument(
        "--config", metavar="PATH", help="take the URL, the webhook vendor, its secret and the queues from this file"
    )
    parser.add_argument("--url", help="the gateway's base URL (default: from --config, else http://127.0.0.1:8080)")
    parser.add_argument("--vendor", help="the webhook vendor's name (default: the config's first webhook vendor)")
    parser.add_argument(
        "--secret",
        help="the vendor's webhook secret (default: from --config, else $CTI_WEBHOOK_SECRET); "
        "prefer the environment: arguments are visible to other users of the machine",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="offers per second (default 20)")
    parser.add_argument("--count", type=int, default=100, help="offers in total (default 100)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="send no offer after this many seconds (default 60)"
    )
    parser.add_argument(
        "--channel",
        action="append",
        metavar="MIX",
        help="channel mix, e.g. chat=3,voice=1,email=1 (repeatable; default voice=1,chat=2,email=1)",
    )
    parser.add_argument(
        "--queue", action="append", metavar="NAME", help="offer to this queue (repeatable; default: the config's)"
    )
    parser.add_argument("--agent", action="append", metavar="ID", help="offer targeted to this agent (repeatable)")
    parser.add_argument(
        "--hold",
        type=float,
        default=1.0,
        help="seconds from an assigned/queued answer to the interaction's end (default 1)",
    )
    parser.add_argument("--no-end", action="store_true", help="send no ends: leave the interactions open")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at most (default 32)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one request may take (default 10)")
    parser.add_argument(
        "--run-id", help="prefix of event and interaction ids (default random; reuse one to see duplicates)"
    )
    parser.add_argument("--seed", type=int, help="random seed of the channel and target choice")
    parser.add_argument("--allow-remote", action="store_true", help="allow a gateway that is not on a loopback address")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="print no progress lines while running")
    parser.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .simulate import (
        GatewayUnreachable,
        SimulateError,
        SimulateOptions,
        Summary,
        options_from_config,
        parse_channel_mix,
        simulate,
    )

    defaults: dict[str, Any] = {}
    try:
        if args.config:
            config = _load(args.config)
            if config is None:
                return EXIT_INVALID
            defaults = options_from_config(config, vendor=args.vendor)
        extra: dict[str, Any] = {}
        if args.run_id:
            extra["run_id"] = args.run_id
        if args.seed is not None:
            extra["seed"] = args.seed
        options = SimulateOptions(
            url=args.url or defaults.get("url", "http://127.0.0.1:8080"),
            vendor=args.vendor or defaults.get("vendor", ""),
            # the flag, else the config's, else the environment's
            secret=args.secret or defaults.get("secret") or os.environ.get("CTI_WEBHOOK_SECRET", ""),
            rate=args.rate,
            count=args.count,
            duration=args.duration,
            channels=parse_channel_mix(args.channel or []),
            # explicit targets replace the config's queues (and its agents, used when it has no queue)
            queues=args.queue or ([] if args.agent else defaults.get("queues", [])),
            agents=args.agent or ([] if args.queue else defaults.get("agents", [])),
            hold=None if args.no_end else args.hold,
            concurrency=args.concurrency,
            timeout=args.timeout,
            allow_remote=args.allow_remote,
            **extra,
        ).validated()
    except SimulateError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_INVALID

    def show_progress(summary: Summary, elapsed_s: float) -> None:
        print(summary.progress_line(elapsed_s), file=sys.stderr, flush=True)

    try:
        summary = asyncio.run(simulate(options, progress=None if args.quiet else show_progress))
    except GatewayUnreachable as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("simulate: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.render(), flush=True)
    return 1 if summary.error_count else 0


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        help="re-run a recorded period through the engine under other capacity settings (what-if)",
        description=(
            "Re-run the period recorded in a gateway's SQLite journal through the same engine, on a "
            "simulated clock (a day takes seconds), under the recorded configuration and under each "
            "alternative (--override FILE: one alternative per file; --set PATH=VALUE: all of them "
            "together make one more), and print the figures side by side: offers, rejections by reason, "
            "waits, abandons, agent occupancy and focus. How customers and agents are modelled is in the "
            "README (section 'Capacity what-if replay'). Exit status 2 for bad arguments or configs."
        ),
    )
    parser.add_argument(
        "journal",
        metavar="JOURNAL",
        help="the SQLite journal file (store.url sqlite:///PATH), or a session report FILE.csv (less complete)",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"the recorded configuration (default {DEFAULT_CONFIG})",
    )
    parser.add_argument("--override", action="append", default=[], metavar="FILE", help="an alternative (repeatable)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="assignments",
        metavar="PATH=VALUE",
        help="e.g. capacity_profiles.blended.max_sessions=8 (repeatable; together one alternative)",
    )
    parser.add_argument("--start", help="replay offers from this time (RFC 3339 or epoch seconds)")
    parser.add_argument("--end", help="replay offers before this time")
    parser.add_argument(
        "--on-reject",
        default="drop",
        metavar="drop|retry:SECONDS[:N]",
        help="what a rejected customer does in the alternatives (default drop)",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=0.0,
        metavar="F",
        help="handle time grows by F per other session the agent holds at accept (default 0: as recorded)",
    )
    parser.add_argument("--format", default="table", choices=["table", "json", "csv"])
    parser.add_argument("--plot", metavar="FILE", help="also draw the figures into FILE.png or FILE.html")
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    import time

    from adapters.registry import default_registry

    from .replay import (
        Model,
        OnReject,
        RecordingError,
        ReplayConfigError,
        alternatives,
        compare,
        load_recorded,
    )
    from .replay.output import PlotError, as_csv, as_json, plot, table
    from .replay.recording import load, parse_time
    from .replay.run import as_time

    def fail(message: str) -> int:
        print(f"replay: {message}", file=sys.stderr)
        return EXIT_INVALID

    try:
        on_reject = OnReject.parse(args.on_reject)
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
    except ValueError as exc:
        return fail(str(exc))
    if not 0 <= args.slowdown <= 10:
        return fail("--slowdown is 0 to 10")
    if args.plot and not args.plot.lower().endswith((".png", ".html", ".htm")):
        return fail(f"--plot {args.plot}: the plot is a .png or .html file")
    vendor_check = default_registry().vendor_problems
    try:
        recorded, raw = load_recorded(args.config, vendor_check=vendor_check)
        scenarios = alternatives(raw, overrides=args.override, assignments=args.assignments, vendor_check=vendor_check)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except ReplayConfigError as exc:
        for problem in exc.problems:
            print(f"replay: {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        recording = load(args.journal, start=start, end=end)
    except RecordingError as exc:
        return fail(str(exc))
    model = Model(on_reject=on_reject, slowdown=args.slowdown)
    began = time.perf_counter()
    result = compare(recording, recorded, scenarios, model)
    took = time.perf_counter() - began
    check = result.fidelity
    header = [
        f"Replay of {recording.source}: {as_time(recording.start)} .. {as_time(recording.end)}, "
        f"{len(result.results)} runs in {took:.2f} s",
        f"Model: agents ready all period; recorded accept delays and handle times; {model.describe()}",
        f"Fidelity: the recorded config replayed takes the recorded decisions for {check.identical} of "
        f"{check.interactions} interactions",
    ]
    for scenario in scenarios:
        header.append(f"{scenario.name}: {'; '.join(scenario.changes)}")
    header.append("")
    if args.format == "json":
        meta = {
            "source": recording.source,
            "model": {"on_reject": str(model.on_reject), "slowdown": model.slowdown, "presence": "ready"},
            "fidelity": {
                "interactions": check.interactions,
                "identical": check.identical,
                "mismatches": check.mismatches[:20],
            },
            "seconds": round(took, 3),
        }
        print(as_json(result.summaries, meta))
    elif args.format == "csv":
        sys.stdout.write(as_csv(result.summaries))
    else:
        print(table(result.summaries, header=header))
        for mismatch in check.mismatches[:5]:
            print(f"  differs: {mismatch}")
    if args.plot:
        try:
            plot(result.summaries, args.plot)
        except PlotError as exc:
            print(f"replay: {exc}", file=sys.stderr)
            return 1
        print(f"replay: plot written to {args.plot}", file=sys.stderr)
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not sizes or any(n < 1 or n > 1_000_000 for n in sizes):
        raise argparse.ArgumentTypeError("every size must be 1..1000000")
    return sizes


def _figures(text: str) -> tuple[str, ...]:
    from .bench import SELECTABLE

    wanted = tuple(x.strip().upper() for x in text.split(",") if x.strip())
    unknown = [x for x in wanted if x not in SELECTABLE]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"figures are {', '.join(SELECTABLE)} (comma-separated), not {text!r}")
    return wanted


def _positive(kind: type[int] | type[float], high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range (0 < x <= {high:g})")
        return value

    return parse


def _store_url(scheme: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        schemes = ("redis", "rediss") if scheme == "redis" else ("postgresql", "postgres")
        given = text.partition("://")[0] if "://" in text else ""
        if given not in schemes:  # (never echo the URL: it may carry a password)
            raise argparse.ArgumentTypeError(f"a {scheme}:// URL, not {given + '://' if given else 'that'}")
        return text

    return parse


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="measure the performance figures P1-P6 (and CLUSTER) on this machine",
        description=(
            "Start a gateway, a bare aiohttp server, a load generator and agent desktops as separate "
            "processes on loopback and print P1-P6 (throughput ratio, open-loop offer latency, routing "
            "decision time, RSS with many desktops, lost/duplicated offers, memory growth) with the "
            "machine's description. Takes a few minutes with the default sizes. --figures cluster "
            "measures offers/s of the embedded gateway next to 1, 2 and 3 instances on Redis + PostgreSQL "
            "(--redis/--postgres, or local redis-server and PostgreSQL started here)."
        ),
    )
    parser.add_argument(
        "--figures",
        type=_figures,
        default=None,
        metavar="P1,P2,...",
        help="only these figures (default P1-P6); CLUSTER: offers/s of the embedded gateway next to "
        "1, 2 and 3 instances on Redis + PostgreSQL",
    )
    parser.add_argument("--repeat", type=_positive(int, 20), default=1, help="runs per figure (medians shown)")
    parser.add_argument("--agents", type=_positive(int, 100_000), default=100, help="agents of P1/P2/P5/P6")
    parser.add_argument("--p1-duration", type=_positive(float, 600), default=5.0, metavar="S")
    parser.add_argument("--p1-concurrency", type=_positive(int, 1000), default=32, metavar="N")
    parser.add_argument(
        "--p2-rate",
        type=_positive(float, 10_000),
        default=None,
        metavar="PER_S",
        help="offered rate of P2 (default: half of P1's saturated rate)",
    )
    parser.add_argument("--p2-duration", type=_positive(float, 600), default=10.0, metavar="S")
    parser.add_argument(
        "--p3-agents",
        type=_sizes,
        default=(1_000, 100_000),
        metavar="N,N",
        help="agent counts of P3 (smallest and largest compared)",
    )
    parser.add_argument("--p3-decisions", type=_positive(int, 1_000_000), default=20_000, metavar="N")
    parser.add_argument("--p4-desktops", type=_positive(int, 15_000), default=10_000, metavar="N")
    parser.add_argument("--p6-offers", type=_positive(int, 1_000_000), default=20_000, metavar="N")
    parser.add_argument(
        "--p6-rate",
        type=_positive(float, 10_000),
        default=None,
        metavar="PER_S",
        help="offered rate of P6 (default: half of P1's saturated rate)",
    )
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite", help="the gateway's journal")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the gateway's event loop (uvloop: what `run` uses)",
    )
    parser.add_argument(
        "--cluster-instances",
        type=_sizes,
        default=(1, 2, 3),
        metavar="N,N",
        help="CLUSTER: instance counts measured next to the embedded gateway",
    )
    parser.add_argument("--cluster-duration", type=_positive(float, 600), default=5.0, metavar="S")
    parser.add_argument("--cluster-concurrency", type=_positive(int, 1000), default=64, metavar="N")
    parser.add_argument(
        "--redis",
        type=_store_url("redis"),
        default=None,
        metavar="URL",
        help="CLUSTER: the Redis to use (each setup its own key prefix, deleted after it); "
        "default: a private redis-server started here",
    )
    parser.add_argument(
        "--postgres",
        type=_store_url("postgresql"),
        default=None,
        metavar="URL",
        help="CLUSTER: the PostgreSQL database the records go to (a scratch one: bench rows are left "
        "in it); default: a private PostgreSQL started here",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON to PATH")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import json

    from .bench import FIGURES, Bench, BenchError, BenchOptions

    options = BenchOptions(
        figures=args.figures or FIGURES,
        repeat=args.repeat,
        agents=args.agents,
        p1_duration=args.p1_duration,
        p1_concurrency=args.p1_concurrency,
        p2_rate=args.p2_rate,
        p2_duration=args.p2_duration,
        p3_sizes=args.p3_agents,
        p3_decisions=args.p3_decisions,
        p4_desktops=args.p4_desktops,
        p6_offers=args.p6_offers,
        p6_rate=args.p6_rate,
        store=args.store,
        loop=args.loop,
        cluster_instances=args.cluster_instances,
        cluster_duration=args.cluster_duration,
        cluster_concurrency=args.cluster_concurrency,
        redis_url=args.redis,
        postgres_url=args.postgres,
        verbose=args.verbose,
    )
    try:
        results = Bench(options, emit=lambda text: print(text, flush=True)).run()
    except BenchError as exc:
        print(f"cti-gateway bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    return 0
