"""
One measurement each: a pgbench select-only run, a new-session run, a
million-row SELECT, a read of the masking table, an SSH login or transfer,
an idle-session set, a profile.

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
from typing import IO

from bench.hotspots import ProfileSummary, parse_collapsed, summarize
from bench.idle import hold_idle_sessions
from bench.parse import (
    ParseError,
    PgbenchSummary,
    check_people_rows,
    parse_byte_count,
    parse_pgbench_summary,
    parse_ssh_ciphers,
    parse_transaction_log,
    percentile,
)
from bench.report import (
    BigSelectRun,
    ConnectRun,
    IdleRow,
    MaskingRun,
    PgbenchRun,
    TransferRun,
)
from bench.servers import (
    MASKED_COLUMNS,
    MASKED_TABLE,
    BenchError,
    Endpoint,
    Gateway,
    SshClients,
    cpu_seconds,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
    tail,
)

__all__ = [
    "BIG_QUERY",
    "BIG_ROWS",
    "MASKING_QUERY",
    "check_masking_sample",
    "check_recordings",
    "check_ssh_recording",
    "recorded_bytes_to_client",
    "run_bigselect",
    "run_connect",
    "run_idle",
    "run_masking",
    "run_profile",
    "run_select",
    "run_ssh_login",
    "run_ssh_transfer",
]

#: The million-row SELECT: an integer and a 32-character text per row.
BIG_ROWS = 1_000_000
# A constant: no outside text reaches the query.
BIG_QUERY = f"select g, md5(g::text) from generate_series(1, {BIG_ROWS}) g"  # noqa: S608

#: The masking row's query: every row and column of the masking table.
MASKING_QUERY = f"select * from {MASKED_TABLE}"  # noqa: S608 - a constant
#: A few of its rows, compared between the contenders before the runs.
MASKING_SAMPLE = f"{MASKING_QUERY} order by id limit 5"

#: Seconds a tool may run beyond its planned duration.
SLACK = 120

#: The slowest SSH transfer rate waited for, bytes per second.
SSH_SLOWEST = 1024 * 1024

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


def _psql_out(
    endpoint: Endpoint, tls: bool, sql: str, stdout: int | IO[bytes], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    command = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
    done = subprocess.run(
        command,
        env=endpoint.libpq_env(tls),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise BenchError(f"psql via {endpoint.contender}: {tail(stderr)}")
    return done


def _ids(data: bytes) -> list[bytes]:
    return [line.split(b"|", 1)[0] for line in data.splitlines()]


def check_masking_sample(
    direct: Endpoint, unmasked: Endpoint, masked: Endpoint, tls: bool
) -> None:
    """
    Read a few rows of the masking table through every contender: direct
    and the gateway without rules must print the same clear rows, the
    masking gateway the same ids with the three columns masked.

    Raises:
        BenchError: A contender printed something else.
    """
    outputs = [
        _psql_out(e, tls, MASKING_SAMPLE, subprocess.PIPE, SLACK).stdout
        for e in (direct, unmasked, masked)
    ]
    try:
        clear = check_people_rows(outputs[0], masked=False)
        check_people_rows(outputs[2], masked=True)
    except ParseError as e:
        raise BenchError(f"masking sample: {e}") from None
    if clear != 5 or outputs[1] != outputs[0]:
        raise BenchError(
            f"masking sample: {clear} clear rows direct; the gateway without "
            "rules printed other rows"
        )
    if _ids(outputs[2]) != _ids(outputs[0]):
        raise BenchError("masking sample: the masking gateway printed other rows")


def _masked_counts(contents: bytes) -> dict[str, int]:
    """
    Per masked column, the values a recording's C{result.sample} lines
    count as masked by enforce rules (summed over the session's results).
    """
    counts: dict[str, int] = {}
    for line in contents.splitlines():
        if b'"event":"result.sample"' not in line:
            continue
        for entry in json.loads(line).get("masked", []):
            if entry.get("dry_run"):
                continue
            column = str(entry.get("column", ""))
            counts[column] = counts.get(column, 0) + int(entry.get("count", 0))
    return counts


def _recorded_masking(gateway: Gateway, masked: bool, rows: int) -> int:
    """
    C{bytes_to_client} of the one session recorded since the last clear;
    with C{masked}, also check its samples count C{rows} masked values in
    each masked column (then clear).
    """
    contents, unfinished = _finished_recordings(gateway)
    gateway.clear_recordings()
    if len(contents) != 1 or unfinished:
        raise BenchError(
            f"expected one finished recording, found {len(contents)} "
            f"({unfinished} unfinished)"
        )
    if masked:
        counts = _masked_counts(contents[0])
        wrong = {c: n for c, n in counts.items() if n != rows}
        if len(counts) != len(MASKED_COLUMNS) or wrong:
            raise BenchError(
                f"the recording counts masked values {counts}, not {rows} in "
                f"each of {len(MASKED_COLUMNS)} columns"
            )
    last = json.loads(contents[0].rstrip(b"\n").rsplit(b"\n", 1)[-1])
    return int(last["bytes_to_client"])


def run_masking(
    endpoint: Endpoint,
    gateway: Gateway | None,
    *,
    masked: bool,
    tls: bool,
    rows: int,
    work_dir: Path,
) -> MaskingRun:
    """
    Read the whole masking table through psql into a file; then check that
    it printed C{rows} rows, each masked (C{masked}) or clear, and for a
    gateway read what its recording counted. The gateway's resident set
    (before, peak) and CPU share are taken during the read.
    """
    pid = endpoint.pid
    before = rss_kib(pid) if pid else None
    if pid:
        reset_peak_rss(pid)
    output = work_dir / f"masking-{endpoint.contender}-{time.monotonic_ns()}.out"
    meter = _CpuMeter(pid)
    started = time.perf_counter()
    try:
        with output.open("wb") as out:
            _psql_out(endpoint, tls, MASKING_QUERY, out, SLACK * 3)
        seconds = time.perf_counter() - started
        cpu = meter.percent()
        peak = peak_rss_kib(pid) if pid else None
        data = output.read_bytes()
    finally:
        output.unlink(missing_ok=True)

    try:
        printed = check_people_rows(data, masked=masked)
    except ParseError as e:
        raise BenchError(f"psql via {endpoint.contender}: {e}") from None
    if printed != rows:
        raise BenchError(f"psql via {endpoint.contender} printed {printed} rows")
    wire = None if gateway is None else _recorded_masking(gateway, masked, rows)
    return MaskingRun(
        seconds=seconds,
        rows=printed,
        bytes_to_client=wire,
        rss_before_kib=before,
        peak_rss_kib=peak,
        proxy_cpu_pct=cpu,
    )


def run_ssh_login(clients: SshClients, contender: str) -> tuple[float, list[str]]:
    """
    C{ssh -v HOST true}: the seconds it took, and the ciphers it negotiated.
    """
    started = time.perf_counter()
    done = subprocess.run(
        clients.argv(contender, "true", verbose=True),
        env=clients.env(contender),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SLACK,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "debug" not in line]
        raise BenchError(
            f"ssh true via {contender} exited {done.returncode}: "
            f"{tail(chr(10).join(errors), 5)}"
        )
    try:
        return seconds, parse_ssh_ciphers(done.stderr)
    except ParseError as e:
        raise BenchError(f"ssh -v via {contender}: {e}") from None


def _pipeline(
    first: list[str],
    second: list[str],
    env: dict[str, str],
    timeout: float,
    errors: IO[bytes],
) -> tuple[list[int], bytes]:
    """
    C{first | second} with the given timeout; the exit statuses and the
    second's standard output. Both are killed when the time runs out.
    """
    head = subprocess.Popen(
        first, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
    )
    try:
        tail_process = subprocess.Popen(
            second, env=env, stdin=head.stdout, stdout=subprocess.PIPE, stderr=errors
        )
    except OSError:
        head.kill()
        head.wait()
        raise
    assert head.stdout is not None
    head.stdout.close()  # the second holds the pipe now
    try:
        out, _ = tail_process.communicate(timeout=timeout)
        head.wait(timeout=SLACK)
    finally:
        for process in (head, tail_process):
            if process.poll() is None:
                process.kill()
                process.wait()
    return [head.returncode, tail_process.returncode], out


def run_ssh_transfer(
    clients: SshClients,
    contender: str,
    direction: str,
    size: int,
    *,
    pid: int | None,
    work_dir: Path,
) -> TransferRun:
    """
    Move C{size} bytes with the OpenSSH client as C{contender}:
    C{download} runs C{ssh HOST 'head -c SIZE /dev/zero' | wc -c} and
    C{upload} C{head -c SIZE /dev/zero | ssh HOST 'wc -c'}; the count must
    be C{size}. C{pid}'s (the gateway's) resident set and CPU share are
    taken during the run.
    """
    env = clients.env(contender)
    if direction == "download":
        first = clients.argv(contender, f"head -c {size} /dev/zero")
        second = ["wc", "-c"]
    elif direction == "upload":
        first = ["head", "-c", str(size), "/dev/zero"]
        second = clients.argv(contender, "wc -c")
    else:
        raise ValueError(f"no direction {direction!r}")
    before = rss_kib(pid) if pid else None
    if pid:
        reset_peak_rss(pid)
    meter = _CpuMeter(pid)
    errors_path = work_dir / f"ssh-{contender}-{time.monotonic_ns()}.err"
    started = time.perf_counter()
    with errors_path.open("w+b") as errors:
        statuses, out = _pipeline(
            first, second, env, SLACK + size / SSH_SLOWEST, errors
        )
        seconds = time.perf_counter() - started
        cpu = meter.percent()
        peak = peak_rss_kib(pid) if pid else None
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    errors_path.unlink()

    if any(statuses):
        raise BenchError(
            f"ssh {direction} via {contender} exited {statuses}: {tail(stderr, 5)}"
        )
    try:
        count = parse_byte_count(out.decode(errors="replace"))
    except ParseError as e:
        raise BenchError(f"ssh {direction} via {contender}: {e}") from None
    if count != size:
        raise BenchError(
            f"ssh {direction} via {contender}: {count:,} bytes arrived, not {size:,}"
        )
    return TransferRun(
        seconds=seconds,
        bytes=count,
        rss_before_kib=before,
        peak_rss_kib=peak,
        proxy_cpu_pct=cpu,
    )


def check_ssh_recording(gateway: Gateway, direction: str, size: int) -> None:
    """
    The one SSH session recorded since the last clear must have run one
    command that exited 0 and counted C{size} bytes the way they went
    (to the client for a download, from it for an upload); then clear.

    Raises:
        BenchError: The recording is missing, unfinished or says otherwise.
    """
    contents, unfinished = _finished_recordings(gateway)
    gateway.clear_recordings()
    if len(contents) != 1 or unfinished:
        raise BenchError(
            f"expected one finished SSH recording, found {len(contents)} "
            f"({unfinished} unfinished)"
        )
    lines = [json.loads(line) for line in contents[0].splitlines()]
    exits = [line["status"] for line in lines if line["event"] == "ssh.exit"]
    closed = lines[-1]
    key = "bytes_to_client" if direction == "download" else "bytes_from_client"
    if exits != [0] or closed.get(key) != size:
        raise BenchError(
            f"SSH recording: exit statuses {exits}, {key} {closed.get(key)} for {size}"
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
