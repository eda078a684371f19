"""
Tests for L{hoopgate_plugins.postgres._sql}: classifying statements for
guardrails (BC10: blocked statements hidden by the shape of the text).

The corpora judge each classification with the demo policy: block DROP,
TRUNCATE, DELETE or UPDATE without WHERE, any write to C{public.canary},
and anything unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopgate.plugin import StatementPart
from hoopgate_plugins.postgres._sql import (
    DEFAULT_ALLOWED_FUNCTIONS,
    DEFAULT_STATE,
    Classification,
    Effect,
    SessionState,
    Shape,
    classify,
)

CANARY = "public.canary"
CUSTOMERS = "public.customers"

BLOCKING_SHAPES = frozenset(
    {
        Shape.DROP,
        Shape.TRUNCATE,
        Shape.DELETE_WITHOUT_WHERE,
        Shape.UPDATE_WITHOUT_WHERE,
    }
)

SJIS = SessionState(client_encoding="SJIS")
BIG5 = SessionState(client_encoding="BIG5")
NONSTANDARD = SessionState(standard_conforming_strings=False)


def blocked(statement: Classification) -> bool:
    """
    Whether the demo policy blocks a statement.
    """
    return (
        statement.effect is Effect.UNKNOWN
        or bool(statement.shapes & BLOCKING_SHAPES)
        or CANARY in statement.relations_written
    )


def only(text: str, state: SessionState = DEFAULT_STATE) -> Classification:
    """
    The classification of a text holding exactly one statement.
    """
    (statement,) = classify(text, state)
    return statement


DDL, WRITE, UNKNOWN = Effect.DDL, Effect.WRITE, Effect.UNKNOWN
DROP = frozenset({Shape.DROP})
TRUNC = frozenset({Shape.TRUNCATE})
DWW = frozenset({Shape.DELETE_WITHOUT_WHERE})
UWW = frozenset({Shape.UPDATE_WITHOUT_WHERE})
CTE_DELETE = frozenset({Shape.WRITING_CTE, Shape.DELETE_WITHOUT_WHERE})
CTE = frozenset({Shape.WRITING_CTE})
CALL = frozenset({Shape.FUNCTION_CALL})
DYNAMIC = frozenset({Shape.DYNAMIC_SQL})
NONE: frozenset[Shape] = frozenset()
C = frozenset({CANARY})
NOTHING: frozenset[str] = frozenset()


@frozen
class Bypass:
    """
    A blocked statement in hiding, and what must give it away.

    Attributes:
        sql: The query string.
        effect: The effect of the hidden statement.
        shapes: Its shapes, exactly.
        written: The relations it writes, exactly.
        index: Which statement of the string it is.
        state: The session state the string arrives in.
    """

    sql: str
    effect: Effect
    shapes: frozenset[Shape]
    written: frozenset[str]
    index: int
    state: SessionState


def bypass(
    name: str,
    sql: str,
    effect: Effect,
    shapes: Iterable[Shape],
    written: Iterable[str],
    *,
    index: int = 0,
    state: SessionState = DEFAULT_STATE,
) -> object:
    case = Bypass(sql, effect, frozenset(shapes), frozenset(written), index, state)
    return pytest.param(case, id=name)


BYPASSES = [
    # A second statement, a leading comment, line breaks (BC10 as reported).
    bypass("after-select", "select 1; drop table canary", DDL, DROP, C, index=1),
    bypass("block-comment", "/* x */ drop table canary", DDL, DROP, C),
    bypass("split-lines", "select 1\n;\ndrop table\ncanary", DDL, DROP, C, index=1),
    bypass("line-comment", "-- first\ndrop table canary", DDL, DROP, C),
    bypass("nested-comment", "/* a /* b */ c */ drop table canary", DDL, DROP, C),
    bypass("tab", "drop\ttable\tcanary", DDL, DROP, C),
    bypass("empty-statements", "select 1;;; drop table canary", DDL, DROP, C, index=1),
    bypass("third", "select 1; select 2; drop table canary", DDL, DROP, C, index=2),
    bypass("in-transaction", "begin; drop table canary; commit", DDL, DROP, C, index=1),
    bypass(
        "comment-before-semicolon",
        "select 1 /* ; */; drop table canary",
        DDL,
        DROP,
        C,
        index=1,
    ),
    # Case and quoting.
    bypass("mixed-case", "DrOp TaBlE CaNaRy", DDL, DROP, C),
    bypass("quoted", 'drop table "canary"', DDL, DROP, C),
    bypass("if-exists-cascade", "DROP TABLE IF EXISTS canary CASCADE", DDL, DROP, C),
    bypass("in-a-list", "drop table customers, canary", DDL, DROP, C | {CUSTOMERS}),
    bypass(
        "quoted-upper-case",
        'drop table "CANARY"',
        DDL,
        DROP,
        frozenset({'public."CANARY"'}),
    ),
    # Schema qualification.
    bypass("schema", "drop table public.canary", DDL, DROP, C),
    bypass("quoted-schema", 'drop table "public"."canary"', DDL, DROP, C),
    bypass("database-schema", "drop table app.public.canary", DDL, DROP, C),
    bypass("drop-schema", "drop schema public cascade", DDL, DROP, NOTHING),
    bypass("drop-owned", "drop owned by app", DDL, DROP | {Shape.REVOKE}, NOTHING),
    # Unicode escapes.
    bypass("unicode-identifier", r'drop table U&"c\0061nary"', DDL, DROP, C),
    bypass("unicode-uescape", "drop table U&\"c!0061nary\" UESCAPE '!'", DDL, DROP, C),
    bypass(
        "unicode-all-escaped",
        r'delete from U&"\0063\0061\006E\0061\0072\0079"',
        WRITE,
        DWW,
        C,
    ),
    # String literals and dollar quotes that end before they seem to.
    bypass(
        "semicolon-literal-first",
        "select ';'; drop table canary",
        DDL,
        DROP,
        C,
        index=1,
    ),
    bypass("dollar-first", "select $$;$$; drop table canary", DDL, DROP, C, index=1),
    bypass(
        "escaped-backslash",
        r"select E'\\'; drop table canary; --'",
        DDL,
        DROP,
        C,
        index=1,
    ),
    bypass(
        "backslash-standard",
        r"select 'a\'; drop table canary; --'",
        DDL,
        DROP,
        C,
        index=1,
    ),
    bypass(
        "backslash-nonstandard",
        r"select 'a\'; drop table canary; --'",
        UNKNOWN,
        NONE,
        NOTHING,
        state=NONSTANDARD,
    ),
    # Encodings and characters the server may read otherwise.
    bypass(
        "sjis", "select 'ソ'; drop table canary", UNKNOWN, NONE, NOTHING, state=SJIS
    ),
    bypass(
        "big5", "select '功'; drop table canary", UNKNOWN, NONE, NOTHING, state=BIG5
    ),
    bypass("nul", "select 1\x00; drop table canary", UNKNOWN, NONE, NOTHING),
    # TRUNCATE.
    bypass("truncate", "truncate canary", WRITE, TRUNC, C),
    bypass(
        "truncate-only",
        "TRUNCATE TABLE ONLY public.canary RESTART IDENTITY",
        WRITE,
        TRUNC,
        C,
    ),
    bypass(
        "truncate-second",
        "select 1; truncate customers",
        WRITE,
        TRUNC,
        frozenset({CUSTOMERS}),
        index=1,
    ),
    # DELETE and UPDATE without WHERE, or with one that filters nothing.
    bypass("delete", "delete from canary", WRITE, DWW, C),
    bypass("quoted-delete", 'delete from "canary"', WRITE, DWW, C),
    bypass("delete-customers", "delete from customers", WRITE, DWW, {CUSTOMERS}),
    bypass("where-true", "delete from customers where true", WRITE, DWW, {CUSTOMERS}),
    bypass("where-1-1", "delete from customers where 1 = 1", WRITE, DWW, {CUSTOMERS}),
    bypass("where-param", "delete from customers where $1", WRITE, DWW, {CUSTOMERS}),
    bypass(
        "where-or-null",
        "delete from customers where 'a' = 'a' or null",
        WRITE,
        DWW,
        {CUSTOMERS},
    ),
    bypass("update", "update customers set note = 'x'", WRITE, UWW, {CUSTOMERS}),
    bypass(
        "update-where-true",
        "update customers set note = 'x' where true",
        WRITE,
        UWW,
        {CUSTOMERS},
    ),
    # Writing common table expressions, nested subqueries.
    bypass(
        "writing-cte",
        "with d as (delete from canary returning *) select * from d",
        WRITE,
        CTE_DELETE,
        C,
    ),
    bypass(
        "writing-cte-update",
        "with u as (update canary set id = 1 where id = 2 returning id)"
        " select * from u",
        WRITE,
        CTE,
        C,
    ),
    bypass(
        "recursive-cte-insert",
        "with recursive r as (select 1), d as (insert into canary values (1)"
        " returning id) select * from r, d",
        WRITE,
        CTE,
        C,
    ),
    bypass(
        "nested-subqueries",
        "select * from (select * from (with d as (delete from canary"
        " returning id) select id from d) a) b",
        WRITE,
        CTE_DELETE,
        C,
    ),
    bypass(
        "union-arm-cte",
        "(with d as (delete from canary returning 1) select * from d) union select 1",
        WRITE,
        CTE_DELETE,
        C,
    ),
    bypass(
        "cte-named-like-target",
        "with canary as (select 1) delete from canary",
        WRITE,
        DWW,
        C,
    ),
    # Plain writes to the canary.
    bypass("insert", "insert into canary values (1)", WRITE, NONE, C),
    bypass(
        "insert-select",
        "insert into public.canary select id from customers",
        WRITE,
        NONE,
        C,
    ),
    bypass(
        "insert-default", 'insert into "public".canary default values', WRITE, NONE, C
    ),
    bypass("update-canary", "update canary set id = 2 where id = 1", WRITE, NONE, C),
    bypass(
        "merge",
        "merge into canary c using customers s on c.id = s.id"
        " when not matched then insert values (s.id)",
        WRITE,
        NONE,
        C,
    ),
    bypass(
        "lock", "lock table canary in access exclusive mode", WRITE, {Shape.LOCK}, C
    ),
    # COPY.
    bypass("copy-stdin", "copy canary from stdin", WRITE, {Shape.COPY_FROM}, C),
    bypass("copy-file", "copy canary from '/tmp/rows'", WRITE, {Shape.COPY_FROM}, C),
    bypass(
        "copy-program",
        "copy canary from program 'cat /tmp/rows'",
        UNKNOWN,
        frozenset({Shape.COPY_FROM, Shape.COPY_PROGRAM}),
        C,
    ),
    bypass(
        "copy-to-program",
        "copy (select 1) to program 'sh -c true'",
        UNKNOWN,
        frozenset({Shape.COPY_TO, Shape.COPY_PROGRAM}),
        NOTHING,
    ),
    bypass(
        "copy-delete",
        "copy (delete from canary returning id) to stdout",
        WRITE,
        DWW | {Shape.COPY_TO},
        C,
    ),
    # Prepared statements and dynamic SQL.
    bypass("prepare", "prepare p as delete from canary", UNKNOWN, DWW, C),
    bypass(
        "execute",
        "prepare p as select 1; execute p",
        UNKNOWN,
        DYNAMIC,
        NOTHING,
        index=1,
    ),
    bypass("explain-execute", "explain analyze execute p", UNKNOWN, DYNAMIC, NOTHING),
    bypass("do", "do $$ begin drop table canary; end $$", UNKNOWN, DYNAMIC, NOTHING),
    bypass(
        "do-execute",
        "do language plpgsql $body$ begin execute 'dr' || 'op table canary';"
        " end $body$",
        UNKNOWN,
        DYNAMIC,
        NOTHING,
    ),
    # EXPLAIN ANALYZE runs what it explains.
    bypass("explain-analyze", "explain analyze delete from canary", WRITE, DWW, C),
    bypass(
        "explain-analyze-option",
        "explain (analyze true, costs off) update canary set id = 1",
        WRITE,
        UWW,
        C,
    ),
    bypass(
        "explain-analyze-cte",
        "explain analyze with d as (delete from canary returning 1) select * from d",
        WRITE,
        CTE_DELETE,
        C,
    ),
    # Functions, operators, casts and sampling methods can write.
    bypass("function", "select f()", UNKNOWN, CALL, NOTHING),
    bypass("function-from", "select * from wipe_canary()", UNKNOWN, CALL, NOTHING),
    bypass(
        "set-config",
        "select pg_catalog.set_config('search_path', 'evil', false)",
        UNKNOWN,
        CALL,
        NOTHING,
    ),
    bypass("schema-function", "select public.lower('x')", UNKNOWN, CALL, NOTHING),
    bypass(
        "quoted-function", 'select "LOWER"(note) from customers', UNKNOWN, CALL, NOTHING
    ),
    bypass(
        "query-to-xml",
        "select query_to_xml('delete from canary', true, true, '')",
        UNKNOWN,
        CALL | DYNAMIC,
        NOTHING,
    ),
    bypass(
        "dblink",
        "select dblink_exec('dbname=app', 'drop table canary')",
        UNKNOWN,
        CALL | DYNAMIC,
        NOTHING,
    ),
    bypass(
        "function-sublink",
        "select 1 where exists (select wipe())",
        UNKNOWN,
        CALL,
        NOTHING,
    ),
    bypass("call", "call purge_canary()", UNKNOWN, CALL, NOTHING),
    bypass("operator", "select 1 operator(public.=) 1", UNKNOWN, CALL, NOTHING),
    bypass("custom-operator", "select 1 @#@ 2", UNKNOWN, CALL, NOTHING),
    bypass("domain-cast", "select 1::canary_domain", UNKNOWN, CALL, NOTHING),
    bypass(
        "sort-operator",
        "select 1 order by 1 using operator(public.<)",
        UNKNOWN,
        CALL,
        NOTHING,
    ),
    bypass(
        "sublink-operator",
        "select 1 where 1 operator(public.=) any (select 1)",
        UNKNOWN,
        CALL,
        NOTHING,
    ),
    bypass(
        "sampling",
        "select * from customers tablesample evil(10)",
        UNKNOWN,
        CALL,
        NOTHING,
    ),
    # DDL that changes or replaces the canary.
    bypass(
        "select-into",
        "select * into canary from customers",
        DDL,
        {Shape.SELECT_INTO},
        C,
    ),
    bypass("create-as", "create table canary as select 1 as id", DDL, NONE, C),
    bypass(
        "replace-view", "create or replace view canary as select 1 as id", DDL, NONE, C
    ),
    bypass("rename", "alter table canary rename to dead", DDL, NONE, C),
    bypass("set-schema", "alter table canary set schema attic", DDL, NONE, C),
    bypass("drop-column", "alter table canary drop column id", DDL, DROP, C),
    bypass("comment", "comment on table canary is 'gone'", DDL, NONE, C),
    bypass("vacuum", "vacuum full canary", DDL, NONE, C),
    bypass(
        "attach-partition",
        "alter table customers attach partition canary for values in (1)",
        DDL,
        NONE,
        C | {CUSTOMERS},
    ),
    bypass(
        "rule",
        "create rule r as on insert to customers do also delete from canary",
        DDL,
        DWW,
        C | {CUSTOMERS},
    ),
    bypass(
        "trigger",
        "create trigger t before insert on canary for each row execute function f()",
        DDL,
        NONE,
        C,
    ),
    bypass(
        "atomic-body",
        "create function f() returns void begin atomic delete from canary; end",
        DDL,
        DWW,
        C,
    ),
    bypass(
        "grant", "grant insert on canary to public", Effect.PRIVILEGE, {Shape.GRANT}, C
    ),
    # Search-path games within one string.
    bypass(
        "search-path",
        "set search_path = attic, public; delete from canary where id = 1",
        WRITE,
        NONE,
        C | {"attic.canary"},
        index=1,
    ),
    bypass(
        "search-path-reset",
        "reset search_path; delete from canary where id = 1",
        UNKNOWN,
        NONE,
        C,
        index=1,
    ),
    bypass(
        "discard-all",
        "discard all; delete from canary where id = 1",
        UNKNOWN,
        NONE,
        C,
        index=1,
    ),
]


@pytest.mark.parametrize("case", BYPASSES)
def test_bc10_bypass_is_caught(case: Bypass) -> None:
    """
    Each way of hiding a DROP, TRUNCATE, unfiltered DELETE or UPDATE or
    a write to the canary yields the effect, shapes and written
    relations that the demo policy blocks.
    """
    statement = classify(case.sql, case.state)[case.index]

    assert statement.effect is case.effect
    assert statement.shapes == case.shapes
    assert statement.relations_written == case.written
    assert blocked(statement)
    if case.effect is Effect.UNKNOWN:
        assert statement.reason


def look_alike(name: str, sql: str, *read: str) -> object:
    return pytest.param(sql, frozenset(read), id=name)


LOOK_ALIKES = [
    # The controls BC10 names.
    look_alike("semicolon-literal", "select ';drop table canary;'"),
    look_alike("comment", "select 1 /* drop table canary */"),
    # Words inside string literals.
    look_alike("literal", "select 'drop table canary'"),
    look_alike("literal-truncate", "select 'truncate canary'"),
    look_alike("literal-doubled-quote", "select 'it''s; drop table canary'"),
    look_alike("escape-string", r"select E'\'; drop table canary; --'"),
    look_alike("escape-string-upper", r"SELECT e'\\; \'drop\''"),
    look_alike("backslash-standard", r"select '\'"),
    look_alike("national", "select n'delete from canary'"),
    look_alike("unicode-literal", r"select U&'d\0072op table canary'"),
    look_alike("bit-string", "select b'0101', x'0f'"),
    look_alike("concatenated", "select 'x' /* ; drop table canary */ || 'y'"),
    look_alike("continued-literal", "select 'drop'\n'table canary'"),
    look_alike("array", "select array['drop', 'delete', 'truncate']"),
    look_alike("values", "values ('drop table canary'), ('delete')"),
    look_alike("case", "select case when true then 'drop' else 'delete' end"),
    look_alike("where-literal", "select 1 where 'drop' = 'drop'"),
    look_alike("format", "select format('%s', 'drop table canary')"),
    look_alike("lower", "select lower('DROP TABLE canary')"),
    look_alike(
        "filter-note",
        "select * from customers where note = 'delete from canary'",
        CUSTOMERS,
    ),
    look_alike(
        "like",
        "select * from customers where note like '%drop%'",
        CUSTOMERS,
    ),
    look_alike(
        "regex",
        "select * from customers c where c.note ~ 'drop|truncate'",
        CUSTOMERS,
    ),
    # Comments.
    look_alike("line-comment", "select 1 -- drop table canary"),
    look_alike("leading-line-comment", "-- drop table canary\nselect 1"),
    look_alike("leading-block-comment", "/* drop table canary; */ select 1"),
    look_alike(
        "nested-comment",
        "/* outer /* drop table canary; */ still comment; delete from canary */"
        " select 1",
    ),
    look_alike("two-selects", "select /* drop */ 1; select 2"),
    # Dollar quotes.
    look_alike("dollar", "select $$drop table canary$$"),
    look_alike("dollar-tag", "select $tag$ delete from canary $tag$"),
    look_alike("dollar-nested-tags", "select $a$ $b$ drop table canary $b$ $a$"),
    look_alike("dollar-semicolons", "select $$ ; $$, $x$;$x$"),
    # Identifiers and column names.
    look_alike("column", "select drop_stats from stats", "public.stats"),
    look_alike("table", "select * from drop_log", "public.drop_log"),
    look_alike("flag", "select delete_flag from customers", CUSTOMERS),
    look_alike("truncated", "select truncated from customers", CUSTOMERS),
    look_alike("quoted-column", 'select "drop" from t', "public.t"),
    look_alike("quoted-alias", 'select 1 as "delete"'),
    look_alike("keyword-alias", "select 1 as truncate"),
    look_alike("quoted-table", 'select * from "drop"', "public.drop"),
    look_alike("canary-log", "select * from canary_log", "public.canary_log"),
    look_alike("series-alias", "select * from generate_series(1, 10) as drop_count"),
    look_alike("json-key", "select jsonb_build_object('delete', true)"),
    # Reading the canary is allowed.
    look_alike("read-canary", "select * from canary", CANARY),
    look_alike("count-canary", "select count(*) from canary", CANARY),
    look_alike("table-canary", "table canary", CANARY),
    look_alike("qualified-canary", "select * from public.canary where id = 1", CANARY),
    look_alike(
        "in-subquery",
        "select * from customers where id in (select id from canary)",
        CANARY,
        CUSTOMERS,
    ),
    look_alike(
        "union",
        "select id from customers union all select id from canary",
        CANARY,
        CUSTOMERS,
    ),
    look_alike("exists", "select exists (select 1 from canary)", CANARY),
    look_alike("scalar", "select (select max(id) from canary)", CANARY),
    look_alike(
        "join",
        "select * from customers join canary using (id)",
        CANARY,
        CUSTOMERS,
    ),
    look_alike(
        "lateral",
        "select * from customers, lateral (select * from canary"
        " where canary.id = customers.id) c",
        CANARY,
        CUSTOMERS,
    ),
    look_alike("cte-canary", "with canary as (select 1) select * from canary"),
    look_alike("regclass", "select 'canary'::regclass"),
    # EXPLAIN without ANALYZE only plans.
    look_alike("explain-delete", "explain delete from canary", CANARY),
    look_alike(
        "explain-analyze-off", "explain (analyze off) delete from canary", CANARY
    ),
    look_alike(
        "explain-analyze-false", "explain (analyze false) delete from canary", CANARY
    ),
    look_alike(
        "explain-analyze-zero", "explain (analyze 0) update canary set id = 1", CANARY
    ),
    # Allowed functions.
    look_alike("sleep", "select pg_sleep(0)"),
    look_alike("version", "select version(), current_user, current_database()"),
    look_alike(
        "aggregates",
        "select coalesce(note, 'truncate'), string_agg(email, ';') from customers"
        " group by note",
        CUSTOMERS,
    ),
    look_alike(
        "window",
        "select row_number() over (order by id) from customers",
        CUSTOMERS,
    ),
    look_alike("interval", "select now() - interval '1 day'"),
    look_alike(
        "everyday-expressions",
        "select j->>'drop', j #>> '{a,b}', current_timestamp, 1 is true,"
        " x is not distinct from y, interval '1 hour' * 2, cast(x as double"
        " precision), '{}'::text[], inet '1.2.3.4' << inet '1.2.0.0/16',"
        " row(1, 2), (x).a, (array[1, 2])[1], 'a'::character varying,"
        " x::regclass::oid, array_agg(x order by y), count(distinct x)"
        " filter (where y) from t where y = any($1::int[]) and z ilike $2"
        " group by j, x, y",
        "public.t",
    ),
    look_alike(
        "similar-like",
        "select * from customers where note similar to '%drop%'"
        " or note like 'drop#_%' escape '#' order by id using >",
        CUSTOMERS,
    ),
    look_alike(
        "full-text",
        "select * from customers where to_tsvector(note) @@ to_tsquery('drop')",
        CUSTOMERS,
    ),
    look_alike("any-sublink", "select 1 where 1 = any (select id from canary)", CANARY),
    look_alike("grammar-functions", "select extract(year from now()), trim(' drop ')"),
    look_alike(
        "catalog",
        "select * from pg_tables where tablename = 'canary'",
        "pg_catalog.pg_tables",
        "public.pg_tables",
    ),
    look_alike(
        "information-schema",
        "select * from information_schema.tables where table_name = 'canary'",
        "information_schema.tables",
    ),
    look_alike(
        "parameters",
        "select * from customers where email = $1 and note = $2",
        CUSTOMERS,
    ),
]


@pytest.mark.parametrize(("sql", "read"), LOOK_ALIKES)
def test_bc10_look_alike_is_read(sql: str, read: frozenset[str]) -> None:
    """
    The words drop, delete, truncate and canary in literals, comments,
    dollar quotes and names, and reads of the canary, classify as reads
    of exactly the relations named, with no shape, so nothing blocks.
    """
    statements = classify(sql)

    assert statements
    assert all(s.effect is Effect.READ for s in statements), statements
    assert all(not s.shapes and not s.relations_written for s in statements)
    assert frozenset().union(*(s.relations_read for s in statements)) == read
    assert not any(blocked(s) for s in statements)


def test_corpora_are_large_enough() -> None:
    """
    The corpora hold at least 50 bypasses and 50 look-alikes.
    """
    assert len(BYPASSES) >= 50
    assert len(LOOK_ALIKES) >= 50


def _spelled(word: str) -> st.SearchStrategy[str]:
    """
    C{word} with each letter in either case.
    """
    flags = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flags.map(
        lambda upper: "".join(
            char.upper() if up else char for char, up in zip(word, upper, strict=True)
        )
    )


_gaps = st.lists(
    st.sampled_from(
        [" ", "\t", "\n", "\r\n", "\f", "/* x */", "/* /* ; */ */", "-- c;\n"]
    ),
    min_size=1,
    max_size=3,
).map("".join)

_maybe_gap = st.one_of(st.just(""), _gaps)

_canary_names = st.one_of(
    _spelled("canary"),
    st.just('"canary"'),
    st.just(r'U&"c\0061nary"'),
    st.tuples(_spelled("public"), _maybe_gap, _maybe_gap, _spelled("canary")).map(
        "{0[0]}{0[1]}.{0[2]}{0[3]}".format
    ),
    st.just('"public"."canary"'),
)


@st.composite
def _drop_spellings(draw: st.DrawFn) -> str:
    """
    DROP TABLE canary, spelled any way the server accepts, between
    other statements.
    """
    before = draw(st.sampled_from(["", "select 1;", "begin;", "/* lead */", ";"]))
    after = draw(st.sampled_from(["", ";", "; select 1", " cascade", " -- end"]))
    words = [draw(_spelled("drop")), draw(_spelled("table")), draw(_canary_names)]
    gaps = [draw(_gaps), draw(_gaps)]
    return f"{before}{words[0]}{gaps[0]}{words[1]}{gaps[1]}{words[2]}{after}"


class TestHypothesis:
    """
    Random spellings of blocked statements and random literal text.
    """

    @settings(max_examples=300, deadline=None)
    @given(_drop_spellings())
    def test_bc10_drop_in_any_spelling_is_caught(self, sql: str) -> None:
        """
        Case, whitespace, comments, quoting, qualification and Unicode
        escapes around DROP TABLE canary never hide it: exactly one
        statement has the drop shape, and it writes C{public.canary}.
        """
        statements = classify(sql)

        drops = [s for s in statements if Shape.DROP in s.shapes]
        assert len(drops) == 1, sql
        assert drops[0].relations_written == {CANARY}
        assert drops[0].effect is Effect.DDL

    @settings(max_examples=300, deadline=None)
    @given(
        st.text(
            alphabet=st.characters(
                exclude_characters="\x00", exclude_categories=["Cs"]
            ),
            max_size=60,
        )
    )
    def test_bc10_any_literal_is_read(self, text: str) -> None:
        """
        Any text inside a string literal, a dollar quote or a block
        comment of a SELECT leaves one read statement with no shape.
        """
        candidates = [f"select '{text.replace(chr(39), chr(39) * 2)}'"]
        if "$q$" not in text and not text.endswith("$"):
            candidates.append(f"select $q${text}$q$")
        if "/*" not in text and "*/" not in text and not text.endswith("/"):
            candidates.append(f"select 1 /* {text} */")

        for sql in candidates:
            (statement,) = classify(sql)
            assert statement.effect is Effect.READ, sql
            assert statement.shapes == frozenset()
            assert statement.relations_written == frozenset()


class TestStatements:
    """
    Splitting a query string into statements.
    """

    def test_texts_are_slices(self) -> None:
        """
        Each statement's text is its own slice of the string, leading
        comments left out, also after non-ASCII characters.
        """
        statements = classify("select 1; /* c */ select 'é' ;select 3 -- end")

        assert [s.text for s in statements] == [
            "select 1",
            "select 'é' ",
            "select 3 -- end",
        ]

    def test_empty(self) -> None:
        """
        Text without statements classifies as no statement.
        """
        assert classify("") == ()
        assert classify(" -- only\n/* c */ ;") == ()

    def test_parse_error(self) -> None:
        """
        Text the parser rejects is one unknown classification of the
        whole string, with the parser's message.
        """
        statement = only("select 1; drop tabel canary")

        assert statement.effect is Effect.UNKNOWN
        assert statement.text == "select 1; drop tabel canary"
        assert statement.command == ""
        assert statement.parse_error is not None
        assert "syntax error" in statement.parse_error
        assert statement.reason == "the parser rejected the text"

    def test_too_deep(self) -> None:
        """
        A statement nested beyond what the walk handles is unknown, not
        an exception; one nested less deeply is read.
        """
        deep = only("select " + "+".join(["1"] * 2000))
        shallow = only("select " + "+".join(["1"] * 100))

        assert deep.effect is Effect.UNKNOWN
        assert deep.reason == "the statement nests too deeply to classify"
        assert shallow.effect is Effect.READ

    def test_invalid_unicode(self) -> None:
        """
        Text holding a lone surrogate is unknown.
        """
        statement = only("select '\ud800'")

        assert statement.effect is Effect.UNKNOWN
        assert statement.reason == "the text is not valid Unicode"

    def test_to_part(self) -> None:
        """
        A classification becomes the statement event's part, sorted.
        """
        (statement,) = classify(
            "insert into customers select * from canary, customers_old"
        )

        assert statement.to_part() == StatementPart(
            text="insert into customers select * from canary, customers_old",
            command="INSERT",
            effect="write",
            reads=("public.canary", "public.customers_old"),
            writes=("public.customers",),
            shapes=(),
            problem="",
            columns=("*",),
            derived_columns=("*",),
        )

    def test_to_part_problem(self) -> None:
        """
        A part's problem holds the reason and the parser's message.
        """
        part = only("drop tabel canary").to_part()

        assert part.effect == "unknown"
        assert part.problem.startswith("the parser rejected the text: syntax error")

    def test_strings(self) -> None:
        """
        Effects and shapes compare equal to their names.
        """
        statement = only("drop table t")

        assert "drop" in statement.shapes
        assert statement.effect == "ddl"


class TestResolution:
    """
    Relation names, resolved against the search path.
    """

    def test_default(self) -> None:
        """
        An unqualified name is in public by default.
        """
        assert only("select * from customers").relations_read == {CUSTOMERS}

    def test_user(self) -> None:
        """
        C{"$user"} stands for the user when one is given.
        """
        state = SessionState(user="app")

        statement = only("select * from customers", state)

        assert statement.relations_read == {"app.customers", CUSTOMERS}

    def test_path(self) -> None:
        """
        Every schema of the path is a candidate; no path leaves the
        name unqualified.
        """
        sales = SessionState(search_path=["sales", "public"])
        nowhere = SessionState(search_path=())

        assert sales.search_path == ("sales", "public")
        assert only("select * from t", sales).relations_read == {
            "sales.t",
            "public.t",
        }
        assert only("select * from t", nowhere).relations_read == {"t"}

    def test_quoting(self) -> None:
        """
        Parts that are not plain lower-case identifiers are quoted.
        """
        statement = only('select * from "CaNaRy", "a""b", "Sales"."T", "x.y"')

        assert statement.relations_read == {
            'public."CaNaRy"',
            'public."a""b"',
            '"Sales"."T"',
            'public."x.y"',
        }

    def test_catalogs(self) -> None:
        """
        Names starting with pg_ may be catalogs; qualified catalog names
        stay as written.
        """
        statement = only(
            "select * from pg_class, pg_catalog.pg_proc, information_schema.tables"
        )

        assert statement.relations_read == {
            "pg_catalog.pg_class",
            "public.pg_class",
            "pg_catalog.pg_proc",
            "information_schema.tables",
        }

    def test_temporary(self) -> None:
        """
        A temporary table a statement creates is in pg_temp.
        """
        statement = only("create temp table canary (id int)")

        assert statement.relations_written == {"pg_temp.canary"}

    def test_truncated(self) -> None:
        """
        Identifiers are cut to 63 bytes, as the server does.
        """
        statement = only("select * from " + "c" * 70)

        assert statement.relations_read == {"public." + "c" * 63}

    def test_set_role(self) -> None:
        """
        A SET ROLE earlier in the string adds that role's schema.
        """
        statements = classify("set role bob; delete from canary where id = 1")

        assert statements[1].relations_written == {"bob.canary", CANARY}

    def test_search_path_adds(self) -> None:
        """
        A SET search_path adds to the path rather than replacing it (it
        may fail or be rolled back).
        """
        statements = classify(
            "begin; set local search_path = attic; rollback; select * from t"
        )

        assert statements[3].relations_read == {"attic.t", "public.t"}

    def test_reset(self) -> None:
        """
        After a reset of the path, qualified names still resolve and
        unqualified ones are unknown.
        """
        statements = classify(
            "set search_path to default; select * from public.t; select * from t"
        )

        assert statements[1].effect is Effect.READ
        assert statements[2].effect is Effect.UNKNOWN
        assert statements[2].reason == (
            "search_path was reset earlier in the string, so t cannot be resolved"
        )

    def test_cte_scope(self) -> None:
        """
        A common table expression hides a table of its name from the
        expressions after it, all of them when recursive, and never
        from qualified names.
        """
        forward = only(
            "with a as (select * from x), x as (select 1) select * from a, x"
        )
        recursive = only(
            "with recursive a as (select * from x), x as (select 1) select * from a"
        )
        qualified = only("with canary as (select 1) select * from public.canary")

        assert forward.relations_read == {"public.x"}
        assert recursive.relations_read == frozenset()
        assert qualified.relations_read == {CANARY}

    def test_write_reads(self) -> None:
        """
        Relations a write reads in FROM, USING and subqueries are read.
        """
        statement = only(
            "update customers c set note = o.note from orders o"
            " where c.id = o.id and exists (select 1 from audit a)"
        )

        assert statement.relations_written == {CUSTOMERS}
        assert statement.relations_read == {"public.orders", "public.audit"}


def effect(sql: str, expected: Effect, command: str) -> object:
    return pytest.param(sql, expected, command, id=sql)


EFFECTS = [
    effect("select 1", Effect.READ, "SELECT"),
    effect("values (1)", Effect.READ, "SELECT"),
    effect("table customers", Effect.READ, "SELECT"),
    effect("select * from customers for update", Effect.READ, "SELECT"),
    effect("show search_path", Effect.READ, "SHOW"),
    effect("explain select 1", Effect.READ, "EXPLAIN"),
    effect("explain verbose delete from t", Effect.READ, "EXPLAIN"),
    effect("explain (analyze, verbose) select 1", Effect.READ, "EXPLAIN"),
    effect("explain analyse delete from t where id = 1", Effect.WRITE, "EXPLAIN"),
    effect("explain (analyze on) delete from t where id = 1", Effect.WRITE, "EXPLAIN"),
    effect("explain (analyze 1) insert into t values (1)", Effect.WRITE, "EXPLAIN"),
    effect("explain analyze create table t2 as select 1", Effect.DDL, "EXPLAIN"),
    effect("fetch 1 from c", Effect.READ, "FETCH"),
    effect("move c", Effect.READ, "MOVE"),
    effect("declare c cursor for select 1", Effect.READ, "DECLARE"),
    effect("insert into t values (1)", Effect.WRITE, "INSERT"),
    effect("update t set x = 1 where id = 1", Effect.WRITE, "UPDATE"),
    effect("delete from t where id = 1", Effect.WRITE, "DELETE"),
    effect(
        "merge into t using s on t.id = s.id when matched then delete",
        Effect.WRITE,
        "MERGE",
    ),
    effect("copy customers from stdin", Effect.WRITE, "COPY"),
    effect("copy customers to stdout", Effect.READ, "COPY"),
    effect("copy customers to '/tmp/x'", Effect.WRITE, "COPY"),
    effect("notify channel", Effect.WRITE, "NOTIFY"),
    effect("lock customers", Effect.WRITE, "LOCK"),
    effect("truncate t", Effect.WRITE, "TRUNCATE"),
    effect("create table t (id int)", Effect.DDL, "CREATE"),
    effect("alter table t add column x int", Effect.DDL, "ALTER"),
    effect("drop view v", Effect.DDL, "DROP"),
    effect("comment on column t.id is 'x'", Effect.DDL, "COMMENT"),
    effect("reindex table t", Effect.DDL, "REINDEX"),
    effect("vacuum", Effect.UNKNOWN, "VACUUM"),
    effect("vacuum t", Effect.DDL, "VACUUM"),
    effect("analyze", Effect.UNKNOWN, "ANALYZE"),
    effect("reindex database appdb", Effect.UNKNOWN, "REINDEX"),
    effect("cluster", Effect.UNKNOWN, "CLUSTER"),
    effect("analyze t", Effect.DDL, "ANALYZE"),
    effect("cluster t using t_pkey", Effect.DDL, "CLUSTER"),
    effect("refresh materialized view m", Effect.DDL, "REFRESH"),
    effect("create index on t (id)", Effect.DDL, "CREATE"),
    effect("create schema s create table t (id int)", Effect.DDL, "CREATE"),
    effect("create extension hstore", Effect.DDL, "CREATE"),
    effect("checkpoint", Effect.DDL, "CHECKPOINT"),
    effect(
        "create function f() returns int language sql as 'delete from canary'",
        Effect.DDL,
        "CREATE",
    ),
    effect("drop database app", Effect.DDL, "DROP"),
    effect("alter system set work_mem = '1MB'", Effect.DDL, "ALTER"),
    effect("select * into t2 from t", Effect.DDL, "SELECT"),
    effect("grant select on t to bob", Effect.PRIVILEGE, "GRANT"),
    effect("revoke select on t from bob", Effect.PRIVILEGE, "REVOKE"),
    effect("grant bob to alice", Effect.PRIVILEGE, "GRANT"),
    effect("create role bob", Effect.PRIVILEGE, "CREATE"),
    effect("alter role bob superuser", Effect.PRIVILEGE, "ALTER"),
    effect("alter role bob set search_path = x", Effect.PRIVILEGE, "ALTER"),
    effect("drop role bob", Effect.PRIVILEGE, "DROP"),
    effect("set role bob", Effect.PRIVILEGE, "SET"),
    effect("reset role", Effect.PRIVILEGE, "RESET"),
    effect("set session authorization bob", Effect.PRIVILEGE, "SET"),
    effect(
        "alter default privileges grant select on tables to bob",
        Effect.PRIVILEGE,
        "ALTER",
    ),
    effect("reassign owned by a to b", Effect.PRIVILEGE, "REASSIGN"),
    effect("create policy p on t using (true)", Effect.PRIVILEGE, "CREATE"),
    effect("begin", Effect.TRANSACTION, "BEGIN"),
    effect("start transaction read only", Effect.TRANSACTION, "START"),
    effect("commit", Effect.TRANSACTION, "COMMIT"),
    effect("rollback", Effect.TRANSACTION, "ROLLBACK"),
    effect("savepoint s", Effect.TRANSACTION, "SAVEPOINT"),
    effect("release s", Effect.TRANSACTION, "RELEASE"),
    effect("rollback to s", Effect.TRANSACTION, "ROLLBACK"),
    effect("prepare transaction 'x'", Effect.TRANSACTION, "PREPARE"),
    effect("commit prepared 'x'", Effect.TRANSACTION, "COMMIT"),
    effect(
        "set transaction isolation level serializable",
        Effect.TRANSACTION,
        "SET",
    ),
    effect("set constraints all deferred", Effect.TRANSACTION, "SET"),
    effect("set search_path = public", Effect.SESSION, "SET"),
    effect("reset all", Effect.SESSION, "RESET"),
    effect("set time zone 'UTC'", Effect.SESSION, "SET"),
    effect("discard all", Effect.SESSION, "DISCARD"),
    effect("listen channel", Effect.SESSION, "LISTEN"),
    effect("unlisten *", Effect.SESSION, "UNLISTEN"),
    effect("close c", Effect.SESSION, "CLOSE"),
    effect("deallocate p", Effect.SESSION, "DEALLOCATE"),
    effect("do $$ begin end $$", Effect.UNKNOWN, "DO"),
    effect("call p()", Effect.UNKNOWN, "CALL"),
    effect("execute p", Effect.UNKNOWN, "EXECUTE"),
    effect("prepare p as select 1", Effect.UNKNOWN, "PREPARE"),
    effect("load 'plugin'", Effect.UNKNOWN, "LOAD"),
]


@pytest.mark.parametrize(("sql", "expected", "command"), EFFECTS)
def test_effect_and_command(sql: str, expected: Effect, command: str) -> None:
    """
    Each kind of statement has its effect and command word.
    """
    statement = only(sql)

    assert (statement.effect, statement.command) == (expected, command)


class TestShapes:
    """
    Shapes beyond those the corpora show.
    """

    def test_grant_revoke(self) -> None:
        """
        GRANT and REVOKE of privileges and roles have their shapes.
        """
        assert only("grant bob to alice").shapes == {Shape.GRANT}
        assert only("revoke bob from alice").shapes == {Shape.REVOKE}
        assert only("revoke all on t from bob").shapes == {Shape.REVOKE}
        assert only(
            "alter default privileges revoke select on tables from bob"
        ).shapes == {Shape.REVOKE}

    def test_filtered(self) -> None:
        """
        A WHERE naming a column, or a positioned one, is a filter.
        """
        assert only("delete from t where id = $1").shapes == frozenset()
        assert only("delete from t where current of c").shapes == frozenset()
        assert only("update t set x = 1 where x is null").shapes == frozenset()

    def test_copy(self) -> None:
        """
        COPY directions have their shapes and relations.
        """
        out = only("copy customers (email) to stdout")
        into = only("copy customers from stdin")

        assert out.shapes == {Shape.COPY_TO}
        assert out.relations_read == {CUSTOMERS}
        assert into.shapes == {Shape.COPY_FROM}
        assert into.relations_written == {CUSTOMERS}

    def test_locks(self) -> None:
        """
        Row locks of a SELECT have the lock shape and stay reads.
        """
        statement = only("select * from customers c for update of c")

        assert statement.shapes == {Shape.LOCK}
        assert statement.relations_read == {CUSTOMERS}

    def test_drop_relations(self) -> None:
        """
        DROP names the relations it drops, also as the table of a
        trigger, and none for other objects.
        """
        assert only("drop trigger t on public.canary").relations_written == {CANARY}
        assert only("drop function f(int)").relations_written == frozenset()
        assert only("drop index i").relations_written == {"public.i"}


class TestFunctions:
    """
    The function, operator and type allow-lists.
    """

    def test_allowed_override(self) -> None:
        """
        The caller's allow-list decides which functions a read may call.
        """
        mine = DEFAULT_ALLOWED_FUNCTIONS | {"f"}

        (allowed,) = classify("select f()", allowed_functions=mine)
        (refused,) = classify("select count(*) from t", allowed_functions=frozenset())

        assert allowed.effect is Effect.READ
        assert refused.effect is Effect.UNKNOWN
        assert refused.reason == "function count is not on the allow-list"

    def test_qualified(self) -> None:
        """
        Allowed names may be qualified with pg_catalog only.
        """
        assert only("select pg_catalog.lower('x')").effect is Effect.READ
        assert only("select public.lower('x')").effect is Effect.UNKNOWN

    def test_reason_quotes(self) -> None:
        """
        The reason names the function as a client would write it.
        """
        statement = only('select "F"(), s.g()')

        assert statement.reason == (
            'function "F" is not on the allow-list;'
            " function s.g is not on the allow-list"
        )

    def test_grammar(self) -> None:
        """
        Functions the grammar writes for SQL syntax need no allow-list.
        """
        (statement,) = classify(
            "select substring('abc' from 1), position('a' in 'b'),"
            " now() at time zone 'utc'",
            allowed_functions=frozenset({"now"}),
        )

        assert statement.effect is Effect.READ

    def test_catalog_late(self) -> None:
        """
        When pg_catalog is not searched first, unqualified built-in
        names may be shadowed and are unknown.
        """
        state = SessionState(search_path=("public", "pg_catalog"))

        assert only("select lower('x')", state).effect is Effect.UNKNOWN
        assert only("select pg_catalog.lower('x')", state).effect is Effect.READ
        later = classify("set search_path = public, pg_catalog; select 1 + 1")
        assert later[1].effect is Effect.UNKNOWN

    def test_builtin_casts_and_operators(self) -> None:
        """
        Casts to built-in types and built-in operators are reads.
        """
        statement = only(
            "select 1::text, '{}'::jsonb @> '{}', '1'::int, cast(1 as varchar(3)),"
            " '{}'::int[], date '2020-01-01', 1 + 2 * 3, 'a' || 'b', 1 between 0 and 2"
        )

        assert statement.effect is Effect.READ

    def test_everywhere(self) -> None:
        """
        A call that is not allowed makes any statement unknown: in a
        write, in a column default, in a view.
        """
        update = only("update customers set note = f() where id = 1")
        default = only("create table t (id int default nextval('s'))")
        view = only("create view v as select f()")

        assert update.effect is Effect.UNKNOWN
        assert update.relations_written == {CUSTOMERS}
        assert default.effect is Effect.UNKNOWN
        assert view.effect is Effect.UNKNOWN


class TestUncertainText:
    """
    Text the server may read otherwise than the parser.
    """

    @pytest.mark.parametrize(
        "sql",
        [
            r"select E'\\x'",
            r"select $$a\b$$",
            r"select 1 /* \ */",
            'select 1 as "a\\b"',
            "select 'no backslash'",
        ],
    )
    def test_nonstandard_elsewhere(self, sql: str) -> None:
        """
        With standard_conforming_strings off, backslashes outside
        ordinary literals change nothing.
        """
        assert only(sql, NONSTANDARD).effect is Effect.READ

    @pytest.mark.parametrize("sql", [r"select '\\'", r"select n'a\b'"])
    def test_nonstandard_literal(self, sql: str) -> None:
        """
        With standard_conforming_strings off, a backslash in an ordinary
        or national literal makes the text unknown.
        """
        statement = only(sql, NONSTANDARD)

        assert statement.effect is Effect.UNKNOWN
        assert statement.reason == (
            "standard_conforming_strings is off and a string literal holds a backslash"
        )

    def test_nonstandard_drop(self) -> None:
        """
        Standard strings off does not stop classification otherwise.
        """
        assert only("drop table canary", NONSTANDARD).shapes == {Shape.DROP}

    def test_ascii_in_unsafe_encoding(self) -> None:
        """
        ASCII text reads the same in every client encoding.
        """
        statements = classify("select 1; drop table canary", SJIS)

        assert statements[1].shapes == {Shape.DROP}

    def test_unsafe_encoding(self) -> None:
        """
        Non-ASCII text in an encoding that can hide ASCII bytes is
        unknown, whatever the alias.
        """
        for name in ("SJIS", "Shift_JIS", "win932", "GBK", "GB18030", "UHC", "johab"):
            statement = only("select 'ソ'", SessionState(client_encoding=name))
            assert statement.effect is Effect.UNKNOWN
            assert statement.reason == (
                f"client encoding {name} can hide ASCII bytes inside"
                " multibyte characters"
            )

    def test_safe_encodings(self) -> None:
        """
        Non-ASCII text in an ASCII-safe encoding is classified.
        """
        for name in ("UTF8", "utf-8", "LATIN1", "ISO-8859-15", "WIN1252", "EUC_JP"):
            state = SessionState(client_encoding=name)
            assert only("select 'Größe'", state).effect is Effect.READ

    def test_unknown_encoding(self) -> None:
        """
        Non-ASCII text in an encoding the gateway does not know is
        unknown; ASCII text is not.
        """
        state = SessionState(client_encoding="EBCDIC")

        assert only("select 'é'", state).reason == "client encoding EBCDIC is not known"
        assert only("select 1", state).effect is Effect.READ

    def test_nul(self) -> None:
        """
        A NUL character makes the text unknown.
        """
        statement = only("select 1\x00")

        assert statement.reason == "the text contains a NUL character"


class TestCache:
    """
    Results for repeated texts.
    """

    def test_repeated(self) -> None:
        """
        The same text in the same state gives the same result object.
        """
        first = classify("select * from customers where id = 7")

        assert classify("select * from customers where id = 7") is first

    def test_state_is_part_of_the_key(self) -> None:
        """
        The same text in another state is classified afresh.
        """
        sales = SessionState(search_path=("sales",))

        assert only("select * from t").relations_read == {"public.t"}
        assert only("select * from t", sales).relations_read == {"sales.t"}

    def test_long_texts(self) -> None:
        """
        Long texts are classified each time, never kept.
        """
        sql = "select 1" + " " * 10_000

        first = classify(sql)

        assert first[0].effect is Effect.READ
        assert classify(sql) is not first
        assert classify(sql) == first


# What psql 15 sends for \d customers, \dt, \d+ canary and \di (psql -E).
PSQL_META_QUERIES = [
    "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' COLLATE pg_catalog.default\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;",
    "SELECT n.nspname as \"Schema\",\n  c.relname as \"Name\",\n  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as \"Type\",\n  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam\nWHERE c.relkind IN ('r','p','')\n      AND n.nspname <> 'pg_catalog'\n      AND n.nspname !~ '^pg_toast'\n      AND n.nspname <> 'information_schema'\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 1,2;",
    "SELECT pubname\n     , NULL\n     , NULL\nFROM pg_catalog.pg_publication p\n     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid\n     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid\nWHERE pc.oid ='16394' and pg_catalog.pg_relation_is_publishable('16394')\nUNION\nSELECT pubname\n     , pg_get_expr(pr.prqual, c.oid)\n     , (CASE WHEN pr.prattrs IS NOT NULL THEN\n         (SELECT string_agg(attname, ', ')\n           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,\n                pg_catalog.pg_attribute\n          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])\n        ELSE NULL END) FROM pg_catalog.pg_publication p\n     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid\n     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid\nWHERE pr.prrelid = '16394'\nUNION\nSELECT pubname\n     , NULL\n     , NULL\nFROM pg_catalog.pg_publication p\nWHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('16394')\nORDER BY 1;",
    "SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),\n  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace\nFROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i\n  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x'))\nWHERE c.oid = '16394' AND c.oid = i.indrelid AND i.indexrelid = c2.oid\nORDER BY i.indisprimary DESC, c2.relname;",
]


@pytest.mark.parametrize("query", PSQL_META_QUERIES)
def test_psql_meta_commands_are_reads(query: str) -> None:
    """
    psql's meta-commands only read the catalog, through functions on the
    allow-list: they are reads, so no rule about unknown statements holds
    or refuses them.
    """
    assert [c.effect for c in classify(query)] == [Effect.READ]


def test_too_many_comments_refused_unread() -> None:
    """
    Text opening more comments than the classifier will scan (the
    parser's cost grows with their square) is unknown at once, with the
    reason, instead of stalling the gateway.
    """
    [result] = classify("select 1 " + "/*" * 100_000)

    assert result.effect == Effect.UNKNOWN
    assert result.reason == "the text opens too many comments to classify"
