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
    "CONTENDERS",
    "BigSelectRow",
    "BigSelectRun",
    "ConnectRow",
    "ConnectRun",
    "IdleRow",
    "PgbenchRun",
    "Results",
    "SelectRow",
    "TargetCheck",
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

#: KiB per MiB, bytes per MB (MB/s is decimal, as network figures are).
KIB_PER_MIB = 1024
BYTES_PER_MB = 1_000_000


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


def _no_runs() -> dict[str, list[Any]]:
    return {name: [] for name in CONTENDERS}


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
        profile: The gateway's hot spots, if a profile ran.
        profile_workload: What ran while it was profiled.
    """

    meta: dict[str, str] = field(factory=dict)
    select: list[SelectRow] = field(factory=list)
    connect: list[ConnectRow] = field(factory=list)
    bigselect: list[BigSelectRow] = field(factory=list)
    idle: list[IdleRow] = field(factory=list)
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


def evaluate_targets(results: Results) -> list[TargetCheck]:
    """
    Every target of the issue that the results speak to, in report order.
    """
    checks: list[TargetCheck] = []
    for row in results.select:
        checks.extend(_select_targets(row))
    checks.extend(_connect_target(row) for row in results.connect)
    checks.extend(_idle_target(row) for row in results.idle)
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


def _target_section(results: Results) -> list[str]:
    lines = [
        [
            check.name,
            _fmt(check.measured, 0 if check.unit == "µs" else 2)
            + ("" if check.unit == "x" else f" {check.unit}"),
            ("≥ " if check.at_least else "≤ ")
            + _fmt(check.threshold, 1 if check.unit == "x" else 0)
            + ("" if check.unit == "x" else f" {check.unit}"),
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
    data["targets"] = [_target_json(c) for c in evaluate_targets(results)]
    return data


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
        profile=_profile_from(data["profile"]),
        profile_workload=data["profile_workload"],
    )
