"""
What the target's catalog says that statement text cannot.

Column lineage: a RowDescription names each column's table by OID and
its column by number.  Masking rules name tables and columns, so the
gateway maps the numbers to names with catalog queries on a connection
of its own, one per target, and caches the answer per table for a short
while (a table renamed since is seen again once the entry expires).

Reach: a statement that names a relation may touch others and run code
it never names.  A view or rule leads to the relations its definition
uses; a scan of a table returns its inheritance children and
partitions, and a row written to a child shows in its parents; a
foreign key with an action writes the referencing table; triggers,
rules, column defaults, constraints, index expressions and row security
policies run functions.  L{Catalog.facts} follows all of these for each
statement of a query string, and reports the functions and operators of
the target's own that shadow a name the statement uses.  What counts as
the target's own: anything outside C{pg_catalog} and
C{information_schema} that no extension installed.

The connection searches only C{pg_catalog} and every operator in its
queries is qualified, so objects a client created cannot answer for the
catalog.

test-case-name: tests.integration.test_postgres_lineage
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hoopgate.plugin import Credential, TargetConfig
from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres._sql import MAX_RELATIONS as SQL_MAX_RELATIONS
from hoopgate_plugins.postgres._sql import qualified_name
from hoopgate_plugins.postgres._upstream import Details, ServerConnection

B = pg.BackendType

_TTL = 60.0

# Every operator is qualified, though the connection searches only
# pg_catalog: nothing of the target's own may answer for the catalog.
_QUERY = (
    "select a.attrelid, n.nspname, c.relname, a.attnum, a.attname "
    "from pg_catalog.pg_attribute a "
    "join pg_catalog.pg_class c on c.oid operator(pg_catalog.=) a.attrelid "
    "join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace "
    "where a.attrelid operator(pg_catalog.=) any "
    "('{{{oids}}}'::pg_catalog.oid[]) and a.attnum operator(pg_catalog.>) 0"
)

# The tables whose rows a table's scan also returns: its inheritance
# children and partitions, at any depth.
_DESCENDANTS = (
    "with recursive d(top, oid) as ("
    "select i.inhparent, i.inhrelid from pg_catalog.pg_inherits i "
    "where i.inhparent operator(pg_catalog.=) any ('{{{oids}}}'::pg_catalog.oid[]) "
    "union select d.top, i.inhrelid from d join pg_catalog.pg_inherits i "
    "on i.inhparent operator(pg_catalog.=) d.oid) "
    "select d.top, n.nspname, c.relname from d "
    "join pg_catalog.pg_class c on c.oid operator(pg_catalog.=) d.oid "
    "join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace"
)


# What a statement reaches beyond its text.

_FACTS_TTL = 5.0

_FACTS_LIMIT = 1024

#: Requests naming more relations than this are not cached (their
#: answers are large).
_CACHED_RELATIONS = 64

#: A query string naming more relations than this is refused unread by
#: the catalog (judging it would hold the reactor for seconds).
MAX_RELATIONS = SQL_MAX_RELATIONS

_EQ = "operator(pg_catalog.=)"
_NE = "operator(pg_catalog.<>)"

# A function or operator of the target's own, which any role that may
# create objects could have written: not in pg_catalog or
# information_schema, and not part of an extension.
_OWN = (
    "{alias}.{ns} " + _NE + " 'pg_catalog'::pg_catalog.regnamespace"
    " and {alias}.{ns} " + _NE + " 'information_schema'::pg_catalog.regnamespace"
    " and not exists (select from pg_catalog.pg_depend e"
    " where e.classid " + _EQ + " '{catalog}'::pg_catalog.regclass"
    " and e.objid " + _EQ + " {alias}.oid and e.deptype " + _EQ + " 'e')"
)

_OWN_FUNCTION = _OWN.format(alias="p", ns="pronamespace", catalog="pg_catalog.pg_proc")
_OWN_OPERATOR = _OWN.format(
    alias="o", ns="oprnamespace", catalog="pg_catalog.pg_operator"
)

# A function or operator of built-in types only: one of the target's own
# on such types may answer for a built-in name anywhere; one taking a
# type of the target's own matters where a column of that type is read
# or written (the own_types rows below).
_BUILT_IN_TYPES = (
    "not exists (select from {types} a(t)"
    " join pg_catalog.pg_type y on y.oid " + _EQ + " a.t"
    " where y.typnamespace " + _NE + " 'pg_catalog'::pg_catalog.regnamespace)"
)
_BUILT_IN_ARGUMENTS = _BUILT_IN_TYPES.format(
    types="pg_catalog.unnest(p.proargtypes::pg_catalog.oid[])"
)
_BUILT_IN_OPERANDS = _BUILT_IN_TYPES.format(types="(values (o.oprleft), (o.oprright))")

_RELATIONS = f"""
start(oid, mode, part) as (
  select c.oid, s.mode, s.part from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid {_EQ} c.relnamespace
  join rows from (pg_catalog.unnest($1), pg_catalog.unnest($2),
       pg_catalog.unnest($3), pg_catalog.unnest($4)) as s(nsp, rel, mode, part)
    on (s.nsp {_EQ} '' or n.nspname {_EQ} s.nsp
        or s.nsp {_EQ} 'pg_temp' and n.nspname operator(pg_catalog.~~) 'pg\\_temp\\_%')
       and c.relname {_EQ} s.rel
),
reach(oid, mode, part, how) as (
  select oid, mode, part, 'named'::pg_catalog.text from start
  union
  select e.dst, r.mode, r.part, e.how from reach r cross join lateral (
    select d.refobjid as dst, 'rule'::pg_catalog.text as how
      from pg_catalog.pg_rewrite w join pg_catalog.pg_depend d
        on d.classid {_EQ} 'pg_catalog.pg_rewrite'::pg_catalog.regclass
       and d.objid {_EQ} w.oid
       and d.refclassid {_EQ} 'pg_catalog.pg_class'::pg_catalog.regclass
     where w.ev_class {_EQ} r.oid and d.refobjid {_NE} r.oid
    union all
    select i.inhrelid, 'child' from pg_catalog.pg_inherits i
     where i.inhparent {_EQ} r.oid
    union all
    select i.inhparent, 'parent' from pg_catalog.pg_inherits i
     where i.inhrelid {_EQ} r.oid and r.mode {_EQ} 'w'
    union all
    select k.conrelid, 'cascade' from pg_catalog.pg_constraint k
     where k.confrelid {_EQ} r.oid and k.contype {_EQ} 'f' and r.mode {_EQ} 'w'
       and (k.confdeltype {_NE} 'a' and k.confdeltype {_NE} 'r'
            or k.confupdtype {_NE} 'a' and k.confupdtype {_NE} 'r')
  ) e
),
attached(classid, objid, mode, part) as (
  select 'pg_catalog.pg_rewrite'::pg_catalog.regclass, w.oid, r.mode, r.part
    from pg_catalog.pg_rewrite w join reach r on w.ev_class {_EQ} r.oid
  union all
  select 'pg_catalog.pg_policy'::pg_catalog.regclass, p.oid, r.mode, r.part
    from pg_catalog.pg_policy p join reach r on p.polrelid {_EQ} r.oid
  union all
  select 'pg_catalog.pg_trigger'::pg_catalog.regclass, t.oid, r.mode, r.part
    from pg_catalog.pg_trigger t join reach r on t.tgrelid {_EQ} r.oid
   where r.mode {_EQ} 'w'
  union all
  select 'pg_catalog.pg_attrdef'::pg_catalog.regclass, a.oid, r.mode, r.part
    from pg_catalog.pg_attrdef a join reach r on a.adrelid {_EQ} r.oid
   where r.mode {_EQ} 'w'
  union all
  select 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid, r.mode, r.part
    from pg_catalog.pg_constraint k join reach r on k.conrelid {_EQ} r.oid
   where r.mode {_EQ} 'w'
  union all
  select 'pg_catalog.pg_class'::pg_catalog.regclass, x.indexrelid, r.mode, r.part
    from pg_catalog.pg_index x join reach r on x.indrelid {_EQ} r.oid
   where r.mode {_EQ} 'w'
)"""  # noqa: S608 - constant text; every value is a parameter

# Types of the columns reached, with what they are built on (a domain's
# base type, an array's element type), and those of the target's own.
_TYPES = f"""
types(t, mode, part) as (
  select a.atttypid, r.mode, r.part
    from reach r join pg_catalog.pg_attribute a on a.attrelid {_EQ} r.oid
   where a.attnum operator(pg_catalog.>) 0 and not a.attisdropped
  union
  select x.next, t.mode, t.part
    from types t join pg_catalog.pg_type y on y.oid {_EQ} t.t
   cross join lateral (values (y.typbasetype), (y.typelem)) as x(next)
   where x.next {_NE} 0
),
own_types(t, mode, part) as (
  select t.t, t.mode, t.part
    from types t join pg_catalog.pg_type y on y.oid {_EQ} t.t
   where y.typnamespace {_NE} 'pg_catalog'::pg_catalog.regnamespace
),
domains(classid, objid, mode, part) as (
  select 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid, t.mode, t.part
    from pg_catalog.pg_constraint k join own_types t on k.contypid {_EQ} t.t
)"""  # noqa: S608 - constant text; every value is a parameter

#: One statement, prepared once per catalog connection.  Its rows:
#: C{relation} (a relation a part reaches, and how), C{code} (a
#: function of the target's own that reaching it runs), C{function}
#: and C{operator} (overloads of the target's own of names parts use),
#: C{path} (the role's and database's default settings).
# The text is constant: every value arrives as a parameter.
_FACTS = (
    "prepare hoopgate_facts(pg_catalog.text[], pg_catalog.text[], "  # noqa: S608
    "pg_catalog.text[], pg_catalog.int4[], pg_catalog.name[], "
    "pg_catalog.name[], pg_catalog.name[]) as "
    f"with recursive {_RELATIONS}"
    f"""
