"""
Parsers for what the benchmark's tools print.

pgbench's closing summary gives throughput, the average latency and the
transaction counts; its per-transaction log files (C{--log}) give every
transaction's latency, from which the percentiles are taken.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from attrs import frozen

__all__ = [
    "LatencySample",
    "ParseError",
    "PgbenchSummary",
    "parse_pgbench_summary",
    "parse_transaction_log",
    "percentile",
]


class ParseError(ValueError):
    """
    A tool's output lacks a figure the benchmark needs.
    """


@frozen
class PgbenchSummary:
    """
    The figures of one pgbench run's closing summary.

    Attributes:
        tps: Transactions per second as pgbench reports them (without the
            initial connection time, or including reconnections with C{-C}).
        latency_avg_ms: The average latency in milliseconds.
        transactions: Transactions processed.
        failed: Transactions that failed.
        connection_ms: The initial connection time, or with C{-C} the
            average connection time, in milliseconds; None if not printed.
    """

    tps: float
    latency_avg_ms: float
    transactions: int
    failed: int
    connection_ms: float | None


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_TPS = re.compile(rf"^tps = {_NUMBER} \(", re.MULTILINE)
_LATENCY = re.compile(rf"^latency average = {_NUMBER} ms", re.MULTILINE)
_PROCESSED = re.compile(
    r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE
)
_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)
_CONNECTION = re.compile(
    rf"^(?:initial|average) connection time = {_NUMBER} ms", re.MULTILINE
)


def _find(pattern: re.Pattern[str], text: str, what: str) -> str:
    match = pattern.search(text)
    if match is None:
        raise ParseError(f"pgbench output has no {what} line")
    return match.group(1)


def parse_pgbench_summary(text: str) -> PgbenchSummary:
    """
    Read the closing summary pgbench prints on standard output.

    Args:
        text: pgbench's standard output.

    Raises:
        ParseError: A needed line is missing (pgbench aborted, or its
            output changed).
    """
    failed = _FAILED.search(text)
    connection = _CONNECTION.search(text)

    return PgbenchSummary(
        tps=float(_find(_TPS, text, "tps")),
        latency_avg_ms=float(_find(_LATENCY, text, "latency average")),
        transactions=int(_find(_PROCESSED, text, "transactions processed")),
        failed=int(failed.group(1)) if failed else 0,
        connection_ms=float(connection.group(1)) if connection else None,
    )


@frozen
class LatencySample:
    """
    The latencies read from pgbench per-transaction log files.

    Attributes:
        latencies_us: Each completed transaction's latency in microseconds,
            in file order.
        failed: Transactions logged as failed or skipped.
    """

    latencies_us: Sequence[int]
    failed: int


def parse_transaction_log(lines: Iterable[str]) -> LatencySample:
    """
    Read pgbench C{--log} lines: C{client_id transaction_no time script_no
    time_epoch time_us [...]}, the third field the latency in microseconds
    or a word (C{failed}, C{skipped}) for a transaction that did not
    complete.

    Args:
        lines: The lines of one or more log files.

    Raises:
        ParseError: A line does not have pgbench's fields.
    """
    latencies: list[int] = []
    failed = 0
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise ParseError(f"pgbench log line {number} has {len(fields)} fields")
        if fields[2].isdigit():
            latencies.append(int(fields[2]))
        else:
            failed += 1
    return LatencySample(latencies_us=latencies, failed=failed)


def percentile(values: Sequence[float], pct: float) -> float:
    """
    The nearest-rank percentile: the smallest value that at least C{pct}
    per cent of C{values} do not exceed.

    Raises:
        ValueError: C{values} is empty or C{pct} is outside (0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile {pct} is outside (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[rank - 1]
