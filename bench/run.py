"""
C{make bench}: the side-by-side benchmarks, results in C{bench/results/}.

    .venv/bin/python bench/run.py            # the full run
    .venv/bin/python bench/run.py --quick    # a smoke run, under 3 minutes

It starts its own servers (C{tests/services.sh} in a fresh C{/tmp/hg-bench.*}
directory, PgBouncer, hoopgate with recording on, with and without masking
rules, with an SSH listener, and a bastion sshd for ProxyJump), measures,
interleaving the contenders in every repetition, and writes C{latest.md},
C{latest.json}, C{postgres.png}, C{ssh.png} and the profile under
C{bench/results/}. Progress goes to
standard error. Everything it started is stopped on the way out, also on
an error or Ctrl-C. Must run as root (PostgreSQL and PgBouncer run as
C{postgres} through runuser).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import ParamSpec, TypeVar

import OpenSSL
from attrs import evolve as attrs_evolve
from attrs import frozen

import twisted
from bench import measure
from bench.report import (
    BYTES_PER_MIB,
    CONTENDERS,
    MASKING_CONTENDERS,
    SSH_CONTENDERS,
    BigSelectRow,
    ConnectRow,
    IdleRow,
    MaskingRow,
    Results,
    SelectRow,
    SshLoginRow,
    TransferRow,
    from_json,
    render_markdown,
    to_json,
)
from bench.servers import (
    DATABASE,
    MASKED_COLUMNS,
    MASKED_TABLE,
    ROLE,
    ROOT,
    Bastion,
    BenchError,
    Endpoint,
    Gateway,
    PgBouncer,
    Services,
    SshClients,
    SshGateway,
    tail,
)
from tests.oidc.mint import mint

__all__ = ["Settings", "main"]

RESULTS = ROOT / "bench" / "results"

#: pgbench's scale: 1,000,000 rows in pgbench_accounts.
SCALE = 10

#: Lifetime of the token every gateway session logs in with, seconds.
TOKEN_TTL = 8 * 3600

#: The SSH transfer directions, in table order.
SSH_DIRECTIONS = ("download", "upload")

T = TypeVar("T")
P = ParamSpec("P")


@frozen
class Settings:
    """
    How much to measure.

    Attributes:
        quick: A smoke run.
        seconds: pgbench's C{-T} for the select-only runs.
        repeats: Repetitions of every select-only row.
        matrix_tls: The TLS settings of the select-only matrix.
        modes: pgbench's C{-M} values.
        clients: pgbench's C{-c} values.
        connect_seconds: C{-T} of the new-session runs.
        connect_clients: C{-c} of the new-session runs.
        connect_repeats: Repetitions of the new-session row.
        big_repeats: Repetitions of the million-row SELECT.
        idle_sessions: Sessions of the idle rows.
        idle_tls: The TLS settings of the idle rows.
        masking_rows: Rows of the masking table.
        masking_repeats: Repetitions of the masking row.
        ssh_bytes: Bytes of each SSH transfer.
        ssh_repeats: Repetitions of the SSH rows.
        profile_seconds: How long py-spy samples; 0: no profile.
    """

    quick: bool
    seconds: int
    repeats: int
    matrix_tls: tuple[bool, ...]
    modes: tuple[str, ...]
    clients: tuple[int, ...]
    connect_seconds: int
    connect_clients: int
    connect_repeats: int
    big_repeats: int
    idle_sessions: int
    idle_tls: tuple[bool, ...]
    masking_rows: int
    masking_repeats: int
    ssh_bytes: int
    ssh_repeats: int
    profile_seconds: int

    @classmethod
    def full(cls) -> Settings:
        return cls(
            quick=False,
            seconds=10,
            repeats=3,
            matrix_tls=(False, True),
            modes=("simple", "prepared"),
            clients=(1, 8, 32),
            connect_seconds=10,
            connect_clients=8,
            connect_repeats=3,
            big_repeats=3,
            idle_sessions=2000,
            idle_tls=(False, True),
            masking_rows=1_000_000,
            masking_repeats=3,
            ssh_bytes=500 * BYTES_PER_MIB,
            ssh_repeats=3,
            profile_seconds=10,
        )

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            quick=True,
            seconds=2,
            repeats=1,
            matrix_tls=(False,),
            modes=("simple", "prepared"),
            clients=(1, 8, 32),
            connect_seconds=3,
            connect_clients=8,
            connect_repeats=1,
            big_repeats=1,
            idle_sessions=200,
            idle_tls=(True,),
            masking_rows=1_000_000,
            masking_repeats=1,
            ssh_bytes=100 * BYTES_PER_MIB,
            ssh_repeats=1,
            profile_seconds=3,
        )

    def steps(self) -> int:
        """
        How many measurements the run makes (for the progress lines).
        """
        matrix = len(self.matrix_tls) * len(self.modes) * len(self.clients)
        return (
            matrix * len(CONTENDERS) * self.repeats
            + 2 * self.connect_repeats
            + len(CONTENDERS) * self.big_repeats
            + len(self.idle_tls)
            + 1
            + len(MASKING_CONTENDERS) * self.masking_repeats
            + len(SSH_CONTENDERS) * (1 + len(SSH_DIRECTIONS)) * self.ssh_repeats
            + (1 if self.profile_seconds else 0)
        )


class Progress:
    """
    Progress lines on standard error: elapsed time, step count, what runs.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def _stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"

    def note(self, text: str) -> None:
        """
        A line that is not a measurement.
        """
        print(f"bench {self._stamp()} {text}", file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        """
        A measurement starts.
        """
        self.done += 1
        print(
            f"bench {self._stamp()} {self.done:3d}/{self.total} {text} ...",
            file=sys.stderr,
            end=" ",
            flush=True,
        )

    def result(self, text: str) -> None:
        """
        The measurement that started last has ended.
        """
        print(text, file=sys.stderr, flush=True)


def _rotated(items: Sequence[T], by: int) -> list[T]:
    """
    C{items} rotated left by C{by}: each repetition starts with another
    contender, so none always runs first (or right after another).
    """
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as e:
        return f"({e.strerror})"
    # Some tools (ssh -V) print their version on standard error.
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_meta(settings: Settings) -> dict[str, str]:
    """
    The machine, the versions and the settings, for the report.
    """

    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hoopgate"])
    plugins = _output(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "plugins"]
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": _memory(),
        "kernel": platform.release(),
        "load average at start": _load(),
        "hoopgate commit": commit
        + (" (gateway code modified)" if dirty or plugins else ""),
        "PostgreSQL": _output(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "pgbench": _output(["pgbench", "--version"]),
        "PgBouncer": _output(["pgbouncer", "--version"]),
        "OpenSSH": _output(["ssh", "-V"]),
        "Python / Twisted / pyOpenSSL": (
            f"{platform.python_version()} / {twisted.__version__} / "
            f"{OpenSSL.__version__}"
        ),
        "run": (
            f"{'QUICK (smoke) ' if settings.quick else ''}select-only "
            f"-T {settings.seconds} s x {settings.repeats} repetitions, "
            f"-j 2, scale {SCALE}; new sessions -c {settings.connect_clients} "
            f"-T {settings.connect_seconds} s x {settings.connect_repeats}; "
            f"1M-row SELECT x {settings.big_repeats}; "
            f"masking {settings.masking_rows:,} rows x {settings.masking_repeats}; "
            f"SSH {settings.ssh_bytes // BYTES_PER_MIB} MiB each way x "
            f"{settings.ssh_repeats}; "
            f"{settings.idle_sessions} idle sessions"
        ),
    }


def _psql_local(
    servers: dict[str, str],
    *statements: str,
    user: str = "postgres",
    database: str = "postgres",
) -> None:
    """
    Run C{statements} over the Unix socket (trusted), each its own C{-c}
    (so each is its own transaction).
    """
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    command += ["-h", servers["PG_SOCKET_DIR"], "-p", servers["PG_PORT"]]
    command += ["-U", user, "-d", database]
    for sql in statements:
        command += ["-c", sql]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"psql {statements[0][:60]!r}...: {tail(done.stderr)}")


