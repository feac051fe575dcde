"""Real peers for the Kamailio tests: Kamailio 5.6 running the shipped example
``config/examples/kamailio/kamailio.cfg`` and SIPp callers and phones, each on 127.0.0.1
and free ports, started by the tests and stopped by PID.

Locally a missing binary skips the test; in CI (``CI=true``) it fails with a clear message:
``.ci/run`` installs ``kamailio kamailio-extra-modules sip-tester``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "examples" / "kamailio"
SCENARIOS = Path(__file__).resolve().parent / "sipp"


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        message = (
            f"{binary} is not installed (apt-get install kamailio kamailio-extra-modules sip-tester; .ci/run does)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> tuple[int, int]:
    """A UDP port for SIP and a TCP port for evapi."""
    return free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)


@dataclass
class Kamailio:
    """The example kamailio.cfg, run from its own folder as the README says."""

    workdir: Path
    sip_port: int = 0
    evapi_port: int = 0
    hold_ms: int = 120_000
    ring_ms: int = 20_000
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        if not self.sip_port or not self.evapi_port:
            self.sip_port, self.evapi_port = free_ports()
        self.log_path = self.workdir / "kamailio.log"

    @property
    def sip(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    def command(self) -> list[str]:
        rundir = self.workdir / "kamailio-run"
        rundir.mkdir(parents=True, exist_ok=True)
        return [
            require("kamailio"),
            "-DD", "-E", "-f", "kamailio.cfg", "-Y", str(rundir), "-m", "64", "-M", "8",
            "-A", f"SIP_LISTEN=udp:127.0.0.1:{self.sip_port}",
            "-A", f'EVAPI_BIND="127.0.0.1:{self.evapi_port}"',
            "-A", f"HOLD_MS={self.hold_ms}",
            "-A", f"RING_MS={self.ring_ms}",
        ]  # fmt: skip

    async def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        self.process = subprocess.Popen(self.command(), cwd=EXAMPLE, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._evapi_listening():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"kamailio did not open evapi on {self.evapi_port}:\n{self.log_tail()}")

    def _evapi_listening(self) -> bool:
        # /proc/net/tcp lists listening sockets without connecting (a probe connection would
        # count as a gateway in the cfg for a moment)
        wanted = f":{self.evapi_port:04X} "
        with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
            return any(wanted in line and " 0A " in line for line in table)
        return False

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        for _ in range(100):
            if process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def sipp_scenario(tmp: Path, name: str, **subst: str) -> Path:
    """A scenario file; ``.xml.in`` templates get ``@KEY@`` replaced."""
    src = SCENARIOS / name
    if not src.name.endswith(".in"):
        return src
    text = src.read_text()
    for key, value in subst.items():
        text = text.replace(f"@{key}@", value)
    out = tmp / (src.name[:-3].replace(".xml", "") + "-" + "-".join(subst.values()) + ".xml")
    out.write_text(text)
    return out


@dataclass
class SippPhone:
    """A SIPp UAS answering every call (phone_answer.xml echoes Record-Route)."""

    workdir: Path
    scenario: str = "phone_answer.xml"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.port = self.port or free_port(socket.SOCK_DGRAM)
        log = open(self.workdir / f"phone-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [require("sipp"), "-sf", str(SCENARIOS / self.scenario), "-i", "127.0.0.1", "-p", str(self.port),
             "-nostdin", "-trace_err", "-error_file", str(self.workdir / f"phone-{self.port}-errors.log"),
             "-trace_msg", "-message_file", str(self.message_file)],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        await asyncio.sleep(0.2)
        if self.process.poll() is not None:
            raise RuntimeError(f"sipp phone exited with {self.process.returncode}")

    @property
    def message_file(self) -> Path:
        return self.workdir / f"phone-{self.port}-messages.log"

    def byes_received(self) -> list[str]:
        """Call-IDs of the BYEs the phone received (from SIPp's message trace)."""
        try:
            text = self.message_file.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for block in text.split("message received")[1:]:
            message = block.split("\n-----", 1)[0]  # up to the next trace entry
            lines = [line.strip() for line in message.split("\n")[1:] if line.strip()]
            if lines and lines[0].startswith("BYE "):
                found += [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("call-id:")]
        return found

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            for _ in range(60):
                if process.poll() is not None:
                    return
                await asyncio.sleep(0.05)
            process.kill()
            process.wait()


@dataclass
class SippResult:
    returncode: int
    call_id: str
    elapsed_s: float
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def sipp_call(
    workdir: Path,
    proxy: tuple[str, int],
    user: str,
    *,
    call_id: str,
    expect: int = 200,
    talk_ms: int = 1000,
    timeout_s: int = 20,
) -> SippResult:
    """One call by a SIPp caller to ``user`` through the proxy: ``expect`` 200 (talks
    ``talk_ms`` then hangs up: caller_talk.xml) or a refusal code (caller_refused.xml.in).
    Returns SIPp's exit code (0: the call went as expected)."""
    if expect == 200:
        scenario = SCENARIOS / "caller_talk.xml"
    else:
        scenario = sipp_scenario(workdir, "caller_refused.xml.in", CODE=str(expect))
    host, port = proxy
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        require("sipp"), f"{host}:{port}", "-sf", str(scenario), "-s", user, "-m", "1",
        "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-nostdin",
        "-d", str(talk_ms), "-timeout", str(timeout_s), "-timeout_error", "-cid_str", call_id,
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout_s + 10)
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
    return SippResult(process.returncode or 0, call_id, time.monotonic() - started, err.decode(errors="replace"))
