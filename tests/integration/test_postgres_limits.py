"""
Wire and memory limits on the PostgreSQL path, end to end: real psycopg
sessions through C{twistd hoopgate} to the test PostgreSQL.

A statement may bind as many parameters as PostgreSQL takes (65,535:
the protocol's counts are unsigned 16-bit numbers).  A statement longer
than the listener's C{max_statement} is refused with SQLSTATE 54000 and
the session goes on; the default lets bulk INSERTs of a few MB through.
A recording keeps at most C{gateway.recordings.max_text} characters of a
statement, once, with the whole length and hash.

test-case-name: tests.integration.test_postgres_limits
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from hoopgate_plugins.postgres._settings import DEFAULT_MAX_STATEMENT
from tests.support.gateway import RunningGateway, lines_of, start_gateway

pytestmark = pytest.mark.timeout(120)

Conn = psycopg.Connection[tuple[Any, ...]]

#: More parameters than a signed 16-bit count can hold.
MANY = 40_000

#: The limited gateway's max_statement and recordings.max_text.
MAX_STATEMENT = 1 << 20
MAX_TEXT = 4096

SQLSTATE = pq.DiagnosticField.SQLSTATE
MESSAGE = pq.DiagnosticField.MESSAGE_PRIMARY


def _limited(text: str) -> str:
    """
    The test configuration with a 1 MiB max_statement on the TLS
    listener and a 4096-character max_text for recordings.
    """
    listener = "    cleartext_without_tls: true\n"
    recordings = "    on_failure: close\n"
    assert text.count(listener) == 1 and text.count(recordings) == 1
    text = text.replace(listener, f"{listener}    max_statement: {MAX_STATEMENT}\n")
    return text.replace(recordings, f"{recordings}    max_text: {MAX_TEXT}\n")


@pytest.fixture(scope="module")
def limited(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    A gateway with the limits of L{_limited}.
    """
    running = start_gateway(servers, tmp_path_factory.mktemp("limited"), edit=_limited)
    try:
        yield running
    finally:
        running.stop()


def _simple(conn: Conn, sql: str) -> pq.abc.PGresult:
    """
    Run C{sql} with the simple query protocol (one Query message).
    """
    result = conn.pgconn.exec_(sql.encode())
    assert result is not None
    return result


def _error(result: pq.abc.PGresult) -> tuple[Any, ...]:
    return (
        result.status,
        result.error_field(SQLSTATE),
        result.error_field(MESSAGE),
    )


def _long_select(size: int, marker: str) -> str:
    """
    A statement of C{size} characters returning its literal's length.
    """
    head = f"select length('{marker}"
    tail = "')"
    return head + "x" * (size - len(head) - len(tail)) + tail


def _files_holding(gateway: RunningGateway, needle: str) -> list[Path]:
    return gateway.files_containing(needle)


def _rss(gateway: RunningGateway) -> int:
    """
    The gateway process's peak resident set size so far, in bytes.
    """
    status = Path(f"/proc/{gateway.pid}/status").read_text(encoding="ascii")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise AssertionError(f"no VmHWM in /proc/{gateway.pid}/status")


def _sum_of_parameters(conn: Conn, count: int, *, prepare: bool) -> Any:
    """
    The server's sum of C{count} bound parameters 1..count, and how
    many it received.
    """
    placeholders = ", ".join(["%s::int"] * count)
    # Placeholders only: the values travel as parameters.
    sql = f"select count(*), sum(v) from unnest(array[{placeholders}]) as t(v)"  # noqa: S608
    row = conn.execute(sql, list(range(1, count + 1)), prepare=prepare).fetchone()
    assert row is not None
    return tuple(row)


