"""
Tests for the benchmark suite's pure parts (L{bench.parse}, L{bench.report},
L{bench.hotspots}, the configurations of L{bench.servers}): parsers on canned
tool output, medians, ratios, targets and the report, the gateways'
configurations and the SSH clients' arguments. No server is started and
nothing is timed; C{make bench} runs the benchmarks themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.trial.unittest import SynchronousTestCase

from bench.hotspots import parse_collapsed, summarize
from bench.parse import (
    ParseError,
    check_people_rows,
    parse_byte_count,
    parse_pgbench_summary,
    parse_ssh_ciphers,
    parse_transaction_log,
    percentile,
)
from bench.report import (
    BYTES_PER_MIB,
    BigSelectRow,
    BigSelectRun,
    ConnectRow,
    ConnectRun,
    IdleRow,
    MaskingRow,
    MaskingRun,
    PgbenchRun,
    Results,
    SelectRow,
    SshLoginRow,
    TargetCheck,
    TransferRow,
    TransferRun,
    evaluate_targets,
    from_json,
    median,
    ratio,
    render_markdown,
    to_json,
)
from bench.run import masking_table_sql
from bench.servers import (
    Bastion,
    Endpoint,
    SshClients,
    SshGateway,
    gateway_config,
    ssh_gateway_config,
)
from hoopgate._config import parse_config

SELECT_OUTPUT = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 164690
number of failed transactions: 0 (0.000%)
latency average = 0.486 ms
initial connection time = 54.696 ms
tps = 16470.954312 (without initial connection time)
"""

CONNECT_OUTPUT = """\
transaction type: <builtin: select only>
query mode: simple
number of clients: 4
number of threads: 2
duration: 3 s
number of transactions actually processed: 273
number of failed transactions: 0 (0.000%)
latency average = 44.017 ms
average connection time = 21.763 ms
tps = 90.873694 (including reconnection times)
"""

# client_id transaction_no time script_no time_epoch time_us
TRANSACTION_LOG = """\
0 0 412 0 1796343367 212236
0 1 388 0 1796343367 212700
1 0 1500 0 1796343367 212800
1 1 failed 0 1796343367 213000

0 2 95 0 1796343367 213100
"""

PROFILE = """\
<module> (twistd);ReactorBase.mainLoop (twisted/internet/base.py);doRead (twisted/internet/tcp.py);_write (hoopgate/_recording.py) 30
<module> (twistd);ReactorBase.mainLoop (twisted/internet/base.py);doRead (twisted/internet/tcp.py);next_frame (hoopgate_plugins/postgres/_codec.py) 10
<module> (twistd);ReactorBase.mainLoop (twisted/internet/base.py);doWrite (twisted/internet/abstract.py);untilConcludes (twisted/python/util.py) 60
Thread._bootstrap (threading.py);Condition.wait (threading.py) 500
"""


# psql -A -t output of the masking table: clear, and masked.
CLEAR_ROWS = (
    b"1|c4ca4238a0b9@example.com|001-01-0001|4000000000007919\n"
    b"2|c81e728d9d4c@example.com|002-02-0002|4000000000015838\n"
)
MASKED_ROWS = b"1|[masked]|[masked]|[masked]\n2|[masked]|[masked]|[masked]\n"

# What ssh -v prints (in part) for a ProxyJump login: the jump host's key
# exchange, then the target's through it.
SSH_VERBOSE = """\
OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026
debug1: Reading configuration data /tmp/bench/ssh_config
debug1: kex: algorithm: sntrup761x25519-sha512@openssh.com
debug1: kex: server->client cipher: aes128-ctr MAC: hmac-sha2-256 compression: none
debug1: kex: client->server cipher: aes128-ctr MAC: hmac-sha2-256 compression: none
debug1: Authenticated to 127.0.0.1 ([127.0.0.1]:40001) using "publickey".
debug1: kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none
debug1: kex: client->server cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none
"""


def run(tps: float, latency_ms: float = 1.0, p99_ms: float = 2.0) -> PgbenchRun:
    return PgbenchRun(
        tps=tps, latency_avg_ms=latency_ms, p99_ms=p99_ms, transactions=100
    )


