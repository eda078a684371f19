"""
Tests for the benchmark suite's pure parts (L{bench.parse}, L{bench.report},
L{bench.hotspots}, the configurations of L{bench.servers}): parsers on canned
tool output, medians, ratios, targets and the report. No server is started
and nothing is timed; C{make bench} runs the benchmarks themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from twisted.trial.unittest import SynchronousTestCase

from bench.hotspots import parse_collapsed, summarize
from bench.parse import (
    ParseError,
    parse_pgbench_summary,
    parse_transaction_log,
    percentile,
)
from bench.report import (
    BigSelectRow,
    BigSelectRun,
    ConnectRow,
    ConnectRun,
    IdleRow,
    PgbenchRun,
    Results,
    SelectRow,
    TargetCheck,
    evaluate_targets,
    from_json,
    median,
    ratio,
    render_markdown,
    to_json,
)
from bench.servers import Endpoint, gateway_config
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
