"""
The PostgreSQL relay end to end: real clients (psql, psycopg 3, asyncpg)
through C{twistd hoopgate} to the test PostgreSQL, every result compared
with a direct read.

Covers BC01 (COPY FROM STDIN over the extended protocol), BC04 (result
formats and NULL, without masking), BC05 (psql in every sslmode), the
recording of a statement, and each upstream login method.

test-case-name: tests.integration.test_postgres_relay
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import pq

from tests.support.gateway import RunningGateway, lines_of
from tests.support.pgwire import WireClient, extended, frontend, query, startup_message

pytestmark = pytest.mark.timeout(120)

Conn = psycopg.Connection[tuple[Any, ...]]

CUSTOMERS = "select * from customers order by id"
NOTE, RAW = 7, 8  # column positions in customers
ROW2_RAW = b"\xff\xfe\x00\x41"
WAIT = 10.0  # seconds for any single wait on the wire


def raw_result(cursor: psycopg.Cursor[Any]) -> tuple[list[Any], list[Any]]:
    """
    The column descriptions and the undecoded field bytes of the last
    result, as the server (or the gateway) sent them.
    """
    res = cursor.pgresult
    assert res is not None
    columns = range(res.nfields)
    description = [
        (
            res.fname(c),
            res.ftable(c),
            res.ftablecol(c),
            res.ftype(c),
            res.fmod(c),
            res.fformat(c),
        )
        for c in columns
    ]
    values = [tuple(res.get_value(r, c) for c in columns) for r in range(res.ntuples)]
    return description, values


def direct_count(conn: Conn, sql: str = "select count(*) from customers") -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def empty_t_copy(direct: Conn) -> Iterator[None]:
    """
    t_copy is empty before and after the test (checked directly).
    """
    direct.execute("truncate t_copy")
    yield
    direct.execute("truncate t_copy")


class TestPsql:
    """
    psql, libpq's own client, in each sslmode (BC05, first half).
    """

    @pytest.mark.parametrize("sslmode", ["disable", "prefer", "require", "verify-full"])
    def test_bc05_psql_sslmode(
        self, gateway: RunningGateway, direct: Conn, sslmode: str
    ) -> None:
        """
        Every sslmode logs in with the token and counts the customers as a
        direct read does; TLS is in use unless disabled (disable works only
        because this listener has cleartext_without_tls).
        """
        expected = direct_count(direct)

        result = gateway.psql(
            gateway.token(),
            "-c",
            "select count(*) from customers",
            "-c",
            r"\conninfo",
            sslmode=sslmode,
        )

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == str(expected) == "1000"
        assert ("SSL connection" in result.stdout) is (sslmode != "disable")


class TestRecording:
    """
    What a session leaves in its recording, and what it never leaves.
    """

    def test_statement_recorded_under_subject(self, gateway: RunningGateway) -> None:
        """
        A psql statement is recorded in order: session.opened for subject
        ci-runner as upstream user app, the statement text, its completion
        (SELECT 1, one row) and session.closed; every line from
        session.opened on names the subject.
        """
        token = gateway.token()
        sql = "select count(*) from customers"

        result = gateway.psql(token, "-c", sql)
        session_id = gateway.session_of(token)
        gateway.wait_event(session_id, "session.closed")
        lines = gateway.recording_lines(session_id)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1000"
        opened = lines_of(lines, "session.opened")
        statements = [x for x in lines_of(lines, "statement") if x["text"] == sql]
        completed = lines_of(lines, "statement.completed")
        closed = lines_of(lines, "session.closed")
        assert len(opened) == len(statements) == len(completed) == len(closed) == 1
        assert opened[0]["identity"]["subject"] == "ci-runner"
        assert opened[0]["identity"]["issuer"] == gateway.servers["OIDC_ISSUER"]
        assert opened[0]["upstream_user"] == "app"
        assert opened[0]["target"] == "appdb"
        assert statements[0]["verdict"] == "allow"
        assert completed[0]["statement_id"] == statements[0]["statement_id"]
        assert (
            completed[0]["status"],
            completed[0]["command_tag"],
            completed[0]["rows"],
        ) == (
            "ok",
            "SELECT 1",
            1,
        )
        seqs = [x["seq"] for x in (opened[0], statements[0], completed[0], closed[0])]
        assert seqs == sorted(seqs)
        after_identity = [x for x in lines if x["seq"] >= opened[0]["seq"]]
        assert {x["subject"] for x in after_identity} == {"ci-runner"}

    def test_no_token_or_password_written(
        self, gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        The session runs as app, whose password the client never had; the
        token and the database password appear in no recording, log or
        output file of the gateway.
        """
        token = gateway.token()
        password = gateway.servers["APP_PASSWORD"]

        with psycopg.connect(**gateway.connect_args(token)) as conn:
            row = conn.execute("select current_user, session_user").fetchone()
        session_id = gateway.session_of(token)
        gateway.wait_event(session_id, "session.closed")

        assert row == ("app", "app")
        assert password not in token
        assert gateway.recording_files()
        assert gateway.files_containing(token) == []
        assert gateway.files_containing(token.rsplit(".", 1)[1]) == []
        assert gateway.files_containing(password) == []


