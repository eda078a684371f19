"""
What statements reach beyond their text, under the demo policy: views,
rules, triggers, inheritance, foreign keys, the target's own overloads
of built-in names, search paths set earlier or by the role, and objects
created in the same transaction.  Real psql and psycopg through
C{twistd hoopgate} to the test PostgreSQL; canary and the masked
columns are checked directly after every attempt.

Objects made directly are seen by the gateway within the catalog
cache's few seconds; each test names its own, so that no answer cached
for another test decides it.

The policy is the demo's guardrails and strict masking (CONTRACT.md):
no DROP or TRUNCATE, no DELETE or UPDATE without WHERE, no write to
canary; C{customers.email} and C{ssn} redacted, C{card_number} keeping
its last four digits.  It does not deny DDL, so every object here is
created through the gateway unless a test says otherwise.

test-case-name: tests.integration.test_postgres_reach
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.gateway import RunningGateway, start_gateway
from tests.support.guardrails import SYNC, bind, execute, parse
from tests.support.pgwire import (
    Message,
    WireClient,
    error_fields,
    password_message,
    query,
    startup_message,
)
from tests.support.servers import pg_connect_args

pytestmark = pytest.mark.timeout(180)

Conn = psycopg.Connection[tuple[Any, ...]]

PRIVILEGE = "42501"
MASK = "[masked]"

POLICY = """\
  guardrails:
    - name: no-destructive
      subjects: ["*"]
      deny:
        commands: [DROP, TRUNCATE]
        shapes: [delete_without_where, update_without_where]
        writes: [canary]
  masking:
    strict: true
    rules:
      - name: customer-pii
        subjects: ["*"]
        columns: [public.customers.email, public.customers.ssn]
        strategy: redact
      - name: customer-cards
        subjects: ["*"]
        columns: [public.customers.card_number]
        strategy: {keep_last: 4}
      - name: detected
        subjects: ["*"]
        detect: [email, card_number, iban]
        strategy: redact
"""

SETUP_SQL = """\
create table reach_t (id int);
create table reach_other (id int);
create function reach_fill() returns trigger language plpgsql as
  $$ begin insert into canary values (900); return new; end $$;
create function reach_plus(text, text) returns text language sql as
  $$ insert into canary values (901) returning 'x' $$;
create table reach_log (id int);
create table reach_audited (id int);
create function reach_audit() returns trigger language plpgsql as
  $$ begin insert into reach_log values (new.id); return new; end $$;
create trigger reach_audit_tg after insert on reach_audited
  for each row execute function reach_audit();
