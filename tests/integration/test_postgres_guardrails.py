"""
PostgreSQL guardrails end to end: real clients (psql, psycopg 3, asyncpg
and a raw socket) through C{twistd hoopgate} with the demo's guardrails,
every effect checked directly on the test PostgreSQL.

Covers BC10 (blocking bypassed by the shape of the text), BC02 (the
gateway answering inside an extended-protocol batch), transactions that
hold a refused statement, a corpus of bypass attempts and look-alikes,
dry-run, Bind or Execute of names the gateway never approved, and
C{hoopgate policy test} against the same configuration.

The module runs its own gateway, with the policy of
L{tests.support.guardrails}; C{canary} is fingerprinted directly before
and after every test.

test-case-name: tests.integration.test_postgres_guardrails
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import pq

from tests.support.gateway import RunningGateway, lines_of, start_gateway, wait_for
from tests.support.guardrails import (
    ASYNCPG_BYPASSES,
    DRY_RUN,
    ENCODING_BYPASSES,
    EXTENDED_BYPASSES,
    EXTENDED_LOOK_ALIKES,
    NO_CANARY_WRITES,
    NO_DROP_TRUNCATE,
    NO_UNBOUNDED_WRITES,
    NO_UNKNOWN,
    POLICY,
    PREPARED_BYPASSES,
    SETUP_SQL,
    SIMPLE_BYPASSES,
    SIMPLE_LOOK_ALIKES,
    SYNC,
    TEARDOWN_SQL,
    Attempt,
    ServerLog,
    bind,
    canary_fingerprint,
    describe_portal,
    execute,
    marked_commands,
    parse,
    psql_errors,
    rule_of,
    split_marked,
)
from tests.support.pgwire import Message, WireClient, error_fields, frontend, query
from tests.support.servers import pg_connect_args

pytestmark = pytest.mark.timeout(180)

Conn = psycopg.Connection[tuple[Any, ...]]

PRIVILEGE = "42501"
REFUSED_SQL = "hoopgate refused this statement"
SEEDED = [(1,), (2,), (3,)]  # t_guard's rows while a corpus runs
BATCH = 12  # psql commands per run
WAIT = 10.0

# Empties the test tables and removes what a test may have let through.
CLEAN_SQL = (
    'truncate t_guard, t_guard_dry, canary_log, "Canary";'
    " drop table if exists t_guard_copy;"
    " drop view if exists guard_v;"
    " drop trigger if exists guard_tg on canary_log;"
    " drop operator if exists public.= (int, text);"
    " drop function if exists public.lower(int)"
)


# -- fixtures -----------------------------------------------------------------


def _with_guardrails(text: str) -> str:
    """
    The harness's configuration with L{POLICY} appended to its policy
    section (the last section it writes).
    """
    assert "guardrails:" not in text
    assert text.endswith("on_token_expiry: close\n"), text[-200:]
    return text + POLICY


def _direct_args(servers: dict[str, str]) -> dict[str, Any]:
    return pg_connect_args(servers, "app", servers["APP_PASSWORD"])


@pytest.fixture(scope="module")
def guard_gateway(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    The module's own gateway, enforcing the guardrails, in front of the
    tables L{SETUP_SQL} creates directly (dropped again afterwards).
    """
    with psycopg.connect(**_direct_args(servers), autocommit=True) as conn:
        conn.execute(SETUP_SQL)
    directory = tmp_path_factory.mktemp("guard-gateway")
    running = start_gateway(servers, directory, edit=_with_guardrails)
    try:
        yield running
    finally:
        running.stop()
        with psycopg.connect(**_direct_args(servers), autocommit=True) as conn:
            conn.execute(TEARDOWN_SQL)


@pytest.fixture(autouse=True)
def pristine(guard_gateway: RunningGateway, direct: Conn) -> Iterator[tuple[Any, ...]]:
    """
    Each test starts with the test tables empty and objects a test may
    have let through removed; canary must be empty before and unchanged
    after (read directly).  Yields canary's fingerprint.
    """
    direct.execute(CLEAN_SQL)
    before = canary_fingerprint(direct)
    assert before is not None, "canary is missing before the test"
    assert before[:4] == ("canary", 0, ["id integer"], 0), before

    yield before

    direct.execute(CLEAN_SQL)
    after = canary_fingerprint(direct)
    assert after == before, "canary changed"


@pytest.fixture
def server_log(servers: dict[str, str]) -> ServerLog:
    """
    The statements the test PostgreSQL logs from now on.
    """
    return ServerLog(Path(servers["HG_RUN"]) / "pg" / "server.log")


@pytest.fixture
def seeded(direct: Conn) -> list[tuple[int]]:
    """
    t_guard holds L{SEEDED}, so a DELETE or UPDATE that slips through
    shows.
    """
    direct.execute("insert into t_guard values (1), (2), (3)")
    return SEEDED


# -- helpers ------------------------------------------------------------------


def rows(conn: Conn, sql: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql).fetchall()


def t_guard(conn: Conn) -> list[tuple[Any, ...]]:
    return rows(conn, "select id from t_guard order by id")


def psql_refusals(
    gateway: RunningGateway, sqls: Sequence[str], **settings: Any
) -> subprocess.CompletedProcess[str]:
    """
    One psql session running each of C{sqls} with C{-c}, going on after
    errors, echoing failed statements with their SQLSTATE to stderr.
    """
    return gateway.psql(
        gateway.token(),
        "-b",
        "-v",
        "VERBOSITY=verbose",
        "-v",
        "ON_ERROR_STOP=0",
        *marked_commands(sqls),
        **settings,
    )


