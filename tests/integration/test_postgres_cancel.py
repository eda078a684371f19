"""
Cancelling a running query through the gateway: psycopg (classic and
encrypted cancel), asyncpg, psql on SIGINT; and a cancel key that belongs
to no session, or to another one, cancels nothing of ours.

Whether a query is running is read directly from pg_stat_activity, never
guessed from a sleep.

test-case-name: tests.integration.test_postgres_cancel
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import ssl
import struct
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import sql

from tests.support.gateway import RunningGateway, lines_of, wait_for
from tests.support.pgwire import CANCEL_REQUEST_CODE, WireClient, special_request
from tests.support.servers import pg_connect_args

pytestmark = pytest.mark.timeout(180)

#: Seconds within which a cancelled query must have been cancelled.
CANCEL_BOUND = 2.0
WAIT = 10.0


def marker() -> str:
    """
    A unique column alias that finds a query in pg_stat_activity.
    """
    return f"m_{uuid.uuid4().hex[:12]}"


def active(servers: dict[str, str], mark: str) -> int:
    """
    How many sessions run a query containing C{mark} right now (read as
    the superuser, directly).
    """
    args = pg_connect_args(servers, "postgres", servers["PG_SUPERUSER_PASSWORD"])
    with psycopg.connect(**args) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where state = 'active' and pid <> pg_backend_pid()"
            " and position(%s in query) > 0",
            (mark,),
        ).fetchone()
    assert row is not None
    count: int = row[0]
    return count


def wait_running(servers: dict[str, str], mark: str) -> None:
    wait_for(lambda: active(servers, mark) == 1, WAIT, f"query {mark} to run")


def sleep_sql(seconds: float, mark: str) -> str:
    return f"select pg_sleep({seconds:g}) as {mark}"


def run_in_thread(fn: Callable[[], Any]) -> tuple[ThreadPoolExecutor, Future[Any]]:
    pool = ThreadPoolExecutor(1)
    return pool, pool.submit(fn)


class TestPsycopgCancel:
    """
    psycopg 3 cancels from another thread.
    """

    @pytest.mark.parametrize("method", ["cancel", "cancel_safe"])
    def test_cancel_running_query(
        self, gateway: RunningGateway, servers: dict[str, str], method: str
    ) -> None:
        """
        conn.cancel() (the classic CancelRequest) and conn.cancel_safe()
        (libpq's newer cancel, over TLS here) stop pg_sleep(30) with
        QueryCanceled within the bound; the session then answers select 1,
        and the recording marks the statement with 57014.
        """
        token = gateway.token()
        mark = marker()

        with psycopg.connect(**gateway.connect_args(token), autocommit=True) as conn:
            pool, future = run_in_thread(lambda: conn.execute(sleep_sql(30, mark)))
            with pool:
                wait_running(servers, mark)
                getattr(conn, method)()
                with pytest.raises(psycopg.errors.QueryCanceled) as raised:
                    future.result(timeout=CANCEL_BOUND)
            after = conn.execute("select 1").fetchone()
        session_id = gateway.session_of(token)
        gateway.wait_event(session_id, "session.closed")
        lines = gateway.recording_lines(session_id)

        assert raised.value.sqlstate == "57014"
        assert after == (1,)
        assert active(servers, mark) == 0
        statement = next(x for x in lines_of(lines, "statement") if mark in x["text"])
        completed = [
            x
            for x in lines_of(lines, "statement.completed")
            if x["statement_id"] == statement["statement_id"]
        ]
        assert len(completed) == 1
        assert completed[0]["error_code"] == "57014"
        assert completed[0]["status"] in ("cancelled", "error")

    def test_other_sessions_key_cancels_nothing(
        self, gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        Two sessions run queries; a CancelRequest with B's process id and a
        made-up secret, and a proper cancel of A, leave B's query to finish
        normally while A's is cancelled.
        """
        mark_a, mark_b = marker(), marker()
        args_a = gateway.connect_args(gateway.token(), autocommit=True)
        args_b = gateway.connect_args(gateway.token(), autocommit=True)

        with psycopg.connect(**args_a) as a, psycopg.connect(**args_b) as b:
            pool = ThreadPoolExecutor(2)
            with pool:
                future_a = pool.submit(lambda: a.execute(sleep_sql(30, mark_a)))
                query_b = sql.SQL("select 7 as {} from pg_sleep(3)").format(
                    sql.Identifier(mark_b)
                )
                future_b = pool.submit(lambda: b.execute(query_b).fetchall())
                wait_running(servers, mark_a)
                wait_running(servers, mark_b)
                forged = struct.pack("!i", b.info.backend_pid) + secrets.token_bytes(4)
                with WireClient(gateway.pg_port) as raw:
                    raw.send(special_request(CANCEL_REQUEST_CODE, forged))
                    forged_closed = raw.closed_by_peer()
                a.cancel()
                with pytest.raises(psycopg.errors.QueryCanceled):
                    future_a.result(timeout=CANCEL_BOUND)
                b_rows = future_b.result(timeout=WAIT)

        assert forged_closed
        assert b_rows == [(7,)]

    def test_cancel_while_idle_cancels_nothing_later(
        self, gateway: RunningGateway
    ) -> None:
        """
        A cancel sent while the session runs nothing is a no-op, as it is
        directly: the statements sent right after it complete.
        """
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            conn.autocommit = True
            results = []
            for i in range(5):
                conn.cancel()
                statement = "select %s::int from pg_sleep(0.3)"
                results.append(conn.execute(statement, (i,)).fetchone())

        assert results == [(0,), (1,), (2,), (3,), (4,)]


class TestAsyncpgCancel:
    """
    asyncpg cancels a query whose task is cancelled (here by a timeout).
    """

    def test_timeout_cancels_query(
        self, gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        asyncio.wait_for's timeout makes asyncpg send a CancelRequest; the
        query stops running on the server and the connection answers
        select 1 within the bound (it would wait 30 s otherwise).
        """
        mark = marker()
        context = ssl.create_default_context(cafile=servers["TLS_CERT"])

        async def run() -> Any:
            conn = await asyncpg.connect(
                host=gateway.pg_host,
                port=gateway.pg_port,
                user="ci-runner",
                password=gateway.token(),
                database="appdb",
                ssl=context,
                timeout=WAIT,
            )
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(conn.fetch(sleep_sql(30, mark)), timeout=1.0)
                return await asyncio.wait_for(conn.fetchval("select 1"), CANCEL_BOUND)
            finally:
                conn.terminate()

        value = asyncio.run(run())

        assert value == 1
        wait_for(lambda: active(servers, mark) == 0, WAIT, "the query to stop")


class TestPsqlCancel:
    """
    psql sends a cancel on SIGINT.
    """

    def test_sigint_cancels(
        self, gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        SIGINT to psql running pg_sleep(30) through the gateway cancels the
        statement: psql reports the server's cancel error and exits 1.
        """
        mark = marker()
        argv, env = gateway.psql_command(gateway.token(), "-c", sleep_sql(30, mark))

        with subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as psql:
            try:
                wait_running(servers, mark)
                psql.send_signal(signal.SIGINT)
                out, err = psql.communicate(timeout=WAIT)
            finally:
                psql.kill()

        assert psql.returncode == 1, (out, err)
        assert "canceling statement due to user request" in err
        assert active(servers, mark) == 0
