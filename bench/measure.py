"""
One measurement each: a pgbench select-only run, a new-session run, a
million-row SELECT, an idle-session set, a profile.

Each function runs its tool with a timeout, checks that the work really
happened (no failed transactions, the rows all arrived, the gateway
recorded every session), and returns the figures as the report's records.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.hotspots import ProfileSummary, parse_collapsed, summarize
from bench.idle import hold_idle_sessions
from bench.parse import (
    PgbenchSummary,
    parse_pgbench_summary,
    parse_transaction_log,
    percentile,
)
from bench.report import BigSelectRun, ConnectRun, IdleRow, PgbenchRun
from bench.servers import (
    BenchError,
    Endpoint,
    Gateway,
    cpu_seconds,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
    tail,
)

__all__ = [
    "BIG_QUERY",
    "BIG_ROWS",
    "check_recordings",
    "recorded_bytes_to_client",
    "run_bigselect",
    "run_connect",
    "run_idle",
    "run_profile",
    "run_select",
]

#: The million-row SELECT: an integer and a 32-character text per row.
BIG_ROWS = 1_000_000
# A constant: no outside text reaches the query.
BIG_QUERY = f"select g, md5(g::text) from generate_series(1, {BIG_ROWS}) g"  # noqa: S608

#: Seconds a tool may run beyond its planned duration.
SLACK = 120

#: Seconds the gateway has to finish writing the recordings of closed sessions.
RECORDING_WAIT = 20.0

_COMPLETED = b'"event":"statement.completed"'
_CLOSED = b'"event":"session.closed"'


class _CpuMeter:
    """
    The CPU share of one process over a stretch of wall time.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid) if pid else 0.0
        self.wall = time.monotonic()

    def percent(self) -> float | None:
        if self.pid is None:
            return None
        wall = time.monotonic() - self.wall
        return 100 * (cpu_seconds(self.pid) - self.cpu) / wall


def _pgbench(
    endpoint: Endpoint, tls: bool, args: list[str], seconds: int, cwd: Path
) -> tuple[PgbenchSummary, str]:
    command = ["pgbench", "-n", *args, "-T", str(seconds)]
    done = subprocess.run(
        command,
        env=endpoint.libpq_env(tls),
        capture_output=True,
        text=True,
        timeout=seconds + SLACK,
        cwd=cwd,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"pgbench via {endpoint.contender} exited {done.returncode}:\n"
            f"{tail(done.stderr + done.stdout)}"
        )
    summary = parse_pgbench_summary(done.stdout)
    if summary.failed or summary.transactions == 0:
        raise BenchError(
            f"pgbench via {endpoint.contender}: {summary.transactions} "
            f"transactions, {summary.failed} failed"
        )
    return summary, done.stdout


def _log_lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="ascii") as lines:
            yield from lines


def run_select(
    endpoint: Endpoint,
    tls: bool,
    *,
    mode: str,
    clients: int,
    seconds: int,
    work_dir: Path,
) -> PgbenchRun:
    """
    C{pgbench -S -M mode -c clients} for C{seconds}, with per-transaction
    logs for the 99th percentile (parsed, then removed).
    """
    prefix = work_dir / f"tx-{endpoint.contender}-{time.monotonic_ns()}"
    args = ["-S", "-M", mode, "-c", str(clients), "-j", str(min(2, clients))]
    args += ["--log", f"--log-prefix={prefix}"]
    meter = _CpuMeter(endpoint.pid)
    summary, _ = _pgbench(endpoint, tls, args, seconds, work_dir)
    cpu = meter.percent()

    logs = sorted(work_dir.glob(f"{prefix.name}.*"))
    try:
        sample = parse_transaction_log(_log_lines(logs))
    finally:
        for path in logs:
            path.unlink()
    if not sample.latencies_us:
        raise BenchError(f"pgbench via {endpoint.contender} logged no transaction")

    return PgbenchRun(
        tps=summary.tps,
        latency_avg_ms=summary.latency_avg_ms,
        p99_ms=percentile(sample.latencies_us, 99) / 1000,
        transactions=summary.transactions,
        proxy_cpu_pct=cpu,
    )


def run_connect(
    endpoint: Endpoint, clients: int, seconds: int, work_dir: Path
) -> tuple[ConnectRun, int]:
    """
    C{pgbench -C -S} with TLS: a new session for every transaction.

    Returns:
        The run, and the transactions (sessions) pgbench counted.
    """
    args = ["-C", "-S", "-c", str(clients), "-j", str(min(2, clients))]
    meter = _CpuMeter(endpoint.pid)
    summary, _ = _pgbench(endpoint, True, args, seconds, work_dir)
    run = ConnectRun(
        tps=summary.tps,
        connection_ms=summary.connection_ms,
        proxy_cpu_pct=meter.percent(),
    )
    return run, summary.transactions