def select_row(clients: int, **tps: list[float]) -> SelectRow:
    """
    A row with one run per TPS figure given for each contender.
    """
    row = SelectRow(tls=False, mode="simple", clients=clients)
    for contender, figures in tps.items():
        row.runs[contender] = [run(t) for t in figures]
    return row


class PgbenchSummaryTests(SynchronousTestCase):
    """
    L{parse_pgbench_summary} reads pgbench's closing lines.
    """

    def test_select_only(self) -> None:
        """
        Throughput, latency, counts and the initial connection time.
        """
        summary = parse_pgbench_summary(SELECT_OUTPUT)

        assert summary.tps == 16470.954312
        assert summary.latency_avg_ms == 0.486
        assert summary.transactions == 164690
        assert summary.failed == 0
        assert summary.connection_ms == 54.696

    def test_reconnecting(self) -> None:
        """
        With C{-C}, the average connection time and the rate including
        reconnections.
        """
        summary = parse_pgbench_summary(CONNECT_OUTPUT)

        assert summary.tps == 90.873694
        assert summary.connection_ms == 21.763
        assert summary.transactions == 273

    def test_failed_transactions(self) -> None:
        """
        The failed count is read, not assumed zero.
        """
        text = SELECT_OUTPUT.replace(
            "failed transactions: 0 (0.000%)", "failed transactions: 12 (0.007%)"
        )

        assert parse_pgbench_summary(text).failed == 12

    def test_aborted_run(self) -> None:
        """
        Output without a tps line (pgbench aborted) is an error naming it.
        """
        text = SELECT_OUTPUT.replace("tps = ", "")

        with pytest.raises(ParseError) as caught:
            parse_pgbench_summary(text)

        assert str(caught.value) == "pgbench output has no tps line"


class TransactionLogTests(SynchronousTestCase):
    """
    L{parse_transaction_log} reads pgbench C{--log} lines.
    """

    def test_latencies_and_failures(self) -> None:
        """
        The third field is the latency in microseconds; a word there is a
        transaction that did not complete; blank lines are skipped.
        """
        sample = parse_transaction_log(TRANSACTION_LOG.splitlines())

        assert list(sample.latencies_us) == [412, 388, 1500, 95]
        assert sample.failed == 1

    def test_short_line(self) -> None:
        """
        A line without pgbench's fields is an error naming its number.
        """
        with pytest.raises(ParseError) as caught:
            parse_transaction_log(["0 0 412 0 1796343367 1", "0 1 388"])

        assert str(caught.value) == "pgbench log line 2 has 3 fields"


class StatisticsTests(SynchronousTestCase):
    """
    Percentiles, medians and ratios.
    """

    def test_percentile_nearest_rank(self) -> None:
        """
        The p99 of 1..200 is 198; of 1..100, 99; p100 is the maximum.
        """
        assert percentile(list(range(1, 201)), 99) == 198
        assert percentile(list(range(100, 0, -1)), 99) == 99
        assert percentile([5, 1, 9], 100) == 9
        assert percentile([7], 99) == 7

    def test_percentile_refuses(self) -> None:
        """
        No values, or a percentage outside (0, 100], is refused.
        """
        for values, pct in (([], 99.0), ([1.0], 0.0), ([1.0], 101.0)):
            with pytest.raises(ValueError, match="percentile"):
                percentile(values, pct)

    def test_median(self) -> None:
        """
        The middle value, the mean of the middle two, or None for none.
        """
        assert median([3.0, 1.0, 2.0]) == 2.0
        assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
        assert median([]) is None

    def test_ratio(self) -> None:
        """
        None when either side is missing or the denominator is not positive.
        """
        assert ratio(1.0, 4.0) == 0.25
        assert ratio(None, 4.0) is None
        assert ratio(1.0, None) is None
        assert ratio(1.0, 0.0) is None