class TestPsycopgFormats:
    """
    psycopg 3 results, byte for byte as a direct read (BC04 without masks).
    """

    def test_bc04_text_binary_and_pipeline(
        self, gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Text results, binary results and the same queries in pipeline mode
        give the same column descriptions, field bytes and rows as a direct
        read; row 2 keeps note NULL and raw ff fe 00 41.
        """
        want_text = raw_result(direct.execute(CUSTOMERS))
        rows = direct.execute(CUSTOMERS).fetchall()
        want_binary = raw_result(direct.cursor(binary=True).execute(CUSTOMERS))

        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            text = conn.execute(CUSTOMERS)
            got_text, text_rows = raw_result(text), text.fetchall()
            binary = conn.cursor(binary=True).execute(CUSTOMERS)
            got_binary, binary_rows = raw_result(binary), binary.fetchall()
            with conn.pipeline():
                piped_text = conn.execute(CUSTOMERS)
                piped_binary = conn.cursor(binary=True).execute(CUSTOMERS)
                piped_sum = conn.execute("select %s::int + 1", (41,))
            piped = (raw_result(piped_text), raw_result(piped_binary))
            piped_rows = piped_text.fetchall(), piped_binary.fetchall()
            summed = piped_sum.fetchone()

        assert len(rows) == 1000
        assert rows[1][NOTE] is None
        assert rows[1][RAW] == ROW2_RAW
        assert got_text == want_text
        assert got_binary == want_binary
        assert {f[5] for f in got_binary[0]} == {1}
        assert text_rows == binary_rows == rows
        assert piped == (want_text, want_binary)
        assert piped_rows == (rows, rows)
        assert summed == (42,)

    def test_extended_protocol_parameters(
        self, gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Text and binary parameters, NULL among them, and server-side
        prepared statements run twice give what they give directly.
        """
        queries: list[tuple[str, tuple[Any, ...]]] = [
            ("select %s::int + 1", (41,)),
            ("select %b::int + 1, %b::bytea, %b::text", (41, ROW2_RAW, None)),
            ("select %t::text || '!', %b::numeric * 2", ("abc", 12.5)),
        ]
        prepared = "select id, email, raw from customers where id = %s"

        def run(conn: Conn) -> list[Any]:
            results = [conn.execute(q, p).fetchall() for q, p in queries]
            for _ in range(2):
                results.append(conn.execute(prepared, (2,), prepare=True).fetchall())
            return results

        want = run(direct)
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            got = run(conn)

        assert want[0] == [(42,)]
        assert want[1] == [(42, ROW2_RAW, None)]
        assert got == want


class TestAsyncpg:
    """
    asyncpg: binary results, named prepared statements.
    """

    def test_bc04_asyncpg_matches_direct(self, gateway: RunningGateway) -> None:
        """
        fetch of all customers, and a prepared statement executed twice,
        give the same records as directly (asyncpg reads binary results).
        """
        servers = gateway.servers
        context = ssl.create_default_context(cafile=servers["TLS_CERT"])
        through = {
            "host": gateway.pg_host,
            "port": gateway.pg_port,
            "user": "ci-runner",
            "password": gateway.token(),
            "database": "appdb",
        }
        direct = {
            "host": servers["PG_HOST"],
            "port": int(servers["PG_PORT"]),
            "user": "app",
            "password": servers["APP_PASSWORD"],
            "database": servers["PG_DATABASE"],
        }

        want = asyncio.run(_asyncpg_reads(direct, context))
        got = asyncio.run(_asyncpg_reads(through, context))

        assert len(want["all"]) == 1000
        assert want["all"][1][NOTE] is None
        assert want["all"][1][RAW] == ROW2_RAW
        assert want["prepared"] == [want["all"][1], want["all"][2]]
        assert got == want


async def _asyncpg_reads(
    params: dict[str, Any], context: ssl.SSLContext
) -> dict[str, Any]:
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    try:
        rows = await conn.fetch(CUSTOMERS)
        statement = await conn.prepare("select * from customers where id = $1")
        first = await statement.fetchrow(2)
        second = await statement.fetchrow(3)
        value = await conn.fetchval("select $1::int + 1", 41)
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return {
        "all": [tuple(r) for r in rows],
        "prepared": [tuple(first), tuple(second)],
        "value": value,
    }


def _wait_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """
    The next result of a non-blocking libpq connection, waiting for the
    socket at most WAIT seconds at a time.
    """
    while pgconn.is_busy():
        readable, _, _ = select.select([pgconn.socket], [], [], WAIT)
        assert readable, f"no answer within {WAIT:g} s"
        pgconn.consume_input()
    return pgconn.get_result()


def _flush(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        _, writable, _ = select.select([], [pgconn.socket], [], WAIT)
        assert writable, f"could not send within {WAIT:g} s"


class TestCopy:
    """
    COPY in both directions, including BC01.
    """

    @pytest.mark.parametrize(
        "sql",
        [
            "copy (select * from customers order by id) to stdout",
            "copy (select * from customers order by id) to stdout (format csv)",
            "copy (select * from customers order by id) to stdout (format binary)",
        ],
        ids=["text", "csv", "binary"],
    )
    def test_copy_to_stdout_identical(
        self, gateway: RunningGateway, direct: Conn, sql: str
    ) -> None:
        """
        COPY TO STDOUT sends the same bytes as directly, in each format.
        """

        def read(conn: Conn) -> bytes:
            with conn.cursor() as cur, cur.copy(sql) as copy:
                return b"".join(bytes(chunk) for chunk in copy)

        want = read(direct)
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            got = read(conn)

        assert len(want) > 100_000
        assert got == want

    @pytest.mark.usefixtures("empty_t_copy")
    def test_copy_from_stdin(self, gateway: RunningGateway, direct: Conn) -> None:
        """
        1000 rows written with COPY FROM STDIN all arrive (counted directly).
        """
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            with conn.cursor() as cur, cur.copy("copy t_copy from stdin") as copy:
                for i in range(1000):
                    copy.write_row((i, f"v{i}"))
            conn.commit()

        row = direct.execute(
            "select count(*), count(distinct id), sum(id) from t_copy"
        ).fetchone()
        assert row == (1000, 1000, 499500)

    @pytest.mark.usefixtures("empty_t_copy")
    def test_bc01_copy_from_stdin_extended_protocol(
        self, gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        BC01: COPY FROM STDIN sent with the extended protocol (its Sync
        goes out before the CopyData) ends in one CommandComplete COPY
        1000; the next query answers at once; 1000 rows arrive.
        """
        args = gateway.connect_args(gateway.token())
        with psycopg.connect(**args, autocommit=True) as conn:
            pgconn = conn.pgconn
            pgconn.send_query_params(b"COPY t_copy FROM STDIN", None)
            _flush(pgconn)
            copy_in = _wait_result(pgconn)
            assert copy_in is not None
            assert copy_in.status == pq.ExecStatus.COPY_IN
            for i in range(1000):
                while not pgconn.put_copy_data(b"%d\tbc01\n" % i):
                    _flush(pgconn)
            while not pgconn.put_copy_end(None):
                _flush(pgconn)
            _flush(pgconn)
            done = _wait_result(pgconn)
            after = _wait_result(pgconn)
            pgconn.send_query(b"select 1")
            _flush(pgconn)
            next_query = _wait_result(pgconn)
            assert next_query is not None
            next_value = next_query.get_value(0, 0)
            assert _wait_result(pgconn) is None
            again = conn.execute("select 2").fetchone()

        assert done is not None
        assert (done.status, done.command_status) == (
            pq.ExecStatus.COMMAND_OK,
            b"COPY 1000",
        )
        assert after is None
        assert next_value == b"1"
        assert again == (2,)
        assert (
            direct_count(direct, "select count(*) from t_copy where v = 'bc01'") == 1000
        )

    @pytest.mark.usefixtures("empty_t_copy")
    def test_bc01_one_ready_for_query(
        self, gateway: RunningGateway, servers: dict[str, str], direct: Conn
    ) -> None:
        """
        BC01 on a raw socket: the Sync sent before the CopyData, and the
        one after CopyDone, get exactly the messages PostgreSQL sends
        directly (one CommandComplete COPY 1000, one ReadyForQuery); a
        query right after gets its own answer and nothing stale.
        """
        rows = b"".join(frontend(b"d", b"%d\traw\n" % i) for i in range(1000))
        copy_end = frontend(b"c") + frontend(b"S")

        def exchange(raw: WireClient, table: str) -> list[Any]:
            raw.send(extended(f"COPY {table} FROM STDIN"))
            head = raw.read_until("G", "E")
            raw.send(rows + copy_end)
            tail = raw.read_until("Z", "E")
            raw.send(query("select 1"))
            after = raw.read_until("Z", "E")
            return [
                [m.type for m in head],
                [(m.type, m.payload) for m in tail],
                [m.type for m in after],
            ]

        # Ground truth: trusty (trust, no password) into a temporary table.
        with WireClient(int(servers["PG_PORT"])) as raw:
            raw.send(startup_message({"user": "trusty", "database": "appdb"}))
            assert raw.read_until("Z", "E")[-1].type == "Z"
            raw.send(query("create temp table tt (id int, v text)"))
            assert raw.read_until("Z", "E")[-1].type == "Z"
            want = exchange(raw, "tt")
        with WireClient(gateway.pg_port) as raw:
            assert raw.login(gateway.token())[-1].type == "Z"
            got = exchange(raw, "t_copy")

        assert want == [
            ["1", "2", "n", "G"],
            [("C", b"COPY 1000\x00"), ("Z", b"I")],
            ["T", "D", "C", "Z"],
        ]
        assert got == want
        assert (
            direct_count(direct, "select count(*) from t_copy where v = 'raw'") == 1000
        )

    @pytest.mark.usefixtures("empty_t_copy")
    def test_psql_copy_from_file(
        self, gateway: RunningGateway, direct: Conn, tmp_path: Path
    ) -> None:
        r"""
        psql's \copy from a 1000-line file loads 1000 rows.
        """
        rows = tmp_path / "rows.tsv"
        rows.write_text(
            "".join(f"{i}\tfile{i}\n" for i in range(1000)), encoding="utf-8"
        )

        result = gateway.psql(gateway.token(), "-c", rf"\copy t_copy from '{rows}'")

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "COPY 1000"
        assert (
            direct_count(direct, "select count(*) from t_copy where v like 'file%'")
            == 1000
        )


class TestUpstreamLogins:
    """
    The gateway's own login to PostgreSQL, per authentication method.
    """

    @pytest.mark.parametrize(
        ("target", "role"),
        [
            ("appdb", "app"),  # SCRAM-SHA-256
            ("appdb_md5", "mduser"),  # md5
            ("appdb_trust", "trusty"),  # trust, no password
            ("appdb_ro", "app_ro"),  # SCRAM, read-only role
        ],
    )
    def test_login_method(
        self, gateway: RunningGateway, target: str, role: str
    ) -> None:
        """
        Each target's session runs as its configured role, over TLS to
        PostgreSQL (the targets use verify-full).
        """
        args = gateway.connect_args(gateway.token(), target=target)
        with psycopg.connect(**args) as conn:
            row = conn.execute(
                "select current_user, session_user, s.ssl from pg_stat_ssl s"
                " where s.pid = pg_backend_pid()"
            ).fetchone()

        assert row == (role, role, True)


def test_session_closes_after_client(gateway: RunningGateway) -> None:
    """
    When the client ends the session, the recording closes it (bounded).
    """
    token = gateway.token()
    with psycopg.connect(**gateway.connect_args(token)) as conn:
        conn.execute("select 1")
        session_id = gateway.session_of(token)
        assert lines_of(gateway.recording_lines(session_id), "session.closed") == []

    closed = gateway.wait_event(session_id, "session.closed")
    assert closed["reason"] == "client"
