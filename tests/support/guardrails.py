"""
Guardrail tests' material: the policy, the corpus of bypass attempts and
look-alikes, and helpers that read what a client, the test PostgreSQL and
its server log saw.

The policy is the demo's guardrails (CONTRACT.md: blocked for everyone
DROP, TRUNCATE, DELETE or UPDATE without WHERE, any write to C{canary})
plus a refusal of statements the gateway cannot classify, split into one
enforce rule per condition so that each refusal names the condition that
decided it, and one dry-run rule.  Rules are evaluated in file order and
the first refusing rule decides: a part the classifier could not read is
refused by every enforce rule, so L{NO_UNKNOWN} comes first and decides
those.

An L{Attempt} is a statement that must be refused, with the rule that
must decide it; a look-alike is a statement that must run and give what
a direct connection gives.  Names used here (C{t_guard},
C{wipe_canary()}, ...) are created directly by L{SETUP_SQL}.

test-case-name: tests.integration.test_postgres_guardrails
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from attrs import frozen

from tests.support.pgwire import frontend

__all__ = [
    "ASYNCPG_BYPASSES",
    "CANARY_FINGERPRINT_SQL",
    "DRY_RUN",
    "ENCODING_BYPASSES",
    "EXTENDED_BYPASSES",
    "EXTENDED_LOOK_ALIKES",
    "MARK",
    "NO_CANARY_WRITES",
    "NO_DROP_TRUNCATE",
    "NO_UNBOUNDED_WRITES",
    "NO_UNKNOWN",
    "POLICY",
    "PREPARED_BYPASSES",
    "SETUP_SQL",
    "SIMPLE_BYPASSES",
    "SIMPLE_LOOK_ALIKES",
    "SYNC",
    "TEARDOWN_SQL",
    "Attempt",
    "ServerLog",
    "bind",
    "canary_fingerprint",
    "describe_portal",
    "execute",
    "marked_commands",
    "parse",
    "psql_errors",
    "rule_of",
    "split_marked",
]

NO_UNKNOWN = "no-unknown"
NO_DROP_TRUNCATE = "no-drop-truncate"
NO_UNBOUNDED_WRITES = "no-unbounded-writes"
NO_CANARY_WRITES = "no-canary-writes"
DRY_RUN = "watch-t-guard-dry"

#: Appended to the harness's policy section (after its access rule).
POLICY = f"""\
  guardrails:
    - name: {NO_UNKNOWN}
      mode: enforce
      subjects: ["*"]
      targets: ["*"]
      deny:
        effects: [unknown]
    - name: {NO_DROP_TRUNCATE}
      mode: enforce
      subjects: ["*"]
      targets: ["*"]
      deny:
        commands: [DROP, TRUNCATE]
    - name: {NO_UNBOUNDED_WRITES}
      mode: enforce
      subjects: ["*"]
      targets: ["*"]
      deny:
        shapes: [delete_without_where, update_without_where]
    - name: {NO_CANARY_WRITES}
      mode: enforce
      subjects: ["*"]
      targets: ["*"]
      deny:
        writes: [canary]
    - name: {DRY_RUN}
      mode: dry-run
      subjects: ["*"]
      targets: ["*"]
      deny:
        writes: [t_guard_dry]
"""

#: Run directly (as C{app}) before the module's tests.
SETUP_SQL = """\
drop table if exists t_guard, t_guard_dry, t_guard_copy, canary_log, "Canary";
drop function if exists wipe_canary();
drop procedure if exists wipe_canary_proc();
drop function if exists guard_wipe_t_guard() cascade;
drop function if exists guard_eq(int, text) cascade;
create table t_guard (id int);
create table t_guard_dry (id int);
create table canary_log (id int);
create table "Canary" (id int);
create function wipe_canary() returns void language sql
  as 'delete from canary';
create procedure wipe_canary_proc() language sql as 'delete from canary';
create function guard_wipe_t_guard() returns trigger language plpgsql
  as $$ begin delete from t_guard; return new; end $$;