class TargetTests(SynchronousTestCase):
    """
    The issue's targets against the medians.
    """

    def test_verdicts(self) -> None:
        """
        A ratio short of its floor and a figure over its ceiling say by how
        much; a missing figure is not measured.
        """
        short = TargetCheck("r", 0.25, 0.5, "x", at_least=True)
        over = TargetCheck("m", 75.0, 50.0, "KiB", at_least=False)
        fine = TargetCheck("f", 0.9, 0.8, "x", at_least=True)
        missing = TargetCheck("n", None, 0.7, "x", at_least=True)

        assert (short.met, short.verdict()) == (False, "not met (50% short)")
        assert (over.met, over.verdict()) == (False, "not met (50% over)")
        assert (fine.met, fine.verdict()) == (True, "met")
        assert (missing.met, missing.verdict()) == (None, "not measured")

    def test_select_targets_use_medians(self) -> None:
        """
        At 8 clients the median TPS ratios to direct and to PgBouncer; at
        one client the latency added in microseconds.
        """
        eight = select_row(
            8,
            direct=[10000, 9000, 11000],
            pgbouncer=[8000, 7000, 9000],
            hoopgate=[6000, 1000, 5000],
        )
        one = SelectRow(tls=True, mode="prepared", clients=1)
        one.runs["direct"] = [run(5000, 0.100), run(5000, 0.120)]
        one.runs["hoopgate"] = [run(3000, 0.300), run(3000, 0.260)]
        results = Results(select=[eight, one])

        checks = {c.name: c for c in evaluate_targets(results)}

        direct = checks["select-only 8 clients, simple, TLS off: hoopgate / direct TPS"]
        bouncer = checks[
            "select-only 8 clients, simple, TLS off: hoopgate / pgbouncer TPS"
        ]
        added = checks["1 client, prepared, TLS on: latency added per query"]
        assert direct.measured == 0.5
        assert direct.met is True
        assert bouncer.measured == 5000 / 8000
        assert bouncer.met is False
        assert added.measured is not None
        assert round(added.measured, 6) == 170.0
        assert added.met is False

    def test_connect_and_idle_targets(self) -> None:
        """
        The new-session ratio and the memory per idle session.
        """
        connect = ConnectRow(clients=8)
        connect.runs["direct"] = [ConnectRun(100.0, 17.0), ConnectRun(120.0, 16.0)]
        connect.runs["hoopgate"] = [ConnectRun(80.0, 25.0), ConnectRun(74.0, 26.0)]
        idle = IdleRow(
            tls=True,
            sessions=2000,
            rss_before_kib=60000,
            rss_open_kib=140000,
            rss_closed_kib=120000,
        )
        results = Results(connect=[connect], idle=[idle])

        new_sessions, memory = evaluate_targets(results)

        assert new_sessions.measured == 77.0 / 110.0
        assert new_sessions.met is True
        assert memory.measured == 40.0
        assert memory.met is True

    def test_failed_idle_row_is_not_measured(self) -> None:
        """
        An idle row that failed has no figure to judge.
        """
        idle = IdleRow(True, 2000, 0, 0, 0, error="20 of 2000 sessions failed")

        (memory,) = evaluate_targets(Results(idle=[idle]))

        assert memory.verdict() == "not measured"