def _psql_superuser(servers: dict[str, str], sql: str) -> None:
    _psql_local(servers, sql)


def tune_postgres(servers: dict[str, str]) -> None:
    """
    Stop the test server's statement and connection logging, which would
    otherwise write a log line per query for every contender.
    """
    for setting in ("log_statement = 'none'", "log_connections = off"):
        _psql_superuser(servers, f"ALTER SYSTEM SET {setting}")
    _psql_superuser(servers, "ALTER SYSTEM SET log_disconnections = off")
    _psql_superuser(servers, "SELECT pg_reload_conf()")


def init_pgbench(direct: Endpoint, work_dir: Path) -> None:
    """
    C{pgbench -i -s SCALE}, directly.
    """
    done = subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(SCALE)],
        env=direct.libpq_env(False),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work_dir,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"pgbench -i failed: {tail(done.stderr)}")


def masking_table_sql(rows: int) -> list[str]:
    """
    The statements that make the masking table: C{rows} rows of an id, an
    e-mail address (12 hex digits of an MD5 at C{example.com}), an SSN-like
    C{NNN-NN-NNNN} and a 16-digit card-like number, all derived from the id
    (the shapes L{bench.parse.check_people_rows} checks); then C{VACUUM
    (FREEZE, ANALYZE)}, so no read sets hint bits for the ones after it.
    """
    table = MASKED_TABLE
    return [
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id integer NOT NULL, email text NOT NULL, "
        "ssn text NOT NULL, card text NOT NULL)",
        f"INSERT INTO {table} SELECT g, "  # noqa: S608 - constants only
        "substr(md5(g::text), 1, 12) || '@example.com', "
        "lpad((g % 1000)::text, 3, '0') || '-' || lpad((g % 100)::text, 2, '0') "
        "|| '-' || lpad((g % 10000)::text, 4, '0'), "
        "'4' || lpad(((g::bigint * 7919) % 1000000000000000)::text, 15, '0') "
        f"FROM generate_series(1, {int(rows)}) g",
        f"VACUUM (FREEZE, ANALYZE) {table}",
    ]


