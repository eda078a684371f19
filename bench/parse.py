"""
Parsers for what the benchmark's tools print.

pgbench's closing summary gives throughput, the average latency and the
transaction counts; its per-transaction log files (C{--log}) give every
transaction's latency, from which the percentiles are taken. psql's
unaligned output of the masking table is checked row by row (masked or
clear); C{wc -c} gives an SSH transfer's byte count and C{ssh -v} the
ciphers it negotiated.
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
    "check_people_rows",
    "parse_byte_count",
    "parse_pgbench_summary",
    "parse_ssh_ciphers",
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


# The masking table's rows as C{psql -A -t} prints them (id|email|ssn|card;
# bench.run.MASKING_TABLE_SQL makes them): clear, and with the three text
# columns redacted.
_CLEAR_ROW = re.compile(
    rb"^[0-9]+\|[0-9a-f]{12}@example\.com\|[0-9]{3}-[0-9]{2}-[0-9]{4}\|4[0-9]{15}$",
    re.MULTILINE,
)
_MASKED_ROW = re.compile(rb"^[0-9]+\|\[masked\]\|\[masked\]\|\[masked\]$", re.MULTILINE)


def _first_bad_line(data: bytes, pattern: re.Pattern[bytes]) -> int:
    for number, line in enumerate(data.split(b"\n"), 1):
        if not pattern.fullmatch(line):
            return number
    return 0


def check_people_rows(data: bytes, *, masked: bool) -> int:
    """
    Check every row psql printed of the masking table: with C{masked},
    each one's email, ssn and card must read C{[masked]}; without, each
    must hold the clear values the table was filled with.

    Args:
        data: psql's standard output (C{-A -t}), ending in a newline.
        masked: Whether the three columns must be masked.

    Returns:
        The number of rows.

    Raises:
        ParseError: A row is not as expected (named by its line number,
            never by its values).
    """
    pattern = _MASKED_ROW if masked else _CLEAR_ROW
    rows = data.count(b"\n")
    if not data.endswith(b"\n"):
        raise ParseError("psql output does not end with a newline")
    good = sum(1 for _ in pattern.finditer(data))
    if good != rows:
        line = _first_bad_line(data[:-1], pattern)
        state = "masked" if masked else "clear"
        raise ParseError(
            f"{rows - good} of {rows} rows are not {state}, the first on line {line}"
        )
    return rows


def parse_byte_count(text: str) -> int:
    """
    The count C{wc -c} prints (a single number on one line).

    Raises:
        ParseError: The text is not one number.
    """
    words = text.split()
    if len(words) != 1 or not words[0].isdigit():
        raise ParseError(f"wc -c printed {text.strip()[:80]!r}, not a byte count")
    return int(words[0])


_KEX_CIPHER = re.compile(
    r"^debug1: kex: server->client cipher: (\S+) MAC: (\S+)", re.MULTILINE
)


def parse_ssh_ciphers(stderr: str) -> list[str]:
    """
    The ciphers and MACs C{ssh -v} negotiated, server to client, one per
    SSH connection it made (the jump host's first with ProxyJump).

    Raises:
        ParseError: C{ssh -v} printed no key exchange.
    """
    found = [f"{cipher}, {mac}" for cipher, mac in _KEX_CIPHER.findall(stderr)]
    if not found:
        raise ParseError("ssh -v printed no negotiated cipher")
    return found