class MaskingOutputTests(SynchronousTestCase):
    """
    L{check_people_rows} checks every row psql printed of the masking table.
    """

    def test_clear_and_masked(self) -> None:
        """
        Clear rows pass as clear, masked rows as masked; the count is the
        number of rows.
        """
        assert check_people_rows(CLEAR_ROWS, masked=False) == 2
        assert check_people_rows(MASKED_ROWS, masked=True) == 2

    def test_wrong_state_names_the_line_not_the_value(self) -> None:
        """
        Clear rows are not masked rows and the reverse; a row left clear
        among masked ones is named by its line, and its values are not
        repeated in the message.
        """
        mixed = b"1|[masked]|[masked]|[masked]\n" + CLEAR_ROWS.splitlines(True)[1]

        with pytest.raises(ParseError) as caught:
            check_people_rows(mixed, masked=True)
        with pytest.raises(ParseError, match="2 of 2 rows are not clear"):
            check_people_rows(MASKED_ROWS, masked=False)

        assert str(caught.value) == "1 of 2 rows are not masked, the first on line 2"
        assert b"example.com" not in str(caught.value).encode()

    def test_partly_masked_row(self) -> None:
        """
        A row with only two of its three columns masked is not masked.
        """
        with pytest.raises(ParseError, match="on line 1"):
            check_people_rows(b"7|[masked]|[masked]|4000000000055433\n", masked=True)

    def test_cut_output(self) -> None:
        """
        Output that stops inside a row is refused.
        """
        with pytest.raises(ParseError, match="does not end with a newline"):
            check_people_rows(MASKED_ROWS[:-5], masked=True)

    def test_table_statements(self) -> None:
        """
        The table is made in its own statements (VACUUM cannot run in a
        transaction block), with the row count asked for.
        """
        statements = masking_table_sql(1000)

        assert statements[1].startswith("CREATE TABLE public.bench_people (id ")
        assert statements[2].endswith("FROM generate_series(1, 1000) g")
        assert statements[3] == "VACUUM (FREEZE, ANALYZE) public.bench_people"


class SshParseTests(SynchronousTestCase):
    """
    Byte counts and negotiated ciphers.
    """

    def test_byte_count(self) -> None:
        """
        C{wc -c} prints one number; anything else is refused.
        """
        assert parse_byte_count("524288000\n") == 500 * BYTES_PER_MIB
        for text in ("", "12 34\n", "wc: standard input: error\n"):
            with pytest.raises(ParseError, match="not a byte count"):
                parse_byte_count(text)

    def test_ciphers(self) -> None:
        """
        One entry per connection, server to client, in order; none is an
        error.
        """
        assert parse_ssh_ciphers(SSH_VERBOSE) == [
            "aes128-ctr, hmac-sha2-256",
            "chacha20-poly1305@openssh.com, <implicit>",
        ]
        with pytest.raises(ParseError, match="no negotiated cipher"):
            parse_ssh_ciphers("debug1: Reading configuration data\n")


def masking_row() -> MaskingRow:
    row = MaskingRow(rows=1_000_000, masked_columns=3)
    row.runs["direct"] = [MaskingRun(1.0, 1_000_000), MaskingRun(2.0, 1_000_000)]
    row.runs["masking-off"] = [
        MaskingRun(2.0, 1_000_000, 80_000_000, 75_000, 75_100, 60.0)
    ]
    row.runs["masking-on"] = [
        MaskingRun(5.0, 1_000_000, 53_000_000, 76_000, 77_024, 90.0),
        MaskingRun(4.0, 1_000_000, 53_000_000, 76_000, 76_512, 92.0),
        MaskingRun(8.0, 1_000_000, 53_000_000, 76_000, 76_100, 95.0),
    ]
    return row


def transfer_rows() -> list[TransferRow]:
    size = 100 * BYTES_PER_MIB
    down = TransferRow(direction="download", size=size)
    down.runs["direct"] = [TransferRun(1.0, size)]
    down.runs["proxyjump"] = [TransferRun(2.0, size), TransferRun(2.5, size)]
    down.runs["hoopgate"] = [TransferRun(1.25, size, 70 * 1024, 72 * 1024, 40.0)]
    up = TransferRow(direction="upload", size=size)
    up.runs["direct"] = [TransferRun(0.5, size)]
    up.runs["hoopgate"] = [TransferRun(1.0, size, 70 * 1024, 74 * 1024, 50.0)]
    return [down, up]