class TestManyParameters:
    """
    Parse, Bind, ParameterDescription with more than 32,767 parameters.
    """

    @pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "prepared"])
    def test_forty_thousand_parameters(
        self, gateway: RunningGateway, direct: Conn, prepare: bool
    ) -> None:
        """
        A statement binding 40,000 parameters returns through the gateway
        what it returns directly: the server counted 40,000 values summing
        to 800,020,000 (a prepared statement is described first, so the
        server's ParameterDescription with 40,000 types passes too).
        """
        want = _sum_of_parameters(direct, MANY, prepare=prepare)
        args = gateway.connect_args(gateway.token())
        with psycopg.connect(**args, autocommit=True) as conn:
            got = _sum_of_parameters(conn, MANY, prepare=prepare)

        assert want == (MANY, MANY * (MANY + 1) // 2) == (40_000, 800_020_000)
        assert got == want


REFUSED = (
    pq.ExecStatus.FATAL_ERROR,
    b"54000",
    b"hoopgate: the statement is longer than the gateway accepts (1048576 bytes)",
)


class TestStatementLimit:
    """
    A statement over C{max_statement} is refused, not buffered, and the
    session goes on.
    """

    def test_simple_query_refused(self, limited: RunningGateway) -> None:
        """
        A 2 MB Query gets SQLSTATE 54000 with the limit in its message;
        the same connection then runs a statement; the recording has a
        notice naming the size and the statement's denied completion,
        and none of the 2 MB anywhere.
        """
        token = limited.token()
        marker = "simple-over-limit-7f3a"
        sql = _long_select(2_000_000, marker)

        with psycopg.connect(**limited.connect_args(token), autocommit=True) as conn:
            refused = _error(_simple(conn, sql))
            after = conn.execute("select 41 + 1").fetchone()

        session_id = limited.session_of(token)
        limited.wait_event(session_id, "session.closed")
        lines = limited.recording_lines(session_id)
        [notice] = [
            x for x in lines_of(lines, "notice") if x["kind"] == "statement.too_long"
        ]
        [completed] = [
            x
            for x in lines_of(lines, "statement.completed")
            if x["error_code"] == "54000"
        ]
        assert refused == REFUSED
        assert after == (42,)
        assert notice["detail"] == (
            # The message's length field: its text, NUL and 4 bytes of length.
            f"{completed['statement_id']}: 2000005 bytes, "
            "over max_statement (1048576 bytes)"
        )
        assert completed["status"] == "denied"
        assert _files_holding(limited, marker) == []

    def test_parse_refused_in_transaction(self, limited: RunningGateway) -> None:
        """
        A 2 MB statement with a parameter (Parse, extended protocol) gets
        54000 too; inside a transaction the server saw it fail as well,
        so the transaction is aborted, as a refused statement's is;
        after a rollback the session works.
        """
        sql = _long_select(2_000_000, "parse-over-limit") + " + %s"
        args = limited.connect_args(limited.token())

        with psycopg.connect(**args) as conn:
            with pytest.raises(psycopg.errors.ProgramLimitExceeded) as caught:
                conn.execute(sql, (1,))
            status = conn.info.transaction_status
            conn.rollback()
            after = conn.execute("select %s::int * 2", (21,)).fetchone()

        assert caught.value.sqlstate == "54000"
        assert caught.value.diag.message_primary == REFUSED[2].decode()
        assert status == pq.TransactionStatus.INERROR
        assert after == (42,)

    def test_under_limit_runs(self, limited: RunningGateway, direct: Conn) -> None:
        """
        A statement just under the limit runs and returns what it does
        directly.
        """
        sql = _long_select(MAX_STATEMENT - 100, "under-limit")
        args = limited.connect_args(limited.token())

        want = _simple(direct, sql).get_value(0, 0)
        with psycopg.connect(**args, autocommit=True) as conn:
            got = _simple(conn, sql).get_value(0, 0)

        assert want == str(MAX_STATEMENT - 100 - 17).encode()
        assert got == want


class TestDefaults:
    """
    The default limits: a bulk INSERT of a few MB passes, the 30 MB
    statement that used to cost 270 MB of memory does not.
    """

    def test_bulk_insert_of_three_mb(
        self, gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        A 3 MB multi-row INSERT (60,000 rows) runs through the default
        gateway; the server counts every row.
        """
        rows = ",".join(
            f"({i}, 'name {i}', 'user{i}@example.org', {i}.25)" for i in range(60_000)
        )
        sql = f"insert into bulk values {rows}"  # noqa: S608 - test constants
        args = gateway.connect_args(gateway.token())

        with psycopg.connect(**args, autocommit=True) as conn:
            conn.execute(
                "create temp table bulk (id int, name text, email text, n numeric)"
            )
            inserted = _simple(conn, sql)
            counted = conn.execute("select count(*), sum(id) from bulk").fetchone()

        assert len(sql) > 3_000_000
        assert inserted.command_status == b"INSERT 0 60000"
        assert counted == (60_000, sum(range(60_000)))

    def test_long_statement_stalls_no_other_session(
        self, gateway: RunningGateway
    ) -> None:
        """
        While a 7 MB INSERT of 260,000 rows is classified (in the worker
        process, for seconds), another session's statements are answered
        within a generous bound, and the gateway's own memory stays far
        below what parsing the INSERT takes.
        """
        rows = ",".join(f"({i}, 'n{i}', {i}.5)" for i in range(260_000))
        sql = f"insert into bulk2 values {rows}"  # noqa: S608 - test constants
        args = gateway.connect_args(gateway.token())
        before = _rss(gateway)

        with (
            psycopg.connect(**args, autocommit=True) as big,
            psycopg.connect(**args, autocommit=True) as other,
        ):
            big.execute("create temp table bulk2 (id int, name text, n numeric)")
            pool = ThreadPoolExecutor(1)
            with pool:
                inserted = pool.submit(_simple, big, sql)
                answers: list[tuple[Any, ...] | None] = []
                waits: list[float] = []
                while not inserted.done():
                    started = time.monotonic()
                    answers.append(other.execute("select 1").fetchone())
                    waits.append(time.monotonic() - started)
                    time.sleep(0.2)
                result = inserted.result(timeout=120)
            counted = big.execute("select count(*) from bulk2").fetchone()
        peak = _rss(gateway)

        assert 7_000_000 < len(sql) < DEFAULT_MAX_STATEMENT
        assert result.command_status == b"INSERT 0 260000"
        assert counted == (260_000,)
        assert answers == [(1,)] * len(answers)
        assert len(answers) >= 2, answers
        assert max(waits) < 2.0, waits
        assert peak - before < 150 << 20, (before, peak)

    def test_thirty_mb_refused(self, gateway: RunningGateway) -> None:
        """
        A 30 MB Query is over the default max_statement (8 MiB).
        """
        sql = _long_select(30 << 20, "thirty-mb")

        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            result = _simple(conn, sql)

        assert _error(result) == (
            pq.ExecStatus.FATAL_ERROR,
            b"54000",
            b"hoopgate: the statement is longer than the gateway accepts"
            b" (8388608 bytes)",
        )


class TestRecordingLimit:
    """
    A long statement is recorded once, cut to max_text characters.
    """

    def test_long_statement_cut(self, limited: RunningGateway) -> None:
        """
        A 900 KB statement is recorded with its first 4096 characters,
        its length and its SHA-256; its only part spans all of it; the
        session's recording stays small.
        """
        token = limited.token()
        marker = "recorded-once-5c1e"
        sql = _long_select(900_000, marker)

        with psycopg.connect(**limited.connect_args(token), autocommit=True) as conn:
            value = _simple(conn, sql).get_value(0, 0)

        session_id = limited.session_of(token)
        limited.wait_event(session_id, "session.closed")
        [line] = [
            x
            for x in lines_of(limited.recording_lines(session_id), "statement")
            if marker in x["text"]
        ]
        path = limited.recordings / f"{session_id}.jsonl"
        assert value == str(900_000 - 17).encode()
        assert line["text"] == sql[:MAX_TEXT]
        assert line["text_length"] == 900_000
        assert line["text_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
        assert [p["span"] for p in line["parts"]] == [[0, 900_000]]
        assert path.read_text(encoding="utf-8").count(marker) == 1
        assert path.stat().st_size < 20_000
