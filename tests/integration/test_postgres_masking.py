"""
Masking end to end: real clients (psql, psycopg 3, asyncpg) through
C{twistd hoopgate} to the test PostgreSQL, every value compared with a
direct read.

Two gateways run for this module.  The first masks without the strict
option: C{customers.email} and C{ssn} redacted, C{card_number} keeping its
last four digits, C{salary} redacted for C{ci-runner} and NULL for
C{ci-null}, and detected e-mails, card numbers, IBANs and social security
numbers everywhere else.  It covers BC04 (formats, lengths, NULL, LATIN1),
BC09 (errors and notices), BC01 (COPY TO masked), prepared statements
executed again without a Describe, pipeline mode and the recording.  The
second adds C{strict: true} and meets the bypass corpus: derived
expressions, casts, whole rows, predicates, joins, ordering, COPY of a
query, errors and notices; nothing any client receives may hold a value a
direct read shows in a masked column.

test-case-name: tests.integration.test_postgres_masking
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from attrs import frozen
from psycopg import sql as pgsql

from hoopgate._masking import CARD_NUMBER, EMAIL, IBAN, US_SSN
from tests.support.gateway import RunningGateway, lines_of, start_gateway
from tests.support.servers import pg_connect_args

pytestmark = pytest.mark.timeout(180)

Conn = psycopg.Connection[tuple[Any, ...]]

MASK = "[masked]"
CUSTOMERS = "select * from customers order by id"
COLUMNS = ("id", "name", "email", "ssn", "card_number", "iban", "salary", "note", "raw")
MASKED = frozenset({"email", "ssn", "card_number", "salary"})
ROW2_RAW = b"\xff\xfe\x00\x41"
TEXT_OID = 25
WAIT = 10.0

RULES = """\
  masking:
    strict: {strict}
    rules:
      - name: customer-pii
        subjects: ["*"]
        targets: ["*"]
        columns: [public.customers.email, public.customers.ssn]
        strategy: redact
      - name: cards
        columns: [public.customers.card_number]
        strategy: {{keep_last: 4}}
      - name: salary-text
        subjects: [ci-runner]
        columns: [public.customers.salary]
        strategy: redact
      - name: salary-null
        subjects: [ci-null]
        columns: [public.customers.salary]
        strategy: "null"
      - name: detected
        detect: [email, card_number, iban, us_ssn]
        strategy: redact
      - name: watch-names
        mode: dry-run
        columns: [public.customers.name]
        strategy: redact
"""


def _policy(strict: bool) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = text.replace("subjects: [ci-runner]", "subjects: [ci-runner, ci-null]")
        return text + RULES.format(strict=str(strict).lower())

    return edit


def _start(
    servers: dict[str, str], factory: pytest.TempPathFactory, strict: bool
) -> Iterator[RunningGateway]:
    directory = factory.mktemp("masking-strict" if strict else "masking")
    running = start_gateway(servers, directory, edit=_policy(strict))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def masking(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    A gateway masking without the strict option.
    """
    yield from _start(servers, tmp_path_factory, strict=False)