select 'relation', r.mode, r.part, n.nspname::pg_catalog.text,
       c.relname::pg_catalog.text, r.how
  from reach r join pg_catalog.pg_class c on c.oid {_EQ} r.oid
  join pg_catalog.pg_namespace n on n.oid {_EQ} c.relnamespace
union
select 'code', a.mode, a.part, n.nspname::pg_catalog.text,
       p.proname::pg_catalog.text, a.classid::pg_catalog.text
  from attached a join pg_catalog.pg_depend d
    on d.classid {_EQ} a.classid and d.objid {_EQ} a.objid
   and d.refclassid {_EQ} 'pg_catalog.pg_proc'::pg_catalog.regclass
  join pg_catalog.pg_proc p on p.oid {_EQ} d.refobjid
  join pg_catalog.pg_namespace n on n.oid {_EQ} p.pronamespace
 where {_OWN_FUNCTION}
union
select 'code', a.mode, a.part, n.nspname::pg_catalog.text,
       o.oprname::pg_catalog.text, 'operator'
  from attached a join pg_catalog.pg_depend d
    on d.classid {_EQ} a.classid and d.objid {_EQ} a.objid
   and d.refclassid {_EQ} 'pg_catalog.pg_operator'::pg_catalog.regclass
  join pg_catalog.pg_operator o on o.oid {_EQ} d.refobjid
  join pg_catalog.pg_namespace n on n.oid {_EQ} o.oprnamespace
 where {_OWN_OPERATOR}