create function reach_double(int) returns int language sql as $$ select $1 * 2 $$;
"""

# Run directly after each test: what a test may have created, and the
# role's search path, are put back.
CLEAN_SQL = """\
alter role app reset search_path;
alter table customers no inherit reach_parent;
drop table if exists reach_parent, reach_copy, reach_child cascade;
drop view if exists reach_v, reach_vs, reach_ok;
drop trigger if exists reach_tg on reach_t;
alter table if exists reach_t no inherit canary;
drop operator if exists public.+ (text, text);
drop function if exists public.lower(int);
drop schema if exists reach_evil cascade;
truncate reach_t, reach_other, canary;
truncate reach_log, reach_audited;
drop table if exists reach_ruled, reach_role, reach_start, reach_child cascade;
drop table if exists reach_pipe, reach_prep cascade;
alter table reach_other drop constraint if exists reach_c;
"""

TEARDOWN_SQL = """\
drop table if exists reach_t, reach_other, reach_log, reach_audited cascade;
drop function if exists reach_audit(), reach_double(int) cascade;
drop function if exists reach_fill(), reach_plus(text, text) cascade;
"""


def _with_policy(text: str) -> str:
    assert "guardrails:" not in text
    assert text.endswith("on_token_expiry: close\n"), text[-200:]
    trusted = "    allowed_options: []\n    trusted_functions: [public.reach_audit, public.reach_double]\n"
    return text.replace("    allowed_options: []\n", trusted) + POLICY


def _direct_args(servers: dict[str, str]) -> dict[str, Any]:
    return pg_connect_args(servers, "app", servers["APP_PASSWORD"])


@pytest.fixture(scope="module")
def reach_gateway(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    with psycopg.connect(**_direct_args(servers), autocommit=True) as conn:
        _each(conn, CLEAN_SQL + TEARDOWN_SQL)
        conn.execute(SETUP_SQL)
    running = start_gateway(
        servers, tmp_path_factory.mktemp("reach-gateway"), edit=_with_policy
    )
    try:
        yield running
    finally:
        running.stop()
        with psycopg.connect(**_direct_args(servers), autocommit=True) as conn:
            conn.execute(TEARDOWN_SQL)


@pytest.fixture
def direct(servers: dict[str, str]) -> Iterator[Conn]:
    with psycopg.connect(**_direct_args(servers), autocommit=True) as conn:
        yield conn


def _each(conn: Conn, sql: str) -> None:
    """
    Run each line of C{sql}, going on past objects that are not there.
    """
    for statement in filter(None, (line.strip() for line in sql.splitlines())):
        missing = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedObject)
        with contextlib.suppress(*missing):
            conn.execute(statement)


@pytest.fixture(autouse=True)
def clean(reach_gateway: RunningGateway, direct: Conn) -> Iterator[None]:
    yield
    _each(direct, CLEAN_SQL)


def canary(direct: Conn) -> list[int]:
    return [row[0] for row in direct.execute("select id from canary order by id")]


def run(
    gateway: RunningGateway, *statements: str, autocommit: bool = True
) -> list[tuple[str, str] | list[tuple[Any, ...]]]:
    """
    Each statement on one gateway session: its rows, or its error's
    SQLSTATE and, for a refusal, the detail the recording keeps (the
    client hears only the rule's name).
    """
    args = gateway.connect_args(gateway.token())
    results: list[tuple[str, str] | list[tuple[Any, ...]]] = []
    session = ""
    with psycopg.connect(**args, autocommit=autocommit) as conn:
        for statement in statements:
            try:
                cursor = conn.execute(statement)
                results.append(cursor.fetchall() if cursor.description else [])
            except psycopg.Error as e:
                assert e.diag.sqlstate is not None
                detail = e.diag.message_detail or ""
                session = detail.removeprefix("hoopgate reference ") or session
                results.append((e.diag.sqlstate, e.diag.message_primary or ""))
                if not autocommit:
                    conn.rollback()
    return _with_details(gateway, session, results)


def _with_details(
    gateway: RunningGateway,
    session: str,
    results: list[tuple[str, str] | list[tuple[Any, ...]]],
) -> list[tuple[str, str] | list[tuple[Any, ...]]]:
    if not session:
        return results
    details = iter(
        str(line["reason"]["detail"])
        for line in gateway.recording_lines(session)
        if line.get("verdict") == "deny" and line.get("event") == "statement"
    )
    return [
        (r[0], f"{r[1]}: {next(details, '')}")
        if isinstance(r, tuple) and r[0] == PRIVILEGE
        else r
        for r in results
    ]


def _batch(gateway: RunningGateway, batch: bytes) -> list[Message]:
    """
    What a raw session gets for C{batch}, up to its ReadyForQuery.
    """
    with WireClient(gateway.pg_port) as client:
        client.start_tls(gateway.servers["TLS_CERT"])
        assert client.login(gateway.token())[-1].type == "Z"
        client.send(batch)
        return client.read_until("Z")


def refused(result: object, *words: str) -> bool:
    """
    Whether C{result} is a policy refusal whose detail names C{words}.
    """
    if not isinstance(result, tuple) or result[0] != PRIVILEGE:
        return False
    return all(word in result[1] for word in words)


class TestWritesBehindNames:
    """
    A write to a relation that leads to canary is a write to canary.
    """

    def test_updatable_view(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        created, inserted = run(
            reach_gateway,
            "create view reach_v as select * from canary",
            "insert into reach_v values (1)",
        )

        assert created == []
        assert refused(inserted, "writes public.canary"), inserted
        assert canary(direct) == []

    def test_rule(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        """
        A rule whose action writes canary is refused by its own text;
        made directly, it makes the write to its table refused.
        """
        direct.execute("create table reach_ruled (id int)")
        (created,) = run(
            reach_gateway,
            "create rule reach_r as on insert to reach_ruled"
            " do also insert into canary values (new.id)",
        )
        direct.execute(
            "create rule reach_r as on insert to reach_ruled"
            " do also insert into canary values (new.id)"
        )
        (inserted,) = run(reach_gateway, "insert into reach_ruled values (2)")

        assert refused(created, "writes public.canary"), created
        assert refused(inserted, "writes public.canary"), inserted
        assert canary(direct) == []

    def test_trigger(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        created, inserted = run(
            reach_gateway,
            "create trigger reach_tg after insert on reach_t"
            " for each row execute function reach_fill()",
            "insert into reach_t values (3)",
        )

        assert created == []
        assert refused(inserted, "public.reach_fill (trigger)"), inserted
        assert canary(direct) == []

    def test_child_of_canary(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        """
        A table that gains canary as its parent writes canary (its rows
        show there); made directly, an insert into it is refused too.
        """
        (altered,) = run(reach_gateway, "alter table reach_t inherit canary")
        direct.execute("alter table reach_t inherit canary")
        (inserted,) = run(reach_gateway, "insert into reach_t values (4)")

        assert refused(altered, "writes public.canary"), altered
        assert refused(inserted, "writes public.canary"), inserted
        assert canary(direct) == []

    def test_plain_table_still_written(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        The look-alike: a table with no trigger, rule or parent is
        written as before, and a view over it is read.
        """
        results = run(
            reach_gateway,
            "insert into reach_other values (5)",
            "create view reach_ok as select id from reach_other",
            "select id from reach_ok",
            "select lower('ABC'), 1 + 2",
        )

        assert results == [[], [], [(5,)], [("abc", 3)]]


class TestShadowedNames:
    """
    The target's own function or operator answering for a built-in name.
    """

    def test_function_overload(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        created, called = run(
            reach_gateway,
            "create function public.lower(int) returns text language sql"
            " as $$ insert into canary values (902) returning 'x' $$",
            "select lower(7)",
        )

        assert created == []
        assert refused(called, "public.lower"), called
        assert canary(direct) == []

    def test_operator(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        created, called = run(
            reach_gateway,
            "create operator public.+ (leftarg = text, rightarg = text,"
            " function = reach_plus)",
            "select 'a'::text + 'b'::text",
        )

        assert created == []
        assert refused(called, 'public."+" may answer'), called
        assert canary(direct) == []

    def test_search_path_of_an_earlier_query(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        SET search_path in one query string still counts in the next.
        """
        results = run(
            reach_gateway,
            "create schema reach_evil",
            "create view reach_evil.reach_other as select * from canary",
            "set search_path = reach_evil, public",
            "insert into reach_other values (6)",
        )

        assert results[:3] == [[], [], []]
        assert refused(results[3], "writes public.canary"), results[3]
        assert canary(direct) == []

    def test_role_search_path(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        A default search path set on the role (directly) is one the
        session may be using.
        """
        direct.execute("create table reach_role (id int)")
        direct.execute("create schema reach_evil")
        direct.execute("create view reach_evil.reach_role as select * from canary")
        direct.execute("alter role app set search_path = reach_evil, public")

        (inserted,) = run(reach_gateway, "insert into reach_role values (7)")

        assert refused(inserted, "writes public.canary"), inserted
        assert canary(direct) == []

    def test_search_path_at_startup(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        A search path the client's start-up packet sets (any setting may
        be a start-up parameter) is one its statements may resolve with.
        """
        direct.execute("create table reach_start (id int)")
        direct.execute("create schema reach_evil")
        direct.execute("create view reach_evil.reach_start as select * from canary")
        startup = {
            "user": "ci-runner",
            "database": "appdb",
            "search_path": "reach_evil, public",
        }

        with WireClient(reach_gateway.pg_port) as client:
            client.start_tls(reach_gateway.servers["TLS_CERT"])
            client.send(startup_message(startup))
            client.read_until("R", "E")
            client.send(password_message(reach_gateway.token()))
            ready = client.read_until("Z", "E")
            client.send(query("insert into reach_start values (11)"))
            answer = client.read_until("Z")

        assert ready[-1].type == "Z", ready
        errors = [error_fields(m) for m in answer if m.type == "E"]
        assert [e["C"] for e in errors] == [PRIVILEGE], answer
        assert canary(direct) == []
        assert direct.execute("select count(*) from reach_start").fetchone() == (0,)


class TestDeepStatements:
    """
    Statements nesting deeper than the gateway's own recursion limit are
    classified in its worker process, and judged as any other.
    """

    def test_three_thousand_nested_operators(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        deep = "+".join(["1"] * 3000)

        read, write = run(
            reach_gateway, f"select {deep}", f"insert into canary select {deep}"
        )

        assert read == [(3000,)]
        assert refused(write, "writes public.canary"), write
        assert canary(direct) == []


class TestHiddenCode:
    """
    Code of the target's own that runs where no statement names it:
    temporary relations, casts, operators and domains on the target's own
    types, schema elements, maintenance of every table.  Set up directly
    (as an application would have) unless a test says otherwise.
    """

    def test_temporary_view_answers_first(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        PostgreSQL looks a name up in the session's temporary schema
        first: a temporary view over canary written by its bare name.
        """
        created, inserted = run(
            reach_gateway,
            "create temp view reach_tmpv as select * from canary",
            "insert into reach_tmpv values (4242)",
        )

        assert created == []
        assert refused(inserted, "writes public.canary"), inserted
        assert canary(direct) == []

    def test_assignment_cast(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        direct.execute("create schema reach_evil")
        direct.execute("create type reach_evil.e as enum ('a')")
        direct.execute(
            "create function reach_evil.to_e(int) returns reach_evil.e language plpgsql"
            " as $$ begin insert into public.canary values ($1); return 'a'; end $$"
        )
        direct.execute(
            "create cast (int as reach_evil.e) with function reach_evil.to_e(int)"
            " as assignment"
        )
        direct.execute("create table reach_evil.cast_t (c reach_evil.e)")

        (inserted,) = run(reach_gateway, "insert into reach_evil.cast_t values (777)")

        assert refused(inserted, "reach_evil.to_e (cast)"), inserted
        assert canary(direct) == []

    def test_operator_on_an_own_type(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        BETWEEN uses >= and <= without naming them: an operator of the
        target's own on a column's type counts.  The same operator name
        on the target's own type does not refuse comparisons of others.
        """
        direct.execute("create schema reach_evil")
        direct.execute("create type reach_evil.o as (x int)")
        direct.execute(
            "create function reach_evil.ge(reach_evil.o, reach_evil.o) returns bool"
            " language plpgsql as"
            " $$ begin insert into public.canary values (1); return true; end $$"
        )
        for name in (">=", "<=", "="):
            direct.execute(
                f"create operator reach_evil.{name} (leftarg = reach_evil.o,"
                " rightarg = reach_evil.o, function = reach_evil.ge)"
            )
        direct.execute("create table reach_evil.op_t (k reach_evil.o)")
        direct.execute("insert into reach_evil.op_t values (row(1))")

        between, other = run(
            reach_gateway,
            "select 1 from reach_evil.op_t where k between k and k",
            "select name from customers where id = 8",
        )

        assert refused(between, "operator on a column type"), between
        assert isinstance(other, list) and len(other) == 1
        assert canary(direct) == []

    def test_domain_check(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        direct.execute("create schema reach_evil")
        direct.execute(
            "create function reach_evil.ok(int) returns bool language plpgsql as"
            " $$ begin insert into public.canary values ($1); return true; end $$"
        )
        direct.execute("create domain reach_evil.d as int check (reach_evil.ok(value))")
        direct.execute("create table reach_evil.dom_t (v reach_evil.d)")

        (inserted,) = run(reach_gateway, "insert into reach_evil.dom_t values (3003)")

        assert refused(inserted, "reach_evil.ok (domain check)"), inserted
        assert canary(direct) == []

    def test_schema_elements_are_a_catalog_change(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        (both,) = run(
            reach_gateway,
            "create schema reach_evil create view v as select * from public.canary;"
            " insert into reach_evil.v values (31337)",
        )

        assert refused(both, "an earlier CREATE of this transaction"), both
        assert canary(direct) == []

    def test_check_constraint_is_a_catalog_change(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        (both,) = run(
            reach_gateway,
            "alter table reach_other add constraint reach_c check (id > 0);"
            " insert into reach_other values (2222)",
        )

        assert refused(both, "an earlier ALTER of this transaction"), both
        assert direct.execute("select count(*) from reach_other").fetchone() == (0,)

    def test_inherit_after_filling(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        The rows a table holds show in the parent it gains: the ALTER
        writes canary.
        """
        direct.execute("create table reach_child (id int)")
        direct.execute("insert into reach_child values (6666)")

        (altered,) = run(reach_gateway, "alter table reach_child inherit canary")

        assert refused(altered, "writes public.canary"), altered
        assert canary(direct) == []

    def test_analyze_of_every_table(self, reach_gateway: RunningGateway) -> None:
        every, one = run(reach_gateway, "analyze", "analyze reach_other")

        assert refused(every, "ANALYZE of every table"), every
        assert one == []

    def test_too_many_relations(self, reach_gateway: RunningGateway) -> None:
        names = ", ".join(f"reach_z{i}" for i in range(1001))

        (result,) = run(reach_gateway, f"select 1 from {names}")  # noqa: S608 - test names

        assert refused(result, "names more than 1000 relations"), result


class TestPreparedStatements:
    """
    A prepared statement is judged at Parse and runs at Execute, maybe
    much later: it is judged again when the catalog may have changed.
    """

    def test_pipeline_executes_after_a_change(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Parse an INSERT, then a CREATE TRIGGER; execute the trigger, then
        the INSERT, in one batch: the INSERT's Bind is refused, and the
        batch fails in the server too (the trigger is not created).
        """
        direct.execute("create table reach_pipe (id int)")
        batch = (
            parse("ins", "insert into reach_pipe values (1)")
            + parse(
                "tg",
                "create trigger reach_pipe_tg after insert on reach_pipe"
                " for each row execute function reach_fill()",
            )
            + bind("", "tg")
            + execute("")
            + bind("", "ins")
            + execute("")
            + SYNC
        )

        answer = _batch(reach_gateway, batch)

        errors = [error_fields(m) for m in answer if m.type == "E"]
        assert [e["C"] for e in errors] == [PRIVILEGE], answer
        assert canary(direct) == []
        triggers = direct.execute(
            "select count(*) from pg_trigger where tgname = 'reach_pipe_tg'"
        ).fetchone()
        assert triggers == (0,)

    def test_pipeline_bound_before_a_change(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        The INSERT bound before the CREATE TRIGGER is parsed, executed
        after it: the Execute is refused and the batch fails.
        """
        direct.execute("create table reach_pipe (id int)")
        batch = (
            parse("ins", "insert into reach_pipe values (1)")
            + bind("p1", "ins")
            + parse(
                "tg",
                "create trigger reach_pipe_tg after insert on reach_pipe"
                " for each row execute function reach_fill()",
            )
            + bind("", "tg")
            + execute("")
            + execute("p1")
            + SYNC
        )

        answer = _batch(reach_gateway, batch)

        errors = [error_fields(m) for m in answer if m.type == "E"]
        assert [e["C"] for e in errors] == [PRIVILEGE], answer
        assert canary(direct) == []
        assert direct.execute("select count(*) from reach_pipe").fetchone() == (0,)

    def test_prepared_before_another_session_adds_a_trigger(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        direct.execute("create table reach_prep (id int)")
        args = reach_gateway.connect_args(reach_gateway.token())
        other = reach_gateway.connect_args(reach_gateway.token())

        with psycopg.connect(**args, autocommit=True) as conn:
            conn.execute("insert into reach_prep values (%s)", (1,), prepare=True)
            with psycopg.connect(**other, autocommit=True) as second:
                second.execute(
                    "create trigger reach_prep_tg after insert on reach_prep"
                    " for each row execute function reach_fill()"
                )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("insert into reach_prep values (%s)", (2,), prepare=True)

        assert direct.execute("select id from reach_prep").fetchall() == [(1,)]
        assert canary(direct) == []


class TestMaskedColumnsRenamed:
    def test_column_aliases(self, reach_gateway: RunningGateway) -> None:
        """
        customers as t(a, b, c, d): names other than the table's are not
        taken as plain (strict masking refuses), nor copied out.
        """
        derived, copied = run(
            reach_gateway,
            "select lower(d) from customers as t(a, b, c, d) where a = 1",
            "insert into reach_other select a from customers as t(a, b, c, d)"
            " where d like '0%'",
        )

        assert refused(derived, "customer-pii"), derived
        assert refused(copied, "customer-pii"), copied

    def test_schema_rename(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        try:
            (renamed,) = run(reach_gateway, "alter schema public rename to reach_pub")
        finally:
            if direct.execute("select to_regnamespace('reach_pub')").fetchone() != (
                None,
            ):
                direct.execute("alter schema reach_pub rename to public")

        # The guardrail refuses it first: canary is in the schema too.
        assert refused(renamed, "writes public.*"), renamed
        assert direct.execute("select to_regnamespace('public')").fetchone() != (None,)


class TestClientMessages:
    def test_typo_says_what_the_gateway_could_not_read(
        self, reach_gateway: RunningGateway
    ) -> None:
        """
        A statement the parser rejects is refused with the parser's words
        about the client's own text, not as if policy had denied it.
        """
        args = reach_gateway.connect_args(reach_gateway.token())
        with (
            psycopg.connect(**args, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege) as raised,
        ):
            conn.execute("selec 1")

        assert raised.value.diag.message_primary == (
            "hoopgate: statement could not be classified: the parser rejected"
            ' the text: syntax error at or near "selec" (rule no-destructive)'
        )


class TestTrustedFunctions:
    """
    Functions the target's settings vouch for (C{trusted_functions}).
    """

    def test_trusted_trigger_and_call(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        inserted, called, qualified = run(
            reach_gateway,
            "insert into reach_audited values (12)",
            "select reach_double(21)",
            "select public.reach_double(4)",
        )

        assert (inserted, called, qualified) == ([], [(42,)], [(8,)])
        assert direct.execute("select id from reach_log").fetchall() == [(12,)]

    def test_untrusted_overload_of_a_trusted_name(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Trust names one function: another schema's function of the same
        name still makes the call unknown.
        """
        direct.execute("create schema reach_evil")
        direct.execute(
            "create function reach_evil.reach_double(int) returns int language sql"
            " as $$ insert into canary values (903) returning 1 $$"
        )

        # Another shape than the test before (the catalog's answer for
        # that one may still be cached).
        (called,) = run(reach_gateway, "select reach_double(id) from reach_log")

        assert refused(called, "reach_evil.reach_double may answer"), called
        assert canary(direct) == []


class TestSameTransaction:
    """
    The catalog is read on another connection, which cannot see the
    session's open transaction.
    """

    def test_one_query_string(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        (both,) = run(
            reach_gateway,
            "create view reach_v as select * from canary;"
            " insert into reach_v values (8)",
        )

        assert refused(both, "an earlier CREATE of this transaction"), both
        assert canary(direct) == []
        assert direct.execute("select to_regclass('reach_v')").fetchone() == (None,)

    def test_transaction_block(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        results = run(
            reach_gateway,
            "create view reach_v as select * from canary",
            "insert into reach_v values (9)",
            autocommit=False,
        )

        assert results[0] == []
        assert refused(results[1], "an earlier CREATE of this transaction"), results
        assert canary(direct) == []

    def test_committed_then_judged(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        """
        Once the transaction commits, the next one sees the view.
        """
        args = reach_gateway.connect_args(reach_gateway.token())
        with psycopg.connect(**args) as conn:
            conn.execute("create view reach_v as select * from canary")
            conn.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as raised:
                conn.execute("insert into reach_v values (10)")
        detail = raised.value.diag.message_detail or ""
        session = detail.removeprefix("hoopgate reference ")

        (result,) = _with_details(reach_gateway, session, [(PRIVILEGE, "")])
        assert refused(result, "writes public.canary"), result
        assert canary(direct) == []


class TestMaskedColumnsBehindNames:
    """
    Masked columns read through objects their rules do not name.
    """

    def test_view(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        """
        Through the gateway, the view's own text is refused (strict
        masking); made directly, reading it is refused too.
        """
        (created,) = run(
            reach_gateway, "create view reach_vs as select id, ssn as s from customers"
        )
        direct.execute("create view reach_vs as select id, ssn as s from customers")
        (read,) = run(reach_gateway, "select s from reach_vs order by id limit 3")

        assert refused(created, "customer-pii"), created
        assert refused(read, "public.customers", "through a view or rule"), read

    def test_parent_table(self, reach_gateway: RunningGateway, direct: Conn) -> None:
        """
        A parent's scan returns its child's rows: customers' rules mask
        the parent's columns of the same names.
        """
        direct.execute("create table reach_parent (like customers)")
        direct.execute("alter table customers inherit reach_parent")
        expected = direct.execute(
            "select id, name, right(card_number, 4) from customers order by id limit 3"
        ).fetchall()

        (rows,) = run(
            reach_gateway,
            "select id, name, email, ssn, card_number from reach_parent"
            " order by id limit 3",
        )

        assert isinstance(rows, list)
        assert [(r[0], r[1]) for r in rows] == [(e[0], e[1]) for e in expected]
        assert all(r[2] == MASK and r[3] == MASK for r in rows), rows
        assert [r[4][-4:] for r in rows] == [e[2] for e in expected]
        assert all(r[4] != c for r, c in zip(rows, self._cards(direct), strict=True))

    def _cards(self, direct: Conn) -> list[str]:
        return [
            row[0]
            for row in direct.execute(
                "select card_number from customers order by id limit 3"
            )
        ]

    @pytest.mark.parametrize(
        "statement",
        [
            "alter table customers rename to reach_people",
            "alter table customers rename column ssn to s",
            "alter table customers inherit reach_other",
        ],
    )
    def test_changing_the_masked_table(
        self, reach_gateway: RunningGateway, direct: Conn, statement: str
    ) -> None:
        (result,) = run(reach_gateway, statement)

        assert refused(result, "changes a table with masked columns"), result
        names = direct.execute(
            "select attname from pg_attribute where attrelid = 'customers'::regclass"
            " and attname = 'ssn'"
        ).fetchall()
        assert names == [("ssn",)]

    @pytest.mark.parametrize(
        "statement",
        [
            "create table reach_copy as select id, ssn from customers",
            "insert into reach_other select id from customers where email like '%'",
            "select ssn into reach_copy from customers",
        ],
    )
    def test_copying_out(
        self, reach_gateway: RunningGateway, direct: Conn, statement: str
    ) -> None:
        (result,) = run(reach_gateway, statement)

        assert isinstance(result, tuple) and result[0] == PRIVILEGE, result
        assert direct.execute("select to_regclass('reach_copy')").fetchone() == (None,)
        assert direct.execute("select count(*) from reach_other").fetchone() == (0,)


class TestCatalogConnection:
    """
    The gateway's own catalog reads answer only to pg_catalog.
    """

    def test_role_search_path_cannot_poison_lineage(
        self, reach_gateway: RunningGateway, direct: Conn
    ) -> None:
        direct.execute("create schema reach_evil")
        direct.execute(
            "create function reach_evil.never(oid, oid) returns boolean"
            " language sql immutable as $$ select false $$"
        )
        direct.execute(
            "create operator reach_evil.= (leftarg = oid, rightarg = oid,"
            " function = reach_evil.never)"
        )
        direct.execute(
            "alter role app set search_path = reach_evil, pg_catalog, public"
        )

        (rows,) = run(reach_gateway, "select email, ssn from customers limit 2")

        assert rows == [(MASK, MASK), (MASK, MASK)]