class MaskingAndSshReportTests(SynchronousTestCase):
    """
    The masking and SSH rows: rates, ratios, memory, targets, tables.
    """

    def test_masking_rates(self) -> None:
        """
        Rows/s is the median per contender; MB/s divides the result as the
        server sent it (what the gateway without rules relayed) for every
        contender; RSS growth is the worst run's.
        """
        row = masking_row()

        assert row.rows_per_s("direct") == 750_000
        assert row.rows_per_s("masking-on") == 200_000
        assert row.mb_per_s("direct") == 60.0
        assert row.mb_per_s("masking-on") == 16.0
        assert row.wire_bytes("direct") == 80_000_000
        assert row.wire_bytes("masking-on") == 53_000_000
        assert row.peak_growth_kib("masking-on") == 1024
        assert row.peak_growth_kib("direct") is None

    def test_masking_targets(self) -> None:
        """
        100,000 rows/s with three masked columns, and at most 64 MiB of
        growth; a slow run and a large growth are not met.
        """
        row = masking_row()
        slow = masking_row()
        slow.runs["masking-on"] = [
            MaskingRun(20.0, 1_000_000, 53_000_000, 76_000, 76_000 + 80 * 1024)
        ]

        rate, memory = evaluate_targets(Results(masking=[row]))
        slow_rate, big = evaluate_targets(Results(masking=[slow]))

        assert (rate.measured, rate.unit, rate.met) == (200_000, "rows/s", True)
        assert (memory.measured, memory.unit, memory.met) == (1.0, "MiB", True)
        assert (slow_rate.measured, slow_rate.verdict()) == (
            50_000,
            "not met (50% short)",
        )
        assert (big.measured, big.verdict()) == (80.0, "not met (25% over)")

    def test_masking_markdown(self) -> None:
        """
        The masking table's lines and the targets' lines.
        """
        lines = render_markdown(Results(masking=[masking_row()])).splitlines()

        assert (
            "| hoopgate, 3 columns masked | 5.00 | 200,000 | 16.0 | 53.0 | 74.2 | "
            "1.0 | 92 | 0.40 | 0.27 |"
        ) in lines
        assert (
            "| direct | 1.50 | 750,000 | 60.0 | 80.0 | - | - | - | 1.50 | 1.00 |"
            in (lines)
        )
        assert (
            "| masking, 1,000,000-row result, 3 masked columns: rows/s through "
            "hoopgate | 200,000 rows/s | ≥ 100,000 rows/s | met |"
        ) in lines
        assert (
            "| masking, 1,000,000-row result, 3 masked columns: gateway RSS growth "
            "(peak - before, worst run) | 1.0 MiB | ≤ 64 MiB | met |"
        ) in lines

    def test_ssh_markdown(self) -> None:
        """
        MiB/s per contender with both ratios, the gateway's CPU and memory;
        the login row with the ciphers; a contender without runs shows
        dashes.
        """
        login = SshLoginRow()
        login.seconds["direct"] = [0.4, 0.5, 0.3]
        login.ciphers["hoopgate"] = ["aes128-ctr, hmac-sha2-256"]
        results = Results(ssh=transfer_rows(), ssh_login=login)

        lines = render_markdown(results).splitlines()

        assert (
            "| download | 100 | hoopgate | 1.25 | 80.0 | 0.80 | 1.78 | 40 | "
            "70.0 / 72.0 |"
        ) in lines
        assert (
            "| download | 100 | OpenSSH ProxyJump (bastion sshd) | 2.25 | 45.0 | "
            "0.45 | 1.00 | - | - |"
        ) in lines
        assert (
            "| upload | 100 | hoopgate | 1.00 | 100.0 | 0.50 | - | 50 | 70.0 / 74.0 |"
            in (lines)
        )
        assert "| direct | 0.400 | - |" in lines
        assert "| hoopgate | - | aes128-ctr, hmac-sha2-256 |" in lines

    def test_round_trip_and_old_files(self) -> None:
        """
        The masking and SSH rows come back from JSON with their medians;
        a file from before they existed still reads.
        """
        login = SshLoginRow()
        login.seconds["proxyjump"] = [0.9]
        login.ciphers["proxyjump"] = ["a, b", "c, d"]
        results = Results(masking=[masking_row()], ssh=transfer_rows(), ssh_login=login)

        data = json.loads(json.dumps(to_json(results)))
        again = from_json(data)
        old = {
            k: v for k, v in data.items() if k not in ("masking", "ssh", "ssh_login")
        }

        assert again == results
        assert data["masking"][0]["median"]["masking-on"]["rows_per_s"] == 200_000
        assert data["ssh"][0]["median"]["direct"]["mib_per_s"] == 100.0
        assert from_json(old) == Results()