union
select 'function', '', -1, n.nspname::pg_catalog.text,
       p.proname::pg_catalog.text, ''
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid {_EQ} p.pronamespace
 where (p.proname {_EQ} any ($5) and {_BUILT_IN_ARGUMENTS}
        or p.proname {_EQ} any ($7) and p.pronargs {_EQ} 1)
   and {_OWN_FUNCTION}
union
select 'operator', '', -1, n.nspname::pg_catalog.text,
       o.oprname::pg_catalog.text, ''
  from pg_catalog.pg_operator o
  join pg_catalog.pg_namespace n on n.oid {_EQ} o.oprnamespace
 where o.oprname {_EQ} any ($6) and {_OWN_OPERATOR}
   and {_BUILT_IN_OPERANDS}
union
select 'path', '', -1, '', pg_catalog.unnest(s.setconfig), ''
  from pg_catalog.pg_db_role_setting s
 where s.setrole {_EQ} any (array[0, (select r.oid from pg_catalog.pg_roles r
         where r.rolname {_EQ} current_user)]::pg_catalog.oid[])
   and s.setdatabase {_EQ} any (array[0, (select d.oid
         from pg_catalog.pg_database d
         where d.datname {_EQ} pg_catalog.current_database())]::pg_catalog.oid[])
"""
)


@frozen
class Request:
    """
    What a query string's statements name, for L{Catalog.facts}.

    Attributes:
        parts: For each statement, the relations it reads and writes,
            as the classifier renders them.
        functions: Unqualified names of functions the string calls.
        operators: Unqualified operators it uses.
        attributes: Column names it refers to (C{t.f} may call a
            function C{f} of C{t}'s row type).
    """

    parts: tuple[tuple[frozenset[str], frozenset[str]], ...]
    functions: frozenset[str] = frozenset()
    operators: frozenset[str] = frozenset()
    attributes: frozenset[str] = frozenset()

    @property
    def relations(self) -> int:
        """
        How many relations the statements name (with repeats).
        """
        return sum(len(reads) + len(writes) for reads, writes in self.parts)


@frozen
class PartFacts:
    """
    What one statement reaches beyond what it names.

    Attributes:
        reads: Relations it reads, the named ones included.
        writes: Relations it writes, the named ones included.
        through_rules: Relations it reads through a view or rule, whose
            columns lineage cannot follow.
        code: The functions of the target's own it runs unnamed, each
            as C{schema.name} and how it runs (C{trigger}, C{rule}, ...).
    """

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    through_rules: frozenset[str] = frozenset()
    code: tuple[tuple[str, str], ...] = ()


@frozen
class Facts:
    """
    The catalog's answer for a query string.

    Attributes:
        parts: One per statement, in order.
        shadowed: Functions and operators the string uses by an
            unqualified name that the target's own objects overload,
            each as C{schema.name}.
        paths: The search paths the role's and database's defaults set.
    """

    parts: tuple[PartFacts, ...]
    shadowed: tuple[str, ...] = ()
    paths: tuple[tuple[str, ...], ...] = ()


def split_name(relation: str) -> tuple[str, str]:
    """
    The schema (C{""}: any; C{pg_temp}: any session's temporary one)
    and name of a relation the classifier rendered, unquoted.
    """
    parts: list[str] = []
    position = 0
    while position <= len(relation):
        if relation.startswith('"', position):
            end = position + 1
            text = []
            while end < len(relation):
                if relation[end] == '"':
                    if relation.startswith('""', end):
                        text.append('"')
                        end += 2
                        continue
                    break
                text.append(relation[end])
                end += 1
            parts.append("".join(text))
            position = end + 2
        else:
            end = relation.find(".", position)
            end = len(relation) if end < 0 else end
            parts.append(relation[position:end])
            position = end + 1
    if len(parts) == 1:
        return "", parts[0]
    return parts[-2], parts[-1]


def _array(items: list[str]) -> str:
    """
    A text array literal inside a string literal.
    """
    elements = ",".join(
        '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items
    )
    return "'{" + elements.replace("'", "''") + "}'"


def _cacheable(request: Request) -> bool:
    return request.relations <= _CACHED_RELATIONS


def _arguments(request: Request) -> list[str]:
    schemas, names, modes, numbers = [], [], [], []
    for number, (reads, writes) in enumerate(request.parts):
        for mode, relations in (("r", reads), ("w", writes)):
            for relation in sorted(relations):
                schema, name = split_name(relation)
                schemas.append(schema)
                names.append(name)
                modes.append(mode)
                numbers.append(str(number))
    return [
        _array(schemas),
        _array(names),
        _array(modes),
        "'{" + ",".join(numbers) + "}'",
        _array(sorted(request.functions)),
        _array(sorted(request.operators)),
        _array(sorted(request.attributes)),
    ]


def _execute(request: Request) -> str:
    return f"execute hoopgate_facts({', '.join(_arguments(request))})"


def _type_query(request: Request) -> str:
    text = _TYPE_FACTS
    kinds = ("text", "text", "text", "int4")
    for number, (value, kind) in enumerate(
        zip(_arguments(request), kinds, strict=False), 1
    ):
        text = text.replace(f"${number}", f"{value}::pg_catalog.{kind}[]")
    return text


# What an object attached to a relation is, by its catalog (as regclass
# prints it, qualified or not as the search path has it).
_HOW = {
    "pg_rewrite": "rule",
    "pg_policy": "row security policy",
    "pg_trigger": "trigger",
    "pg_attrdef": "column default",
    "pg_constraint": "constraint",
    "pg_class": "index",
}


def _path(setting: str) -> tuple[str, ...] | None:
    name, _, value = setting.partition("=")
    if name.strip().lower() != "search_path":
        return None
    return search_path_of(value)


def search_path_of(value: str) -> tuple[str, ...]:
    """
    The schemas of a C{search_path} setting's value, unquoted.
    """
    path = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.startswith('"') and entry.endswith('"') and len(entry) > 1:
            entry = entry[1:-1].replace('""', '"')
        if entry:
            path.append(entry)
    return tuple(path)


def _named(relations: frozenset[str]) -> set[str]:
    return {r for r in relations if split_name(r)[0] != "pg_temp"}


def _facts(request: Request, rows: list[list[bytes | None]]) -> Facts:
    count = len(request.parts)
    # The temporary candidates a request asks about count only if found
    # (as pg_temp_N.name, the schema a session's temporary one has).
    reads: list[set[str]] = [_named(r) for r, _ in request.parts]
    writes: list[set[str]] = [_named(w) for _, w in request.parts]
    through: list[set[str]] = [set() for _ in range(count)]
    code: list[dict[tuple[str, str], None]] = [{} for _ in range(count)]
    shadowed: dict[str, None] = {}
    paths: list[tuple[str, ...]] = []
    for row in rows:
        kind, mode, number, schema, name, how = (
            (v or b"").decode("utf-8", "replace") for v in row
        )
        if kind == "path":
            path = _path(name)
            if path is not None and path not in paths:
                paths.append(path)
            continue
        if kind in ("function", "operator"):
            shadowed[relation_name(schema, name)] = None
            continue
        part = int(number)
        if not 0 <= part < count:
            continue
        if kind == "code":
            kind = how.removeprefix("pg_catalog.")
            code[part][relation_name(schema, name), _HOW.get(kind, kind)] = None
            continue
        relation = relation_name(schema, name)
        (reads if mode == "r" else writes)[part].add(relation)
        if how == "rule" and mode == "r":
            through[part].add(relation)
    return Facts(
        parts=tuple(
            PartFacts(
                reads=frozenset(reads[i]),
                writes=frozenset(writes[i]),
                through_rules=frozenset(through[i]),
                code=tuple(code[i]),
            )
            for i in range(count)
        ),
        shadowed=tuple(shadowed),
        paths=tuple(paths),
    )


#: What the types of the columns reached bring: casts, operators and
#: functions of the target's own on them, domain checks.  Run only on
#: targets that have types of their own (L{_OWN_TYPES}), with its values
#: written in (a generic plan of it is slow); its rows are C{code} rows
#: as L{_FACTS} gives them.
_TYPE_FACTS = (
    f"with recursive {_RELATIONS}, {_TYPES}"  # noqa: S608
    f"""
select 'code', t.mode, t.part, n.nspname::pg_catalog.text,
       p.proname::pg_catalog.text, 'cast'
  from own_types t join pg_catalog.pg_cast k
    on k.castsource {_EQ} t.t or k.casttarget {_EQ} t.t
  join pg_catalog.pg_proc p on p.oid {_EQ} k.castfunc
  join pg_catalog.pg_namespace n on n.oid {_EQ} p.pronamespace
 where {_OWN_FUNCTION}
union
select 'code', t.mode, t.part, n.nspname::pg_catalog.text,
       o.oprname::pg_catalog.text, 'operator on a column type'
  from own_types t join pg_catalog.pg_operator o
    on o.oprleft {_EQ} t.t or o.oprright {_EQ} t.t
  join pg_catalog.pg_namespace n on n.oid {_EQ} o.oprnamespace
 where {_OWN_OPERATOR}
union
select 'code', t.mode, t.part, n.nspname::pg_catalog.text,
       p.proname::pg_catalog.text, 'function on a column type'
  from own_types t join pg_catalog.pg_proc p
    on t.t {_EQ} any (p.proargtypes::pg_catalog.oid[])
  join pg_catalog.pg_namespace n on n.oid {_EQ} p.pronamespace
 where {_OWN_FUNCTION}
union
select 'code', a.mode, a.part, n.nspname::pg_catalog.text,
       p.proname::pg_catalog.text, 'domain check'
  from domains a join pg_catalog.pg_depend d
    on d.classid {_EQ} a.classid and d.objid {_EQ} a.objid
   and d.refclassid {_EQ} 'pg_catalog.pg_proc'::pg_catalog.regclass
  join pg_catalog.pg_proc p on p.oid {_EQ} d.refobjid
  join pg_catalog.pg_namespace n on n.oid {_EQ} p.pronamespace
 where {_OWN_FUNCTION}
union
select 'code', a.mode, a.part, n.nspname::pg_catalog.text,
       o.oprname::pg_catalog.text, 'domain check'
  from domains a join pg_catalog.pg_depend d
    on d.classid {_EQ} a.classid and d.objid {_EQ} a.objid
   and d.refclassid {_EQ} 'pg_catalog.pg_operator'::pg_catalog.regclass
  join pg_catalog.pg_operator o on o.oid {_EQ} d.refobjid
  join pg_catalog.pg_namespace n on n.oid {_EQ} o.oprnamespace
 where {_OWN_OPERATOR}
"""
)

#: Whether the target has types of its own other than tables' row types.
_OWN_TYPES = (
    "select exists (select from pg_catalog.pg_type y"
    " where y.typnamespace operator(pg_catalog.<>)"
    " 'pg_catalog'::pg_catalog.regnamespace"
    " and y.typnamespace operator(pg_catalog.<>)"
    " 'information_schema'::pg_catalog.regnamespace"
    " and (y.typrelid operator(pg_catalog.=) 0 or exists (select from"
    " pg_catalog.pg_class c where c.oid operator(pg_catalog.=) y.typrelid"
    " and c.relkind operator(pg_catalog.=) 'c'))"
    " and y.typelem operator(pg_catalog.=) 0)"
)


class CatalogError(Exception):
    """
    The catalog could not be read (the caller fails closed).
    """


@frozen
class Table:
    """
    A table's name and its columns by number.

    Attributes:
        relation: C{schema.name}, quoted as statement parts quote it.
        columns: Column numbers to names.
        descendants: Tables whose rows a scan of this one also returns
            (inheritance children, partitions), likewise named.
    """

    relation: str
    columns: dict[int, str]
    descendants: list[str] = attrs.Factory(list)


def relation_name(schema: str, name: str) -> str:
    """
    A relation's (or function's) name as the SQL classifier renders it.
    """
    return qualified_name(schema, name)


class _Reader:
    """
    The catalog's own connection: runs one query at a time.
    """

    _log = Logger()

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._queue: deque[tuple[str, Deferred[list[list[bytes | None]]]]] = deque()
        self._rows: list[list[bytes | None]] = []
        self._error = ""
        self._ready = False
        self.server: ServerConnection | None = None

    def run(self, sql: str) -> Deferred[list[list[bytes | None]]]:
        result: Deferred[list[list[bytes | None]]] = Deferred()
        self._queue.append((sql, result))
        if self._ready and len(self._queue) == 1:
            self._send()
        return result

    def _send(self) -> None:
        assert self.server is not None
        self.server.write(pg.query(self._queue[0][0]))

    def upstream_failed(self, sqlstate: str, text: str, why: str) -> None:
        self._fail_all(f"{text}: {why}")

    def upstream_authenticated(self) -> None:
        return

    def upstream_ready(self, greeting: bytes, details: Details) -> None:
        self._ready = True
        if self._queue:
            self._send()

    def parameter_changed(self, name: str, value: str) -> None:
        return

    def from_server(self, reader: pg.BackendReader) -> None:
        for frame in reader:
            if frame.type == B.DATA_ROW:
                self._rows.append(pg.parse_data_row(frame.payload))
            elif frame.type == B.ERROR_RESPONSE:
                fields = pg.parse_fields(frame.payload)
                self._error = f"{fields.get('C', '?')}: {fields.get('M', '')}"
            elif frame.type == B.READY_FOR_QUERY:
                self._finish()

    def _finish(self) -> None:
        rows, self._rows = self._rows, []
        error, self._error = self._error, ""
        if not self._queue:
            return
        _, result = self._queue.popleft()
        if self._queue:
            self._send()
        if error:
            result.errback(CatalogError(error))
        else:
            result.callback(rows)

    def upstream_closed(self) -> None:
        self._fail_all("the catalog connection closed")

    def _fail_all(self, why: str) -> None:
        self._ready = False
        self._catalog.reader_lost(self)
        queue, self._queue = self._queue, deque()
        for _, result in queue:
            result.errback(CatalogError(why))


class Catalog:
    """
    Table and column names of one target, looked up and cached.

    Args:
        reactor: Connects and keeps time.
        target: The target.
        credential: The credential set the lookups log in with.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, target: TargetConfig, credential: Credential
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._credential = credential
        self._tables: dict[int, tuple[float, Table | None]] = {}
        self._facts: dict[Request, tuple[float, Facts]] = {}
        self._reader: _Reader | None = None
        self.generation = 0

    def known_facts(self, request: Request) -> Facts | None:
        """
        The cached facts for C{request}, if fresh.
        """
        entry = self._facts.get(request)
        if entry is None or entry[0] < self._reactor.seconds():
            return None
        return entry[1]

    def facts(self, request: Request) -> Deferred[Facts]:
        """
        What the statements of C{request} reach, read from the catalog.
        """

        reader = self._connection()
        basic = reader.run(_execute(request))
        typed = reader.run(_OWN_TYPES)

        def with_types(rows: list[list[bytes | None]]) -> Deferred[Facts]:
            def more(answer: list[list[bytes | None]]) -> Any:
                if answer and answer[0][0] == b"t":
                    query = reader.run(_type_query(request))
                    return query.addCallback(
                        lambda extra: self._keep_facts(request, rows + extra)
                    )
                return self._keep_facts(request, rows)

            return typed.addCallback(more)

        def drop_typed(failure: Any) -> Any:
            typed.addErrback(lambda _: None)
            return failure

        return basic.addCallbacks(with_types, drop_typed)

    def _keep_facts(self, request: Request, rows: list[list[bytes | None]]) -> Facts:
        found = _facts(request, rows)
        if len(self._facts) >= _FACTS_LIMIT:
            self._facts.clear()
        if _cacheable(request):
            self._facts[request] = (self._reactor.seconds() + _FACTS_TTL, found)
        return found

    def changed(self) -> None:
        """
        The catalog may have changed (a statement that can change it
        ended): forget what was read before.
        """
        self._facts.clear()
        self._tables.clear()
        self.generation += 1

    def known(self, oids: set[int]) -> dict[int, Table | None] | None:
        """
        The cached tables, if every one of C{oids} is cached and fresh.
        """
        now = self._reactor.seconds()
        found: dict[int, Table | None] = {}
        for oid in oids:
            entry = self._tables.get(oid)
            if entry is None or entry[0] < now:
                return None
            found[oid] = entry[1]
        return found

    def lookup(self, oids: set[int]) -> Deferred[dict[int, Table | None]]:
        """
        The tables of C{oids} (C{None} for an OID that is no table).
        """
        listed = ",".join(str(int(o)) for o in sorted(oids))
        reader = self._connection()
        columns = reader.run(_QUERY.format(oids=listed))
        below = reader.run(_DESCENDANTS.format(oids=listed))

        def store(rows: list[list[bytes | None]]) -> Deferred[dict[int, Table | None]]:
            def stored(
                descendants: list[list[bytes | None]],
            ) -> dict[int, Table | None]:
                return self._store(oids, rows, descendants)

            return below.addCallback(stored)

        def drop_below(failure: Any) -> Any:
            below.addErrback(lambda _: None)
            return failure

        return columns.addCallbacks(store, drop_below)

    def _store(
        self,
        oids: set[int],
        rows: list[list[bytes | None]],
        descendants: list[list[bytes | None]],
    ) -> dict[int, Table | None]:
        tables: dict[int, Table | None] = dict.fromkeys(oids)
        for relid, schema, name, number, column in rows:
            assert relid and schema and name and number and column
            oid = int(relid)
            table = tables.get(oid)
            if table is None:
                relation = relation_name(schema.decode(), name.decode())
                table = tables[oid] = Table(relation, {})
            table.columns[int(number)] = column.decode()
        for top, schema, name in descendants:
            assert top and schema and name
            parent = tables.get(int(top))
            if parent is not None:
                parent.descendants.append(relation_name(schema.decode(), name.decode()))
        expires = self._reactor.seconds() + _TTL
        for oid, table in tables.items():
            self._tables[oid] = (expires, table)
        return tables

    def _connection(self) -> _Reader:
        if self._reader is None:
            reader = _Reader(self)
            settings = self._target.settings
            reader.server = ServerConnection.connect(
                self._reactor,
                self._target,
                self._credential,
                parameters={
                    "user": self._credential.user,
                    "database": getattr(settings, "database", ""),
                    "application_name": "hoopgate/catalog",
                    "client_encoding": "UTF8",
                    "search_path": "pg_catalog",
                    "standard_conforming_strings": "on",
                    "plan_cache_mode": "force_generic_plan",
                },
                client=reader,
                label=f"the catalog of {self._target.name}",
            )
            self._reader = reader
            reader.run(_FACTS).addErrback(self._unprepared)
        return self._reader

    def _unprepared(self, failure: Any) -> None:
        self._log.error(
            "Cannot prepare the catalog statement of {target}: {error}",
            target=self._target.name,
            error=failure.getErrorMessage(),
        )

    def reader_lost(self, reader: _Reader) -> None:
        """
        The connection ended; the next lookup opens another.
        """
        if self._reader is reader:
            self._reader = None


_catalogs: dict[tuple[str, str, int], Catalog] = {}


#: Seconds a catalog answer is used for: changes made elsewhere (directly,
#: or through another gateway) are seen within this.
FACTS_TTL = _FACTS_TTL


def catalog_for(reactor: Any, target: TargetConfig, credential: Credential) -> Catalog:
    """
    The catalog of a target, shared by its sessions.
    """
    key = (target.name, target.host, target.port)
    catalog = _catalogs.get(key)
    if catalog is None:
        catalog = _catalogs[key] = Catalog(reactor, target, credential)
    return catalog
