"""What a gateway process loads and keeps: libraries it does not use stay unloaded (P4)."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def test_the_gateway_does_not_load_asyncpg_unless_records_use_postgresql() -> None:
    """asyncpg costs ~10 MB of resident memory; only ``records: {url: postgresql://...}``
    needs it (and then loads it)."""
    code = (
        "import sys\n"
        "import gateway.app, gateway.cli, gateway.records\n"
        "from adapters.registry import default_registry\n"
        "default_registry()\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg loaded at start'\n"
        "from gateway.records import PostgresJournal\n"
        "assert 'asyncpg' in sys.modules and PostgresJournal.__name__ == 'PostgresJournal'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- what `cti-gateway run` imports ----------------------------------------------------------

#: the built-in adapters' modules and the libraries only they use (websockets is the
#: desktop socket's too: gateway.api.desktop_socket)
OTHER_ADAPTERS = (
    "adapters.twilio",
    "adapters.asterisk_ami",
    "adapters.chat_ws",
    "adapters.kamailio",
    "adapters.smtp_push",
    "adapters.freeswitch_esl",
    "adapters.imap_pull",
    "imapclient",
    "aiosmtpd",
)

#: ``cti-gateway run`` in a child process that prints the modules it imported when it exits
RUN_AND_LIST = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules)), flush=True))\n"
    "from gateway.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_gateway(tmp_path: Path, vendors: str, agents: int = 2) -> set[str]:
    """Start ``cti-gateway run`` on a configuration with ``vendors``, wait until it is ready,
    stop it (SIGTERM) and return every module it imported."""
    port = _free_port()
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}}}",
        f"store: {{url: 'sqlite:///{tmp_path / 'gw.db'}'}}",
        "capacity_profiles: {p: {max_sessions: 2}}",
        "queues: [{name: support}]",
        "agents:",
        *(f"  - {{id: a{n}, profile: p, queues: [support], token_sha256: '{n:064x}'}}" for n in range(agents)),
        "vendors:",
        vendors,
    ]
    config = tmp_path / "gateway.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_AND_LIST, "run", "--config", str(config), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not get ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    [listed] = [line for line in out.splitlines() if line.startswith("MODULES ")]
    modules: set[str] = set(json.loads(listed.removeprefix("MODULES ")))
    return modules


WEBHOOK = "  - {name: crm, adapter: webhook, secret: 0123456789abcdef-webhook-secret}"


def test_the_running_gateway_imports_only_the_adapters_its_vendors_use_and_no_rich(tmp_path: Path) -> None:
    """A gateway whose vendors use the webhook imports no other built-in adapter nor their
    libraries (~3 MB of modules), and not ``rich``/``pygments`` (~2.7 MB), which structlog
    would import for pretty tracebacks the gateway never shows (rich is installed here: the
    test extra's schemathesis brings it)."""
    assert importlib.util.find_spec("rich") is not None  # otherwise this proves nothing about it
    modules = _run_gateway(tmp_path, WEBHOOK)

    assert {"adapters.webhook", "structlog", "aiohttp"} <= modules
    assert sorted(m for m in modules if m.split(".")[0] in {"rich", "pygments"}) == []
    assert sorted(modules.intersection(OTHER_ADAPTERS)) == []


def test_a_vendor_of_another_adapter_imports_that_one(tmp_path: Path) -> None:
    vendor = f"  - {{name: mail, adapter: smtp_push, listen_port: {_free_port()}, queue: support}}"
    modules = _run_gateway(tmp_path, f"{WEBHOOK}\n{vendor}")

    assert {"adapters.webhook", "adapters.smtp_push", "aiosmtpd"} <= modules
    assert sorted(modules.intersection(set(OTHER_ADAPTERS) - {"adapters.smtp_push", "aiosmtpd"})) == []


def test_a_large_configuration_checked_apart_imports_only_its_adapters(tmp_path: Path) -> None:
    """Above ``APART_MIN_BYTES`` the file is checked in a forked child (the parent keeps no
    YAML tree): the parent still imports only the adapters its vendors use."""
    modules = _run_gateway(tmp_path, WEBHOOK, agents=3000)

    assert "adapters.webhook" in modules
    assert sorted(modules.intersection(OTHER_ADAPTERS)) == []