class ReportTests(SynchronousTestCase):
    """
    The Markdown table and the JSON file.
    """

    def results(self) -> Results:
        row = select_row(
            8, direct=[20000, 22000], pgbouncer=[15000], hoopgate=[4000, 5000]
        )
        row.errors.append("select-only TLS off simple -c 8 hoopgate: boom")
        big = BigSelectRow(rows=1_000_000, wire_bytes=54_000_000)
        big.runs["hoopgate"] = [BigSelectRun(3.0, 1_000_000, 70000, 74000)]
        big.runs["direct"] = [BigSelectRun(2.0, 1_000_000)]
        return Results(meta={"cpu": "2 x Test CPU"}, select=[row], bigselect=[big])

    def test_markdown_rows(self) -> None:
        """
        The select-only line carries the medians and both ratios; the big
        SELECT its rates; errors and the machine are listed.
        """
        text = render_markdown(self.results())

        lines = text.splitlines()
        assert (
            "| off | simple | 8 | 21,000 | 15,000 | 4,500 | 0.21 | 0.30 | "
            "1.000 / 1.000 / 1.000 | 2.000 / 2.000 / 2.000 | - | 22% |"
        ) in lines
        assert "| hoopgate | 3.00 | 333,333 | 18.0 | 68.4 | 72.3 |" in lines
        assert "| direct | 2.00 | 500,000 | 27.0 | - | - |" in lines
        assert "- select-only TLS off simple -c 8 hoopgate: boom" in lines
        assert "| cpu | 2 x Test CPU |" in lines
        assert (
            "| select-only 8 clients, simple, TLS off: hoopgate / direct TPS "
            "| 0.21 | ≥ 0.5 | not met (57% short) |"
        ) in lines

    def test_json(self) -> None:
        """
        The JSON holds every run, the medians and the targets.
        """
        data = json.loads(json.dumps(to_json(self.results())))

        (row,) = data["select"]
        assert [r["tps"] for r in row["runs"]["direct"]] == [20000, 22000]
        assert row["median"]["hoopgate"]["tps"] == 4500
        assert data["bigselect"][0]["wire_bytes"] == 54_000_000
        verdicts = {t["name"]: t["met"] for t in data["targets"]}
        name = "select-only 8 clients, simple, TLS off: hoopgate / pgbouncer TPS"
        assert verdicts[name] is False

    def test_json_round_trip(self) -> None:
        """
        L{from_json} reads back what L{to_json} wrote: the same report.
        """
        results = self.results()
        results.profile = summarize(parse_collapsed(PROFILE.splitlines()))
        results.idle.append(IdleRow(False, 100, 1000, 5000, 4000))

        again = from_json(json.loads(json.dumps(to_json(results))))

        assert again == results
        assert render_markdown(again) == render_markdown(results)


class ProfileTests(SynchronousTestCase):
    """
    py-spy's collapsed stacks, summarised for the reactor thread.
    """

    def test_summary(self) -> None:
        """
        Shares count only stacks through the reactor loop; the inclusive
        ranking holds the gateway's own functions.
        """
        summary = summarize(parse_collapsed(PROFILE.splitlines()))

        assert summary.samples == 100
        top = [(s.name, s.self_pct) for s in summary.functions]
        assert top == [
            ("untilConcludes (twisted/python/util.py)", 60.0),
            ("_write (hoopgate/_recording.py)", 30.0),
            ("next_frame (hoopgate_plugins/postgres/_codec.py)", 10.0),
        ]
        inclusive = [(s.name, s.total_pct) for s in summary.cumulative]
        assert inclusive == [
            ("_write (hoopgate/_recording.py)", 30.0),
            ("next_frame (hoopgate_plugins/postgres/_codec.py)", 10.0),
        ]
        assert summary.files[0].name == "twisted/python/util.py"

    def test_bad_line(self) -> None:
        """
        A line without a sample count is an error naming its number.
        """
        with pytest.raises(ParseError) as caught:
            parse_collapsed(["a;b 3", "a;b three"])

        assert str(caught.value) == "profile line 2 does not end in a count"

    def test_no_reactor_stack(self) -> None:
        """
        A profile without the reactor thread is refused, not summarised
        as empty.
        """
        stacks = parse_collapsed(["Thread._bootstrap (threading.py) 5"])

        with pytest.raises(ParseError, match="no profiled stack"):
            summarize(stacks)