@pytest.fixture(scope="module")
def strict(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    A gateway masking with C{strict: true}.
    """
    yield from _start(servers, tmp_path_factory, strict=True)


@frozen
class Truth:
    """
    What a direct read of customers shows.

    Attributes:
        rows: Every row, by id, as psycopg decodes it.
        text: Every row's fields as the server sends them in text format.
        secrets: Every value a masked column holds and every detector
            hit in the other columns: none may reach a client.
    """

    rows: dict[int, tuple[Any, ...]]
    text: list[tuple[bytes | None, ...]]
    secrets: frozenset[str]


def _hits(text: str) -> list[str]:
    found: list[str] = []
    for detector in (EMAIL, CARD_NUMBER, IBAN, US_SSN):
        found.extend(text[a:b] for a, b in detector.find(text))
    return found


@pytest.fixture(scope="module")
def truth(servers: dict[str, str]) -> Truth:
    """
    The ground truth, read directly once per module.
    """
    args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
    with psycopg.connect(**args, autocommit=True) as conn:
        rows = conn.execute(CUSTOMERS).fetchall()
        result = conn.execute(CUSTOMERS).pgresult
    assert result is not None
    text = [
        tuple(result.get_value(r, c) for c in range(result.nfields))
        for r in range(result.ntuples)
    ]
    secrets: set[str] = set()
    for row in rows:
        named = dict(zip(COLUMNS, row, strict=True))
        secrets.update(str(named[c]) for c in ("email", "ssn", "card_number"))
        for column in ("name", "iban", "note"):
            if named[column]:
                secrets.update(_hits(named[column]))
    assert len(rows) == 1000
    assert any("@example.org" in s for s in secrets)
    return Truth({row[0]: row for row in rows}, text, frozenset(secrets))


def leaked(blob: str, secrets: frozenset[str]) -> list[str]:
    """
    The secrets that appear in C{blob}.
    """
    return sorted(s for s in secrets if s in blob)


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _asyncpg_params(gateway: RunningGateway, token: str) -> dict[str, Any]:
    return {
        "host": gateway.pg_host,
        "port": gateway.pg_port,
        "user": "ci-runner",
        "password": token,
        "database": "appdb",
    }


def _raw(cursor: psycopg.Cursor[Any]) -> tuple[list[tuple[int, int]], list[Any]]:
    """
    Type OIDs and format codes of the last result, and its field bytes.
    """
    res = cursor.pgresult
    assert res is not None
    columns = range(res.nfields)
    types = [(res.ftype(c), res.fformat(c)) for c in columns]
    values = [tuple(res.get_value(r, c) for c in columns) for r in range(res.ntuples)]
    return types, values


def _check_unmasked(
    column: str, got: Any, want: Any, render: Callable[[Any], str]
) -> None:
    """
    An unmasked column is what a direct read gives, unless a detector
    finds something in it: then it is masked there, and the rest kept.
    """
    if want is None:
        assert got is None, column
        return
    hits = _hits(render(want))
    if not hits:
        assert got == want, column
        return
    text = render(got)
    assert MASK in text, (column, text)
    assert not [h for h in hits if h in text], column


class TestBC04Formats:
    """
    Masked and unmasked fields in every format and client (BC04).
    """

    def test_bc04_psycopg_text(self, masking: RunningGateway, truth: Truth) -> None:
        """
        Text format: masked columns re-described as text (OID 25) with the
        mask, card numbers keeping their last four digits; every other
        field byte-identical to the direct read; row 2 keeps note NULL.
        """
        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            types, values = _raw(conn.execute(CUSTOMERS))

        assert len(values) == 1000
        for index, column in enumerate(COLUMNS):
            if column in MASKED:
                assert types[index] == (TEXT_OID, 0), column
        for row, want in zip(values, truth.text, strict=True):
            named = dict(zip(COLUMNS, row, strict=True))
            wanted = dict(zip(COLUMNS, want, strict=True))
            assert named["email"] == named["ssn"] == named["salary"] == MASK.encode()
            card = wanted["card_number"]
            assert card is not None
            assert named["card_number"] == b"*" * (len(card) - 4) + card[-4:]
            assert (named["id"], named["raw"]) == (wanted["id"], wanted["raw"])
            for column in ("name", "iban", "note"):
                _check_unmasked(
                    column, named[column], wanted[column], lambda v: v.decode()
                )
        assert dict(zip(COLUMNS, values[1], strict=True))["note"] is None

    def test_bc04_psycopg_binary(self, masking: RunningGateway, truth: Truth) -> None:
        """
        Binary format: masked columns are text in binary format (the
        Bind's format kept), salary included; unmasked fields keep the
        server's binary bytes; raw of row 2 is ff fe 00 41 and note NULL.
        """
        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            cursor = conn.cursor(binary=True)
            rows = cursor.execute(CUSTOMERS).fetchall()
            types, values = _raw(cursor)
        args = pg_connect_args(masking.servers, "app", masking.servers["APP_PASSWORD"])
        with psycopg.connect(**args) as direct:
            direct_cursor = direct.cursor(binary=True)
            direct_cursor.execute(CUSTOMERS)
            want_types, want_values = _raw(direct_cursor)

        for index, column in enumerate(COLUMNS):
            if column in MASKED:
                assert types[index] == (TEXT_OID, 1), column
            else:
                assert types[index] == want_types[index], column
        for got, want, row in zip(values, want_values, rows, strict=True):
            named = dict(zip(COLUMNS, got, strict=True))
            wanted = dict(zip(COLUMNS, want, strict=True))
            decoded = dict(zip(COLUMNS, row, strict=True))
            assert decoded["email"] == decoded["ssn"] == decoded["salary"] == MASK
            for column in ("id", "raw"):
                assert named[column] == wanted[column], column
            for column in ("name", "iban", "note"):
                _check_unmasked(
                    column,
                    named[column],
                    wanted[column],
                    lambda v: v.decode(),
                )
        assert rows[1][COLUMNS.index("note")] is None
        assert rows[1][COLUMNS.index("raw")] == ROW2_RAW

    def test_bc04_psql(self, masking: RunningGateway, truth: Truth) -> None:
        """
        psql prints the masks, and every other field as a direct read.
        """
        result = masking.psql(
            masking.token(), "-F", "\t", "-c", "select * from customers order by id"
        )

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 1000
        for line, want in zip(lines, truth.text, strict=True):
            fields = line.split("\t")
            named = dict(zip(COLUMNS, fields, strict=True))
            wanted = dict(zip(COLUMNS, want, strict=True))
            card, raw = wanted["card_number"], wanted["raw"]
            assert card is not None and raw is not None
            assert named["email"] == named["ssn"] == named["salary"] == MASK
            assert named["card_number"].endswith(card[-4:].decode())
            assert named["card_number"].startswith("****")
            assert named["raw"] == raw.decode()
            for column in ("id", "name", "iban", "note"):
                value = wanted[column]
                _check_unmasked(
                    column,
                    named[column],
                    "" if value is None else value.decode(),
                    str,
                )

    def test_bc04_asyncpg(self, masking: RunningGateway, truth: Truth) -> None:
        """
        asyncpg (binary results, statements described once): masked
        columns decode as text, the rest as a direct read; NULL stays
        None and raw of row 2 ff fe 00 41.
        """
        got = asyncio.run(
            _asyncpg_rows(_asyncpg_params(masking, masking.token()), _tls())
        )

        assert len(got) == 1000
        for row in got:
            want = truth.rows[row[0]]
            named = dict(zip(COLUMNS, row, strict=True))
            wanted = dict(zip(COLUMNS, want, strict=True))
            assert named["email"] == named["ssn"] == named["salary"] == MASK
            assert named["card_number"][-4:] == wanted["card_number"][-4:]
            assert named["card_number"][:-4] == "*" * (len(wanted["card_number"]) - 4)
            for column in ("id", "raw"):
                assert named[column] == wanted[column]
            for column in ("name", "iban", "note"):
                _check_unmasked(column, named[column], wanted[column], str)
        assert got[1][COLUMNS.index("note")] is None
        assert got[1][COLUMNS.index("raw")] == ROW2_RAW

    def test_bc04_salary_null_per_policy(self, masking: RunningGateway) -> None:
        """
        For ci-null the policy nulls salary instead: NULL in text and
        binary format, whatever the value; other masks as for everyone.
        """
        token = masking.token(sub="ci-null")
        sql = "select id, salary, email from customers where id in (1, 2) order by id"

        with psycopg.connect(**masking.connect_args(token)) as conn:
            text = conn.execute(sql).fetchall()
            binary = conn.cursor(binary=True).execute(sql).fetchall()

        assert text == binary == [(1, None, MASK), (2, None, MASK)]

    def test_bc04_latin1(self, masking: RunningGateway, truth: Truth) -> None:
        """
        LATIN1 stays LATIN1: psql reports it, 'Größe' round-trips with
        psycopg, names with umlauts arrive as a direct LATIN1 read gives
        them, and masks still apply.
        """
        argv, env = masking.psql_command(
            masking.token(), "-c", "show client_encoding", "-c", "select 'Größe'"
        )
        # psql sends its arguments as they are: in LATIN1 here.
        command: list[str | bytes] = [*argv[:-1], argv[-1].encode("latin-1")]
        env["PGCLIENTENCODING"] = "LATIN1"
        result = subprocess.run(
            command, env=env, capture_output=True, timeout=60, check=False
        )
        sql = "select name, email from customers where name like '%ü%' order by id"
        args = masking.connect_args(masking.token(), client_encoding="latin1")
        with psycopg.connect(**args) as conn:
            echoed = conn.execute("select %s::text", ["Größe"]).fetchone()
            names = conn.execute(sql).fetchall()
            encoding = conn.info.encoding

        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [b"LATIN1", "Größe".encode("latin-1")]
        assert encoding == "iso8859-1"
        assert echoed == ("Größe",)
        want = [(row[1], MASK) for row in truth.rows.values() if "ü" in (row[1] or "")]
        assert names == want
        assert want


async def _asyncpg_rows(
    params: dict[str, Any], context: ssl.SSLContext
) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    try:
        rows = await conn.fetch(CUSTOMERS)
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return [tuple(r) for r in rows]


class TestPreparedAndPipelined:
    """
    Results without a Describe of their own, and many in flight at once.
    """

    def test_asyncpg_prepared_twice(self, masking: RunningGateway) -> None:
        """
        asyncpg describes a prepared statement once and executes it twice
        (Bind and Execute only): both executions are masked.
        """
        got = asyncio.run(
            _asyncpg_prepared(_asyncpg_params(masking, masking.token()), _tls())
        )

        assert got["first"][1:3] == (MASK, MASK)
        assert got["second"][1:3] == (MASK, MASK)
        assert got["first"][0] == 2
        assert got["second"][0] == 3
        assert got["types"] == ["int4", "text", "text", "text"]

    def test_psycopg_prepared_and_pipeline(
        self, masking: RunningGateway, truth: Truth
    ) -> None:
        """
        psycopg's server-side prepared statements (after a few runs) and
        pipeline mode, with an error in the middle of the pipeline: every
        result masked, the error's statement reported, the rest aborted
        and later pipelines masked again.
        """
        sql = "select id, email, ssn from customers where id = %s"
        with psycopg.connect(
            **masking.connect_args(masking.token()), prepare_threshold=1
        ) as conn:
            prepared = [conn.execute(sql, [i]).fetchone() for i in range(1, 6)]
            with conn.pipeline():
                first = conn.execute(sql, [7])
                second = conn.execute("select email, note from customers where id = 7")
            results = [first.fetchall(), second.fetchall()]
            with (
                pytest.raises(psycopg.errors.InvalidTextRepresentation),
                conn.pipeline(),
            ):
                conn.execute(sql, [8])
                conn.execute("select email::int from customers where id = 1")
                conn.execute(sql, [9])
            conn.rollback()
            with conn.pipeline():
                again = conn.execute(sql, [10])
            after = again.fetchall()

        assert prepared == [(i, MASK, MASK) for i in range(1, 6)]
        assert results[0] == [(7, MASK, MASK)]
        assert results[1] == [(MASK, "Prefers contact at [masked]")]
        assert after == [(10, MASK, MASK)]
        assert not leaked(repr([prepared, results, after]), truth.secrets)


async def _asyncpg_prepared(
    params: dict[str, Any], context: ssl.SSLContext
) -> dict[str, Any]:
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    try:
        statement = await conn.prepare(
            "select id, email, ssn, salary from customers where id = $1"
        )
        first = await statement.fetchrow(2)
        second = await statement.fetchrow(3)
        types = [a.type.name for a in statement.get_attributes()]
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return {"first": tuple(first), "second": tuple(second), "types": types}


def _diagnostics(error: psycopg.Error) -> str:
    diag = error.diag
    return " ".join(
        str(part)
        for part in (
            diag.message_primary,
            diag.message_detail,
            diag.message_hint,
            diag.context,
            diag.internal_query,
            str(error),
        )
        if part
    )


class TestBC09Diagnostics:
    """
    Errors and notices that would echo a masked value (BC09).
    """

    def test_bc09_cast_error(self, masking: RunningGateway, truth: Truth) -> None:
        """
        Casting an e-mail to integer fails with 22P02 as directly, and
        neither message nor detail holds the e-mail; the session goes on.
        """
        email = truth.rows[1][2]

        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
                conn.execute("select email::int from customers where id=1")
            conn.rollback()
            after = conn.execute("select 2").fetchone()

        text = _diagnostics(caught.value)
        assert caught.value.sqlstate == "22P02"
        assert email not in text
        assert not leaked(text, truth.secrets)
        assert after == (2,)

    def test_bc09_notice(self, masking: RunningGateway, truth: Truth) -> None:
        """
        A DO block raising a notice with an e-mail: the notice arrives,
        without the e-mail.
        """
        notices: list[str] = []
        email = truth.rows[1][2]
        block = (
            "do $$ begin raise notice 'contact %', "
            "(select email from customers where id = 1); end $$"
        )

        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            conn.add_notice_handler(
                lambda d: notices.append(f"{d.severity} {d.message_primary}")
            )
            conn.execute(block)
            conn.execute(
                "do $$ begin raise notice 'write to %', 'a.b@example.com'; end $$"
            )

        assert len(notices) == 2
        assert all(n.startswith("NOTICE ") for n in notices)
        assert email not in " ".join(notices)
        assert "a.b@example.com" not in " ".join(notices)
        assert not leaked(" ".join(notices), truth.secrets)

    def test_bc09_psql_and_asyncpg(self, masking: RunningGateway, truth: Truth) -> None:
        """
        psql (verbose errors) and asyncpg see the same: SQLSTATE 22P02,
        the notice, and neither the e-mail nor any other masked value.
        """
        cast = "select email::int from customers where id=1"
        block = (
            "do $$ begin raise notice 'contact %', "
            "(select email from customers where id = 1); end $$"
        )

        result = masking.psql(
            masking.token(), "-v", "VERBOSITY=verbose", "-c", block, "-c", cast
        )
        seen = asyncio.run(
            _asyncpg_diagnostics(
                _asyncpg_params(masking, masking.token()), _tls(), block, cast
            )
        )

        assert result.returncode == 1
        assert "NOTICE:  00000:" in result.stderr
        assert "ERROR:  22P02:" in result.stderr
        assert seen["sqlstate"] == "22P02"
        assert len(seen["notices"]) == 1
        assert not leaked(result.stdout + result.stderr, truth.secrets)
        assert not leaked(repr(seen), truth.secrets)

    def test_bc09_errors_without_masked_columns_keep_text(
        self, masking: RunningGateway
    ) -> None:
        """
        An error that touches no masked column keeps the server's text.
        """
        with (
            psycopg.connect(**masking.connect_args(masking.token())) as conn,
            pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught,
        ):
            conn.execute("select 'abc'::int")

        assert caught.value.diag.message_primary == (
            'invalid input syntax for type integer: "abc"'
        )

    def test_notification_payload(
        self, masking: RunningGateway, strict: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        A notification sent directly (as a trigger of another session
        would) reaches the listening session with detected values masked;
        under strict masking its payload is withheld, the channel kept.
        """
        payload = "order 7 for a.b@example.com"
        heard: dict[str, list[tuple[str, str]]] = {}

        for name, gateway in (("masking", masking), ("strict", strict)):
            args = gateway.connect_args(gateway.token(), autocommit=True)
            with psycopg.connect(**args) as conn:
                conn.execute("listen hg_orders")
                with psycopg.connect(
                    **pg_connect_args(servers, "app", servers["APP_PASSWORD"]),
                    autocommit=True,
                ) as direct:
                    direct.execute("select pg_notify('hg_orders', %s)", (payload,))
                heard[name] = [
                    (n.channel, n.payload)
                    for n in conn.notifies(timeout=WAIT, stop_after=1)
                ]

        assert heard["masking"] == [("hg_orders", f"order 7 for {MASK}")]
        assert heard["strict"] == [("hg_orders", "")]

    def test_jsonb_in_binary_is_scanned(self, masking: RunningGateway) -> None:
        """
        asyncpg reads jsonb in binary format (a version byte, then the
        text): a detected e-mail in it nulls the value, as in text format;
        a document without one arrives whole.
        """
        found = asyncio.run(
            _asyncpg_jsonb(_asyncpg_params(masking, masking.token()), _tls())
        )

        assert found == [(None, {"n": 1})]

    def test_numbers_in_binary_are_scanned(self, masking: RunningGateway) -> None:
        """
        A card number kept as int8 or numeric, read in binary format, is
        nulled as in text format; numbers that are not card numbers
        arrive unchanged, in binary.
        """
        query = (
            "select 4111111111111111::int8, 4111111111111111::numeric,"
            " 4111111111111112::int8, 12.5::numeric"
        )

        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            binary = conn.cursor(binary=True).execute(query).fetchone()
            text = conn.execute(query).fetchone()

        assert binary == (None, None, 4111111111111112, Decimal("12.5"))
        assert text == binary

    def test_arrays_and_records_in_binary_are_scanned(
        self, masking: RunningGateway
    ) -> None:
        """
        Text inside a binary array or record is read by detectors: a value
        holding an e-mail is nulled; one without arrives whole.
        """
        query = (
            "select array['write to a.b@example.com'], row('a.b@example.com', 1),"
            " array['nothing here']"
        )

        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            binary = conn.cursor(binary=True).execute(query).fetchone()

        assert binary is not None
        assert binary[:2] == (None, None)
        assert binary[2] == ["nothing here"]


async def _asyncpg_jsonb(
    params: dict[str, Any], context: ssl.SSLContext
) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    try:
        # The raw binary form: a version byte, then the document's text.
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda value: b"\x01" + json.dumps(value).encode(),
            decoder=lambda data: json.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )
        rows = await conn.fetch(
            """select '{"m": "a.b@example.com"}'::jsonb, '{"n": 1}'::jsonb"""
        )
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return [tuple(r) for r in rows]


async def _asyncpg_diagnostics(
    params: dict[str, Any], context: ssl.SSLContext, block: str, cast: str
) -> dict[str, Any]:
    notices: list[str] = []
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    conn.add_log_listener(lambda _, message: notices.append(str(message.as_dict())))
    try:
        await conn.execute(block)
        try:
            await conn.fetch(cast)
        except asyncpg.InvalidTextRepresentationError as e:
            error = e.as_dict()
        else:
            raise AssertionError("the cast did not fail")
        # Notices arrive with the statement; let the listener run.
        await asyncio.sleep(0)
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return {"sqlstate": error["sqlstate"], "error": error, "notices": notices}


def _copy_out(conn: Conn, sql: str) -> list[bytes]:
    rows = []
    with conn.cursor() as cursor, cursor.copy(sql) as copy:
        for row in copy:
            rows.append(bytes(row))
    return rows


class TestBC01CopyTo:
    """
    COPY TO STDOUT is masked as a result is (BC01).
    """

    def test_bc01_copy_email(self, masking: RunningGateway, truth: Truth) -> None:
        """
        COPY customers(email) TO STDOUT read with get_copy_data: every
        line is the mask; no clear e-mail.
        """
        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            pgconn = conn.pgconn
            pgconn.send_query(b"COPY customers(email) TO STDOUT")
            result = pgconn.get_result()
            assert result is not None
            lines = []
            while True:
                size, data = pgconn.get_copy_data(0)
                if size < 0:
                    break
                lines.append(bytes(data))
            while pgconn.get_result() is not None:
                pass

        assert len(lines) == 1000
        assert set(lines) == {b"[masked]\n"}

    def test_bc01_copy_text_and_csv(
        self, masking: RunningGateway, truth: Truth
    ) -> None:
        """
        Text and CSV COPY with a column list: masked columns masked, the
        rest as a direct COPY gives them, NULL as NULL, the CSV header kept.
        """
        columns = "id, email, card_number, note, raw"
        args = pg_connect_args(masking.servers, "app", masking.servers["APP_PASSWORD"])
        with psycopg.connect(**args) as direct:
            want = _copy_out(direct, f"copy customers({columns}) to stdout")
        with psycopg.connect(**masking.connect_args(masking.token())) as conn:
            text = _copy_out(conn, f"copy customers({columns}) to stdout")
            csv = _copy_out(
                conn, f"copy customers({columns}) to stdout with (format csv, header)"
            )

        assert len(text) == len(want) == 1000
        assert csv[0] == b"id,email,card_number,note,raw\n"
        assert len(csv) == 1001
        for got, wanted, comma in zip(text, want, csv[1:], strict=True):
            fields = got.rstrip(b"\n").split(b"\t")
            wanted_fields = wanted.rstrip(b"\n").split(b"\t")
            assert fields[0] == wanted_fields[0]
            assert fields[1] == MASK.encode()
            assert fields[2][-4:] == wanted_fields[2][-4:]
            assert set(fields[2][:-4]) == {ord("*")}
            assert fields[4] == wanted_fields[4]
            _check_unmasked("note", fields[3], wanted_fields[3], lambda v: v.decode())
            assert comma.split(b",")[1] == MASK.encode()
        assert text[1].split(b"\t")[3] == b"\\N"
        assert not leaked(b"".join(text + csv).decode(), truth.secrets)

    def test_bc01_copy_refused(self, masking: RunningGateway, truth: Truth) -> None:
        """
        COPY that masking cannot see into is refused before it runs: a
        table with masked columns without a column list, binary format,
        a query; psql reports the refusal and the session goes on.
        """
        token = masking.token()
        refused = [
            "copy customers to stdout",
            "copy customers(id, email) to stdout with (format binary)",
            "copy (select email from customers) to stdout",
            "copy customers(email) to stdout with (delimiter ',')",
        ]

        results = [masking.psql(token, "-c", sql, "-c", "select 7") for sql in refused]

        for result in results:
            assert result.returncode == 1
            assert "blocked by masking policy" in result.stderr
            assert "7" not in result.stdout
            assert not leaked(result.stdout + result.stderr, truth.secrets)

    def test_asyncpg_copy(self, masking: RunningGateway, truth: Truth) -> None:
        """
        asyncpg's copy_from_table with a column list: masked.
        """
        data = asyncio.run(
            _asyncpg_copy(_asyncpg_params(masking, masking.token()), _tls())
        )

        lines = data.splitlines()
        assert len(lines) == 1000
        assert {line.split(b"\t")[1] for line in lines} == {MASK.encode()}
        assert not leaked(data.decode(), truth.secrets)

    def test_psql_copy_to_file(
        self, masking: RunningGateway, truth: Truth, tmp_path: Path
    ) -> None:
        """
        psql's \\copy to a file writes the masks.
        """
        target = tmp_path / "emails.tsv"

        result = masking.psql(
            masking.token(), "-c", f"\\copy customers(id, email, ssn) to '{target}'"
        )

        assert result.returncode == 0, result.stderr
        lines = target.read_text().splitlines()
        assert len(lines) == 1000
        assert all(line.split("\t")[1:] == [MASK, MASK] for line in lines)


async def _asyncpg_copy(params: dict[str, Any], context: ssl.SSLContext) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    try:
        await conn.copy_from_table("customers", columns=["id", "ssn"], output=sink)
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return b"".join(chunks)


class TestRecording:
    """
    What the recording keeps: masked rows, counts, no clear values.
    """

    def test_sample_and_counts(self, masking: RunningGateway, truth: Truth) -> None:
        """
        A result's sample holds its rows as they left, capped at 1,000
        rows, with the totals and the masking counts per column and rule
        (dry-run counts marked); the name column is noted as dry-run.
        """
        token = masking.token()
        with psycopg.connect(**masking.connect_args(token)) as conn:
            conn.execute(
                "select id, name, email from customers where id <= 3"
            ).fetchall()
            conn.execute(
                "select id, email from customers, generate_series(1, 2)"
            ).fetchall()
        session_id = masking.session_of(token)
        masking.wait_event(session_id, "session.closed")
        lines = masking.recording_lines(session_id)

        samples = lines_of(lines, "result.sample")
        described = lines_of(lines, "result.described")
        small, big = samples[-2], samples[-1]
        assert [row[2] for row in small["rows"]] == [MASK, MASK, MASK]
        assert small["rows"][0][1] == MASK  # dry-run rules mask the record too
        assert small["total_rows"] == 3
        counts = {
            (c["column"], c["rule"], c["dry_run"]): c["count"] for c in small["masked"]
        }
        assert counts[("email", "customer-pii", False)] == 3
        assert counts[("name", "watch-names", True)] == 3
        assert any(line.get("dry_run") == ["watch-names"] for line in described)
        # The columns as the client got them: email re-described as masked.
        first = next(x for x in described if len(x["columns"]) == 3)
        assert [(c["name"], c["masked"]) for c in first["columns"]] == [
            ("id", False),
            ("name", False),
            ("email", True),
        ]
        assert big["total_rows"] == 2000
        assert len(big["rows"]) == 1000
        assert big["truncated"] is True
        assert not leaked(str(lines), truth.secrets)

    def test_statements_and_parameters_masked(
        self, masking: RunningGateway, truth: Truth
    ) -> None:
        """
        A literal compared with a masked column, a bound parameter doing
        the same, and detected values anywhere in a statement are masked
        in the recording; no recording, log or output file of the gateway
        holds any value a masked column or a detector covers.
        """
        row = truth.rows[5]
        email, ssn = row[2], row[3]
        token = masking.token()

        with psycopg.connect(**masking.connect_args(token)) as conn:
            literal = pgsql.SQL("select id from customers where email = {}")
            conn.execute(literal.format(email)).fetchall()
            conn.execute("select id from customers where ssn = %s", [ssn]).fetchall()
            conn.execute(f"select '{truth.rows[6][2]}' as pasted").fetchall()
        session_id = masking.session_of(token)
        masking.wait_event(session_id, "session.closed")
        statements = lines_of(masking.recording_lines(session_id), "statement")
        bound = lines_of(masking.recording_lines(session_id), "statement.bound")

        assert any("where email = '[masked]'" in s["text"] for s in statements)
        assert any(p["value"] == MASK for b in bound for p in b["parameters"])
        for secret in sorted(truth.secrets):
            assert masking.files_containing(secret) == [], secret


class TestStrictCorpus:
    """
    With C{strict: true} no way of using a masked column shows its value.
    """

    BYPASSES = (
        "select lower(email) from customers order by id limit 5",
        "select email::text from customers order by id limit 5",
        "select email || '' from customers order by id limit 5",
        "select row_to_json(c) from customers c order by id limit 5",
        "select to_jsonb(customers) from customers limit 5",
        "select c from customers c limit 5",
        "select (c).email from customers c limit 5",
        "select encode(convert_to(email, 'UTF8'), 'hex') from customers limit 5",
        "select substr(ssn, 1, 3) from customers limit 5",
        "select id from customers where email like 'a%'",
        "select id from customers where ssn = '123-45-6789'",
        "select id, name from customers order by email limit 5",
        "select email, count(*) from customers group by email limit 5",
        "select a.id from customers a join customers b on a.email = b.email limit 5",
        "select email from customers union all select 'x' limit 5",
        "with x as (select email from customers) select * from x limit 5",
        "select * from (select email from customers) s limit 5",
        "select distinct email from customers limit 5",
        "select email::int from customers where id = 1",
        "select card_number::bigint from customers where id = 1",
        "create temporary table leak as select email from customers",
        "explain analyze select * from customers where email = 'x'",
        "copy (select email from customers) to stdout",
        "copy customers to stdout",
        "do $$ begin raise notice '%', (select email from customers limit 1); end $$",
        "do $$ begin raise exception '%', (select ssn from customers limit 1); end $$",
        "select 1; select email::int from customers",
    )

    ALLOWED = (
        ("select email, ssn, card_number from customers where id = 1", 1),
        ("select * from customers where id < 4", 3),
        ("select c.email from customers c where c.id = 2", 1),
        ("select count(*) from customers where id > 10", 1),
    )

    def test_psycopg(self, strict: RunningGateway, truth: Truth) -> None:
        """
        Each bypass is refused (42501) or yields nothing a direct read
        shows in a masked column; notices are collected too.
        """
        received: list[str] = []
        refused = 0
        with psycopg.connect(
            **strict.connect_args(strict.token()), autocommit=True
        ) as conn:
            conn.add_notice_handler(lambda d: received.append(str(d.message_primary)))
            for sql in self.BYPASSES:
                try:
                    if sql.startswith("copy"):
                        received.extend(r.decode() for r in _copy_out(conn, sql))
                    else:
                        received.append(repr(conn.execute(sql).fetchall()))
                except psycopg.errors.InsufficientPrivilege as e:
                    refused += 1
                    received.append(_diagnostics(e))
                except psycopg.Error as e:
                    received.append(_diagnostics(e))
            allowed = [conn.execute(sql).fetchall() for sql, _ in self.ALLOWED]

        assert refused == len(self.BYPASSES)
        assert [len(rows) for rows in allowed] == [n for _, n in self.ALLOWED]
        assert allowed[0] == [(MASK, MASK, allowed[0][0][2])]
        assert allowed[0][0][2].startswith("****")
        assert not leaked("\n".join(received) + repr(allowed), truth.secrets)

    def test_psql(self, strict: RunningGateway, truth: Truth) -> None:
        """
        psql: the same corpus, everything it prints checked.
        """
        token = strict.token()
        outputs = []
        for sql in self.BYPASSES:
            result = strict.psql(token, "-c", sql)
            assert result.returncode != 0, sql
            outputs.append(result.stdout + result.stderr)

        assert all("blocked by masking policy" in o for o in outputs)
        assert not leaked("\n".join(outputs), truth.secrets)

    def test_asyncpg(self, strict: RunningGateway, truth: Truth) -> None:
        """
        asyncpg, where every statement is prepared first: refused too.
        """
        received = asyncio.run(
            _asyncpg_corpus(
                _asyncpg_params(strict, strict.token()), _tls(), self.BYPASSES
            )
        )

        assert received["refused"] == len(
            [s for s in self.BYPASSES if not s.startswith("copy") and ";" not in s]
        )
        assert not leaked("\n".join(received["texts"]), truth.secrets)

    def test_recordings_clean(self, strict: RunningGateway, truth: Truth) -> None:
        """
        After the corpus, no recording, log or output file holds a value
        of a masked column or a detected one.
        """
        with psycopg.connect(**strict.connect_args(strict.token())) as conn:
            conn.execute("select * from customers").fetchall()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select email::int from customers")

        for secret in sorted(truth.secrets):
            assert strict.files_containing(secret) == [], secret


async def _asyncpg_corpus(
    params: dict[str, Any], context: ssl.SSLContext, corpus: tuple[str, ...]
) -> dict[str, Any]:
    texts: list[str] = []
    refused = 0
    conn = await asyncpg.connect(**params, ssl=context, timeout=10, command_timeout=30)
    conn.add_log_listener(lambda _, message: texts.append(str(message.as_dict())))
    try:
        for sql in corpus:
            if sql.startswith("copy") or ";" in sql:
                continue
            try:
                texts.append(repr(await conn.fetch(sql)))
            except asyncpg.InsufficientPrivilegeError as e:
                refused += 1
                texts.append(str(e.as_dict()))
            except asyncpg.PostgresError as e:
                texts.append(str(e.as_dict()))
    finally:
        await asyncio.wait_for(conn.close(), WAIT)
    return {"refused": refused, "texts": texts}


def test_no_masking_without_rules(gateway: RunningGateway, direct: Conn) -> None:
    """
    The shared gateway has no masking rules: values pass untouched, and
    its recordings keep the result's totals but never its rows, which no
    masking has seen.
    """
    token = gateway.token()
    want = direct.execute("select id, email from customers where id = 1").fetchone()

    with psycopg.connect(**gateway.connect_args(token)) as conn:
        got = conn.execute("select id, email from customers where id = 1").fetchone()
    session_id = gateway.session_of(token)
    gateway.wait_event(session_id, "session.closed")
    lines = gateway.recording_lines(session_id)

    assert got == want
    assert want is not None
    assert all(
        line.get("rows") in (None, []) for line in lines_of(lines, "result.sample")
    )
    assert want[1] not in json.dumps(lines)