def _finished_recordings(gateway: Gateway) -> tuple[list[bytes], int]:
    """
    The recordings' contents once every one ends with C{session.closed}
    (or the wait ran out), and how many do not.
    """
    deadline = time.monotonic() + RECORDING_WAIT
    while True:
        contents = [path.read_bytes() for path in gateway.recordings.iterdir()]
        unfinished = sum(1 for c in contents if _CLOSED not in c[-4096:])
        if not unfinished or time.monotonic() > deadline:
            return contents, unfinished
        time.sleep(0.2)


def check_recordings(gateway: Gateway, sessions: int, statements: int) -> int:
    """
    Wait until every recording ends with C{session.closed}; check there are
    at least C{sessions} of them (pgbench opens one more of its own to read
    the scale) holding at least C{statements} completed statements; remove
    them; return the statements counted.

    Raises:
        BenchError: Recordings are missing, unfinished or short.
    """
    contents, unfinished = _finished_recordings(gateway)
    recorded = sum(c.count(_COMPLETED) for c in contents)
    gateway.clear_recordings()

    if unfinished or len(contents) < sessions or recorded < statements:
        raise BenchError(
            f"recordings: {len(contents)} files for {sessions} sessions, "
            f"{unfinished} unfinished, {recorded} statements for {statements}"
        )
    return recorded


def recorded_bytes_to_client(gateway: Gateway) -> int:
    """
    C{bytes_to_client} of the one session recorded since the last clear
    (then cleared).

    Raises:
        BenchError: There is not exactly one finished recording.
    """
    contents, unfinished = _finished_recordings(gateway)
    gateway.clear_recordings()
    if len(contents) != 1 or unfinished:
        raise BenchError(
            f"expected one finished recording, found {len(contents)} "
            f"({unfinished} unfinished)"
        )
    last = json.loads(contents[0].rstrip(b"\n").rsplit(b"\n", 1)[-1])
    return int(last["bytes_to_client"])


def run_bigselect(endpoint: Endpoint, work_dir: Path) -> BigSelectRun:
    """
    The million-row SELECT through psql with TLS, every row read to the end
    and counted; the proxy's peak resident set during it.
    """
    command = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", BIG_QUERY]
    pid = endpoint.pid
    before = rss_kib(pid) if pid else None
    if pid:
        reset_peak_rss(pid)

    started = time.perf_counter()
    done = subprocess.run(
        command,
        env=endpoint.libpq_env(True),
        capture_output=True,
        timeout=SLACK * 3,
        cwd=work_dir,
        check=False,
    )
    seconds = time.perf_counter() - started

    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise BenchError(f"psql via {endpoint.contender}: {tail(stderr)}")
    rows = done.stdout.count(b"\n")
    if rows != BIG_ROWS:
        raise BenchError(f"psql via {endpoint.contender} printed {rows} rows")
    return BigSelectRun(
        seconds=seconds,
        rows=rows,
        rss_before_kib=before,
        peak_rss_kib=peak_rss_kib(pid) if pid else None,
    )


def run_idle(
    gateway: Gateway,
    endpoint: Endpoint,
    tls: bool,
    sessions: int,
    progress: Callable[[str], None],
) -> IdleRow:
    """
    The gateway's resident set before, with C{sessions} idle sessions open,
    and after they closed. A few sessions are opened and closed first, so
    one-time costs (imports, caches, the first TLS context) are in the
    baseline.
    """
    pid = gateway.pid
    hold_idle_sessions(endpoint, tls, count=16, while_open=lambda: None)
    time.sleep(1)
    before = rss_kib(pid)

    def measure() -> int:
        time.sleep(2)
        return rss_kib(pid)

    opened = hold_idle_sessions(
        endpoint,
        tls,
        count=sessions,
        while_open=measure,
        progress=lambda n: progress(f"{n}/{sessions} sessions open"),
    )
    time.sleep(2)
    return IdleRow(
        tls=tls,
        sessions=sessions,
        rss_before_kib=before,
        rss_open_kib=opened,
        rss_closed_kib=rss_kib(pid),
    )


def _py_spy(pid: int, seconds: int, fmt: str, output: Path) -> subprocess.Popen[bytes]:
    command = [str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")]
    command += ["record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", "250", "--nolineno", "--format", fmt, "-o", str(output)]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def run_profile(
    endpoint: Endpoint,
    *,
    mode: str,
    clients: int,
    seconds: int,
    work_dir: Path,
    output: Path,
    fmt: str,
) -> ProfileSummary | None:
    """
    Profile the gateway with py-spy while pgbench runs against it.

    Args:
        fmt: C{raw} (returns the summary) or C{flamegraph} (an SVG at
            C{output}; returns None).
    """
    assert endpoint.pid is not None
    spy = _py_spy(endpoint.pid, seconds, fmt, output)
    try:
        args = ["-S", "-M", mode, "-c", str(clients), "-j", str(min(2, clients))]
        _pgbench(endpoint, False, args, seconds + 2, work_dir)
        spy_out, _ = spy.communicate(timeout=SLACK)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0:
        raise BenchError(f"py-spy exited {spy.returncode}: {tail(spy_out.decode())}")
    if fmt != "raw":
        return None
    with output.open(encoding="utf-8") as lines:
        return summarize(parse_collapsed(lines))