class ConfigurationTests(SynchronousTestCase):
    """
    What the benchmark gives the gateway and the clients.
    """

    def setUp(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="hg-bench-test."))
        self.addCleanup(shutil.rmtree, self.run_dir)
        (self.run_dir / "pg").mkdir()
        (self.run_dir / "pg" / "app.pw").write_text("not-a-real-password")
        self.servers = {
            "HG_RUN": str(self.run_dir),
            "TLS_CERT": str(self.run_dir / "tls.crt"),
            "TLS_KEY": str(self.run_dir / "tls.key"),
            "OIDC_ISSUER": "http://127.0.0.1:9",
            "OIDC_AUDIENCE": "https://hoopgate.test",
            "PG_PORT": "5432",
        }

    def test_gateway_config_loads(self) -> None:
        """
        The gateway's configuration passes hoopgate's own validation: the
        target is named like its database, its TLS follows the row, and the
        guardrail rule is loaded.
        """
        recordings = self.run_dir / "recordings"
        for tls, mode in ((True, "verify-full"), (False, "disable")):
            text = gateway_config(self.servers, 15432, 18091, recordings, tls)

            config = parse_config(text, "bench.yaml")

            target = config.targets["appdb"]
            assert (target.port, target.tls_mode) == (5432, mode)
            assert [r.name for r in config.policy.guardrails] == ["no-destructive"]
            assert config.gateway.recordings == str(recordings)
            assert config.policy.masking.rules == ()

    def test_masking_gateway_config(self) -> None:
        """
        With masking, one enforce rule redacts the three columns of the
        masking table; nothing else changes.
        """
        text = gateway_config(
            self.servers, 15432, 18091, self.run_dir / "rec", True, masking=True
        )

        (rule,) = parse_config(text, "bench.yaml").policy.masking.rules

        assert (rule.name, rule.mode, type(rule.strategy).__name__) == (
            "bench-columns",
            "enforce",
            "Redact",
        )
        assert [c.text for c in rule.columns] == [
            "public.bench_people.email",
            "public.bench_people.ssn",
            "public.bench_people.card",
        ]
        assert rule.detectors == ()

    def ssh_servers(self) -> dict[str, str]:
        """
        The SSH variables of the services' env file, with a real key pair
        and a known-hosts file for the target (written here).
        """
        key = Ed25519PrivateKey.generate()
        private = self.run_dir / "client_ed25519"
        private.write_bytes(
            key.private_bytes(
                ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()
            )
        )
        public = key.public_key().public_bytes(
            ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH
        )
        (self.run_dir / "client_ed25519.pub").write_bytes(public + b" bench\n")
        (self.run_dir / "host_ed25519.pub").write_bytes(public + b" host\n")
        known = self.run_dir / "known_hosts"
        known.write_text(f"[127.0.0.1]:2222 {public.decode()}\n")
        return {
            **self.servers,
            "SSH_HOST": "127.0.0.1",
            "SSH_PORT": "2222",
            "SSH_USER": "root",
            "SSH_CLIENT_KEY": str(private),
            "SSH_KNOWN_HOSTS": str(known),
            "SSH_HOST_KEY_PUB": str(self.run_dir / "host_ed25519.pub"),
        }

    def test_ssh_gateway_config_loads(self) -> None:
        """
        The SSH gateway's configuration passes hoopgate's validation: one
        SSH listener, the sshd as target C{box} with the client key, and a
        command allow-list of the benchmark's commands.
        """
        servers = self.ssh_servers()
        text = ssh_gateway_config(
            servers, 12222, 18092, self.run_dir / "rec", self.run_dir / "hk"
        )

        config = parse_config(text, "bench-ssh.yaml")

        (listener,) = config.listeners
        box = config.targets["box"]
        (rule,) = config.policy.guardrails
        assert (listener.protocol, listener.listen) == (
            "ssh",
            "tcp:12222:interface=127.0.0.1",
        )
        assert (box.protocol, box.port, box.credentials["main"].user) == (
            "ssh",
            2222,
            "root",
        )
        assert rule.allow_only is not None
        globs = rule.allow_only.command.lines
        assert globs is not None
        assert [g.text for g in globs] == ["head -c * /dev/zero", "wc -c", "true"]

    def test_ssh_clients(self) -> None:
        """
        Each SSH contender's command line reads one configuration file;
        ProxyJump goes through the bastion; the held-cipher contenders use
        their own host entries; only the gateway's ssh gets the askpass
        script, and the token is in an owner-only file, never an argument.
        """
        servers = self.ssh_servers()
        bastion = Bastion(self.run_dir / "bastion", servers)
        bastion.folder.mkdir()
        (bastion.folder / "host_ed25519.pub").write_text("ssh-ed25519 AAAAbastion b\n")
        gateway = SshGateway(self.run_dir / "gateway", servers)
        gateway.folder.mkdir()
        (gateway.folder / "ssh_host_ed25519.pub").write_text("ssh-ed25519 AAAAgw g\n")

        clients = SshClients(
            self.run_dir / "clients", servers, bastion, gateway, "the-token"
        )

        config = ["ssh", "-F", str(clients.config)]
        assert clients.argv("direct", "true") == [*config, "target", "true"]
        assert clients.argv("proxyjump", "wc -c", verbose=True) == [
            *config,
            "-v",
            "-J",
            "bastion",
            "target",
            "wc -c",
        ]
        assert clients.argv("proxyjump-ctr", "true")[3:6] == [
            "-J",
            "bastion-ctr",
            "target-ctr",
        ]
        assert clients.argv("hoopgate", "true") == [*config, "hoopgate", "true"]
        with pytest.raises(ValueError, match="no SSH contender"):
            clients.argv("telnet", "true")
        text = clients.config.read_text()
        assert f"Port {gateway.port}\n  User box\n" in text
        assert "Host target-ctr\n" in text
        assert "  Ciphers aes128-ctr\n  MACs hmac-sha2-256\n" in text
        known = (clients.folder / "known_hosts").read_text().splitlines()
        assert known[1:] == [
            f"[127.0.0.1]:{bastion.port} ssh-ed25519 AAAAbastion",
            f"[127.0.0.1]:{gateway.port} ssh-ed25519 AAAAgw",
        ]
        assert "SSH_ASKPASS" not in clients.env("proxyjump")
        askpass = Path(clients.env("hoopgate")["SSH_ASKPASS"])
        assert "the-token" not in " ".join(clients.argv("hoopgate", "true"))
        assert (clients.folder / "token").read_text() == "the-token"
        assert (clients.folder / "token").stat().st_mode & 0o777 == 0o600
        assert askpass.stat().st_mode & 0o777 == 0o700

    def test_libpq_env(self) -> None:
        """
        The client environment names the endpoint and the TLS setting and
        drops inherited PG* variables.
        """
        endpoint = Endpoint("hoopgate", 15432, "bench", "a-token")
        inherited = {"PATH": "/usr/bin", "PGSERVICE": "elsewhere"}
        with mock.patch.dict(os.environ, inherited, clear=True):
            plain = endpoint.libpq_env(False)
            tls = endpoint.libpq_env(True)

        assert (plain["PGPORT"], plain["PGUSER"], plain["PGPASSWORD"]) == (
            "15432",
            "bench",
            "a-token",
        )
        assert plain["PGDATABASE"] == "appdb"
        assert (plain["PGSSLMODE"], tls["PGSSLMODE"]) == ("disable", "require")
        assert "PGSERVICE" not in plain
        assert plain["PATH"] == "/usr/bin"
