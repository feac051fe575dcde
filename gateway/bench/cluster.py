"""The cluster figure of ``cti-gateway bench`` (``--figures cluster``): offers per second
answered by one embedded gateway (SQLite journal) next to 1, 2 and 3 gateway instances on
one Redis (``store: redis://``) with PostgreSQL records, in one run on this machine.

Every setup is started afresh: its gateways as ``cti-gateway run`` processes, its agents
made ready over REST, then the load generator (:mod:`.loadgen`, a separate process) posts
signed webhook offers to the queues, closed loop for ``duration`` seconds with
``concurrency`` in flight, round robin over the setup's instances. The agents' slots fill
within the first second; most offers are then answered ``rejected`` (the queue is
``on_full: reject``): the figure is decisions per second, each one appended to the shared
log and applied by every instance. With ``repeat`` > 1 the setups run interleaved
(embedded, 1, 2, 3, embedded, ...) and the medians are shown.

Redis and PostgreSQL: the URLs given (``--redis``, ``--postgres``; each setup then uses its
own key prefix on that Redis, deleted afterwards, and writes its records into that
database), else a private ``redis-server`` and PostgreSQL started here on loopback when
their binaries are found (stopped by PID at the end), else a one-line error naming what is
missing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ClusterBench", "LocalPostgres", "LocalRedis", "cluster_rows"]

AGENTS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """A private redis-server (append-only, fsync at every write, as production should run)."""

    def __init__(self, workdir: Path) -> None:
        from .runner import BenchError

        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError(
                "the cluster figure needs Redis: pass --redis redis://HOST:PORT/DB, "
                "or install redis-server (apt-get install redis-server) to have one started here"
            )
        self.directory = workdir / "redis"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)]
        args += ["--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited with {self.proc.returncode}: see {self.directory}/redis.log")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise BenchError("redis-server did not answer within 15 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalPostgres:
    """A private PostgreSQL (``initdb`` + ``postgres`` on loopback, in a directory of its own;
    as the ``postgres`` user when run as root, since PostgreSQL refuses to run as root)."""

    PASSWORD = "cti-bench"

    def __init__(self) -> None:
        from .runner import BenchError

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
        binary = found[-1] if found else shutil.which("postgres")
        if binary is None:
            raise BenchError(
                "the cluster figure needs PostgreSQL: pass --postgres postgresql://USER:PASSWORD@HOST/DB, "
                "or install postgresql (apt-get install postgresql) to have one started here"
            )
        self.bin = Path(binary).parent
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise BenchError("PostgreSQL cannot run as root and there is no postgres user") from None
        self.directory = Path(tempfile.mkdtemp(prefix="cti-bench-pg-"))
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self.port = _free_port()
        pwfile = self.directory / "pw"
        pwfile.write_text(self.PASSWORD + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        data = str(self.directory / "data")
        self._run(
            str(self.bin / "initdb"),
            *("-D", data, "-U", "postgres", f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"),
            *("-E", "UTF8", "--no-locale", "--no-sync"),
        )
        pwfile.unlink()
        self.log = self.directory / "postgres.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", data, "-p", str(self.port), "-k", str(self.directory)]
                + ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                **self._as_user(),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"postgres exited with {self.proc.returncode}: see {self.log}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"postgres did not accept connections within 60 s: see {self.log}")

    def _as_user(self) -> dict[str, Any]:
        return {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid}

    def _run(self, *args: str) -> None:
        from .runner import BenchError

        done = subprocess.run(
            list(args),
            capture_output=True,
            timeout=120,
            check=False,
            cwd=self.directory,
            **self._as_user(),
        )
        if done.returncode != 0:
            raise BenchError(f"{Path(args[0]).name} exited with {done.returncode}: {done.stderr.decode()[-500:]}")

    def database(self, name: str) -> str:
        """A new empty database; its URL."""
        psql = [str(self.bin / "psql"), "-h", str(self.directory), "-p", str(self.port), "-U", "postgres"]
        self._run(*psql, "-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}")
        return f"postgresql://postgres:{self.PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Setup:
    label: str
    instances: int  # 0: the embedded default (one process, SQLite)


SETUPS_LABEL = "embedded (SQLite), 1 process"


def _config(store: str, records: str | None, prefix: str | None, port: int) -> dict[str, Any]:
    from .runner import QUEUES, SECRET, VENDOR, token_of

    agents = [f"c{n:03d}" for n in range(AGENTS)]
    body: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "rate_limit_per_s": 0, "max_connections_per_address": 0},
        "store": {"url": store, **({"prefix": prefix} if prefix else {})},
        "capacity_profiles": {"blended": {"max_sessions": 8, "channels": {"voice": 1}}},
        "queues": [{"name": q, "on_full": "reject"} for q in QUEUES],
        "agents": [
            {
                "id": a,
                "profile": "blended",
                "queues": QUEUES,
                "token_sha256": hashlib.sha256(token_of(a).encode()).hexdigest(),
            }
            for a in agents
        ],
        "vendors": [{"name": VENDOR, "adapter": "webhook", "secret": SECRET}],
    }
    if records:
        body["records"] = {"url": records}
    return body


class ClusterBench:
    """Runs the setups (see the module docstring); :meth:`run` returns the results."""

    def __init__(
        self,
        workdir: Path,
        *,
        instances: tuple[int, ...] = (1, 2, 3),
        duration: float = 5.0,
        concurrency: int = 64,
        repeat: int = 1,
        redis_url: str | None = None,
        postgres_url: str | None = None,
        loop: str = "uvloop",
        log: Any = None,
    ) -> None:
        self.workdir = workdir
        self.instances = instances
        self.duration = duration
        self.concurrency = concurrency
        self.repeat = repeat
        self.redis_url = redis_url
        self.postgres_url = postgres_url
        self.loop = loop
        self.log = log or (lambda text: None)
        self._n = 0

    def run(self) -> dict[str, Any]:
        redis: LocalRedis | None = None
        pg: LocalPostgres | None = None
        try:
            if self.redis_url is None:
                redis = LocalRedis(self.workdir)
            if self.postgres_url is None:
                pg = LocalPostgres()
            runs: dict[str, list[dict[str, Any]]] = {}
            for r in range(self.repeat):
                for count in (0, *self.instances):
                    result = self.once(count, r, redis, pg)
                    runs.setdefault(str(count), []).append(result)
                    self.log(f"cluster {count or 'embedded'} run {r + 1}: {result['offers_per_s']:.0f} offers/s")
            return {
                "duration_s": self.duration,
                "concurrency": self.concurrency,
                "redis": "given" if redis is None else "started here (appendonly, appendfsync always)",
                "postgres": "given" if pg is None else "started here",
                "runs": runs,
            }
        finally:
            if redis is not None:
                redis.stop()
            if pg is not None:
                pg.stop()

    def once(self, count: int, r: int, redis: LocalRedis | None, pg: LocalPostgres | None) -> dict[str, Any]:
        from .runner import Proc, loadgen, token_of, wait_http

        self._n += 1
        name = f"c{self._n}"
        where = self.workdir / f"cluster-{name}"
        where.mkdir(parents=True, exist_ok=True)
        prefix: str | None = None
        procs: list[Proc] = []
        try:
            if count == 0:
                store, records, gateways = f"sqlite:///{where / 'journal.db'}", None, 1
            else:
                store = redis.url if redis is not None else str(self.redis_url)
                prefix = f"cti-bench-{os.getpid()}-{name}:"
                records = pg.database(f"bench_{os.getpid()}_{name}") if pg is not None else self.postgres_url
                gateways = count
            urls = []
            for n in range(gateways):
                port = _free_port()
                path = where / f"gateway{n}.yaml"
                path.write_text(yaml.safe_dump(_config(store, records, prefix, port), sort_keys=False))
                argv = [*_python_module("gateway"), "run", "--config", str(path), "--log-level", "warning"]
                procs.append(Proc(f"{name}-gw{n}", argv, where, env={"CTI_GATEWAY_LOOP": self.loop}))
                urls.append(f"http://127.0.0.1:{port}")
            for url, proc in zip(urls, procs, strict=True):
                wait_http(url + "/readyz", proc, timeout=120)
            for n in range(AGENTS):
                agent = f"c{n:03d}"
                _put_json(
                    f"{urls[n % len(urls)]}/v1/agents/{agent}/presence", {"state": "ready"}, token=token_of(agent)
                )
            g = loadgen(
                where,
                f"loadgen-{name}",
                run=f"cl{self._n}r{r}",
                target="gateway",
                url=urls[0],
                urls=urls,
                mode="closed",
                duration=self.duration,
                concurrency=self.concurrency,
            )
            elapsed = g["end"] - g["start"]
            return {
                "instances": count,
                "offers": g["answered"],
                "offers_per_s": g["answered"] / elapsed if elapsed > 0 else 0.0,
                "decisions": g["decisions"],
                "errors": g["errors"],
            }
        finally:
            for proc in procs:
                proc.stop()
            if prefix is not None:
                _delete_prefix(store, prefix)


def _python_module(name: str) -> list[str]:
    import sys

    return [sys.executable, "-m", name]


def _put_json(url: str, body: dict[str, Any], *, token: str) -> None:
    from .runner import BenchError

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except OSError as exc:
        raise BenchError(f"PUT {url}: {exc}") from None


def _delete_prefix(url: str, prefix: str) -> None:
    """Remove the keys a setup left on the Redis given (its log and consumer group)."""
    import redis

    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def cluster_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(setup, offers/s, detail)`` per setup: the embedded default first."""
    out: list[tuple[str, str, str]] = []
    for key, runs in result["runs"].items():
        count = int(key)
        label = SETUPS_LABEL if count == 0 else f"redis + postgresql, {count} instance{'s' if count > 1 else ''}"
        rates = [x["offers_per_s"] for x in runs]
        decisions: dict[str, int] = {}
        errors: dict[str, int] = {}
        for x in runs:
            for k, v in x["decisions"].items():
                decisions[k] = decisions.get(k, 0) + v
            for k, v in x["errors"].items():
                errors[k] = errors.get(k, 0) + v
        detail = f"{sum(x['offers'] for x in runs):,} offers: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(decisions.items())
        )
        if len(rates) > 1:
            detail += "; per run " + ", ".join(f"{x:,.0f}" for x in rates)
        if errors:
            detail += f"; errors {errors}"
        out.append((label, f"{statistics.median(rates):,.0f}", detail))
    return out


def cluster_table(result: dict[str, Any]) -> str:
    data = cluster_rows(result)
    head = ("setup", "offers/s", "detail")
    widths = [max(len(head[i]), *(len(r[i]) for r in data)) for i in range(3)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in data]
    intro = (
        f"cluster: offers answered per second, closed loop, {result['concurrency']} in flight for "
        f"{result['duration_s']:g} s per setup, round robin over the instances; Redis {result['redis']}, "
        f"PostgreSQL {result['postgres']}"
    )
    return "\n".join([intro, line, sep, *body])