def direct_psql(
    servers: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """
    psql straight to the test PostgreSQL as C{app}, with the flags
    L{RunningGateway.psql_command} uses.
    """
    conninfo = (
        f"host=localhost hostaddr={servers['PG_HOST']} port={servers['PG_PORT']} "
        f"user=app dbname={servers['PG_DATABASE']} sslmode=verify-full "
        f"sslrootcert={servers['TLS_CERT']} connect_timeout=10"
    )
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": servers["APP_PASSWORD"]}
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def newlines(text: str) -> str:
    """
    C{text} as psql's output reads back in text mode.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n")


def statement_lines(
    gateway: RunningGateway, mark: set[tuple[str, int]], texts: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """
    The recorded C{statement} lines since C{mark} for each of C{texts},
    waiting (bounded) until every text has one.
    """

    def collect() -> dict[str, list[dict[str, Any]]] | None:
        found: dict[str, list[dict[str, Any]]] = {t: [] for t in texts}
        for line in lines_of(gateway.lines_since(mark), "statement"):
            if line["text"] in found:
                found[line["text"]].append(line)
        return found if all(found.values()) else None

    result: dict[str, list[dict[str, Any]]] = wait_for(
        collect, WAIT, "a recorded statement line for every text"
    )
    return result


def recorded_refusals(
    gateway: RunningGateway, mark: set[tuple[str, int]], attempts: Sequence[Attempt]
) -> dict[str, list[tuple[str, str, str]]]:
    """
    For each attempt's text, (verdict, reason code, deciding rule) of
    every recorded statement line with that text since C{mark}.
    """
    found = statement_lines(gateway, mark, [a.sql for a in attempts])
    return {
        text: [
            (
                x["verdict"],
                (x.get("reason") or {}).get("code", ""),
                x.get("reason", {}).get("rule", ""),
            )
            for x in lines
        ]
        for text, lines in found.items()
    }


def wire_login(gateway: RunningGateway, token: str | None = None) -> WireClient:
    """
    A raw connection through the TLS listener, logged in with C{token}
    (a fresh one by default).
    """
    client = WireClient(gateway.pg_port)
    client.start_tls(gateway.servers["TLS_CERT"])
    messages = client.login(token or gateway.token())
    assert messages and messages[-1].type == "Z", messages
    return client


def summary(messages: Sequence[Message]) -> list[tuple[str, ...]]:
    """
    Messages in short: errors and notices as (type, severity, SQLSTATE,
    rule), completions with their tag, ReadyForQuery with its status,
    others by type.
    """
    out: list[tuple[str, ...]] = []
    for m in messages:
        if m.type in ("E", "N"):
            f = error_fields(m)
            out.append(
                (m.type, f.get("V", ""), f.get("C", ""), rule_of(f.get("M", "")) or "")
            )
        elif m.type in ("C", "Z"):
            out.append((m.type, m.payload.rstrip(b"\x00").decode()))
        else:
            out.append((m.type,))
    return out


def exchange(client: WireClient, data: bytes) -> list[tuple[str, ...]]:
    """
    Send C{data}; the summary of what comes back up to ReadyForQuery.
    """
    client.send(data)
    return summary(client.read_until("Z"))


def refusal(error: psycopg.Error) -> tuple[str | None, str | None]:
    """
    The SQLSTATE and rule of a refusal psycopg raised.
    """
    message = error.diag.message_primary or ""
    return error.sqlstate, rule_of(message)


def through_args(gateway: RunningGateway, **extra: Any) -> dict[str, Any]:
    return gateway.connect_args(gateway.token(), autocommit=True, **extra)


def asyncpg_params(gateway: RunningGateway) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=gateway.servers["TLS_CERT"])
    return {
        "host": "localhost",
        "port": gateway.pg_port,
        "user": "ci-runner",
        "password": gateway.token(),
        "database": "appdb",
        "ssl": context,
        "timeout": WAIT,
        "command_timeout": 30,
    }


# -- BC10 ---------------------------------------------------------------------

BC10_ATTEMPTS = (
    Attempt("select 1; drop table canary", NO_DROP_TRUNCATE),
    Attempt("/* x */ drop table canary", NO_DROP_TRUNCATE),
    Attempt("select 1;\ndrop table canary", NO_DROP_TRUNCATE),
    Attempt('DROP TABLE "canary"', NO_DROP_TRUNCATE),
    Attempt("drop table public.canary", NO_DROP_TRUNCATE),
)

BC10_CONTROLS = (
    ("select ';drop table canary;'", ";drop table canary;\n"),
    ("select 1 /* drop table canary */", "1\n"),
)


class TestBc10Psql:
    """
    psql: the shape of the text does not get a DROP through (BC10).
    """

    @pytest.mark.parametrize("attempt", BC10_ATTEMPTS, ids=lambda a: a.sql)
    def test_bc10_psql_drop_refused(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        server_log: ServerLog,
        pristine: tuple[Any, ...],
        attempt: Attempt,
    ) -> None:
        """
        psql -c gets one error, SQLSTATE 42501 naming the rule; canary is
        unchanged (read directly); the recording marks the statement
        denied by the guardrail and its completion denied; the server
        saw the gateway's failing statement and never the denied text.
        """
        mark = guard_gateway.recording_mark()

        result = guard_gateway.psql(
            guard_gateway.token(), "-b", "-v", "VERBOSITY=verbose", "-c", attempt.sql
        )

        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert psql_errors(result.stderr) == {attempt.sql: (PRIVILEGE, attempt.rule)}
        assert canary_fingerprint(direct) == pristine

        [line] = statement_lines(guard_gateway, mark, [attempt.sql])[attempt.sql]
        assert line["verdict"] == "deny"
        assert line["reason"]["code"] == "guardrail.blocked"
        assert line["reason"]["rule"] == attempt.rule
        assert [p["command"] for p in line["parts"]][-1] == "DROP"
        completed = [
            x
            for x in lines_of(guard_gateway.lines_since(mark), "statement.completed")
            if x["statement_id"] == line["statement_id"]
        ]
        assert [x["status"] for x in completed] == ["denied"]

        assert server_log.leaks([attempt.sql]) == []
        assert REFUSED_SQL in server_log.statements()

    @pytest.mark.parametrize(("sql", "expected"), BC10_CONTROLS)
    def test_bc10_psql_controls_run(
        self,
        guard_gateway: RunningGateway,
        servers: dict[str, str],
        server_log: ServerLog,
        sql: str,
        expected: str,
    ) -> None:
        """
        DROP inside a string literal or an ordinary comment does not
        block: psql prints what a direct psql prints, the recording says
        allow, and the server ran the text.
        """
        mark = guard_gateway.recording_mark()

        result = guard_gateway.psql(guard_gateway.token(), "-c", sql)
        direct_result = direct_psql(servers, "-c", sql)

        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == direct_result.stdout == expected
        [line] = statement_lines(guard_gateway, mark, [sql])[sql]
        assert line["verdict"] == "allow"
        assert sql in server_log.statements()


# -- BC02 ---------------------------------------------------------------------


class TestBc02:
    """
    A refusal inside the extended protocol: one error, one
    ReadyForQuery after Sync, nothing of the batch run (BC02).
    """

    def test_bc02_psycopg_denied_then_select(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        psycopg: the DELETE raises InsufficientPrivilege naming the rule,
        and the same connection then answers select 2 with (2,).
        """
        with psycopg.connect(**through_args(guard_gateway)) as conn:
            with pytest.raises(pg_errors.InsufficientPrivilege) as caught:
                conn.execute("delete from canary")
            second = conn.execute("select 2").fetchone()

        assert refusal(caught.value) == (PRIVILEGE, NO_UNBOUNDED_WRITES)
        assert second == (2,)
        assert server_log.leaks(["delete from canary"]) == []

    def test_bc02_pipeline_ok_error_aborted(
        self, guard_gateway: RunningGateway, direct: Conn, server_log: ServerLog
    ) -> None:
        """
        In one psycopg pipeline: select 1 gives (1,), the DROP raises
        InsufficientPrivilege, the INSERT after it PipelineAborted; the
        connection then works, canary is empty and nothing of the DROP or
        the INSERT reached the server.
        """
        outcomes: list[Any] = []
        with psycopg.connect(**through_args(guard_gateway)) as conn:
            with conn.pipeline():
                outcomes.append(conn.execute("select 1").fetchall())
                cursor = conn.execute("drop table canary")
                with pytest.raises(pg_errors.InsufficientPrivilege) as caught:
                    cursor.fetchall()
                outcomes.append(refusal(caught.value))
                with pytest.raises(psycopg.errors.PipelineAborted):
                    conn.execute("insert into canary values (9)").fetchall()
                outcomes.append("aborted")
            after = conn.execute("select 3").fetchone()

        assert outcomes == [[(1,)], (PRIVILEGE, NO_DROP_TRUNCATE), "aborted"]
        assert after == (3,)
        assert rows(direct, "select * from canary") == []
        assert server_log.leaks(["drop table canary", "insert into canary"]) == []

    def test_bc02_asyncpg_named_statements(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        asyncpg (named prepared statements): the DROP raises
        InsufficientPrivilegeError naming the rule, then select 1 and a
        prepared statement work on the same connection.
        """

        async def run() -> list[Any]:
            conn = await asyncpg.connect(**asyncpg_params(guard_gateway))
            try:
                out: list[Any] = []
                try:
                    await conn.fetch("drop table canary")
                except asyncpg.PostgresError as e:
                    out.append((type(e).__name__, e.sqlstate, rule_of(str(e))))
                out.append(await conn.fetchval("select 1"))
                statement = await conn.prepare("select $1::int + 1")
                out.append(await statement.fetchval(41))
                return out
            finally:
                await asyncio.wait_for(conn.close(), WAIT)

        outcomes = asyncio.run(run())

        assert outcomes == [
            ("InsufficientPrivilegeError", PRIVILEGE, NO_DROP_TRUNCATE),
            1,
            42,
        ]
        assert server_log.leaks(["drop table canary"]) == []

    def test_bc02_wire_denied_parse_batch(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        Raw socket: Parse (refused), Bind, Describe, Execute, Sync gets
        exactly one ErrorResponse (42501, the rule) and one
        ReadyForQuery (idle); a query then runs.
        """
        with wire_login(guard_gateway) as client:
            batch = exchange(
                client,
                parse("", "drop table canary")
                + bind("", "")
                + describe_portal("")
                + execute("")
                + SYNC,
            )
            after = exchange(client, query("select 1"))

        assert batch == [("E", "ERROR", PRIVILEGE, NO_DROP_TRUNCATE), ("Z", "I")]
        assert after == [("T",), ("D",), ("C", "SELECT 1"), ("Z", "I")]
        assert server_log.leaks(["drop table canary"]) == []

    def test_bc02_wire_older_unnamed_statement_not_run(
        self, guard_gateway: RunningGateway
    ) -> None:
        """
        After an allowed unnamed statement, a refused Parse of the
        unnamed statement followed by Bind and Execute runs nothing, and
        a later Bind of the unnamed statement is refused again rather
        than running the older one; the session stays usable.
        """
        with wire_login(guard_gateway) as client:
            first = exchange(
                client, parse("", "select 42") + bind("", "") + execute("") + SYNC
            )
            refused = exchange(
                client,
                parse("", "truncate canary") + bind("", "") + execute("") + SYNC,
            )
            rebound = exchange(client, bind("", "") + execute("") + SYNC)
            after = exchange(client, query("select 1"))

        assert first == [("1",), ("2",), ("D",), ("C", "SELECT 1"), ("Z", "I")]
        assert refused == [("E", "ERROR", PRIVILEGE, NO_DROP_TRUNCATE), ("Z", "I")]
        assert rebound == [("E", "ERROR", PRIVILEGE, NO_DROP_TRUNCATE), ("Z", "I")]
        assert after == [("T",), ("D",), ("C", "SELECT 1"), ("Z", "I")]

    def test_bind_of_refused_statement_keeps_session(
        self, guard_gateway: RunningGateway
    ) -> None:
        """
        A refused named statement, bound in the same batch and again in
        a later one, gets one refusal per batch; the session stays open.
        """
        with wire_login(guard_gateway) as client:
            same = exchange(
                client,
                parse("s1", "delete from canary")
                + bind("p1", "s1")
                + execute("p1")
                + SYNC,
            )
            later = exchange(client, bind("p2", "s1") + execute("p2") + SYNC)
            after = exchange(client, query("select 1"))

        refused = [("E", "ERROR", PRIVILEGE, NO_UNBOUNDED_WRITES), ("Z", "I")]
        assert same == refused
        assert later == refused
        assert after == [("T",), ("D",), ("C", "SELECT 1"), ("Z", "I")]

    @pytest.mark.parametrize(
        "batch",
        [bind("x", "never_parsed") + execute("x") + SYNC, execute("nope") + SYNC],
        ids=["bind", "execute"],
    )
    def test_unknown_name_closes_session(
        self, guard_gateway: RunningGateway, server_log: ServerLog, batch: bytes
    ) -> None:
        """
        A Bind of a statement, or an Execute of a portal, the gateway
        never saw ends the session with one FATAL 08P01, and the
        connection closes.
        """
        with wire_login(guard_gateway) as client:
            answer = exchange(client, batch)
            closed = client.closed_by_peer()

        assert answer == [("E", "FATAL", "08P01", "")]
        assert closed
        assert server_log.leaks(["never_parsed"]) == []

    def test_nul_inside_query_refused(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        A Query whose text holds a NUL (the server would read only up to
        it) is refused as unclassifiable; the session goes on.
        """
        with wire_login(guard_gateway) as client:
            answer = exchange(
                client, frontend(b"Q", b"select 1\x00drop table canary\x00")
            )
            after = exchange(client, query("select 1"))

        assert answer == [("E", "ERROR", PRIVILEGE, NO_UNKNOWN), ("Z", "I")]
        assert after == [("T",), ("D",), ("C", "SELECT 1"), ("Z", "I")]
        assert server_log.leaks(["drop table canary"]) == []

    def test_unnamed_portal_across_sync(self, guard_gateway: RunningGateway) -> None:
        """
        In a transaction, an Execute with a row limit, Sync, and another
        Execute of the same unnamed portal gets the next row, as on
        PostgreSQL.
        """
        with wire_login(guard_gateway) as client:
            begun = exchange(client, query("begin"))
            first = exchange(
                client,
                parse("", "select generate_series(1, 3)")
                + bind("", "")
                + execute("", 1)
                + SYNC,
            )
            second = exchange(client, execute("", 1) + SYNC)

        assert begun == [("C", "BEGIN"), ("Z", "T")]
        assert first == [("1",), ("2",), ("D",), ("s",), ("Z", "T")]
        assert second == [("D",), ("s",), ("Z", "T")]


# -- transactions -------------------------------------------------------------


class TestTransactions:
    """
    A refused statement fails the transaction it is in, on both legs:
    nothing sent earlier in it commits.
    """

    def test_psql_one_string(self, guard_gateway: RunningGateway, direct: Conn) -> None:
        """
        psql -c 'begin; insert; delete (refused); commit' is refused
        whole: the INSERT never commits.
        """
        sql = "begin; insert into t_guard values (1); delete from t_guard; commit"

        result = psql_refusals(guard_gateway, [sql])

        assert psql_errors(result.stderr) == {sql: (PRIVILEGE, NO_UNBOUNDED_WRITES)}
        assert t_guard(direct) == []

    def test_psql_separate_statements(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        psql sending begin, insert, delete (refused), commit one by one:
        the INSERT ran, the refusal failed the transaction, COMMIT
        answers ROLLBACK, and the row is not there.
        """
        sqls = [
            "begin",
            "insert into t_guard values (1)",
            "delete from t_guard",
            "commit",
        ]

        result = psql_refusals(guard_gateway, sqls)

        assert split_marked(result.stdout) == [
            "BEGIN\n",
            "INSERT 0 1\n",
            "",
            "ROLLBACK\n",
        ]
        assert psql_errors(result.stderr) == {
            "delete from t_guard": (PRIVILEGE, NO_UNBOUNDED_WRITES)
        }
        assert t_guard(direct) == []

    def test_psycopg_explicit_transaction(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        psycopg in a transaction: INSERT, then the refused DELETE; the
        transaction is failed (a SELECT gets 25P02) and COMMIT answers
        ROLLBACK; the row never commits.
        """
        with psycopg.connect(
            **guard_gateway.connect_args(guard_gateway.token())
        ) as conn:
            conn.execute("insert into t_guard values (1)")
            with pytest.raises(pg_errors.InsufficientPrivilege) as caught:
                conn.execute("delete from t_guard")
            status = conn.info.transaction_status
            with pytest.raises(pg_errors.InFailedSqlTransaction):
                conn.execute("select 1")
            commit = conn.execute("commit").statusmessage

        assert refusal(caught.value) == (PRIVILEGE, NO_UNBOUNDED_WRITES)
        assert status == pq.TransactionStatus.INERROR
        assert commit == "ROLLBACK"
        assert t_guard(direct) == []

    def test_wire_extended_explicit_transaction(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Raw socket: BEGIN, then one batch with an INSERT and a refused
        DELETE: the INSERT completes, one refusal follows, ReadyForQuery
        says the transaction failed, and COMMIT answers ROLLBACK.
        """
        with wire_login(guard_gateway) as client:
            begun = exchange(client, query("begin"))
            batch = exchange(
                client,
                parse("", "insert into t_guard values (5)")
                + bind("", "")
                + execute("")
                + parse("", "delete from t_guard")
                + bind("", "")
                + execute("")
                + SYNC,
            )
            commit = exchange(client, query("commit"))

        assert begun == [("C", "BEGIN"), ("Z", "T")]
        assert batch == [
            ("1",),
            ("2",),
            ("C", "INSERT 0 1"),
            ("E", "ERROR", PRIVILEGE, NO_UNBOUNDED_WRITES),
            ("Z", "E"),
        ]
        assert commit == [("C", "ROLLBACK"), ("Z", "I")]
        assert t_guard(direct) == []

    def test_savepoint_recovers(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        As after any error on PostgreSQL, ROLLBACK TO SAVEPOINT recovers
        from a refusal: the client knows what it kept, and that commits.
        """
        sqls = [
            "begin",
            "insert into t_guard values (1)",
            "savepoint s",
            "delete from t_guard",
            "rollback to savepoint s",
            "insert into t_guard values (2)",
            "commit",
        ]

        result = psql_refusals(guard_gateway, sqls)

        assert split_marked(result.stdout) == [
            "BEGIN\n",
            "INSERT 0 1\n",
            "SAVEPOINT\n",
            "",
            "ROLLBACK\n",
            "INSERT 0 1\n",
            "COMMIT\n",
        ]
        assert psql_errors(result.stderr) == {
            "delete from t_guard": (PRIVILEGE, NO_UNBOUNDED_WRITES)
        }
        assert t_guard(direct) == [(1,), (2,)]

    def test_asyncpg_transaction(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        asyncpg in a transaction block: after the refused DELETE the next
        statement gets InFailedSQLTransactionError and the INSERT before
        it does not commit.
        """

        async def run() -> list[str]:
            conn = await asyncpg.connect(**asyncpg_params(guard_gateway))
            out = []
            try:
                transaction = conn.transaction()
                await transaction.start()
                await conn.execute("insert into t_guard values (7)")
                for sql in ("delete from t_guard", "select 1"):
                    try:
                        await conn.fetch(sql)
                    except asyncpg.PostgresError as e:
                        out.append(e.sqlstate)
                await transaction.rollback()
            finally:
                await asyncio.wait_for(conn.close(), WAIT)
            return out

        assert asyncio.run(run()) == [PRIVILEGE, "25P02"]
        assert t_guard(direct) == []

    def test_simple_query_implicit_transaction(
        self, guard_gateway: RunningGateway, direct: Conn, server_log: ServerLog
    ) -> None:
        """
        psql -c 'insert ...; drop table canary': the query string is
        refused whole, so the INSERT in its implicit transaction does not
        commit either.
        """
        sql = "insert into t_guard values (2); drop table canary"

        result = psql_refusals(guard_gateway, [sql])

        assert psql_errors(result.stderr) == {sql: (PRIVILEGE, NO_DROP_TRUNCATE)}
        assert t_guard(direct) == []
        assert server_log.leaks(["insert into t_guard"]) == []

    def test_pipeline_implicit_transaction(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        A psycopg pipeline (one implicit transaction up to its Sync)
        with an INSERT, then a refused DROP: the INSERT ran on the
        server but is rolled back with the batch.
        """
        with psycopg.connect(**through_args(guard_gateway)) as conn:
            with pytest.raises(pg_errors.InsufficientPrivilege), conn.pipeline():
                conn.execute("insert into t_guard values (3)")
                conn.execute("drop table canary")
            after = conn.execute("select count(*) from t_guard").fetchone()

        assert after == (0,)
        assert t_guard(direct) == []


# -- the corpus ---------------------------------------------------------------


def _chunks(items: Sequence[Attempt], size: int) -> Iterator[Sequence[Attempt]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TestCorpus:
    """
    Bypass attempts of every kind get nothing through; look-alikes run.
    """

    def test_corpus_size(self) -> None:
        """
        At least 50 distinct bypass attempts and 50 look-alikes.
        """
        attempts = {
            a.sql
            for group in (
                SIMPLE_BYPASSES,
                EXTENDED_BYPASSES,
                PREPARED_BYPASSES,
                *ASYNCPG_BYPASSES.values(),
                *ENCODING_BYPASSES.values(),
            )
            for a in group
        }
        look_alikes = set(SIMPLE_LOOK_ALIKES) | {s for s, _ in EXTENDED_LOOK_ALIKES}

        assert len(SIMPLE_BYPASSES) == len({a.sql for a in SIMPLE_BYPASSES})
        assert len(attempts) >= 50
        assert len(look_alikes) >= 50

    def test_simple_bypasses_psql(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        server_log: ServerLog,
        pristine: tuple[Any, ...],
        seeded: list[tuple[int]],
    ) -> None:
        """
        Every simple-protocol attempt through psql is refused with 42501
        naming the deciding rule and prints nothing; canary and t_guard
        are unchanged after each batch (read directly); every attempt is
        recorded as denied; none of their texts reached the server.
        """
        mark = guard_gateway.recording_mark()
        errors: dict[str, tuple[str, str | None]] = {}
        printed: list[str] = []

        for batch in _chunks(SIMPLE_BYPASSES, BATCH):
            result = psql_refusals(guard_gateway, [a.sql for a in batch])
            errors.update(psql_errors(result.stderr))
            printed += [p for p in split_marked(result.stdout) if p]
            assert canary_fingerprint(direct) == pristine, batch
            assert t_guard(direct) == seeded, batch

        assert printed == []
        assert errors == {newlines(a.sql): (PRIVILEGE, a.rule) for a in SIMPLE_BYPASSES}
        recorded = recorded_refusals(guard_gateway, mark, SIMPLE_BYPASSES)
        assert recorded == {
            a.sql: [("deny", "guardrail.blocked", a.rule)] for a in SIMPLE_BYPASSES
        }
        assert server_log.leaks([a.sql for a in SIMPLE_BYPASSES]) == []

    def test_psql_generated_statements(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        pristine: tuple[Any, ...],
    ) -> None:
        """
        psql's \\gexec sends each value of a result as a statement, and
        \\copy sends COPY FROM STDIN: the generated DROP and DELETE and
        the COPY into canary are refused like typed ones.
        """
        argv, env = guard_gateway.psql_command(
            guard_gateway.token(),
            "-b",
            "-v",
            "VERBOSITY=verbose",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            "-",
        )
        script = (
            "select 'drop table canary' \\gexec\n"
            "select format('delete from %I', 'canary') \\gexec\n"
            "\\copy canary from '/dev/null'\n"
        )

        result = subprocess.run(
            argv,
            env=env,
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        refusals = re.findall(r"ERROR:  (\w{5}): .*\(rule ([\w-]+)\)", result.stderr)
        assert refusals == [
            (PRIVILEGE, NO_DROP_TRUNCATE),
            (PRIVILEGE, NO_UNBOUNDED_WRITES),
            (PRIVILEGE, NO_CANARY_WRITES),
        ], result.stderr
        assert result.stdout == ""
        assert canary_fingerprint(direct) == pristine

    def test_extended_bypasses_psycopg(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        server_log: ServerLog,
        pristine: tuple[Any, ...],
    ) -> None:
        """
        Each attempt as an unnamed extended-protocol statement (a psycopg
        binary cursor) raises 42501 naming the rule, on one connection
        that stays usable; canary is checked directly along the way; the
        recording marks each extended and denied.
        """
        mark = guard_gateway.recording_mark()
        outcomes: dict[str, Any] = {}

        with psycopg.connect(**through_args(guard_gateway)) as conn:
            for i, attempt in enumerate(EXTENDED_BYPASSES):
                try:
                    conn.cursor(binary=True).execute(attempt.sql)
                    outcomes[attempt.sql] = "ran"
                except psycopg.Error as e:
                    outcomes[attempt.sql] = refusal(e)
                if i % 4 == 3:
                    assert canary_fingerprint(direct) == pristine, attempt
            last = conn.execute("select 1").fetchone()

        assert outcomes == {a.sql: (PRIVILEGE, a.rule) for a in EXTENDED_BYPASSES}
        assert last == (1,)
        found = statement_lines(guard_gateway, mark, [a.sql for a in EXTENDED_BYPASSES])
        assert {
            text: [(x["path"], x["verdict"], x["reason"]["rule"]) for x in lines]
            for text, lines in found.items()
        } == {a.sql: [("extended", "deny", a.rule)] for a in EXTENDED_BYPASSES}
        assert server_log.leaks([a.sql for a in EXTENDED_BYPASSES]) == []

    def test_prepared_bypasses_psycopg(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        Named prepared statements (psycopg prepare=True, with parameters)
        are refused at their Parse; the recording shows the statement
        names; the connection stays usable.
        """
        mark = guard_gateway.recording_mark()
        outcomes: dict[str, Any] = {}

        with psycopg.connect(**through_args(guard_gateway)) as conn:
            for attempt in PREPARED_BYPASSES:
                try:
                    conn.execute(attempt.sql, attempt.params or None, prepare=True)
                    outcomes[attempt.sql] = "ran"
                except psycopg.Error as e:
                    outcomes[attempt.sql] = refusal(e)
            last = conn.execute("select 1", prepare=True).fetchone()

        texts = {a.sql: a.sql.replace("%s", "$1") for a in PREPARED_BYPASSES}
        assert outcomes == {a.sql: (PRIVILEGE, a.rule) for a in PREPARED_BYPASSES}
        assert last == (1,)
        found = statement_lines(guard_gateway, mark, list(texts.values()))
        for attempt in PREPARED_BYPASSES:
            [line] = found[texts[attempt.sql]]
            assert line["verdict"] == "deny"
            assert line["statement_name"].startswith("_pg3_"), line
        assert server_log.leaks(list(texts.values())) == []

    def test_asyncpg_bypasses(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        server_log: ServerLog,
        pristine: tuple[Any, ...],
    ) -> None:
        """
        asyncpg's fetch (named statements) and execute (simple protocol)
        raise InsufficientPrivilegeError naming the rule; select 1 works
        after each.
        """

        async def run() -> dict[str, Any]:
            conn = await asyncpg.connect(**asyncpg_params(guard_gateway))
            out: dict[str, Any] = {}
            try:
                for how, attempts in ASYNCPG_BYPASSES.items():
                    send = conn.fetch if how == "fetch" else conn.execute
                    for attempt in attempts:
                        try:
                            await send(attempt.sql, *attempt.params)
                            out[attempt.sql] = "ran"
                        except asyncpg.PostgresError as e:
                            out[attempt.sql] = (e.sqlstate, rule_of(str(e)))
                        assert await conn.fetchval("select 1") == 1
            finally:
                await asyncio.wait_for(conn.close(), WAIT)
            return out

        outcomes = asyncio.run(run())

        every = [a for group in ASYNCPG_BYPASSES.values() for a in group]
        assert outcomes == {a.sql: (PRIVILEGE, a.rule) for a in every}
        assert canary_fingerprint(direct) == pristine
        assert server_log.leaks([a.sql for a in every]) == []

    def test_encoding_bypasses(
        self, guard_gateway: RunningGateway, server_log: ServerLog
    ) -> None:
        """
        With a client encoding that can hide ASCII bytes in multibyte
        characters (SJIS, BIG5, GBK), any non-ASCII text is refused as
        unclassifiable, by psycopg (simple and extended) and by psql; an
        ASCII query still runs in such a session.
        """
        outcomes: dict[tuple[str, str, str], Any] = {}
        for encoding, attempts in ENCODING_BYPASSES.items():
            args = through_args(guard_gateway, client_encoding=encoding)
            with psycopg.connect(**args) as conn:
                for attempt in attempts:
                    for how in ("simple", "extended"):
                        cursor = conn.cursor(binary=how == "extended")
                        try:
                            cursor.execute(attempt.sql)
                            outcomes[encoding, how, attempt.sql] = "ran"
                        except psycopg.Error as e:
                            outcomes[encoding, how, attempt.sql] = refusal(e)
                ascii_row = conn.execute("select 'ok'").fetchone()
                assert ascii_row == ("ok",), encoding
        sjis = ENCODING_BYPASSES["SJIS"]
        result = psql_refusals(
            guard_gateway, [a.sql for a in sjis], options="client_encoding=SJIS"
        )

        assert outcomes == {
            (encoding, how, a.sql): (PRIVILEGE, a.rule)
            for encoding, attempts in ENCODING_BYPASSES.items()
            for a in attempts
            for how in ("simple", "extended")
        }
        assert len(psql_errors(result.stderr)) == len(sjis), result.stderr
        assert result.stderr.count(f"ERROR:  {PRIVILEGE}: ") == len(sjis)
        assert result.stderr.count(f"(rule {NO_UNKNOWN})") == len(sjis)
        assert server_log.leaks(["drop table canary", "delete from canary"]) == []

    def test_backslash_with_standard_strings_off(
        self, guard_gateway: RunningGateway, seeded: list[tuple[int]], direct: Conn
    ) -> None:
        """
        Once the session has standard_conforming_strings off (and the
        gateway was told so), a string literal with a backslash is
        refused as unclassifiable: the two readings would differ.
        """
        sql = "select 'a\\' , ' ; delete from t_guard; --'"

        with psycopg.connect(**through_args(guard_gateway)) as conn:
            conn.execute("set standard_conforming_strings = off")
            with pytest.raises(pg_errors.InsufficientPrivilege) as caught:
                conn.execute(sql)

        assert refusal(caught.value) == (PRIVILEGE, NO_UNKNOWN)
        assert t_guard(direct) == seeded

    def test_look_alikes_psql(
        self, guard_gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        Every look-alike runs through psql and prints exactly what a
        direct psql prints; each is recorded as allowed.
        """
        mark = guard_gateway.recording_mark()
        got: dict[str, str] = {}
        want: dict[str, str] = {}

        for start in range(0, len(SIMPLE_LOOK_ALIKES), 2 * BATCH):
            batch = SIMPLE_LOOK_ALIKES[start : start + 2 * BATCH]
            args = marked_commands(batch)
            through = guard_gateway.psql(guard_gateway.token(), *args)
            straight = direct_psql(servers, *args)
            assert (through.returncode, through.stderr) == (0, ""), through.stderr
            assert (straight.returncode, straight.stderr) == (0, ""), straight.stderr
            got.update(zip(batch, split_marked(through.stdout), strict=True))
            want.update(zip(batch, split_marked(straight.stdout), strict=True))

        assert got == want
        assert got["select ';drop table canary;'"] == ";drop table canary;\n"
        assert got["select 'a\\' , ' ; drop table canary; --'"] == (
            "a\\| ; drop table canary; --\n"
        )
        found = statement_lines(guard_gateway, mark, SIMPLE_LOOK_ALIKES)
        verdicts = {t: [x["verdict"] for x in lines] for t, lines in found.items()}
        assert verdicts == {t: ["allow"] for t in SIMPLE_LOOK_ALIKES}

    def test_look_alikes_extended(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Look-alikes over the extended protocol (binary cursors, some with
        parameters) give the status and rows of a direct binary cursor.
        """
        got: dict[str, Any] = {}
        want: dict[str, Any] = {}

        with psycopg.connect(**through_args(guard_gateway)) as conn:
            for sql, params in EXTENDED_LOOK_ALIKES:
                for target, out in ((conn, got), (direct, want)):
                    cursor = target.cursor(binary=True)
                    cursor.execute(sql, params or None)
                    result = cursor.fetchall() if cursor.description else None
                    out[sql] = (cursor.statusmessage, result)

        assert got == want
        assert got["select %s::text"] == ("SELECT 1", [("drop table canary",)])

    def test_look_alikes_asyncpg(self, guard_gateway: RunningGateway) -> None:
        """
        asyncpg reads look-alikes as their values.
        """
        sqls = [
            "select ';drop table canary;'",
            "select $$truncate canary$$",
            "select 1 /* delete from canary */",
            "select $1::text",
        ]

        async def run() -> list[Any]:
            conn = await asyncpg.connect(**asyncpg_params(guard_gateway))
            try:
                values = [await conn.fetchval(s) for s in sqls[:3]]
                values.append(await conn.fetchval(sqls[3], "drop table canary"))
                return values
            finally:
                await asyncio.wait_for(conn.close(), WAIT)

        assert asyncio.run(run()) == [
            ";drop table canary;",
            "truncate canary",
            1,
            "drop table canary",
        ]

    def test_look_alike_writes(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Writes to tables whose names look like canary's (canary_log, the
        quoted "Canary") and bounded writes elsewhere are allowed, and
        their effect is there directly.
        """
        sqls = [
            "insert into canary_log values (1), (5)",
            'insert into "Canary" values (2)',
            'update "Canary" set id = 3 where id = 2',
            "delete from canary_log where id = 1",
            "insert into t_guard values (4)",
            "update t_guard set id = 6 where id = 4",
        ]

        result = guard_gateway.psql(guard_gateway.token(), *marked_commands(sqls))

        assert (result.returncode, result.stderr) == (0, "")
        assert split_marked(result.stdout) == [
            "INSERT 0 2\n",
            "INSERT 0 1\n",
            "UPDATE 1\n",
            "DELETE 1\n",
            "INSERT 0 1\n",
            "UPDATE 1\n",
        ]
        assert rows(direct, "select id from canary_log") == [(5,)]
        assert rows(direct, 'select id from "Canary"') == [(3,)]
        assert t_guard(direct) == [(6,)]


# -- dry-run ------------------------------------------------------------------


class TestDryRun:
    """
    A dry-run rule records what it would have refused and changes
    nothing.
    """

    def test_dry_run_hit_runs(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        An INSERT hitting only the dry-run rule runs (the row is there
        directly) and is recorded as allowed with dry_run naming it.
        """
        mark = guard_gateway.recording_mark()
        sql = "insert into t_guard_dry values (1)"

        result = guard_gateway.psql(guard_gateway.token(), "-c", sql)

        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            "INSERT 0 1\n",
            "",
        )
        assert rows(direct, "select id from t_guard_dry") == [(1,)]
        [line] = statement_lines(guard_gateway, mark, [sql])[sql]
        assert (line["verdict"], line["dry_run"]) == ("allow", [DRY_RUN])

    def test_dry_run_and_enforced(
        self, guard_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        A DELETE without WHERE on the dry-run table is refused by the
        enforce rule; its recording lists the dry-run rule as well, and
        the row stays.
        """
        direct.execute("insert into t_guard_dry values (2)")
        mark = guard_gateway.recording_mark()
        sql = "delete from t_guard_dry"

        result = psql_refusals(guard_gateway, [sql])

        assert psql_errors(result.stderr) == {sql: (PRIVILEGE, NO_UNBOUNDED_WRITES)}
        assert rows(direct, "select id from t_guard_dry") == [(2,)]
        [line] = statement_lines(guard_gateway, mark, [sql])[sql]
        assert (line["verdict"], line["reason"]["rule"], line["dry_run"]) == (
            "deny",
            NO_UNBOUNDED_WRITES,
            [DRY_RUN],
        )


# -- policy test ------------------------------------------------------------


class TestPolicyCli:
    """
    C{hoopgate policy test} against the running gateway's configuration.
    """

    def test_expect_deny_and_allow(self, guard_gateway: RunningGateway) -> None:
        """
        --expect deny for the DROP exits 0 naming the deciding rule;
        --expect allow exits 1 and names the statement (by its number) on
        stderr, as does --expect deny for a look-alike among refusals.
        """
        base = ("policy", "test", "--subject", "ci-runner", "--target", "appdb")

        deny = guard_gateway.cli(*base, "--expect", "deny", "drop table canary")
        allow = guard_gateway.cli(*base, "--expect", "allow", "drop table canary")
        mixed = guard_gateway.cli(
            *base, "--expect", "deny", "truncate canary", "select 'drop table canary'"
        )

        assert (deny.returncode, deny.stderr) == (0, "")
        assert f"verdict: deny (guardrail {NO_DROP_TRUNCATE})" in deny.stdout
        assert (allow.returncode, allow.stderr) == (1, "statement 1: expected allow\n")
        assert (mixed.returncode, mixed.stderr) == (1, "statement 2: expected deny\n")


# -- known bypasses -----------------------------------------------------------

# Read as UTF-8 (the session's encoding when the gateway classifies it) this
# is one harmless WITH; read as SJIS, which the server switches to first,
# the bytes of "ぁ" swallow the backslash, the quote closes the literal and
# a data-modifying CTE deletes every row of t_guard.
HIDDEN_BY_SJIS = (
    "with a as (select E'ぁ\\' ), d as (delete from t_guard returning id)"
    " select 1 --') select 2"
)

# Read with standard_conforming_strings on: two string literals.  Read with
# it off: one literal, then a DELETE, then a comment.
HIDDEN_BY_BACKSLASH = "select 'a\\' , ' ; delete from t_guard; --'"


class TestSessionSettingsInFlight:
    """
    A statement that changes how the server reads text, sent ahead of
    the next one without waiting for its answer.
    """

    def test_pipelined_client_encoding_change(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        A psycopg pipeline sending SET client_encoding to SJIS and then a
        statement whose SJIS reading deletes t_guard: t_guard keeps its
        rows and the statement is refused.
        """
        refused: psycopg.Error | None = None

        with psycopg.connect(**through_args(guard_gateway)) as conn:
            try:
                with conn.pipeline():
                    conn.execute("set client_encoding to 'SJIS'")
                    conn.execute(HIDDEN_BY_SJIS)
            except psycopg.Error as e:
                refused = e

        assert t_guard(direct) == seeded
        assert refused is not None and refused.sqlstate == PRIVILEGE

    def test_pipelined_standard_strings_change(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        Raw socket, two simple Queries in one write: SET
        standard_conforming_strings = off, then text whose second reading
        deletes t_guard: t_guard keeps its rows and the second query is
        refused.
        """
        with wire_login(guard_gateway) as client:
            client.send(
                query("set standard_conforming_strings = off")
                + query(HIDDEN_BY_BACKSLASH)
            )
            first = summary(client.read_until("Z"))
            second = summary(client.read_until("Z"))

        assert first[0] == ("C", "SET")
        assert t_guard(direct) == seeded
        assert [m for m in second if m[0] == "E"] == [
            ("E", "ERROR", PRIVILEGE, NO_UNKNOWN)
        ]

    @pytest.mark.parametrize(
        "sql",
        [
            "set client_encoding to 'SJIS'; select E'ぁ\\'; delete from t_guard; --'",
            f"set standard_conforming_strings = off; {HIDDEN_BY_BACKSLASH}",
        ],
        ids=["client_encoding", "standard_conforming_strings"],
    )
    def test_same_query_string_read_alike(
        self,
        guard_gateway: RunningGateway,
        direct: Conn,
        seeded: list[tuple[int]],
        sql: str,
    ) -> None:
        """
        The SET and the text in one query string: the server parses the
        whole string before running the SET, as the gateway reads it, so
        it runs as two harmless statements.
        """
        with wire_login(guard_gateway) as client:
            answer = exchange(client, query(sql))

        assert [m for m in answer if m[0] in ("C", "E")] == [
            ("C", "SET"),
            ("C", "SELECT 1"),
        ]
        assert t_guard(direct) == seeded

    def test_set_answered_first_is_seen(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        The same two queries, the second sent only after the first's
        ReadyForQuery: the gateway knows the new setting and refuses the
        second as unclassifiable.
        """
        with wire_login(guard_gateway) as client:
            first = exchange(client, query("set standard_conforming_strings = off"))
            second = exchange(client, query(HIDDEN_BY_BACKSLASH))

        assert first[0] == ("C", "SET")
        assert second == [("E", "ERROR", PRIVILEGE, NO_UNKNOWN), ("Z", "I")]
        assert t_guard(direct) == seeded


class TestCodeInstalledThroughTheGateway:
    """
    Statements that install code which later statements run implicitly.
    The functions are created directly (as an application's own would
    be); only the hook that calls them goes through the gateway.
    """

    def test_trigger(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        CREATE TRIGGER ... EXECUTE FUNCTION guard_wipe_t_guard() (which
        deletes t_guard) is refused, so an INSERT into canary_log deletes
        nothing.
        """
        result = psql_refusals(
            guard_gateway,
            [
                "create trigger guard_tg after insert on canary_log"
                " for each row execute function guard_wipe_t_guard()",
                "insert into canary_log values (1)",
            ],
        )

        assert t_guard(direct) == seeded
        assert result.stderr.count(f"ERROR:  {PRIVILEGE}: ") == 1, result.stderr

    def test_operator(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        CREATE OPERATOR public.= (int, text) over guard_eq() (which
        deletes t_guard) is refused, so select 1 = 'x'::text deletes
        nothing.
        """
        result = psql_refusals(
            guard_gateway,
            [
                "create operator public.= (leftarg = int, rightarg = text,"
                " function = guard_eq)",
                "select 1 = 'x'::text",
            ],
        )

        assert t_guard(direct) == seeded
        assert result.stderr.count(f"ERROR:  {PRIVILEGE}: ") == 1, result.stderr

    def test_function_overload(
        self, guard_gateway: RunningGateway, direct: Conn, seeded: list[tuple[int]]
    ) -> None:
        """
        A public.lower(int) created through the gateway and called as
        lower(1) is refused somewhere, so t_guard keeps its rows.
        """
        result = psql_refusals(
            guard_gateway,
            [
                "create function public.lower(int) returns text language sql"
                " as $$ delete from t_guard returning 'x' $$",
                "select lower(1)",
            ],
        )

        assert t_guard(direct) == seeded
        assert result.stderr.count(f"ERROR:  {PRIVILEGE}: ") >= 1, result.stderr

    def test_updatable_view(self, guard_gateway: RunningGateway, direct: Conn) -> None:
        """
        A view over canary, then an INSERT into the view: one of them is
        refused and canary stays empty.
        """
        try:
            result = psql_refusals(
                guard_gateway,
                [
                    "create view guard_v as select * from canary",
                    "insert into guard_v values (1)",
                ],
            )
            written = rows(direct, "select id from canary")
        finally:
            # Put canary back before the fixture compares it.
            direct.execute("drop view if exists guard_v; truncate canary")

        assert written == []
        assert result.stderr.count(f"ERROR:  {PRIVILEGE}: ") == 1, result.stderr


class TestRecordingOfRefusals:
    """
    What the recording says about a refused statement's completion.
    """

    def test_completion_records_what_client_saw(
        self, guard_gateway: RunningGateway
    ) -> None:
        """
        The completion of a refused statement carries SQLSTATE 42501 and
        the refusal's text, as the client saw them.
        """
        token = guard_gateway.token()
        sql = "truncate canary"

        guard_gateway.psql(token, "-c", sql)
        session = guard_gateway.session_of(token)
        guard_gateway.wait_event(session, "session.closed")
        lines = guard_gateway.recording_lines(session)

        [statement] = [x for x in lines_of(lines, "statement") if x["text"] == sql]
        [completed] = [
            x
            for x in lines_of(lines, "statement.completed")
            if x["statement_id"] == statement["statement_id"]
        ]
        assert completed["status"] == "denied"
        assert completed["error_code"] == PRIVILEGE
        assert NO_DROP_TRUNCATE in completed["error_message"]

    def test_completions_belong_to_statements(
        self, guard_gateway: RunningGateway
    ) -> None:
        """
        A refused Parse, Bind, Execute, Sync is one statement: the
        recording holds one statement line and one completion, for it.
        """
        token = guard_gateway.token()

        with wire_login(guard_gateway, token) as client:
            exchange(
                client,
                parse("", "drop table canary") + bind("", "") + execute("") + SYNC,
            )
            client.send(frontend(b"X"))
        session = guard_gateway.session_of(token)
        guard_gateway.wait_event(session, "session.closed")
        lines = guard_gateway.recording_lines(session)

        [statement] = lines_of(lines, "statement")
        completed = lines_of(lines, "statement.completed")
        assert statement["verdict"] == "deny"
        assert [(x["statement_id"], x["status"]) for x in completed] == [
            (statement["statement_id"], "denied")
        ]