def create_masking_table(servers: dict[str, str], rows: int) -> None:
    """
    Make the masking table as C{ROLE} (its owner, so the gateway's
    credential reads it).
    """
    _psql_local(servers, *masking_table_sql(rows), user=ROLE, database=DATABASE)


class Bench:
    """
    One benchmark run: the servers, the settings, the results so far.
    """

    def __init__(self, settings: Settings, run_dir: Path, servers: dict[str, str]):
        self.settings = settings
        self.run_dir = run_dir
        self.servers = servers
        self.results = Results(meta=machine_meta(settings))
        self.progress = Progress(settings.steps())
        self.token = mint(servers["OIDC_ISSUER"], "ci-runner", TOKEN_TTL)
        self.direct = Endpoint(
            "direct", int(servers["PG_PORT"]), ROLE, servers["APP_PASSWORD"]
        )

    # --- helpers ---------------------------------------------------------

    def gateway(
        self,
        stack: contextlib.ExitStack,
        name: str,
        tls: bool,
        *,
        masking: bool = False,
    ) -> Gateway:
        """
        A started gateway, stopped when C{stack} closes.
        """
        gateway = Gateway(
            self.run_dir / name, self.servers, upstream_tls=tls, masking=masking
        )
        stack.callback(gateway.stop)
        gateway.start()
        return gateway

    def endpoint_of(self, gateway: Gateway) -> Endpoint:
        return Endpoint("hoopgate", gateway.port, "bench", self.token, gateway.pid)

    def attempt(
        self,
        errors: list[str],
        what: str,
        action: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | None:
        """
        Run one measurement, C{action(*args, **kwargs)}; a failure is noted
        in C{errors} and the progress line, and the run goes on.
        """
        try:
            return action(*args, **kwargs)
        except (BenchError, ValueError, subprocess.TimeoutExpired, OSError) as e:
            message = f"{what}: {e}".replace("\n", " / ")
            errors.append(message)
            self.progress.result(f"FAILED: {message[:300]}")
            return None

    # --- phases ----------------------------------------------------------

    def run(self) -> None:
        """
        Every phase: TLS off, TLS on, masking, SSH, idle sessions.
        """
        for tls in (False, True):
            with contextlib.ExitStack() as stack:
                self.phase(stack, tls)
        with contextlib.ExitStack() as stack:
            self.masking(stack)
        with contextlib.ExitStack() as stack:
            self.ssh(stack)
        for tls in self.settings.idle_tls:
            with contextlib.ExitStack() as stack:
                self.idle(stack, tls)

    def phase(self, stack: contextlib.ExitStack, tls: bool) -> None:
        """
        One TLS setting: its gateway and PgBouncer, then its rows.
        """
        word = "on" if tls else "off"
        self.progress.note(f"TLS {word}: starting hoopgate and pgbouncer")
        gateway = self.gateway(stack, f"gateway-tls-{word}", tls)
        bouncer = PgBouncer(self.run_dir / f"pgbouncer-tls-{word}", self.servers, tls)
        stack.callback(bouncer.stop)
        bouncer.start()
        endpoints = {
            "direct": self.direct,
            "pgbouncer": Endpoint(
                "pgbouncer",
                bouncer.port,
                ROLE,
                self.servers["APP_PASSWORD"],
                bouncer.pid,
            ),
            "hoopgate": self.endpoint_of(gateway),
        }
        self.warm_up(endpoints, tls, gateway)

        if tls in self.settings.matrix_tls:
            self.matrix(endpoints, tls, gateway)
        if not tls and self.settings.profile_seconds:
            self.profile(endpoints["hoopgate"], gateway)
        if tls:
            self.connect(endpoints, gateway)
            self.bigselect(endpoints, gateway)

    def warm_up(
        self, endpoints: dict[str, Endpoint], tls: bool, gateway: Gateway
    ) -> None:
        """
        A short run per contender, so caches and lazy imports are warm.
        """
        self.progress.note("warming up")
        for endpoint in endpoints.values():
            measure.run_select(
                endpoint,
                tls,
                mode="simple",
                clients=8,
                seconds=1,
                work_dir=self.run_dir,
            )
        gateway.clear_recordings()

    def matrix(
        self, endpoints: dict[str, Endpoint], tls: bool, gateway: Gateway
    ) -> None:
        """
        The select-only rows, every repetition running every contender.
        """
        settings = self.settings
        rows = [
            SelectRow(tls=tls, mode=mode, clients=clients)
            for mode in settings.modes
            for clients in settings.clients
        ]
        self.results.select.extend(rows)
        for repetition in range(settings.repeats):
            for row in rows:
                for contender in _rotated(CONTENDERS, repetition):
                    self.progress.step(
                        f"select-only TLS {'on' if tls else 'off'} {row.mode} "
                        f"-c {row.clients} {contender} "
                        f"(run {repetition + 1}/{settings.repeats})"
                    )
                    self.attempt(
                        row.errors,
                        f"select-only TLS {'on' if tls else 'off'} {row.mode} "
                        f"-c {row.clients} {contender}",
                        self.select_once,
                        row,
                        endpoints[contender],
                        gateway,
                    )

    def select_once(self, row: SelectRow, endpoint: Endpoint, gateway: Gateway) -> None:
        run = measure.run_select(
            endpoint,
            row.tls,
            mode=row.mode,
            clients=row.clients,
            seconds=self.settings.seconds,
            work_dir=self.run_dir,
        )
        if endpoint.contender == "hoopgate":
            measure.check_recordings(gateway, row.clients, run.transactions)
        row.runs[endpoint.contender].append(run)
        cpu = (
            "" if run.proxy_cpu_pct is None else f", proxy CPU {run.proxy_cpu_pct:.0f}%"
        )
        self.progress.result(
            f"{run.tps:,.0f} tps, avg {run.latency_avg_ms:.3f} ms, "
            f"p99 {run.p99_ms:.3f} ms{cpu}"
        )

    def connect(self, endpoints: dict[str, Endpoint], gateway: Gateway) -> None:
        """
        New sessions per second with TLS: direct SCRAM, gateway token.
        """
        settings = self.settings
        row = ConnectRow(clients=settings.connect_clients)
        self.results.connect.append(row)
        for repetition in range(settings.connect_repeats):
            for contender in _rotated(("direct", "hoopgate"), repetition):
                self.progress.step(
                    f"new sessions TLS -C -c {row.clients} {contender} "
                    f"(run {repetition + 1}/{settings.connect_repeats})"
                )
                self.attempt(
                    row.errors,
                    f"new sessions {contender}",
                    self.connect_once,
                    row,
                    endpoints[contender],
                    gateway,
                )

    def connect_once(
        self, row: ConnectRow, endpoint: Endpoint, gateway: Gateway
    ) -> None:
        run, sessions = measure.run_connect(
            endpoint, row.clients, self.settings.connect_seconds, self.run_dir
        )
        if endpoint.contender == "hoopgate":
            measure.check_recordings(gateway, sessions, sessions)
        row.runs[endpoint.contender].append(run)
        self.progress.result(
            f"{run.tps:,.1f} sessions/s, connect {run.connection_ms or 0:.2f} ms"
        )

    def bigselect(self, endpoints: dict[str, Endpoint], gateway: Gateway) -> None:
        """
        The million-row SELECT with TLS, every contender per repetition.
        """
        row = BigSelectRow(rows=measure.BIG_ROWS)
        self.results.bigselect.append(row)
        repeats = self.settings.big_repeats
        for repetition in range(repeats):
            for contender in _rotated(CONTENDERS, repetition):
                self.progress.step(
                    f"1M-row SELECT TLS {contender} (run {repetition + 1}/{repeats})"
                )
                self.attempt(
                    row.errors,
                    f"1M-row SELECT {contender}",
                    self.bigselect_once,
                    row,
                    endpoints[contender],
                    gateway,
                )

    def bigselect_once(
        self, row: BigSelectRow, endpoint: Endpoint, gateway: Gateway
    ) -> None:
        run = measure.run_bigselect(endpoint, self.run_dir)
        if endpoint.contender == "hoopgate":
            row.wire_bytes = measure.recorded_bytes_to_client(gateway)
        row.runs[endpoint.contender].append(run)
        peak = (
            ""
            if run.peak_rss_kib is None
            else f", peak RSS {run.peak_rss_kib / 1024:.1f} MiB"
        )
        self.progress.result(
            f"{run.seconds:.2f} s, {run.rows / run.seconds:,.0f} rows/s{peak}"
        )

    def masking(self, stack: contextlib.ExitStack) -> None:
        """
        The masking table read whole, TLS on every leg: direct, through a
        gateway without masking rules, through one masking three columns.
        A few rows through each first (they must agree, and be masked
        where they should), which also warms the gateways' catalog caches.
        """
        tls = True
        settings = self.settings
        self.progress.note("masking: starting hoopgate without and with masking rules")
        gateways = {
            "masking-off": self.gateway(stack, "gateway-masking-off", tls),
            "masking-on": self.gateway(stack, "gateway-masking-on", tls, masking=True),
        }
        endpoints = {
            "direct": self.direct,
            **{
                name: attrs_evolve(self.endpoint_of(gw), contender=name)
                for name, gw in gateways.items()
            },
        }
        row = MaskingRow(
            rows=settings.masking_rows, masked_columns=len(MASKED_COLUMNS), tls=tls
        )
        self.results.masking.append(row)

        self.progress.step("masking: 5 rows through each contender, compared")
        self.attempt(
            row.errors,
            "masking sample",
            measure.check_masking_sample,
            endpoints["direct"],
            endpoints["masking-off"],
            endpoints["masking-on"],
            tls,
        )
        for gateway in gateways.values():
            gateway.clear_recordings()
        if row.errors:
            return  # nothing to measure if the contenders disagree
        self.progress.result("direct and unmasked agree; masked where they should")

        for repetition in range(settings.masking_repeats):
            for contender in _rotated(MASKING_CONTENDERS, repetition):
                self.progress.step(
                    f"masking {row.rows:,} rows {contender} "
                    f"(run {repetition + 1}/{settings.masking_repeats})"
                )
                self.attempt(
                    row.errors,
                    f"masking {contender}",
                    self.masking_once,
                    row,
                    endpoints[contender],
                    gateways.get(contender),
                )

    def masking_once(
        self, row: MaskingRow, endpoint: Endpoint, gateway: Gateway | None
    ) -> None:
        run = measure.run_masking(
            endpoint,
            gateway,
            masked=endpoint.contender == "masking-on",
            tls=row.tls,
            rows=row.rows,
            work_dir=self.run_dir,
        )
        row.runs[endpoint.contender].append(run)
        growth = run.rss_growth_kib
        extra = "" if growth is None else f", RSS growth {growth / 1024:.1f} MiB"
        self.progress.result(
            f"{run.seconds:.2f} s, {run.rows / run.seconds:,.0f} rows/s{extra}"
        )

    def ssh(self, stack: contextlib.ExitStack) -> None:
        """
        SSH logins and transfers: straight to the test sshd, through a
        bastion sshd with ProxyJump, through the gateway.
        """
        settings = self.settings
        self.progress.note("SSH: starting a bastion sshd and hoopgate's SSH listener")
        bastion = Bastion(self.run_dir / "bastion", self.servers)
        stack.callback(bastion.stop)
        bastion.start()
        gateway = SshGateway(self.run_dir / "gateway-ssh", self.servers)
        stack.callback(gateway.stop)
        gateway.start()
        clients = SshClients(
            self.run_dir / "ssh-clients", self.servers, bastion, gateway, self.token
        )
        login = SshLoginRow()
        self.results.ssh_login = login
        rows = [
            TransferRow(direction=d, size=settings.ssh_bytes) for d in SSH_DIRECTIONS
        ]
        self.results.ssh.extend(rows)

        repeats = settings.ssh_repeats
        for repetition in range(repeats):
            of = f"(run {repetition + 1}/{repeats})"
            for contender in _rotated(SSH_CONTENDERS, repetition):
                self.progress.step(f"ssh -v HOST true {contender} {of}")
                self.attempt(
                    login.errors,
                    f"ssh true {contender}",
                    self.ssh_login_once,
                    login,
                    clients,
                    contender,
                    gateway,
                )
            for row in rows:
                for contender in _rotated(SSH_CONTENDERS, repetition):
                    self.progress.step(
                        f"SSH {row.direction} {row.size // BYTES_PER_MIB} MiB "
                        f"{contender} {of}"
                    )
                    self.attempt(
                        row.errors,
                        f"SSH {row.direction} {contender}",
                        self.transfer_once,
                        row,
                        clients,
                        contender,
                        gateway,
                    )

    def ssh_login_once(
        self,
        login: SshLoginRow,
        clients: SshClients,
        contender: str,
        gateway: SshGateway,
    ) -> None:
        seconds, ciphers = measure.run_ssh_login(clients, contender)
        if contender == "hoopgate":
            gateway.clear_recordings()
        login.seconds[contender].append(seconds)
        login.ciphers[contender] = ciphers
        self.progress.result(f"{seconds:.3f} s, {'; '.join(ciphers)}")

    def transfer_once(
        self,
        row: TransferRow,
        clients: SshClients,
        contender: str,
        gateway: SshGateway,
    ) -> None:
        through = contender == "hoopgate"
        run = measure.run_ssh_transfer(
            clients,
            contender,
            row.direction,
            row.size,
            pid=gateway.pid if through else None,
            work_dir=self.run_dir,
        )
        if through:
            measure.check_ssh_recording(gateway, row.direction, row.size)
        row.runs[contender].append(run)
        cpu = (
            ""
            if run.proxy_cpu_pct is None
            else f", gateway CPU {run.proxy_cpu_pct:.0f}%"
        )
        rate = run.bytes / BYTES_PER_MIB / run.seconds
        self.progress.result(f"{run.seconds:.2f} s, {rate:.1f} MiB/s{cpu}")

    def idle(self, stack: contextlib.ExitStack, tls: bool) -> None:
        """
        Idle sessions through a fresh gateway.
        """
        word = "on" if tls else "off"
        sessions = self.settings.idle_sessions
        gateway = self.gateway(stack, f"gateway-idle-tls-{word}", tls)
        endpoint = self.endpoint_of(gateway)
        self.progress.step(f"{sessions} idle sessions TLS {word}")
        errors: list[str] = []
        row = self.attempt(
            errors,
            f"{sessions} idle sessions TLS {word}",
            measure.run_idle,
            gateway,
            endpoint,
            tls,
            sessions,
            self.progress.note,
        )
        if row is None:
            row = IdleRow(tls, sessions, 0, 0, 0, error=errors[0])
        else:
            self.progress.result(f"{row.per_session_kib:.1f} KiB per session")
        self.results.idle.append(row)
        gateway.clear_recordings()

    def profile(self, endpoint: Endpoint, gateway: Gateway) -> None:
        """
        py-spy on the gateway under C{pgbench -S -c 8}, simple protocol.
        """
        seconds = self.settings.profile_seconds
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.progress.step(f"profile: py-spy on hoopgate, pgbench -S -c 8, {seconds} s")
        errors: list[str] = []
        summary = self.attempt(
            errors,
            "profile",
            measure.run_profile,
            endpoint,
            mode="simple",
            clients=8,
            seconds=seconds,
            work_dir=self.run_dir,
            output=RESULTS / "profile-postgres.txt",
            fmt="raw",
        )
        if summary is not None:
            self.results.profile = summary
            self.results.profile_workload = (
                f"pgbench -S -M simple -c 8 -j 2, TLS off, {seconds} s at 250 Hz"
            )
            top = summary.functions[0]
            self.progress.result(f"top: {top.name} {top.self_pct:.1f}%")
            self.attempt(
                errors,
                "profile flame graph",
                measure.run_profile,
                endpoint,
                mode="simple",
                clients=8,
                seconds=seconds,
                work_dir=self.run_dir,
                output=RESULTS / "profile-postgres.svg",
                fmt="flamegraph",
            )
        gateway.clear_recordings()
        self.results.meta.update(
            {f"profile error {i}": e for i, e in enumerate(errors)}
        )


# --- the run -------------------------------------------------------------------


def _raise_nofile() -> None:
    """
    Open files up to the hard limit, for this process and (inherited) the
    gateway: 2,000 idle sessions are 4,000 sockets there.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BenchError(
            "run as root: PostgreSQL and PgBouncer run as postgres via runuser"
        )
    for tool in ("pgbench", "psql", "pgbouncer", "runuser", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (run: make setup)")


def write_results(results: Results) -> list[Path]:
    """
    C{latest.md}, C{latest.json} and the chart under C{bench/results/}.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = [RESULTS / "latest.md", RESULTS / "latest.json"]
    written[0].write_text(render_markdown(results))
    written[1].write_text(json.dumps(to_json(results), indent=2) + "\n")
    # matplotlib comes with the bench extra only (make bench installs it);
    # importing it here keeps the rest of this module importable without.
    from bench.chart import write_postgres_chart, write_ssh_chart  # noqa: PLC0415

    chart = RESULTS / "postgres.png"
    if write_postgres_chart(results, chart):
        written.append(chart)
    ssh_chart = RESULTS / "ssh.png"
    if write_ssh_chart(results, ssh_chart):
        written.append(ssh_chart)
    return written


def _has_errors(results: Results) -> bool:
    rows: list[
        SelectRow | ConnectRow | BigSelectRow | MaskingRow | TransferRow | SshLoginRow
    ] = [
        *results.select,
        *results.connect,
        *results.bigselect,
        *results.masking,
        *results.ssh,
        *([results.ssh_login] if results.ssh_login else []),
    ]
    return any(row.errors for row in rows) or any(row.error for row in results.idle)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hoopgate's benchmarks (make bench)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy")
    parser.add_argument(
        "--run-prefix",
        # mkdtemp makes a new directory of its own (mode 0700), never reuses one.
        default=os.environ.get("HG_BENCH_RUN_PREFIX", "/tmp/hg-bench."),  # noqa: S108
        help="where the run directory goes: PREFIX followed by random "
        "characters (default: $HG_BENCH_RUN_PREFIX, or %(default)s)",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        type=Path,
        help="measure nothing: write latest.md and the chart again from a "
        "latest.json (after a change to the report's layout)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _run_dir(prefix: str, keep: bool) -> Iterator[Path]:
    parent, _, name = prefix.rpartition("/")
    path = Path(tempfile.mkdtemp(prefix=name, dir=parent or "."))
    path.chmod(0o755)  # postgres must reach the services' files below it
    try:
        yield path
    finally:
        if keep:
            print(f"bench: kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmarks; 0 if every measurement succeeded.
    """
    args = _parse_args(argv)
    if args.render is not None:
        results = from_json(json.loads(args.render.read_text()))
        for path in write_results(results):
            print(f"bench: wrote {path.relative_to(ROOT)}", file=sys.stderr)
        return 0

    settings = Settings.smoke() if args.quick else Settings.full()
    if (
        args.no_profile
        or shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) is None
    ):
        settings = attrs_evolve(settings, profile_seconds=0)
    _check_prerequisites()
    _raise_nofile()
    signal.signal(signal.SIGTERM, _on_signal)

    bench: Bench | None = None
    complete = False
    with _run_dir(args.run_prefix, args.keep) as run_dir:
        services = Services(run_dir / "services", settings.idle_sessions + 100)
        try:
            progress = Progress(0)
            progress.note(f"starting PostgreSQL and the OIDC issuer in {run_dir}")
            servers = services.start()
            tune_postgres(servers)
            bench = Bench(settings, run_dir, servers)
            bench.progress.note(f"pgbench -i -s {SCALE}")
            init_pgbench(bench.direct, run_dir)
            bench.progress.note(
                f"{MASKED_TABLE}: {settings.masking_rows:,} rows for the masking row"
            )
            create_masking_table(servers, settings.masking_rows)
            bench.run()
            complete = True
        except KeyboardInterrupt:
            print("bench: interrupted; stopping what was started", file=sys.stderr)
        except BenchError as e:
            print(f"bench: {e}", file=sys.stderr)
        finally:
            services.stop()
    if bench is None:
        return 1
    bench.results.meta["load average at end"] = _load()
    if not complete:
        bench.results.meta["status"] = "INCOMPLETE: the run stopped early"
    for path in write_results(bench.results):
        print(f"bench: wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0 if complete and not _has_errors(bench.results) else 1


if __name__ == "__main__":
    sys.exit(main())