create function guard_eq(int, text) returns boolean language plpgsql
  as $$ begin delete from t_guard; return true; end $$;
"""

#: Run directly after the module's tests.
TEARDOWN_SQL = """\
drop table if exists t_guard, t_guard_dry, t_guard_copy, canary_log, "Canary";
drop function if exists wipe_canary();
drop procedure if exists wipe_canary_proc();
drop function if exists guard_wipe_t_guard() cascade;
drop function if exists guard_eq(int, text) cascade;
"""

#: What must never change about canary: existence, rows, columns,
#: indexes, triggers, rules, comment and grants.
CANARY_FINGERPRINT_SQL = """\
select c.relname,
       (select count(*) from public.canary),
       (select array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                         order by a.attnum)
          from pg_attribute a
         where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
       (select count(*) from pg_index i where i.indrelid = c.oid),
       (select count(*) from pg_trigger t where t.tgrelid = c.oid),
       (select count(*) from pg_rewrite r where r.ev_class = c.oid),
       obj_description(c.oid, 'pg_class'),
       c.relacl::text
  from pg_class c
 where c.oid = to_regclass('public.canary')
"""


@frozen
class Attempt:
    """
    A statement the policy must refuse.

    Attributes:
        sql: The text, sent as is.
        rule: The rule that must decide the refusal.
        params: Parameters, for drivers that bind them.
    """

    sql: str
    rule: str
    params: tuple[Any, ...] = ()


def _attempts(rows: Sequence[tuple[str, str]]) -> tuple[Attempt, ...]:
    return tuple(Attempt(sql, rule) for sql, rule in rows)


_U, _D, _S, _C = NO_UNKNOWN, NO_DROP_TRUNCATE, NO_UNBOUNDED_WRITES, NO_CANARY_WRITES

#: Simple-protocol attempts (psql -c): whole query strings, several
#: statements allowed.
SIMPLE_BYPASSES = _attempts(
    [
        # a second statement, comments, case, quoting, whitespace
        ("select 1; drop table canary", _D),
        ("/* x */ drop table canary", _D),
        ("select 1;\ndrop table canary", _D),
        ('DROP TABLE "canary"', _D),
        ("drop table public.canary", _D),
        ("DrOp TaBlE CANARY", _D),
        ("-- hello\ndrop table canary", _D),
        ("/* outer /* inner */ still a comment */ drop table canary", _D),
        ("drop/**/table/**/canary", _D),
        ("drop\ttable\r\n\fcanary", _D),
        ('drop table U&"c\\0061nary"', _D),
        ('drop table "public"."canary" cascade', _D),
        ("drop table if exists t_guard_nosuch, canary", _D),
        (";;drop table canary;;", _D),
        ("drop table canary;", _D),
        ("select 1 as a; DROP TABLE canary -- trailing comment", _D),
        ("begin; drop table canary; commit", _D),
        # strings that end earlier than a naive reader thinks
        ("select $a$ x $a$; drop table canary; select $a$ y $a$", _D),
        ("select 'a\\'; drop table canary; --'", _D),
        ("select 'it''s'; drop table canary", _D),
        ("select E'\\\\'; drop table canary; --'", _D),
        # TRUNCATE
        ("truncate canary", _D),
        ("TRUNCATE TABLE ONLY public.canary RESTART IDENTITY CASCADE", _D),
        ("select 1; truncate t_guard, canary", _D),
        # DELETE and UPDATE without (a real) WHERE, writes to canary
        ("delete from canary", _S),
        ("DELETE FROM canary WHERE true", _S),
        ("delete from canary where 1 = 1", _S),
        ("delete from canary *", _S),
        ("delete from canary where id = 1", _C),
        ("delete from canary as c using customers where c.id = customers.id", _C),
        ("update canary set id = 1", _S),
        ("update t_guard set id = 0", _S),
        ("delete from t_guard", _S),
        ("insert into canary values (1)", _C),
        ("insert into public.canary select 1", _C),
        ('insert into U&"\\0063anary" values (1)', _C),
        (
            "merge into canary c using (select 1 as id) s on c.id = s.id"
            " when not matched then insert values (s.id)",
            _C,
        ),
        # CTEs, EXPLAIN ANALYZE, cursors, CREATE ... AS
        ("with x as (delete from canary returning *) select * from x", _S),
        ("with x as (insert into canary values (1) returning *) select * from x", _C),
        (
            "select count(*) from customers; with d as (delete from canary"
            " where id > 0 returning id) select count(*) from d",
            _C,
        ),
        ("explain analyze delete from canary", _S),
        ("explain (analyze, format json) insert into canary values (1)", _C),
        (
            "begin; declare c cursor for with d as (delete from canary"
            " returning *) select * from d; fetch c; commit",
            _S,
        ),
        (
            "create table t_guard_copy as with d as (delete from canary"
            " returning *) select * from d",
            _S,
        ),
        ("select * into t_guard_copy from canary; drop table canary", _D),
        ("create rule wipe as on insert to t_guard do also delete from canary", _S),
        # COPY
        ("copy canary from program 'true'", _U),
        ("copy (delete from canary returning *) to stdout", _S),
        ("copy canary from stdin", _C),
        # DO, PREPARE/EXECUTE, functions and procedures
        ("DO $$ begin execute 'drop table canary'; end $$", _U),
        ("do language plpgsql $x$ begin delete from canary; end $x$", _U),
        ("prepare p as delete from canary; execute p", _U),
        ("execute p", _U),
        ("select wipe_canary()", _U),
        ("select * from public.wipe_canary()", _U),
        ("call wipe_canary_proc()", _U),
        ("select pg_catalog.pg_terminate_backend(pg_backend_pid())", _U),
        ("select query_to_xml('delete from canary', true, true, '')", _U),
        # changing canary's definition
        ("alter table canary rename to canary_gone", _C),
        ("create index on canary (id)", _C),
        ("lock table canary", _C),
    ]
)

#: Extended-protocol attempts, unnamed statements (psycopg binary
#: cursors).
EXTENDED_BYPASSES = _attempts(
    [
        ("drop table canary", _D),
        ('DROP TABLE "canary"', _D),
        ("/* x */ drop table public.canary", _D),
        ('drop table U&"c\\0061nary"', _D),
        ("select 1; drop table canary", _D),
        ("truncate canary", _D),
        ("delete from canary", _S),
        ("delete from canary where true", _S),
        ("update canary set id = 1", _S),
        ("insert into canary values (9)", _C),
        (
            "merge into canary c using (select 1 as id) s on c.id = s.id"
            " when not matched then insert values (s.id)",
            _C,
        ),
        ("with x as (delete from canary returning *) select * from x", _S),
        ("explain analyze delete from canary", _S),
        ("copy (delete from canary returning *) to stdout", _S),
        ("DO $$ begin execute 'drop table canary'; end $$", _U),
        ("select wipe_canary()", _U),
    ]
)

#: Named prepared statements (psycopg C{prepare=True}), with parameters.
PREPARED_BYPASSES = (
    Attempt("drop table canary", _D),
    Attempt("truncate canary", _D),
    Attempt("delete from canary", _S),
    Attempt("insert into canary values (%s)", _C, (9,)),
    Attempt("update canary set id = %s", _S, (1,)),
)

#: asyncpg: C{fetch} (named statements, extended) and C{execute}
#: without arguments (simple protocol), keyed by how they are sent.
ASYNCPG_BYPASSES: dict[str, tuple[Attempt, ...]] = {
    "fetch": (
        Attempt("drop table canary", _D),
        Attempt("truncate canary", _D),
        Attempt("delete from canary", _S),
        Attempt("insert into canary values ($1)", _C, (9,)),
        Attempt("with x as (delete from canary returning *) select * from x", _S),
        Attempt("delete from canary where id = $1", _C, (1,)),
    ),
    "execute": (
        Attempt("select 1; drop table canary", _D),
        Attempt("DO $$ begin delete from canary; end $$", _U),
    ),
}

#: Client encodings that can hide ASCII bytes inside multibyte
#: characters: any non-ASCII text is refused as unclassifiable.
ENCODING_BYPASSES: dict[str, tuple[Attempt, ...]] = {
    "SJIS": (
        Attempt("select 'ソ'", _U),
        Attempt("select 'ソ'; drop table canary", _U),
        Attempt("delete from canary where id = 1 or 'ソ' = ''", _U),
    ),
    "BIG5": (Attempt("select '功'", _U),),
    "GBK": (Attempt("select '中文'", _U),),
}

#: Look-alikes for psql: the words in strings, comments and identifiers.
SIMPLE_LOOK_ALIKES: tuple[str, ...] = (
    "select ';drop table canary;'",
    "select 1 /* drop table canary */",
    "select 'drop table canary'",
    "select 'DELETE FROM canary'",
    "select 'truncate canary'",
    "select $$drop table canary$$",
    "select $x$ $$; drop table canary; $$ $x$",
    "select E'\\';drop table canary; --'",
    "select 1 -- drop table canary",
    "select 'a\\' , ' ; drop table canary; --'",
    "/* /* drop table canary */ still a comment; drop table canary */ select 1",
    "-- truncate canary\nselect 2",
    "select /* ; delete from canary; */ 3",
    "select 'it''s; drop table canary'",
    'select 1 as "drop table canary"',
    'select "drop" from (select 1 as "drop") as t',
    "select count(*) from canary",
    "table canary",
    "select id as delete from canary",
    "select 'x' as truncate, 'y' as drop",
    "select count(*) from customers where note like '%drop table%'",
    "select position('drop' in 'drop table canary')",
    "select upper('delete from canary')",
    "select length($tag$delete from canary$tag$)",
    "select U&'\\0064rop table canary'",
    "select E'\\x64rop table canary'",
    "select 'truncate' || ' canary'",
    "select format('%s;%s', 'select 1', 'drop table canary')",
    "select regexp_replace('drop table canary', 'drop', 'keep')",
    "values ('drop table canary'), ('delete from canary')",
    "select 1; select 'drop table canary'",
    "select tablename from pg_tables where tablename = 'canary'",
    "select 1 where 'delete' <> 'drop'",
    "explain (costs off) delete from canary",
    "select 'ü; drop table canary'",
    "select 'Größe -- truncate canary'",
    'select 1 as "DELETE", 2 as "TRUNCATE"',
    "select * from canary where id = 1",
    "select 'drop table canary' from canary",
    "select exists (select 1 from canary)",
    "select string_agg(w, ' ') from unnest(array['drop', 'table', 'canary']) as w",
    "select md5('truncate canary')",
    "select '/*' || 'drop table canary' || '*/'",
    "select chr(59) || 'drop table canary'",
    "select split_part('select 1;drop table canary', ';', 2)",
    "select 1 as a /* ; */, 2 as b -- ;",
    "select $_$'; drop table canary; --$_$",
    "with x as (select 'delete from canary' as q) select q from x",
    "begin; select 'drop table canary'; commit",
    'select count(*) from "Canary"',
    "select count(*) from canary_log",
    "delete from t_guard where id = -1",
    "update t_guard set id = id where id = -1",
    "select 1 from canary for update",
    "copy canary to stdout",
    "select 'x' -- '; drop table canary",
)

#: Look-alikes for psycopg's extended protocol (binary cursors), with
#: parameters.
EXTENDED_LOOK_ALIKES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("select ';drop table canary;'", ()),
    ("select 1 /* drop table canary */", ()),
    ("select $$delete from canary$$", ()),
    ('select 1 as "truncate canary"', ()),
    ("select count(*) from canary", ()),
    ("select E'\\';drop table canary; --'", ()),
    ("select %s::text", ("drop table canary",)),
    ("select %s::text || %s::text", ("delete", " from canary")),
    ("select count(*) from canary where id = %s", (1,)),
    ("delete from t_guard where id = %s", (-1,)),
)


def rule_of(message: str) -> str | None:
    """
    The rule a gateway refusal names (C{... (rule NAME)}), if any.
    """
    found = re.search(r"\(rule ([\w.-]+)\)", message)
    return found.group(1) if found else None


def psql_errors(stderr: str) -> dict[str, tuple[str, str | None]]:
    """
    The errors of a psql run with C{-b} (echo failed statements) and
    C{VERBOSITY=verbose}: for each failed statement, its SQLSTATE and the
    rule the message names.
    """
    errors: dict[str, tuple[str, str | None]] = {}
    for block in re.split(r"^(?=ERROR:  )", stderr, flags=re.MULTILINE):
        head = re.match(r"ERROR:  (\w{5}): (.*)", block)
        statement = re.search(r"^STATEMENT:  (.*)\Z", block, re.MULTILINE | re.DOTALL)
        if head and statement:
            text = statement.group(1).removesuffix("\n")
            errors[text] = (head.group(1), rule_of(head.group(2)))
    return errors


MARK = "-- hoopgate-test-mark --"


def marked_commands(sqls: Sequence[str]) -> list[str]:
    """
    psql arguments running each of C{sqls} with C{-c}, each followed by
    an C{\\echo} of L{MARK}, so L{split_marked} can split the output.
    """
    args: list[str] = []
    for sql in sqls:
        args += ["-c", sql, "-c", f"\\echo {MARK}"]
    return args


def split_marked(stdout: str) -> list[str]:
    """
    The output of each command of a L{marked_commands} run.
    """
    parts = stdout.split(MARK + "\n")
    return parts[:-1] if parts and parts[-1] == "" else parts


class ServerLog:
    """
    The statements the test PostgreSQL logged (C{log_statement=all})
    since this object was made.

    Args:
        path: C{$HG_RUN/pg/server.log}.
    """

    _RECORD = re.compile(
        r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] (\w+):  (.*)$", re.MULTILINE
    )
    _STATEMENT = re.compile(r"(?:statement|execute [^:]*|parse [^:]*): (.*)", re.DOTALL)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def text(self) -> str:
        """
        What was logged since.
        """
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    def statements(self) -> list[str]:
        """
        The statement texts logged since (executed, or echoed with an
        error), continuation lines joined.
        """
        text = self.text()
        found = []
        records = list(self._RECORD.finditer(text))
        for i, record in enumerate(records):
            end = records[i + 1].start() if i + 1 < len(records) else len(text)
            body = text[record.start(2) : end].rstrip("\n").replace("\n\t", "\n")
            if record.group(1) == "STATEMENT":
                found.append(body)
            elif record.group(1) == "LOG":
                match = self._STATEMENT.match(body)
                if match:
                    found.append(match.group(1))
        return found

    def leaks(self, texts: Sequence[str]) -> list[tuple[str, str]]:
        """
        Pairs of (one of C{texts}, a logged statement containing it).
        """
        logged = self.statements()
        return [(t, s) for t in texts for s in logged if t in s]


def parse(name: str, sql: str) -> bytes:
    """
    A Parse of C{sql} as statement C{name}, no parameter types.
    """
    body = name.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", 0)
    return frontend(b"P", body)


def bind(portal: str, statement: str) -> bytes:
    """
    A Bind of C{statement} to C{portal}, no parameters, text results.
    """
    names = portal.encode() + b"\x00" + statement.encode() + b"\x00"
    return frontend(b"B", names + struct.pack("!hhh", 0, 0, 0))


def execute(portal: str, limit: int = 0) -> bytes:
    """
    An Execute of C{portal}, returning at most C{limit} rows (0: all).
    """
    return frontend(b"E", portal.encode() + b"\x00" + struct.pack("!i", limit))


def describe_portal(portal: str) -> bytes:
    """
    A Describe of C{portal}.
    """
    return frontend(b"D", b"P" + portal.encode() + b"\x00")


SYNC = frontend(b"S")


def canary_fingerprint(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    """
    L{CANARY_FINGERPRINT_SQL} read directly, or C{None} if canary is gone.
    """
    row = conn.execute(CANARY_FINGERPRINT_SQL).fetchone()
    return tuple(row) if row is not None else None
