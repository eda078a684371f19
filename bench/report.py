"""
The benchmark's results, their medians and ratios, the targets of the
issue, and the Markdown and JSON reports.

Everything here is pure: the driver (L{bench.run}) fills a L{Results} with
the runs it measured; L{render_markdown} and L{to_json} turn it into the
files under C{bench/results/}.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
from attrs import define, field, frozen

from bench.hotspots import HotSpot, ProfileSummary

__all__ = [
    "BYTES_PER_MIB",
    "CONTENDERS",
    "LABELS",
    "MASKING_CONTENDERS",
    "SSH_CONTENDERS",
    "SSH_CTR",
    "BigSelectRow",
    "BigSelectRun",
    "ConnectRow",
    "ConnectRun",
    "IdleRow",
    "MaskingRow",
    "MaskingRun",
    "PgbenchRun",
    "Results",
    "SelectRow",
    "SshLoginRow",
    "TargetCheck",
    "TransferRow",
    "TransferRun",
    "evaluate_targets",
    "from_json",
    "median",
    "ratio",
    "render_markdown",
    "to_json",
]

T = TypeVar("T")

#: The contenders of a PostgreSQL row, in table order.
CONTENDERS = ("direct", "pgbouncer", "hoopgate")

#: The contenders of the masking row, in table order: direct, the gateway
#: without masking rules, the gateway masking three columns.
MASKING_CONTENDERS = ("direct", "masking-off", "masking-on")

#: The contenders of the SSH rows, in table order: straight to the sshd,
#: OpenSSH ProxyJump through a bastion sshd, the gateway; then the first
#: two again with the client held to the cipher and MAC it negotiates with
#: the gateway, so ciphers can be told apart from relays.
SSH_CONTENDERS = ("direct", "proxyjump", "hoopgate", "direct-ctr", "proxyjump-ctr")

#: The cipher and MAC of the C{-ctr} contenders.
SSH_CTR = ("aes128-ctr", "hmac-sha2-256")

#: How the tables name the contenders.
LABELS = {
    "masking-off": "hoopgate, no masking rules",
    "masking-on": "hoopgate, 3 columns masked",
    "proxyjump": "OpenSSH ProxyJump (bastion sshd)",
    "direct-ctr": f"direct, {SSH_CTR[0]} + {SSH_CTR[1]}",
    "proxyjump-ctr": f"ProxyJump, {SSH_CTR[0]} + {SSH_CTR[1]}",
}

#: KiB per MiB, bytes per MB (MB/s is decimal, as network figures are),
#: bytes per MiB (SSH transfers are sized in MiB).
KIB_PER_MIB = 1024
BYTES_PER_MB = 1_000_000
BYTES_PER_MIB = 1024 * 1024

#: The masking targets: rows per second with three masked columns, and the
#: most the gateway's resident set may grow during a result, MiB.
MASKING_ROWS_PER_S = 100_000
MASKING_RSS_GROWTH_MIB = 64


def median(values: Iterable[float]) -> float | None:
    """
    The median of C{values}, or None when there are none.
    """
    items = list(values)
    if not items:
        return None
    return float(statistics.median(items))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """
    C{numerator / denominator}, or None when either is missing or the
    denominator is not positive.
    """
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# --- measured runs -----------------------------------------------------------


@frozen
class PgbenchRun:
    """
    One select-only pgbench run of one contender.

    Attributes:
        tps: Transactions per second.
        latency_avg_ms: pgbench's average latency, milliseconds.
        p99_ms: The 99th percentile of the per-transaction log, milliseconds.
        transactions: Transactions processed.
        proxy_cpu_pct: The proxy's CPU use during the run, per cent of one
            core; None for direct runs.
    """

    tps: float
    latency_avg_ms: float
    p99_ms: float
    transactions: int
    proxy_cpu_pct: float | None = None


@frozen
class ConnectRun:
    """
    One C{pgbench -C} run: a new session per transaction.

    Attributes:
        tps: Sessions (transactions, one per connection) per second.
        connection_ms: pgbench's average connection time, milliseconds.
        proxy_cpu_pct: The proxy's CPU use, per cent of one core.
    """

    tps: float
    connection_ms: float | None
    proxy_cpu_pct: float | None = None


@frozen
class BigSelectRun:
    """
    One million-row SELECT read to the end by psql.

    Attributes:
        seconds: Wall time from start to psql's exit.
        rows: Rows psql printed.
        rss_before_kib: The proxy's resident set before, KiB.
        peak_rss_kib: The proxy's peak resident set during the run, KiB.
    """

    seconds: float
    rows: int
    rss_before_kib: int | None = None
    peak_rss_kib: int | None = None


@frozen
class MaskingRun:
    """
    One read of the masking row's table, every row counted and checked.

    Attributes:
        seconds: Wall time from start to psql's exit.
        rows: Rows psql printed (each one checked: masked, or clear).
        bytes_to_client: Protocol bytes the gateway sent to the client, from
            its recording; None for direct.
        rss_before_kib: The gateway's resident set before, KiB.
        peak_rss_kib: Its peak resident set during the run, KiB.
        proxy_cpu_pct: Its CPU use during the run, per cent of one core.
    """

    seconds: float
    rows: int
    bytes_to_client: int | None = None
    rss_before_kib: int | None = None
    peak_rss_kib: int | None = None
    proxy_cpu_pct: float | None = None

    @property
    def rss_growth_kib(self) -> int | None:
        """
        How far the peak rose above the resident set before, KiB.
        """
        if self.rss_before_kib is None or self.peak_rss_kib is None:
            return None
        return self.peak_rss_kib - self.rss_before_kib


@frozen
class TransferRun:
    """
    One SSH transfer through one contender, its byte count checked.

    Attributes:
        seconds: Wall time from ssh's start to the end of the pipeline,
            the login included.
        bytes: Bytes counted at the receiving end (C{wc -c}).
        rss_before_kib: The gateway's resident set before, KiB.
        peak_rss_kib: Its peak resident set during the run, KiB.
        proxy_cpu_pct: Its CPU use during the run, per cent of one core.
    """

    seconds: float
    bytes: int
    rss_before_kib: int | None = None
    peak_rss_kib: int | None = None
    proxy_cpu_pct: float | None = None


def _no_runs() -> dict[str, list[Any]]:
    return {name: [] for name in CONTENDERS}


def _no_masking_runs() -> dict[str, list[Any]]:
    return {name: [] for name in MASKING_CONTENDERS}


def _no_ssh_runs() -> dict[str, list[Any]]:
    return {name: [] for name in SSH_CONTENDERS}


@define
class SelectRow:
    """
    One row of the select-only matrix: a TLS setting, a query protocol and
    a client count, with every contender's runs.

    Attributes:
        tls: TLS on both legs (True) or on none.
        mode: pgbench's C{-M}: C{simple} or C{prepared}.
        clients: pgbench's C{-c}.
        runs: Contender name to its runs.
        errors: What failed, one line each.
    """

    tls: bool
    mode: str
    clients: int
    runs: dict[str, list[PgbenchRun]] = field(factory=_no_runs)
    errors: list[str] = field(factory=list)

    def median_of(
        self, contender: str, value: Callable[[PgbenchRun], float]
    ) -> float | None:
        """
        The median over C{contender}'s runs of C{value(run)}.
        """
        return median(value(run) for run in self.runs.get(contender, []))


@define
class ConnectRow:
    """
    New sessions per second with TLS: direct SCRAM against a token at the
    gateway.

    Attributes:
        clients: pgbench's C{-c}.
        runs: Contender name to its runs (direct and hoopgate).
        errors: What failed, one line each.
    """

    clients: int
    runs: dict[str, list[ConnectRun]] = field(factory=_no_runs)
    errors: list[str] = field(factory=list)


@define
class BigSelectRow:
    """
    The million-row SELECT, TLS on every leg.

    Attributes:
        rows: Rows the query returns.
        wire_bytes: Protocol bytes the session sent to the client, as the
            gateway's recording counts them; the gateway relays result
            messages unchanged, so the figure holds for every contender.
            Zero until measured.
        runs: Contender name to its runs.
        errors: What failed, one line each.
    """

    rows: int
    wire_bytes: int = 0
    runs: dict[str, list[BigSelectRun]] = field(factory=_no_runs)
    errors: list[str] = field(factory=list)

    def rows_per_s(self, contender: str) -> float | None:
        """
        The median rate of rows, per second.
        """
        return median(run.rows / run.seconds for run in self.runs[contender])

    def mb_per_s(self, contender: str) -> float | None:
        """
        The median rate of protocol data, MB (10^6 bytes) per second.
        """
        if not self.wire_bytes:
            return None
        runs = self.runs[contender]
        return median(self.wire_bytes / BYTES_PER_MB / run.seconds for run in runs)


@define
class MaskingRow:
    """
    A whole table read with C{select *}: direct, through a gateway without
    masking rules, through one masking three of its columns.

    Attributes:
        rows: Rows the table holds.
        masked_columns: Columns the masking gateway's rule redacts.
        tls: TLS on every leg (True) or on none.
        runs: Contender (L{MASKING_CONTENDERS}) to its runs.
        errors: What failed, one line each.
    """

    rows: int
    masked_columns: int
    tls: bool = True
    runs: dict[str, list[MaskingRun]] = field(factory=_no_masking_runs)
    errors: list[str] = field(factory=list)

    def rows_per_s(self, contender: str) -> float | None:
        """
        The median rate of rows, per second.
        """
        return median(run.rows / run.seconds for run in self.runs[contender])

    def wire_bytes(self, contender: str) -> float | None:
        """
        The median protocol bytes the client received: the gateway's
        recording counts them; direct gets what the gateway without masking
        rules relays unchanged.
        """
        source = "masking-off" if contender == "direct" else contender
        return median(
            run.bytes_to_client
            for run in self.runs[source]
            if run.bytes_to_client is not None
        )

    def mb_per_s(self, contender: str) -> float | None:
        """
        The median rate of the result as the server sent it (the protocol
        bytes the gateway without masking rules relays unchanged), MB per
        second: the same amount of data for every contender, masked or not.
        """
        result = self.wire_bytes("masking-off")
        if result is None:
            return None
        runs = self.runs[contender]
        return median(result / BYTES_PER_MB / run.seconds for run in runs)

    def peak_growth_kib(self, contender: str) -> int | None:
        """
        The largest rise of the gateway's resident set in any run, KiB.
        """
        growths = [run.rss_growth_kib for run in self.runs[contender]]
        known = [g for g in growths if g is not None]
        return max(known) if known else None


@define
class TransferRow:
    """
    One SSH transfer direction, every contender's runs.

    Attributes:
        direction: C{download} (C{ssh HOST 'head -c N /dev/zero' | wc -c})
            or C{upload} (C{head -c N /dev/zero | ssh HOST 'wc -c'}).
        size: Bytes moved per run.
        runs: Contender (L{SSH_CONTENDERS}) to its runs.
        errors: What failed, one line each.
    """

    direction: str
    size: int
    runs: dict[str, list[TransferRun]] = field(factory=_no_ssh_runs)
    errors: list[str] = field(factory=list)

    def mib_per_s(self, contender: str) -> float | None:
        """
        The median rate, MiB per second (the login included).
        """
        runs = self.runs[contender]
        return median(run.bytes / BYTES_PER_MIB / run.seconds for run in runs)


@define
class SshLoginRow:
    """
    C{ssh HOST true} per contender: the time to log in and run nothing,
    and the ciphers the client negotiated (C{ssh -v}).

    Attributes:
        seconds: Contender to the wall time of each run.
        ciphers: Contender to the client's negotiated cipher and MAC, one
            entry per SSH connection it made (two with ProxyJump).
        errors: What failed, one line each.
    """

    seconds: dict[str, list[float]] = field(factory=_no_ssh_runs)
    ciphers: dict[str, list[str]] = field(factory=dict)
    errors: list[str] = field(factory=list)


@frozen
class IdleRow:
    """
    Idle sessions held open through the gateway.

    Attributes:
        tls: TLS on both legs (True) or on none.
        sessions: Sessions opened and held.
        rss_before_kib: The gateway's resident set before, KiB.
        rss_open_kib: With every session open, KiB.
        rss_closed_kib: After they all closed, KiB.
        error: Why the row is incomplete, or empty.
    """

    tls: bool
    sessions: int
    rss_before_kib: int
    rss_open_kib: int
    rss_closed_kib: int
    error: str = ""

    @property
    def per_session_kib(self) -> float:
        """
        The resident set each open session adds, KiB.
        """
        return (self.rss_open_kib - self.rss_before_kib) / self.sessions


@define
class Results:
    """
    Everything one benchmark run measured.

    Attributes:
        meta: The machine, the versions and the settings, name to text.
        select: The select-only matrix.
        connect: The new-session rows.
        bigselect: The million-row SELECT rows.
        idle: The idle-session rows.
        masking: The masking rows.
        ssh: The SSH transfer rows.
        ssh_login: The SSH login row, if SSH was measured.
        profile: The gateway's hot spots, if a profile ran.
        profile_workload: What ran while it was profiled.
    """

    meta: dict[str, str] = field(factory=dict)
    select: list[SelectRow] = field(factory=list)
    connect: list[ConnectRow] = field(factory=list)
    bigselect: list[BigSelectRow] = field(factory=list)
    idle: list[IdleRow] = field(factory=list)
    masking: list[MaskingRow] = field(factory=list)
    ssh: list[TransferRow] = field(factory=list)
    ssh_login: SshLoginRow | None = None
    profile: ProfileSummary | None = None
    profile_workload: str = ""


# --- targets -----------------------------------------------------------------


@frozen
class TargetCheck:
    """
    One target of the issue against what was measured.

    Attributes:
        name: What is compared, in words.
        measured: The measured figure, or None if it was not measured.
        threshold: The target figure.
        unit: C{"x"} for a ratio, or the unit of C{measured}.
        at_least: True if C{measured} must reach C{threshold}, False if it
            must stay at or under it.
    """

    name: str
    measured: float | None
    threshold: float
    unit: str
    at_least: bool

    @property
    def met(self) -> bool | None:
        """
        Whether the target is met; None when nothing was measured.
        """
        if self.measured is None:
            return None
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def verdict(self) -> str:
        """
        C{met}, C{not measured}, or how far off the target is.
        """
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        assert self.measured is not None
        if self.at_least:
            short = 1 - self.measured / self.threshold
            return f"not met ({short:.0%} short)"
        over = self.measured / self.threshold - 1
        return f"not met ({over:.0%} over)"


def _tls_word(tls: bool) -> str:
    return "TLS on" if tls else "TLS off"


def _tps(row: SelectRow, contender: str) -> float | None:
    return row.median_of(contender, lambda run: run.tps)


def _latency_ms(row: SelectRow, contender: str) -> float | None:
    return row.median_of(contender, lambda run: run.latency_avg_ms)


def _select_targets(row: SelectRow) -> list[TargetCheck]:
    what = f"{row.mode}, {_tls_word(row.tls)}"
    if row.clients == 8:
        return [
            TargetCheck(
                f"select-only 8 clients, {what}: hoopgate / direct TPS",
                ratio(_tps(row, "hoopgate"), _tps(row, "direct")),
                0.5,
                "x",
                at_least=True,
            ),
            TargetCheck(
                f"select-only 8 clients, {what}: hoopgate / pgbouncer TPS",
                ratio(_tps(row, "hoopgate"), _tps(row, "pgbouncer")),
                0.8,
                "x",
                at_least=True,
            ),
        ]
    if row.clients == 1:
        gateway = _latency_ms(row, "hoopgate")
        direct = _latency_ms(row, "direct")
        added = None
        if gateway is not None and direct is not None:
            added = (gateway - direct) * 1000
        return [
            TargetCheck(
                f"1 client, {what}: latency added per query",
                added,
                150.0,
                "µs",
                at_least=False,
            )
        ]
    return []


def _connect_target(row: ConnectRow) -> TargetCheck:
    gateway = median(run.tps for run in row.runs["hoopgate"])
    direct = median(run.tps for run in row.runs["direct"])
    return TargetCheck(
        f"new sessions with TLS, {row.clients} clients: "
        "hoopgate (token) / direct (SCRAM)",
        ratio(gateway, direct),
        0.7,
        "x",
        at_least=True,
    )


def _idle_target(row: IdleRow) -> TargetCheck:
    measured = None if row.error else row.per_session_kib
    return TargetCheck(
        f"{row.sessions} idle sessions, {_tls_word(row.tls)}: RSS per session",
        measured,
        50.0,
        "KiB",
        at_least=False,
    )


def _masking_targets(row: MaskingRow) -> list[TargetCheck]:
    growth = row.peak_growth_kib("masking-on")
    what = f"masking, {row.rows:,}-row result, {row.masked_columns} masked columns"
    return [
        TargetCheck(
            f"{what}: rows/s through hoopgate",
            row.rows_per_s("masking-on"),
            MASKING_ROWS_PER_S,
            "rows/s",
            at_least=True,
        ),
        TargetCheck(
            f"{what}: gateway RSS growth (peak - before, worst run)",
            None if growth is None else growth / KIB_PER_MIB,
            MASKING_RSS_GROWTH_MIB,
            "MiB",
            at_least=False,
        ),
    ]


def evaluate_targets(results: Results) -> list[TargetCheck]:
    """
    Every target of the issue that the results speak to, in report order.
    """
    checks: list[TargetCheck] = []
    for row in results.select:
        checks.extend(_select_targets(row))
    checks.extend(_connect_target(row) for row in results.connect)
    checks.extend(_idle_target(row) for row in results.idle)
    for masking in results.masking:
        checks.extend(_masking_targets(masking))
    return checks


# --- Markdown ----------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _spread(row: SelectRow) -> float | None:
    """
    The largest relative range (max - min) / median of TPS among the
    contenders: how noisy the row was.
    """
    spreads = []
    for runs in row.runs.values():
        if len(runs) > 1:
            values = [run.tps for run in runs]
            middle = median(values)
            if middle:
                spreads.append((max(values) - min(values)) / middle)
    return max(spreads) if spreads else None


def _three(row: SelectRow, value: Callable[[PgbenchRun], float], digits: int) -> str:
    return " / ".join(_fmt(row.median_of(c, value), digits) for c in CONTENDERS)


def _select_line(row: SelectRow) -> list[str]:
    hoopgate = _tps(row, "hoopgate")
    spread = _spread(row)
    cpus = [run.proxy_cpu_pct for run in row.runs["hoopgate"]]
    return [
        "on" if row.tls else "off",
        row.mode,
        str(row.clients),
        *(_fmt(_tps(row, c)) for c in CONTENDERS),
        _fmt(ratio(hoopgate, _tps(row, "direct")), 2),
        _fmt(ratio(hoopgate, _tps(row, "pgbouncer")), 2),
        _three(row, lambda run: run.latency_avg_ms, 3),
        _three(row, lambda run: run.p99_ms, 3),
        _fmt(median(cpu for cpu in cpus if cpu is not None)),
        "-" if spread is None else f"{spread:.0%}",
    ]


def _select_section(results: Results) -> list[str]:
    header = [
        "TLS",
        "protocol",
        "clients",
        "direct TPS",
        "pgbouncer TPS",
        "hoopgate TPS",
        "hoopgate / direct",
        "hoopgate / pgbouncer",
        "latency avg ms (d / pgb / hg)",
        "p99 ms (d / pgb / hg)",
        "hoopgate CPU %",
        "spread",
    ]
    return [
        "## pgbench select-only (`-S`)",
        "",
        *_table(header, (_select_line(row) for row in results.select)),
        "",
        "Medians over the repetitions. *spread*: the largest (max - min) / median",
        "of TPS among the three contenders; *hoopgate CPU %*: the gateway "
        "process, per cent of one core.",
        "",
    ]


def _connect_section(results: Results) -> list[str]:
    lines = []
    for row in results.connect:
        direct = median(run.tps for run in row.runs["direct"])
        for contender in ("direct", "hoopgate"):
            runs = row.runs[contender]
            tps = median(run.tps for run in runs)
            conn = median(run.connection_ms or 0.0 for run in runs)
            how = "SCRAM" if contender == "direct" else "OIDC token"
            lines.append(
                [
                    f"{contender} ({how})",
                    str(row.clients),
                    _fmt(tps, 1),
                    _fmt(conn if runs else None, 2),
                    _fmt(ratio(tps, direct), 2),
                ]
            )
    header = ["contender", "clients", "sessions/s", "avg connect ms", "vs direct"]
    return [
        "## New sessions with TLS (`pgbench -C -S`)",
        "",
        *_table(header, lines),
        "",
    ]


def _mib(kib: float | None) -> str:
    return _fmt(None if kib is None else kib / KIB_PER_MIB, 1)


def _bigselect_section(results: Results) -> list[str]:
    lines = []
    for row in results.bigselect:
        for contender in CONTENDERS:
            runs = row.runs[contender]
            lines.append(
                [
                    contender,
                    _fmt(median(run.seconds for run in runs), 2),
                    _fmt(row.rows_per_s(contender)),
                    _fmt(row.mb_per_s(contender), 1),
                    _mib(median(r.rss_before_kib for r in runs if r.rss_before_kib)),
                    _mib(median(r.peak_rss_kib for r in runs if r.peak_rss_kib)),
                ]
            )
    header = ["contender", "seconds", "rows/s", "MB/s", "proxy RSS before MiB"]
    header.append("proxy peak RSS MiB")
    return [
        "## One 1,000,000-row SELECT (psql, TLS on every leg)",
        "",
        *_table(header, lines),
        "",
        "MB/s: protocol bytes sent to the client (the gateway's recording "
        "counts them; the same for every contender) per second.",
        "",
    ]


def _idle_section(results: Results) -> list[str]:
    lines = [
        [
            "on" if row.tls else "off",
            str(row.sessions),
            _fmt(row.rss_before_kib / KIB_PER_MIB, 1),
            _fmt(row.rss_open_kib / KIB_PER_MIB, 1),
            _fmt(row.rss_closed_kib / KIB_PER_MIB, 1),
            row.error or _fmt(row.per_session_kib, 1),
        ]
        for row in results.idle
    ]
    header = [
        "TLS",
        "sessions",
        "RSS before MiB",
        "RSS open MiB",
        "RSS after close MiB",
        "KiB per session",
    ]
    return ["## Idle sessions through hoopgate", "", *_table(header, lines), ""]


def _masking_line(row: MaskingRow, contender: str) -> list[str]:
    runs = row.runs[contender]
    gateway = contender != "direct"
    cpus = [run.proxy_cpu_pct for run in runs if run.proxy_cpu_pct is not None]
    rates = row.rows_per_s(contender)
    wire = row.wire_bytes(contender)
    return [
        LABELS.get(contender, contender),
        _fmt(median(run.seconds for run in runs), 2),
        _fmt(rates),
        _fmt(row.mb_per_s(contender), 1),
        _fmt(None if wire is None else wire / BYTES_PER_MB, 1),
        _mib(median(r.rss_before_kib for r in runs if r.rss_before_kib)),
        _mib(row.peak_growth_kib(contender)),
        _fmt(median(cpus)) if gateway else "-",
        _fmt(ratio(rates, row.rows_per_s("masking-off")), 2),
        _fmt(ratio(rates, row.rows_per_s("direct")), 2),
    ]


def _masking_section(row: MaskingRow) -> list[str]:
    header = [
        "contender",
        "seconds",
        "rows/s",
        "MB/s",
        "MB to the client",
        "gateway RSS before MiB",
        "RSS growth MiB (worst run)",
        "gateway CPU %",
        "vs no masking",
        "vs direct",
    ]
    lines = [_masking_line(row, c) for c in MASKING_CONTENDERS]
    return [
        f"## Masking: `select *` of a {row.rows:,}-row table, "
        f"{row.masked_columns} columns masked (psql, TLS "
        f"{'on every leg' if row.tls else 'off'})",
        "",
        *_table(header, lines),
        "",
        "Every printed row was checked: three `[masked]` fields through the "
        "masking gateway, the clear values elsewhere. MB/s: the result as the "
        "server sends it (the protocol bytes the gateway without rules relays "
        "unchanged, from its recording) per second; *MB to the client*: what "
        "each contender sent on (masks are shorter than the values). RSS "
        "growth: peak (`VmHWM`, reset before each run) minus the resident set "
        "before.",
        "",
    ]


def _ssh_section(results: Results) -> list[str]:
    lines = []
    for row in results.ssh:
        direct = row.mib_per_s("direct")
        jump = row.mib_per_s("proxyjump")
        for contender in SSH_CONTENDERS:
            runs = row.runs[contender]
            rate = row.mib_per_s(contender)
            cpus = [r.proxy_cpu_pct for r in runs if r.proxy_cpu_pct is not None]
            peaks = [r.peak_rss_kib for r in runs if r.peak_rss_kib is not None]
            befores = [r.rss_before_kib for r in runs if r.rss_before_kib]
            lines.append(
                [
                    row.direction,
                    f"{row.size / BYTES_PER_MIB:,.0f}",
                    LABELS.get(contender, contender),
                    _fmt(median(run.seconds for run in runs), 2),
                    _fmt(rate, 1),
                    _fmt(ratio(rate, direct), 2),
                    _fmt(ratio(rate, jump), 2),
                    _fmt(median(cpus)) if cpus else "-",
                    f"{_mib(median(befores))} / {_mib(max(peaks))}" if peaks else "-",
                ]
            )
    header = [
        "direction",
        "MiB",
        "contender",
        "seconds",
        "MiB/s",
        "vs direct",
        "vs ProxyJump",
        "gateway CPU %",
        "gateway RSS before / peak MiB",
    ]
    section = [
        "## SSH transfers (OpenSSH client, exec)",
        "",
        *_table(header, lines),
        "",
        "download: `ssh HOST 'head -c N /dev/zero' | wc -c`; upload: `head -c N "
        "/dev/zero | ssh HOST 'wc -c'`; every count checked against N. Seconds "
        "include the login.",
        "",
    ]
    return section + _ssh_login_lines(results.ssh_login)


def _ssh_login_lines(row: SshLoginRow | None) -> list[str]:
    if row is None:
        return []
    lines = [
        [
            LABELS.get(contender, contender),
            _fmt(median(row.seconds[contender]), 3),
            "; ".join(row.ciphers.get(contender, [])) or "-",
        ]
        for contender in SSH_CONTENDERS
    ]
    header = ["contender", "`ssh HOST true` seconds", "client's cipher, MAC"]
    return [*_table(header, lines), ""]


def _target_figure(value: float | None, unit: str, measured: bool) -> str:
    if measured:
        digits = {"µs": 0, "rows/s": 0, "MiB": 1}.get(unit, 2)
    else:
        digits = 1 if unit == "x" else 0
    return _fmt(value, digits) + ("" if unit == "x" else f" {unit}")


def _target_section(results: Results) -> list[str]:
    lines = [
        [
            check.name,
            _target_figure(check.measured, check.unit, True),
            ("≥ " if check.at_least else "≤ ")
            + _target_figure(check.threshold, check.unit, False),
            check.verdict(),
        ]
        for check in evaluate_targets(results)
    ]
    return [
        "## Targets",
        "",
        *_table(["target", "measured", "goal", "verdict"], lines),
        "",
    ]


def _error_section(results: Results) -> list[str]:
    errors = [
        *(e for row in results.select for e in row.errors),
        *(e for row in results.connect for e in row.errors),
        *(e for row in results.bigselect for e in row.errors),
        *(f"idle: {row.error}" for row in results.idle if row.error),
        *(e for row in results.masking for e in row.errors),
        *(e for row in results.ssh for e in row.errors),
        *(results.ssh_login.errors if results.ssh_login else []),
    ]
    if not errors:
        return []
    return ["## Errors", "", *(f"- {e}" for e in errors), ""]


def _hot_spot_lines(spots: Sequence[HotSpot]) -> list[list[str]]:
    return [
        [f"`{spot.name}`", f"{spot.self_pct:.1f}", f"{spot.total_pct:.1f}"]
        for spot in spots
    ]


def _profile_section(results: Results) -> list[str]:
    profile = results.profile
    if profile is None:
        return []
    header = ["", "self %", "total %"]
    return [
        "## Where the gateway's time goes (py-spy)",
        "",
        f"{results.profile_workload}; {profile.samples} samples of the reactor thread.",
        "",
        "By function, self time:",
        "",
        *_table(["function", *header[1:]], _hot_spot_lines(profile.functions)),
        "",
        "hoopgate's own functions, inclusive time:",
        "",
        *_table(["function", *header[1:]], _hot_spot_lines(profile.cumulative)),
        "",
        "By source file, self time:",
        "",
        *_table(["file", *header[1:]], _hot_spot_lines(profile.files)),
        "",
    ]


def _meta_section(results: Results) -> list[str]:
    lines = [[name, value] for name, value in results.meta.items()]
    return ["## Machine and settings", "", *_table(["", ""], lines), ""]


def render_markdown(results: Results) -> str:
    """
    The report C{bench/results/latest.md}.
    """
    sections = [
        ["# hoopgate benchmark results", ""],
        _target_section(results),
        _select_section(results) if results.select else [],
        _connect_section(results) if results.connect else [],
        _bigselect_section(results) if results.bigselect else [],
        _idle_section(results) if results.idle else [],
        *(_masking_section(row) for row in results.masking),
        _ssh_section(results) if results.ssh else [],
        _profile_section(results),
        _error_section(results),
        _meta_section(results),
    ]
    return "\n".join(line for section in sections for line in section)


# --- JSON --------------------------------------------------------------------


def _target_json(check: TargetCheck) -> dict[str, Any]:
    data = attrs.asdict(check)
    data["met"] = check.met
    data["verdict"] = check.verdict()
    return data


def _select_summary(row: SelectRow) -> dict[str, Any]:
    return {
        contender: {
            "tps": _tps(row, contender),
            "latency_avg_ms": _latency_ms(row, contender),
            "p99_ms": row.median_of(contender, lambda run: run.p99_ms),
        }
        for contender in CONTENDERS
    }


def to_json(results: Results) -> dict[str, Any]:
    """
    Every run, the medians and the targets, as JSON-ready data.
    """
    data = attrs.asdict(results)
    for row, row_data in zip(results.select, data["select"], strict=True):
        row_data["median"] = _select_summary(row)
    for idle, idle_data in zip(results.idle, data["idle"], strict=True):
        idle_data["per_session_kib"] = None if idle.error else idle.per_session_kib
    for masking, masking_data in zip(results.masking, data["masking"], strict=True):
        masking_data["median"] = _masking_summary(masking)
    for ssh, ssh_data in zip(results.ssh, data["ssh"], strict=True):
        ssh_data["median"] = {
            c: {"mib_per_s": ssh.mib_per_s(c)} for c in SSH_CONTENDERS
        }
    data["targets"] = [_target_json(c) for c in evaluate_targets(results)]
    return data


def _masking_summary(row: MaskingRow) -> dict[str, Any]:
    return {
        contender: {
            "rows_per_s": row.rows_per_s(contender),
            "mb_per_s": row.mb_per_s(contender),
            "rss_growth_kib": row.peak_growth_kib(contender),
        }
        for contender in MASKING_CONTENDERS
    }


def _runs_from(
    raw: dict[str, list[dict[str, Any]]], kind: type[T]
) -> dict[str, list[T]]:
    return {name: [kind(**run) for run in runs] for name, runs in raw.items()}


def _profile_from(raw: dict[str, Any] | None) -> ProfileSummary | None:
    if raw is None:
        return None
    return ProfileSummary(
        samples=raw["samples"],
        **{
            key: tuple(HotSpot(**spot) for spot in raw[key])
            for key in ("functions", "cumulative", "files")
        },
    )


def _ssh_login_from(raw: dict[str, Any] | None) -> SshLoginRow | None:
    if raw is None:
        return None
    return SshLoginRow(
        seconds={name: list(runs) for name, runs in raw["seconds"].items()},
        ciphers={name: list(found) for name, found in raw["ciphers"].items()},
        errors=list(raw["errors"]),
    )


def from_json(data: dict[str, Any]) -> Results:
    """
    The L{Results} that L{to_json} wrote (its derived figures are
    recomputed, not read).
    """
    return Results(
        meta=dict(data["meta"]),
        select=[
            SelectRow(
                tls=row["tls"],
                mode=row["mode"],
                clients=row["clients"],
                runs=_runs_from(row["runs"], PgbenchRun),
                errors=list(row["errors"]),
            )
            for row in data["select"]
        ],
        connect=[
            ConnectRow(
                clients=row["clients"],
                runs=_runs_from(row["runs"], ConnectRun),
                errors=list(row["errors"]),
            )
            for row in data["connect"]
        ],
        bigselect=[
            BigSelectRow(
                rows=row["rows"],
                wire_bytes=row["wire_bytes"],
                runs=_runs_from(row["runs"], BigSelectRun),
                errors=list(row["errors"]),
            )
            for row in data["bigselect"]
        ],
        idle=[
            IdleRow(**{k: v for k, v in row.items() if k != "per_session_kib"})
            for row in data["idle"]
        ],
        # Files written before the masking and SSH rows existed lack them.
        masking=[
            MaskingRow(
                rows=row["rows"],
                masked_columns=row["masked_columns"],
                tls=row["tls"],
                runs=_runs_from(row["runs"], MaskingRun),
                errors=list(row["errors"]),
            )
            for row in data.get("masking", [])
        ],
        ssh=[
            TransferRow(
                direction=row["direction"],
                size=row["size"],
                runs=_runs_from(row["runs"], TransferRun),
                errors=list(row["errors"]),
            )
            for row in data.get("ssh", [])
        ],
        ssh_login=_ssh_login_from(data.get("ssh_login")),
        profile=_profile_from(data["profile"]),
        profile_workload=data["profile_workload"],
    )
