"""
Classifying PostgreSQL statements for SQL-aware guardrails, sans-IO.

L{classify} takes one query string as the client sent it (a simple
Query may hold many statements) and the session state that decides how
the server reads it, and returns one L{Classification} per statement:
its own text, its effect, the relations it reads and writes, the risky
shapes it has and its command word.  The text is parsed once, with
PostgreSQL's own parser (pglast 8, the PostgreSQL 18 grammar), and the
tree is walked once; results for short texts are kept in a small LRU.

Relations are rendered as C{schema.name}, each part double-quoted only
when it is not a plain lower-case identifier (C{public."CaNaRy"} is not
C{public.canary}).  The gateway cannot see which schemas and tables
exist, so an unqualified name is resolved to every schema of the
search path it could reach, in order: C{canary} with the default path
is C{public.canary}; with C{x, public} it is both C{x.canary} and
C{public.canary}, because the server falls through a schema that lacks
the table.  C{"$user"} stands for the session's user when the caller
names one and is skipped otherwise (the server skips it too when no
such schema exists, the usual case).  Names starting with C{pg_} also
resolve to C{pg_catalog}; explicitly qualified names (C{pg_catalog.*},
C{information_schema.*}, C{public.canary}) stay as written, without a
database part.  A temporary table created by the statement is in
C{pg_temp}.  A C{SET search_path} or C{SET ROLE} earlier in the same
string adds to the names later statements resolve to; after C{RESET
search_path}, C{SET search_path TO DEFAULT}, C{RESET ALL} or C{DISCARD
ALL} the path is unknown, and a later statement naming a relation
without a schema is unknown.

The effect is C{unknown}, with a C{reason}, whenever the gateway cannot
be sure what runs: text the parser rejects (C{parse_error} holds its
message, which quotes the statement), a NUL character, text the server
could read differently (C{standard_conforming_strings} off with a
backslash inside an ordinary string literal; non-ASCII text in a client
encoding whose multibyte characters can contain ASCII bytes, such as
SJIS, BIG5, GBK, UHC, GB18030 or JOHAB, or in an encoding the gateway
does not know), DO blocks, CALL, SQL-level PREPARE and EXECUTE, COPY
... PROGRAM, LOAD, a call of a function that is not on the allow-list,
an operator that is not a built-in one, a cast to a type that is not a
built-in one, a tree too deep to walk, and statement types not
classified here.  The caller denies those.

An UPDATE or DELETE whose WHERE mentions no column at all (C{WHERE
true}, C{WHERE 1 = 1}, C{WHERE $1}) counts as one without WHERE.

For masking, each statement also reports the column names it refers to
and which of them it uses other than as a plain output column: a plain
one is a column reference standing alone in the target list of the
statement's own query (a SELECT, not a set operation, without DISTINCT,
or the query of DECLARE CURSOR), or in the column list of COPY TO;
everything else (conditions, joins, ordering, grouping, function
arguments, casts, subqueries, set operations, assignments, RETURNING,
EXPLAIN) is derived.  C{*} stands for a star and for a reference that
may be a whole row (a single name that is also a table, alias or CTE
name); a whole row always counts as derived, since the server describes
it without lineage.  COPY TO STDOUT reports its stream format.

What text alone cannot show (triggers, rules, views, inheritance,
column defaults, overloads of allowed names in a schema on the search
path, C{t.f} calling a function C{f(t)}), the catalog can: each
classification lists the unqualified function and operator names it
trusted, and says whether the statement may change what later ones
reach (C{indirect}); L{hoopgate_plugins.postgres._reach} joins the two.
Domain checks are not followed.

test-case-name: tests.unit.postgres.test_sql
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final

import attrs
from attrs import field, frozen
from pglast import parser as pg_parser

from hoopgate.plugin import StatementPart


class Effect(StrEnum):
    """
    What a statement does, coarsely, for policy decisions.
    """

    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    PRIVILEGE = "privilege"
    TRANSACTION = "transaction"
    SESSION = "session"
    UNKNOWN = "unknown"


class Shape(StrEnum):
    """
    A risky form a statement has, whatever its effect.
    """

    UPDATE_WITHOUT_WHERE = "update_without_where"
    DELETE_WITHOUT_WHERE = "delete_without_where"
    TRUNCATE = "truncate"
    DROP = "drop"
    GRANT = "grant"
    REVOKE = "revoke"
    COPY_PROGRAM = "copy_program"
    COPY_TO = "copy_to"
    COPY_FROM = "copy_from"
    WRITING_CTE = "writing_cte"
    SELECT_INTO = "select_into"
    LOCK = "lock"
    FUNCTION_CALL = "function_call"
    DYNAMIC_SQL = "dynamic_sql"


DEFAULT_SEARCH_PATH: Final[tuple[str, ...]] = ("$user", "public")

#: Built-in functions that neither write nor run other SQL.
DEFAULT_ALLOWED_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        # aggregates and window functions
        "count", "sum", "avg", "min", "max", "array_agg", "string_agg",
        "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
        "bool_and", "bool_or", "every", "stddev", "stddev_pop",
        "stddev_samp", "variance", "var_pop", "var_samp", "row_number",
        "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
        "lead", "first_value", "last_value", "nth_value",
        # strings
        "lower", "upper", "initcap", "length", "char_length",
        "octet_length", "substr", "substring", "concat", "concat_ws",
        "left", "right", "lpad", "rpad", "btrim", "ltrim", "rtrim",
        "replace", "split_part", "strpos", "position", "reverse",
        "repeat", "format", "md5", "regexp_replace", "regexp_match",
        "regexp_matches", "starts_with", "quote_ident", "quote_literal",
        "translate", "chr", "ascii", "encode", "decode", "sha256",
        "array_to_string", "string_to_array",
        # what the grammar writes for LIKE ... ESCAPE and SIMILAR TO
        "like_escape", "similar_to_escape",
        # full-text search
        "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
        "websearch_to_tsquery", "ts_rank", "ts_headline",
        # numbers
        "abs", "round", "trunc", "floor", "ceil", "ceiling", "mod",
        "power", "sqrt", "exp", "ln", "log", "sign", "random",
        "greatest", "least",
        # conditionals
        "coalesce", "nullif",
        # dates and times
        "now", "clock_timestamp", "statement_timestamp",
        "transaction_timestamp", "to_char", "to_date", "to_timestamp",
        "to_number", "date_trunc", "date_part", "extract", "age",
        "make_date", "make_interval", "timezone",
        # arrays, sets and JSON
        "array_length", "cardinality", "unnest", "generate_series",
        "to_json", "to_jsonb", "row_to_json", "json_build_object",
        "jsonb_build_object", "json_build_array", "jsonb_build_array",
        "json_array_elements", "jsonb_array_elements",
        "json_array_length", "jsonb_array_length", "json_typeof",
        "jsonb_typeof", "jsonb_pretty", "json_each", "jsonb_each",
        "jsonb_set", "jsonb_strip_nulls", "json_object_keys",
        "jsonb_object_keys", "json_extract_path", "json_extract_path_text",
        "jsonb_extract_path", "jsonb_extract_path_text", "array_position",
        "array_append", "array_remove", "array_cat", "width_bucket",
        "date_bin", "justify_interval",
        # session information
        "version", "current_user", "current_database", "current_schema",
        "pg_backend_pid", "pg_typeof", "gen_random_uuid",
        # catalog inspection, as psql's meta-commands and drivers use it
        # (each only reads the catalog)
        "pg_table_is_visible", "pg_type_is_visible",
        "pg_function_is_visible", "pg_operator_is_visible",
        "pg_opclass_is_visible", "pg_collation_is_visible",
        "pg_conversion_is_visible", "pg_ts_config_is_visible",
        "pg_statistics_obj_is_visible", "pg_get_userbyid", "format_type",
        "pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef",
        "pg_get_triggerdef", "pg_get_viewdef", "pg_get_ruledef",
        "pg_get_function_arguments", "pg_get_function_result",
        "pg_get_function_identity_arguments", "pg_get_partkeydef",
        "pg_get_partition_constraintdef", "pg_get_statisticsobjdef_columns",
        "pg_get_serial_sequence", "obj_description", "col_description",
        "shobj_description", "pg_encoding_to_char", "pg_char_to_encoding",
        "pg_relation_size", "pg_total_relation_size", "pg_table_size",
        "pg_indexes_size", "pg_database_size", "pg_size_pretty",
        "pg_postmaster_start_time", "pg_conf_load_time",
        "pg_is_in_recovery", "pg_relation_is_publishable", "array_lower",
        "array_upper", "pg_get_publication_tables",
        "generate_subscripts", "current_setting", "has_table_privilege",
        "has_schema_privilege", "has_database_privilege",
        "pg_has_role", "inet_server_addr", "inet_server_port",
        # harmless, and useful to hold a statement open in tests
        "pg_sleep",
    }
)  # fmt: skip

_CACHE_SIZE: Final = 1024
_CACHE_TEXT_LIMIT: Final = 8192

# Built-in operator names; a statement using another is unknown.
_OPERATORS: Final = frozenset(
    {
        "=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^",
        "||", "|/", "||/", "@", "&", "|", "#", "~", "<<", ">>", "~~",
        "~~*", "!~~", "!~~*", "~*", "!~", "!~*", "@>", "<@", "&&", "->",
        "->>", "#>", "#>>", "?", "?|", "?&", "@?", "@@", "@@@", "#-",
        "<->", "-|-", "&<", "&>", "<<|", "|>>", "&<|", "|&>", "<^", ">^",
        "?#", "?-", "?-|", "?||", "~=", "<<=", ">>=", "^@",
    }
)  # fmt: skip

# Built-in type names a cast may name without a schema.
_TYPES: Final = frozenset(
    {
        "text", "varchar", "char", "bpchar", "name", "int2", "int4",
        "int8", "float4", "float8", "numeric", "bool", "date", "time",
        "timetz", "timestamp", "timestamptz", "interval", "json", "jsonb",
        "jsonpath", "uuid", "bytea", "inet", "cidr", "macaddr", "money",
        "oid", "xml", "bit", "varbit", "tsvector", "tsquery", "point",
        "regclass", "regtype", "regproc", "regprocedure", "regnamespace",
        "regrole", "record", "int4range", "int8range", "numrange",
        "tsrange", "tstzrange", "daterange",
    }
)  # fmt: skip

_SAMPLING_METHODS: Final = frozenset({"bernoulli", "system"})

# Functions that run SQL handed to them as text.
_DYNAMIC_SQL_FUNCTIONS: Final = frozenset(
    {
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        "cursor_to_xml", "dblink", "dblink_exec", "dblink_send_query",
        "dblink_open",
    }
)  # fmt: skip

# Client encodings (PostgreSQL's names and aliases, lower case without
# punctuation) whose multibyte characters use only bytes above 0x7f.
_SAFE_ENCODINGS: Final = frozenset(
    {
        "utf8", "unicode", "sqlascii", "eucjp", "euccn", "euckr", "euctw",
        "eucjis2004", "muleinternal", "koi8", "koi8r", "koi8u", "alt",
        "win", "abc", "tcvn", "tcvn5712", "vscii",
        *(f"latin{n}" for n in range(1, 11)),
        *(f"iso8859{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)),
        *(f"win{n}" for n in (866, 874, *range(1250, 1259))),
        *(f"windows{n}" for n in (866, 874, *range(1250, 1259))),
    }
)  # fmt: skip

# Client-only encodings whose multibyte characters can hold ASCII bytes.
_UNSAFE_ENCODINGS: Final = frozenset(
    {
        "sjis", "shiftjis", "mskanji", "win932", "windows932",
        "shiftjis2004", "big5", "win950", "windows950", "gbk", "win936",
        "windows936", "uhc", "win949", "windows949", "gb18030", "johab",
    }
)  # fmt: skip

_PLAIN_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_$]*")

_DML: Final = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})

# Shapes an EXPLAIN without ANALYZE only plans, never runs.
_PLANNED_ONLY: Final = frozenset(
    {
        Shape.UPDATE_WITHOUT_WHERE,
        Shape.DELETE_WITHOUT_WHERE,
        Shape.WRITING_CTE,
        Shape.SELECT_INTO,
        Shape.LOCK,
    }
)

# Object types whose names are relations, for DROP, GRANT and COMMENT.
_RELATION_OBJECTS: Final = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
        "OBJECT_INDEX",
    }
)

# Object types named by a relation and one more part (trigger on table).
_RELATION_MEMBERS: Final = frozenset(
    {"OBJECT_TRIGGER", "OBJECT_RULE", "OBJECT_POLICY", "OBJECT_COLUMN"}
)

# A_Expr kinds whose name is a keyword, not an operator.
_KEYWORD_EXPRESSIONS: Final = frozenset(
    {
        "AEXPR_BETWEEN",
        "AEXPR_NOT_BETWEEN",
        "AEXPR_BETWEEN_SYM",
        "AEXPR_NOT_BETWEEN_SYM",
    }
)

_TRANSACTION_COMMANDS: Final = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK",
    "TRANS_STMT_PREPARE": "PREPARE",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK",
}

# A node of libpg_query's JSON tree: {"Kind": {fields}} when the field
# may hold any node, the bare {fields} when its type is fixed.
_Fields = dict[str, Any]


def _search_path(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@frozen(cache_hash=True)
class SessionState:
    """
    What decides how the server reads and resolves a session's text.

    Attributes:
        search_path: The schemas unqualified names are looked up in,
            C{"$user"} included as such.
        user: The current user, which C{"$user"} stands for; C{None}
            skips C{"$user"}.
        standard_conforming_strings: Whether backslashes in ordinary
            string literals are literal.
        client_encoding: The client encoding's name, as PostgreSQL
            reports it (C{UTF8}, C{SJIS}, ...).
        more_paths: Other search paths the session may be using: set by
            earlier query strings (which may have failed or been rolled
            back) or by the role's and database's defaults.
        more_users: Other roles C{"$user"} may stand for (C{SET ROLE}).
    """

    search_path: tuple[str, ...] = field(
        default=DEFAULT_SEARCH_PATH, converter=_search_path
    )
    user: str | None = None
    more_paths: tuple[tuple[str, ...], ...] = ()
    more_users: tuple[str, ...] = ()
    standard_conforming_strings: bool = True
    client_encoding: str = "UTF8"


DEFAULT_STATE: Final = SessionState()


@frozen
class Classification:
    """
    What one statement of a query string does.

    Attributes:
        text: The statement's own slice of the query string (the whole
            string when it could not be parsed).
        command: Its command word (C{SELECT}, C{DROP}, C{COPY}, ...),
            empty when it could not be parsed.
        effect: What it does.
        relations_read: Relations it reads, as C{schema.name}.
        relations_written: Relations whose rows or definition it
            changes, as C{schema.name}.
        shapes: Its risky forms.
        reason: Why the effect is C{unknown}, if it is.
        parse_error: The parser's message, if it rejected the text.
        uncertain: Whether the gateway could not be sure how the server
            reads the text at all (parse errors, encodings, string
            settings, depth), rather than knowing the statement and its
            effect being unknown (a DO block, a function off the
            allow-list): only the first is a problem policy must refuse.
        columns: Column names it refers to (C{*}: a star or whole row).
            For COPY TO of a table: its column list, in order, or C{*}.
        derived_columns: Those used other than as plain output columns.
        stream_format: For COPY TO STDOUT: C{text}, C{csv} (either with
            C{+header}), C{binary}, or C{other} for options the gateway
            does not read (delimiter, null string, quoting, encoding).
        functions: Allow-listed functions it calls by unqualified name,
            which an overload on the target could shadow.
        operators: Operators it names without a schema, likewise.
        unqualified: Relation names it uses without a schema, which a
            temporary relation of the session would answer for first.
        indirect: Whether it may make later statements run code or
            reach relations they do not name (a view, rule, trigger,
            function, operator, inheritance, a rename, a role's search
            path): the catalog must be read again after it.
        sets_path: The search path a C{SET search_path} sets, if it is one.
        sets_roles: The roles a C{SET ROLE} names, if it is one.
    """

    text: str
    command: str
    effect: Effect
    relations_read: frozenset[str] = frozenset()
    relations_written: frozenset[str] = frozenset()
    shapes: frozenset[Shape] = frozenset()
    reason: str | None = None
    parse_error: str | None = None
    uncertain: bool = False
    columns: frozenset[str] | tuple[str, ...] = frozenset()
    derived_columns: frozenset[str] = frozenset()
    stream_format: str = ""
    functions: frozenset[str] = frozenset()
    operators: frozenset[str] = frozenset()
    unqualified: frozenset[str] = frozenset()
    indirect: bool = False
    sets_path: tuple[str, ...] | None = None
    sets_roles: tuple[str, ...] = ()

    def to_part(self) -> StatementPart:
        """
        This classification as the statement event carries it.
        """
        problem = ""
        if self.uncertain:
            problem = self.reason or "the text could not be read"
            if self.parse_error:
                problem = f"{problem}: {self.parse_error}"
        return StatementPart(
            text=self.text,
            command=self.command,
            effect=self.effect.value,
            reads=tuple(sorted(self.relations_read)),
            writes=tuple(sorted(self.relations_written)),
            shapes=tuple(sorted(shape.value for shape in self.shapes)),
            problem=problem,
            reason=(self.reason or "") if self.effect is Effect.UNKNOWN else "",
            columns=_column_names(self.columns),
            derived_columns=tuple(
                sorted(_column_name(c) for c in self.derived_columns)
            ),
            stream_format=self.stream_format,
        )


def classify(
    text: str,
    state: SessionState = DEFAULT_STATE,
    *,
    allowed_functions: frozenset[str] = DEFAULT_ALLOWED_FUNCTIONS,
) -> tuple[Classification, ...]:
    """
    Classify each statement of a query string.

    Args:
        text: The query string as the client sent it.
        state: The session's search path, user, string and encoding
            settings when the string arrives.
        allowed_functions: Names of functions a statement may call
            (unqualified or in C{pg_catalog}) without being unknown.

    Returns:
        One classification per statement, in order; none for a string
        that holds no statement (PostgreSQL answers it with
        EmptyQueryResponse); a single C{unknown} one for the whole
        string when it cannot be read with certainty.
    """
    if len(text) > _CACHE_TEXT_LIMIT:
        return _classify(text, state, allowed_functions)
    return _classify_cached(text, state, allowed_functions)


@lru_cache(maxsize=_CACHE_SIZE)
def _classify_cached(
    text: str, state: SessionState, allowed_functions: frozenset[str]
) -> tuple[Classification, ...]:
    return _classify(text, state, allowed_functions)


def _classify(
    text: str, state: SessionState, allowed_functions: frozenset[str]
) -> tuple[Classification, ...]:
    doubt = _doubt(text, state)
    if doubt is not None:
        return (_unknown(text, doubt),)

    try:
        tree = json.loads(pg_parser.parse_sql_json(text))
    except pg_parser.ParseError as e:
        message = str(e.args[0]) if e.args else str(e)
        return (_unknown(text, "the parser rejected the text", message),)
    except RecursionError:
        return (_unknown(text, TOO_DEEP),)

    paths = _Paths(state)
    encoded = None if text.isascii() else text.encode("utf-8")
    result = []
    for raw in tree.get("stmts", []):
        statement = _statement_text(text, encoded, raw)
        result.append(_classify_statement(statement, raw, paths, allowed_functions))
        paths.follow(raw.get("stmt"))
    return tuple(result)


#: A statement naming more relations than this is refused unjudged.
MAX_RELATIONS: Final = 1000

#: Why a statement nesting deeper than the interpreter's recursion limit
#: allows is unknown.
TOO_DEEP: Final = "the statement nests too deeply to classify"


def too_deep(classes: Iterable[Classification]) -> bool:
    """
    Whether a classification failed only for the depth of its tree.
    """
    return any(c.reason == TOO_DEEP for c in classes)


def unclassified(text: str, reason: str) -> tuple[Classification, ...]:
    """
    A query string the gateway could not classify, as one statement the
    caller refuses.
    """
    return (_unknown(text, reason),)


def _unknown(text: str, reason: str, parse_error: str | None = None) -> Classification:
    return Classification(
        text=text,
        command="",
        effect=Effect.UNKNOWN,
        reason=reason,
        parse_error=parse_error,
        uncertain=True,
    )


_MAX_COMMENT_OPENERS = 1000


def _doubt(text: str, state: SessionState) -> str | None:
    """
    Why the server might read the text otherwise than the parser, if so.
    """
    if "\x00" in text:
        return "the text contains a NUL character"

    # The parser's scanner takes time growing with the square of nested
    # comments; past this many openers the text is refused unread rather
    # than stall the gateway for every session.
    if text.count("/*") > _MAX_COMMENT_OPENERS:
        return "the text opens too many comments to classify"

    if not text.isascii():
        encoding = re.sub(r"[^0-9a-z]", "", state.client_encoding.lower())
        if encoding in _UNSAFE_ENCODINGS:
            return (
                f"client encoding {state.client_encoding} can hide ASCII"
                " bytes inside multibyte characters"
            )
        if encoding not in _SAFE_ENCODINGS:
            return f"client encoding {state.client_encoding} is not known"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "the text is not valid Unicode"

    if not state.standard_conforming_strings and "\\" in text:
        return _backslash_doubt(text)
    return None


def _backslash_doubt(text: str) -> str | None:
    # Both readings of the text agree up to the first backslash inside
    # an ordinary literal, so the standard reading finds it too.
    try:
        tokens = pg_parser.scan(text)
    except pg_parser.ParseError:
        return "the text cannot be scanned"

    for token in tokens:
        literal = text[token.start : token.end + 1]
        if token.name == "SCONST" and literal[:1] == "'" and "\\" in literal:
            return (
                "standard_conforming_strings is off and a string literal"
                " holds a backslash"
            )
    return None


def _statement_text(text: str, encoded: bytes | None, raw: _Fields) -> str:
    # Offsets count UTF-8 bytes (the same as characters in ASCII text);
    # a length of 0 runs to the end.
    start = int(raw.get("stmt_location", 0))
    length = int(raw.get("stmt_len", 0))
    end = start + length if length else None
    if encoded is None:
        return text[start:end]
    return encoded[start:end].decode("utf-8")


def _classify_statement(
    text: str, raw: _Fields, paths: _Paths, allowed_functions: frozenset[str]
) -> Classification:
    kind, fields = _unwrap(raw.get("stmt"))
    walk = _Walk(paths, allowed_functions)
    walk.top = _own_query(kind, fields)
    # The walk recurses: within the interpreter's default limit, about
    # 300 nested operators are too deep, and the relay classifies such
    # statements again in a worker process with a higher limit.
    try:
        walk.typed(kind, fields)
    except RecursionError:
        return _unknown(text, TOO_DEEP)

    if len(walk.read) + len(walk.written) > MAX_RELATIONS:
        # Judging it would take seconds of every session's reactor.
        return _unknown(text, f"it names more than {MAX_RELATIONS} relations")

    effect, command = _decide(kind, fields, walk)
    reason = "; ".join(dict.fromkeys(walk.reasons)) or None
    walk.whole_rows()
    return Classification(
        text=text,
        command=command,
        effect=Effect.UNKNOWN if reason else effect,
        relations_read=frozenset(walk.read),
        relations_written=frozenset(walk.written),
        shapes=frozenset(walk.shapes),
        reason=reason,
        columns=walk.copy_columns or frozenset(walk.column_names),
        derived_columns=frozenset(walk.derived),
        stream_format=walk.stream_format,
        functions=frozenset(walk.functions),
        operators=frozenset(walk.operators),
        unqualified=frozenset(walk.unqualified),
        indirect=bool(reason) or _indirect(kind, fields),
        sets_path=_path_set(kind, fields),
        sets_roles=_roles_set(kind, fields),
    )


def carry(state: SessionState, classes: Iterable[Classification]) -> SessionState:
    """
    The state later query strings are classified with, once C{classes}
    were sent: the paths and roles they set join the ones already
    possible (the server may have applied them or not).
    """
    paths = list(state.more_paths)
    users = list(state.more_users)
    for item in classes:
        if item.sets_path is not None and item.sets_path not in paths:
            paths.append(item.sets_path)
        users.extend(r for r in item.sets_roles if r not in users)
    if len(paths) == len(state.more_paths) and len(users) == len(state.more_users):
        return state
    return attrs.evolve(state, more_paths=tuple(paths), more_users=tuple(users))


def _path_set(kind: str, fields: _Fields) -> tuple[str, ...] | None:
    if kind != "VariableSetStmt" or fields.get("name") != "search_path":
        return None
    if fields.get("kind") != "VAR_SET_VALUE":
        return None
    return tuple(_constant_texts(fields.get("args")))


def _roles_set(kind: str, fields: _Fields) -> tuple[str, ...]:
    if kind != "VariableSetStmt":
        return ()
    if fields.get("name") not in ("role", "session_authorization"):
        return ()
    return tuple(_constant_texts(fields.get("args")))


#: Statements after which later ones may run code or reach relations
#: they do not name.
_INDIRECT: Final = frozenset(
    {
        "ViewStmt", "RuleStmt", "CreateTrigStmt", "CreateFunctionStmt",
        "AlterFunctionStmt", "DefineStmt", "CreateCastStmt",
        "CreateTransformStmt", "CreateOpClassStmt", "CreateOpFamilyStmt",
        "AlterOpFamilyStmt", "AlterOperatorStmt", "CreateDomainStmt",
        "AlterDomainStmt", "CreatePolicyStmt", "AlterPolicyStmt",
        "RenameStmt", "AlterObjectSchemaStmt", "CreateEventTrigStmt",
        "AlterEventTrigStmt", "AlterRoleSetStmt", "AlterDatabaseSetStmt",
        "CreateExtensionStmt", "AlterExtensionStmt",
        "AlterExtensionContentsStmt", "CreateForeignTableStmt",
        "ImportForeignSchemaStmt", "CreateConversionStmt",
        "AlterSystemStmt", "CreatePLangStmt", "CreateStatsStmt",
        "CreateSchemaStmt",
    }
)  # fmt: skip

#: ALTER TABLE subcommands that add no code and no relation behind a table.
_PLAIN_ALTERATIONS: Final = frozenset(
    {
        "AT_AddColumn", "AT_ColumnDefault", "AT_DropNotNull", "AT_SetNotNull",
        "AT_SetStatistics", "AT_SetOptions", "AT_ResetOptions",
        "AT_SetStorage", "AT_SetCompression", "AT_DropColumn",
        "AT_AddIndex", "AT_AlterColumnType", "AT_ClusterOn",
        "AT_DropCluster", "AT_SetLogged", "AT_SetUnLogged",
        "AT_SetRelOptions", "AT_ResetRelOptions", "AT_ReplaceRelOptions",
        "AT_DropConstraint", "AT_ValidateConstraint", "AT_AddIdentity",
        "AT_SetIdentity", "AT_DropIdentity", "AT_DropExpression",
    }
)  # fmt: skip


def _indirect(kind: str, fields: _Fields) -> bool:
    """
    Whether a statement may change what later ones do beyond their text.
    """
    if kind in _INDIRECT:
        return True
    if kind == "CreateStmt":
        keys = ("inhRelations", "partbound", "ofTypename")
        return any(fields.get(key) for key in keys)
    if kind != "AlterTableStmt":
        return False
    for command in fields.get("cmds") or []:
        _, cmd = _unwrap(command)
        subtype = str(cmd.get("subtype", ""))
        if subtype not in _PLAIN_ALTERATIONS:
            # Constraints among them: a foreign key's action writes,
            # a check may run the target's own code.
            return True
    return False


def _own_query(kind: str, fields: _Fields) -> _Fields | None:
    """
    The query whose target list is the statement's own result.
    """
    if kind == "SelectStmt":
        return fields
    if kind == "DeclareCursorStmt":
        inner_kind, inner = _unwrap(fields.get("query"))
        return inner if inner_kind == "SelectStmt" else None
    return None


def _column_name(name: str) -> str:
    return name if name == "*" else _quote(name)


def _column_names(names: frozenset[str] | tuple[str, ...]) -> tuple[str, ...]:
    # A COPY column list keeps its order: it is the order of the fields.
    ordered = names if isinstance(names, tuple) else sorted(names)
    return tuple(_column_name(name) for name in ordered)


def _unwrap(node: object) -> tuple[str, _Fields]:
    if isinstance(node, dict) and len(node) == 1:
        ((kind, fields),) = node.items()
        if isinstance(kind, str) and isinstance(fields, dict):
            return kind, fields
    return "", {}


def _svals(items: object) -> list[str]:
    """
    The texts of a list of String nodes (a qualified name).
    """
    if not isinstance(items, list):
        return []
    names = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("String"), dict):
            names.append(str(item["String"].get("sval", "")))
    return names


def _quote(part: str) -> str:
    if _PLAIN_IDENTIFIER.fullmatch(part):
        return part
    return '"' + part.replace('"', '""') + '"'


def quote_name(part: str) -> str:
    """
    One name as classifications render it: double-quoted unless it is a
    plain lower-case identifier.
    """
    return _quote(part)


def qualified_name(schema: str, name: str) -> str:
    """
    C{schema.name} as classifications render relations: each part
    double-quoted unless it is a plain lower-case identifier.
    """
    return f"{_quote(schema)}.{_quote(name)}"


_qualified = qualified_name


class _Paths:
    """
    The search paths a string's statements may resolve names with.

    A SET earlier in the string adds to them rather than replacing
    them: it may have failed, or been rolled back, before the statement
    that follows it runs.
    """

    def __init__(self, state: SessionState) -> None:
        self._paths: list[tuple[str, ...]] = [state.search_path, *state.more_paths]
        self._users: list[str] = [state.user] if state.user else []
        self._users.extend(state.more_users)
        self.reset = False
        self._update()

    def _update(self) -> None:
        schemas: dict[str, None] = {}
        for path in self._paths:
            for entry in path:
                for schema in self._users if entry == "$user" else (entry,):
                    schemas[schema] = None
        self.schemas = tuple(schemas)
        # Built-in names are trusted while pg_catalog is searched first.
        self.builtins_trusted = all(
            "pg_catalog" not in path or path[0] == "pg_catalog" for path in self._paths
        )

    def follow(self, node: object) -> None:
        """
        Take in a statement that may change name resolution for later ones.
        """
        kind, fields = _unwrap(node)
        if kind == "DiscardStmt" and fields.get("target") == "DISCARD_ALL":
            self.reset = True
        if kind != "VariableSetStmt":
            return

        name = fields.get("name", "")
        action = fields.get("kind", "")
        values = _constant_texts(fields.get("args"))
        if action == "VAR_RESET_ALL" or (
            name == "search_path" and action in ("VAR_RESET", "VAR_SET_DEFAULT")
        ):
            self.reset = True
        elif name == "search_path" and action == "VAR_SET_VALUE":
            self._paths.append(tuple(values))
        elif name in ("role", "session_authorization") and values:
            self._users.extend(values)
        self._update()


def _constant_texts(args: object) -> list[str]:
    if not isinstance(args, list):
        return []
    texts = []
    for arg in args:
        _, const = _unwrap(arg)
        value = const.get("sval")
        if isinstance(value, dict) and "sval" in value:
            texts.append(str(value["sval"]))
    return texts


class _Walk:
    """
    One pass over a statement's tree, collecting what it touches.

    Attributes:
        read: Relations read.
        written: Relations written.
        shapes: Shapes seen.
        reasons: Why the statement is unknown, if it is.
        dml: How many INSERT, UPDATE, DELETE and MERGE nodes it holds.
        columns: How many column references it holds (so far).
        select_into: Whether it creates a table with SELECT INTO.
        top: The statement's own query, whose plain targets are plain.
        column_names: Column names referred to.
        derived: Column names used other than as plain output.
        stream_format: COPY TO STDOUT's format, if that is the statement.
        copy_columns: COPY TO's column list of a table, or C{*}.
    """

    def __init__(self, paths: _Paths, allowed_functions: frozenset[str]) -> None:
        self._paths = paths
        self._allowed = allowed_functions
        self._ctes: list[str] = []
        self.columns = 0
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.shapes: set[Shape] = set()
        self.reasons: list[str] = []
        self.dml = 0
        self.select_into = False
        self.top: _Fields | None = None
        self.column_names: set[str] = set()
        self.derived: set[str] = set()
        self.stream_format = ""
        self.copy_columns: tuple[str, ...] = ()
        self._singles: set[str] = set()
        self._names: set[str] = set()
        self._cte_names: set[str] = set()
        self.functions: set[str] = set()
        self.operators: set[str] = set()
        self.unqualified: set[str] = set()

    # The generic walk.

    def node(self, value: object) -> None:
        """
        Walk a node, a list of nodes or a bare struct.
        """
        if isinstance(value, list):
            for item in value:
                self.node(item)
            return
        if not isinstance(value, dict) or not value:
            return

        if len(value) == 1:
            ((kind, fields),) = value.items()
            if kind[:1].isupper() and isinstance(fields, dict):
                self.typed(kind, fields)
                return
        if "relname" in value:
            self.range_var(value)
        else:
            if isinstance(value.get("aliasname"), str):
                self._names.add(value["aliasname"])
            self.children(value)

    def typed(self, kind: str, fields: _Fields) -> None:
        """
        Walk a node whose kind is known.
        """
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, fields)
            return
        self.typed_default(kind, fields)

    def typed_default(self, kind: str, fields: _Fields) -> None:
        """
        Walk a node the generic way: its target fields as written.
        """
        targets = _TARGETS.get(kind, ())
        for key in targets:
            self.target(fields.get(key))
        if kind.startswith("Drop"):
            self.shapes.add(Shape.DROP)
        self.children(fields, targets)

    def children(self, fields: _Fields, skip: Iterable[str] = ()) -> None:
        """
        Walk the fields of a node, but those in C{skip}.
        """
        for key, value in fields.items():
            if isinstance(value, dict | list) and key not in skip:
                self.node(value)

    # Relations.

    def resolve(self, schema: str | None, name: str) -> Iterator[str]:
        """
        The names a relation may stand for.
        """
        if schema is not None:
            yield _qualified(schema, name)
            return

        if self._paths.reset:
            self.reasons.append(
                "search_path was reset earlier in the string, so"
                f" {_quote(name)} cannot be resolved"
            )
        if name.startswith("pg_"):
            yield _qualified("pg_catalog", name)
        for path_schema in self._paths.schemas:
            yield _qualified(path_schema, name)
        if not self._paths.schemas:
            yield _quote(name)
        # A temporary relation of that name answers first.
        self.unqualified.add(name)

    def _range_var_names(self, fields: _Fields) -> Iterator[str]:
        schema = fields.get("schemaname")
        if schema is None and fields.get("relpersistence") == "t":
            schema = "pg_temp"
        return self.resolve(schema, str(fields.get("relname", "")))

    def range_var(self, fields: _Fields) -> None:
        """
        A relation read, unless it names a common table expression.
        """
        self._name_of(fields)
        if "schemaname" not in fields and fields.get("relname") in self._ctes:
            return
        self.read.update(self._range_var_names(fields))

    def _name_of(self, fields: _Fields) -> None:
        self._names.add(str(fields.get("relname", "")))
        alias = fields.get("alias")
        if isinstance(alias, dict) and isinstance(alias.get("aliasname"), str):
            self._names.add(alias["aliasname"])
        if isinstance(alias, dict) and alias.get("colnames"):
            # customers as t(a, b, c): the statement's names are not the
            # table's, so every column counts as used, and not plainly.
            self.column_names.add("*")
            self.derived.add("*")

    # Column references.

    def reference(self, fields: _Fields, plain: bool) -> None:
        """
        A column reference (C{ColumnRef}), plain output or not.
        """
        parts = fields.get("fields")
        if not isinstance(parts, list) or not parts:
            return
        last_kind, last = _unwrap(parts[-1])
        name = "*" if last_kind == "A_Star" else str(last.get("sval", ""))
        if len(parts) == 1 and name != "*":
            self._singles.add(name)
        self.column_names.add(name)
        if not plain:
            self.derived.add(name)

    def assigned(self, name: object) -> None:
        """
        A column a statement writes (INSERT column list, UPDATE SET).
        """
        if isinstance(name, str) and name:
            self.column_names.add(name)
            self.derived.add(name)

    def plain_targets(self, targets: object, derived: bool) -> None:
        """
        The target list of the statement's own query: a column standing
        alone there is plain output (unless C{derived}, for DISTINCT).
        """
        for item in targets if isinstance(targets, list) else []:
            _, target = _unwrap(item)
            kind, value = _unwrap(target.get("val"))
            if kind == "ColumnRef":
                self.columns += 1
                self.reference(value, plain=not derived)
            else:
                self.node(target.get("val"))

    def whole_rows(self) -> None:
        """
        Count single names that may stand for a whole row (a table,
        alias or CTE name) as derived uses of every column.
        """
        if self._singles & (self._names | set(self._ctes) | self._cte_names):
            self.column_names.add("*")
            self.derived.add("*")

    def target(self, value: object) -> None:
        """
        One relation written, or a list of them.
        """
        if isinstance(value, list):
            for item in value:
                self.target(item)
            return
        if isinstance(value, dict) and isinstance(value.get("RangeVar"), dict):
            value = value["RangeVar"]
        if isinstance(value, dict) and "relname" in value:
            self.written.update(self._range_var_names(value))

    def named_targets(self, objects: object, members: bool) -> None:
        """
        Relations written, given as lists of name parts (DROP, COMMENT).
        """
        for item in objects if isinstance(objects, list) else [objects]:
            _, names = _unwrap(item)
            parts = _svals(names.get("items"))
            if members:
                parts = parts[:-1]
            if parts:
                schema = parts[-2] if len(parts) > 1 else None
                self.written.update(self.resolve(schema, parts[-1]))

    # Scopes of common table expressions.

    def with_clause(self, clause: object) -> int:
        """
        Walk a WITH clause; its names stay in scope until L{end_with}.
        """
        if not isinstance(clause, dict):
            return 0

        ctes = [_unwrap(item)[1] for item in clause.get("ctes", [])]
        names = [str(cte.get("ctename", "")) for cte in ctes]
        self._cte_names.update(names)
        recursive = bool(clause.get("recursive"))
        if recursive:
            self._ctes.extend(names)
        for cte, name in zip(ctes, names, strict=True):
            kind, _ = _unwrap(cte.get("ctequery"))
            if kind in _DML:
                self.shapes.add(Shape.WRITING_CTE)
            self.children(cte)
            if not recursive:
                self._ctes.append(name)
        return len(names)

    def end_with(self, count: int) -> None:
        """
        Take the names of a WITH clause out of scope.
        """
        if count:
            del self._ctes[-count:]

    def filtered(self, where: object, shape: Shape) -> None:
        """
        Walk a WHERE clause, noting C{shape} if it mentions no column.
        """
        before = self.columns
        self.node(where)
        if self.columns == before:
            self.shapes.add(shape)

    # Calls.

    def unknown(self, shape: Shape, reason: str) -> None:
        """
        Note something the gateway cannot see into.
        """
        self.shapes.add(shape)
        self.reasons.append(reason)

    def builtin(self, names: list[str], allowed: frozenset[str]) -> bool:
        """
        Whether a function, operator or type name is a trusted built-in.
        """
        # Whether the name is shadowed on the target (an overload in a
        # schema on the search path) is the catalog's to say: the
        # classification lists the names it trusted.
        if len(names) == 2 and names[0] == "pg_catalog":
            return names[1] in allowed
        if len(names) == 1:
            return self._paths.builtins_trusted and names[0] in allowed
        if len(names) == 2:
            # A function of the target's own the operator vouches for.
            schema = _quote(names[0])
            return f"{schema}.{_quote(names[1])}" in allowed or f"{schema}.*" in allowed
        return False

    def operator(self, name: object) -> None:
        """
        An operator, if a name is given.
        """
        names = _svals(name)
        if len(names) == 1:
            self.operators.add(names[0])
        if names and not self.builtin(names, _OPERATORS):
            self.unknown(
                Shape.FUNCTION_CALL,
                f"operator {'.'.join(names)} is not a built-in one",
            )

    def function(self, fields: _Fields) -> None:
        """
        A function call.
        """
        names = _svals(fields.get("funcname"))
        grammar = fields.get("funcformat") == "COERCE_SQL_SYNTAX"
        if len(names) == 1:
            self.functions.add(names[0])
        if not grammar and not self.builtin(names, self._allowed):
            dotted = ".".join(_quote(name) for name in names)
            self.unknown(
                Shape.FUNCTION_CALL,
                f"function {dotted} is not on the allow-list",
            )
            if names and names[-1] in _DYNAMIC_SQL_FUNCTIONS:
                self.shapes.add(Shape.DYNAMIC_SQL)
        self.children(fields, ("funcname",))


def _select(walk: _Walk, fields: _Fields) -> None:
    scope = walk.with_clause(fields.get("withClause"))
    into = fields.get("intoClause")
    if isinstance(into, dict):
        _into(walk, into)
        walk.shapes.add(Shape.SELECT_INTO)
        walk.select_into = True
    if fields.get("lockingClause"):
        walk.shapes.add(Shape.LOCK)
    for side in ("larg", "rarg"):
        arm = fields.get(side)
        if isinstance(arm, dict):
            _select(walk, arm)
    own = fields is walk.top and fields.get("op", "SETOP_NONE") == "SETOP_NONE"
    if own and not isinstance(into, dict):
        walk.plain_targets(fields.get("targetList"), bool(fields.get("distinctClause")))
        walk.children(fields, _SELECT_OWN_HANDLED)
    else:
        walk.children(fields, _SELECT_HANDLED)
    walk.end_with(scope)


_SELECT_HANDLED: Final = frozenset(
    {"withClause", "intoClause", "lockingClause", "larg", "rarg"}
)
_SELECT_OWN_HANDLED: Final = _SELECT_HANDLED | {"targetList"}


def _into(walk: _Walk, into: _Fields) -> None:
    walk.target(into.get("rel"))


def _modify(walk: _Walk, fields: _Fields, shape: Shape | None) -> None:
    walk.dml += 1
    scope = walk.with_clause(fields.get("withClause"))
    walk.target(fields.get("relation"))
    if shape is not None:
        walk.filtered(fields.get("whereClause"), shape)
    walk.children(fields, _MODIFY_HANDLED)
    walk.end_with(scope)


_MODIFY_HANDLED: Final = frozenset({"withClause", "relation", "whereClause"})


def _insert(walk: _Walk, fields: _Fields) -> None:
    _assignments(walk, fields.get("cols"))
    _modify(walk, fields, None)


def _update(walk: _Walk, fields: _Fields) -> None:
    _assignments(walk, fields.get("targetList"))
    _modify(walk, fields, Shape.UPDATE_WITHOUT_WHERE)


def _assignments(walk: _Walk, targets: object) -> None:
    for item in targets if isinstance(targets, list) else []:
        walk.assigned(_unwrap(item)[1].get("name"))


def _delete(walk: _Walk, fields: _Fields) -> None:
    _modify(walk, fields, Shape.DELETE_WITHOUT_WHERE)


def _merge(walk: _Walk, fields: _Fields) -> None:
    _modify(walk, fields, None)


def _range_var(walk: _Walk, fields: _Fields) -> None:
    walk.range_var(fields)


def _column(walk: _Walk, fields: _Fields) -> None:
    walk.columns += 1
    walk.reference(fields, plain=False)


def _function(walk: _Walk, fields: _Fields) -> None:
    walk.function(fields)


def _operator(walk: _Walk, fields: _Fields) -> None:
    if fields.get("kind") not in _KEYWORD_EXPRESSIONS:
        walk.operator(fields.get("name"))
    walk.children(fields, ("name",))


def _sublink(walk: _Walk, fields: _Fields) -> None:
    # x = ANY (SELECT ...) names its operator.
    walk.operator(fields.get("operName"))
    walk.children(fields, ("operName",))


def _sort(walk: _Walk, fields: _Fields) -> None:
    # ORDER BY x USING < names its operator.
    walk.operator(fields.get("useOp"))
    walk.children(fields, ("useOp",))


def _cast(walk: _Walk, fields: _Fields) -> None:
    type_name = fields.get("typeName")
    names = _svals(type_name.get("names")) if isinstance(type_name, dict) else []
    if not walk.builtin(names, _TYPES):
        dotted = ".".join(_quote(name) for name in names)
        walk.unknown(
            Shape.FUNCTION_CALL,
            f"a cast to type {dotted} may run its functions",
        )
    walk.children(fields, ("typeName",))


def _sample(walk: _Walk, fields: _Fields) -> None:
    names = _svals(fields.get("method"))
    if not walk.builtin(names, _SAMPLING_METHODS):
        walk.unknown(
            Shape.FUNCTION_CALL,
            f"sampling method {'.'.join(names)} is not a built-in one",
        )
    walk.children(fields, ("method",))


def _do(walk: _Walk, fields: _Fields) -> None:
    walk.unknown(Shape.DYNAMIC_SQL, "a DO block runs code the gateway cannot see")


def _call(walk: _Walk, fields: _Fields) -> None:
    walk.unknown(Shape.FUNCTION_CALL, "CALL runs a procedure")
    call = fields.get("funccall")
    if isinstance(call, dict):
        walk.children(call, ("funcname",))


def _execute(walk: _Walk, fields: _Fields) -> None:
    walk.unknown(Shape.DYNAMIC_SQL, "EXECUTE runs a statement prepared earlier")
    walk.children(fields)


def _prepare(walk: _Walk, fields: _Fields) -> None:
    walk.reasons.append("PREPARE stores a statement for a later EXECUTE")
    walk.children(fields)


def _load(walk: _Walk, fields: _Fields) -> None:
    walk.reasons.append("LOAD loads a library into the server")


def _copy(walk: _Walk, fields: _Fields) -> None:
    relation = fields.get("relation")
    if fields.get("is_from"):
        walk.shapes.add(Shape.COPY_FROM)
        walk.target(relation)
    else:
        walk.shapes.add(Shape.COPY_TO)
        if isinstance(relation, dict):
            walk.range_var(relation)
            _copy_columns(walk, fields.get("attlist"))
        if not fields.get("filename") and not fields.get("is_program"):
            walk.stream_format = _copy_format(fields.get("options"))
    if fields.get("is_program"):
        walk.unknown(Shape.COPY_PROGRAM, "COPY ... PROGRAM runs a server command")
    walk.children(fields, ("relation", "attlist"))


def _copy_columns(walk: _Walk, attlist: object) -> None:
    walk.copy_columns = tuple(_svals(attlist)) or ("*",)


def _copy_format(options: object) -> str:
    """
    The stream format of COPY TO STDOUT, from its options.
    """
    kind, header = "text", False
    for option in options if isinstance(options, list) else []:
        _, element = _unwrap(option)
        name = element.get("defname")
        arg_kind, arg = _unwrap(element.get("arg"))
        if name == "format" and arg_kind == "String":
            kind = str(arg.get("sval", ""))
        elif name == "header":
            header = not (
                _false(element.get("arg")) or (arg_kind == "Boolean" and not arg)
            )
        else:
            return "other"
    if kind not in ("text", "csv", "binary"):
        return "other"
    if header and kind != "binary":
        return f"{kind}+header"
    return kind


def _truncate(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.add(Shape.TRUNCATE)
    walk.target(fields.get("relations"))


def _lock(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.add(Shape.LOCK)
    walk.target(fields.get("relations"))


def _drop(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.add(Shape.DROP)
    objects = fields.get("objects")
    kind = fields.get("removeType")
    if kind in _RELATION_OBJECTS or kind in _RELATION_MEMBERS:
        walk.named_targets(objects, kind in _RELATION_MEMBERS)


def _drop_owned(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.update((Shape.DROP, Shape.REVOKE))


def _comment(walk: _Walk, fields: _Fields) -> None:
    kind = fields.get("objtype")
    if kind in _RELATION_OBJECTS or kind in _RELATION_MEMBERS:
        walk.named_targets(fields.get("object"), kind in _RELATION_MEMBERS)


def _rename(walk: _Walk, fields: _Fields) -> None:
    if fields.get("renameType") == "OBJECT_SCHEMA":
        # Every relation of the schema changes its name.
        walk.written.add(f"{_quote(str(fields.get('subname', '')))}.*")
    walk.typed_default("RenameStmt", fields)


def _alter_table_command(walk: _Walk, fields: _Fields) -> None:
    subtype = fields.get("subtype")
    if subtype == "AT_DropColumn":
        walk.shapes.add(Shape.DROP)
    if subtype == "AT_AddInherit":
        # The table's rows show in the new parent from now on.
        walk.target(fields.get("def"))
        walk.children(fields, ("def",))
        return
    walk.children(fields)


def _grant(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.add(Shape.GRANT if fields.get("is_grant") else Shape.REVOKE)
    on_relations = (
        fields.get("targtype") == "ACL_TARGET_OBJECT"
        and fields.get("objtype") in _RELATION_OBJECTS
    )
    if on_relations:
        walk.target(fields.get("objects"))
    walk.children(fields, ("objects",) if on_relations else ())


def _grant_role(walk: _Walk, fields: _Fields) -> None:
    walk.shapes.add(Shape.GRANT if fields.get("is_grant") else Shape.REVOKE)
    walk.children(fields)


def _default_privileges(walk: _Walk, fields: _Fields) -> None:
    action = fields.get("action")
    if isinstance(action, dict):
        _grant(walk, action)


def _create_table_as(walk: _Walk, fields: _Fields) -> None:
    into = fields.get("into")
    if isinstance(into, dict):
        _into(walk, into)
    walk.children(fields, ("into",))


_Handler = Callable[[_Walk, _Fields], None]

# How the walk treats each kind of node with more to it than its fields.
_HANDLERS: Final[dict[str, _Handler]] = {
    "SelectStmt": _select,
    "InsertStmt": _insert,
    "UpdateStmt": _update,
    "DeleteStmt": _delete,
    "MergeStmt": _merge,
    "RangeVar": _range_var,
    "ColumnRef": _column,
    "CurrentOfExpr": _column,
    "FuncCall": _function,
    "A_Expr": _operator,
    "SubLink": _sublink,
    "SortBy": _sort,
    "TypeCast": _cast,
    "RangeTableSample": _sample,
    "DoStmt": _do,
    "CallStmt": _call,
    "ExecuteStmt": _execute,
    "PrepareStmt": _prepare,
    "LoadStmt": _load,
    "CopyStmt": _copy,
    "TruncateStmt": _truncate,
    "LockStmt": _lock,
    "DropStmt": _drop,
    "DropOwnedStmt": _drop_owned,
    "CommentStmt": _comment,
    "AlterTableCmd": _alter_table_command,
    "RenameStmt": _rename,
    "GrantStmt": _grant,
    "GrantRoleStmt": _grant_role,
    "AlterDefaultPrivilegesStmt": _default_privileges,
    "CreateTableAsStmt": _create_table_as,
}

# Fields naming relations a node changes; its other fields are walked.
_TARGETS: Final[dict[str, tuple[str, ...]]] = {
    "CreateStmt": ("relation", "inhRelations"),
    "AlterTableStmt": ("relation",),
    "IndexStmt": ("relation",),
    "RenameStmt": ("relation",),
    "AlterObjectSchemaStmt": ("relation",),
    "AlterOwnerStmt": ("relation",),
    "ViewStmt": ("view",),
    "RefreshMatViewStmt": ("relation",),
    "ClusterStmt": ("relation",),
    "ReindexStmt": ("relation",),
    "VacuumRelation": ("relation",),
    "PartitionCmd": ("name",),
    "CreateTrigStmt": ("relation",),
    "RuleStmt": ("relation",),
    "CreatePolicyStmt": ("table",),
    "AlterPolicyStmt": ("table",),
    "CreateSeqStmt": ("sequence",),
    "AlterSeqStmt": ("sequence",),
}


# Deciding a statement's effect and command word.

_FIXED: Final[dict[str, tuple[Effect, str]]] = {
    "SelectStmt": (Effect.READ, "SELECT"),
    "InsertStmt": (Effect.WRITE, "INSERT"),
    "UpdateStmt": (Effect.WRITE, "UPDATE"),
    "DeleteStmt": (Effect.WRITE, "DELETE"),
    "MergeStmt": (Effect.WRITE, "MERGE"),
    "TruncateStmt": (Effect.WRITE, "TRUNCATE"),
    "LockStmt": (Effect.WRITE, "LOCK"),
    "NotifyStmt": (Effect.WRITE, "NOTIFY"),
    "VariableShowStmt": (Effect.READ, "SHOW"),
    "DoStmt": (Effect.UNKNOWN, "DO"),
    "CallStmt": (Effect.UNKNOWN, "CALL"),
    "ExecuteStmt": (Effect.UNKNOWN, "EXECUTE"),
    "PrepareStmt": (Effect.UNKNOWN, "PREPARE"),
    "LoadStmt": (Effect.UNKNOWN, "LOAD"),
    "DeallocateStmt": (Effect.SESSION, "DEALLOCATE"),
    "DiscardStmt": (Effect.SESSION, "DISCARD"),
    "ListenStmt": (Effect.SESSION, "LISTEN"),
    "UnlistenStmt": (Effect.SESSION, "UNLISTEN"),
    "ClosePortalStmt": (Effect.SESSION, "CLOSE"),
    "ConstraintsSetStmt": (Effect.TRANSACTION, "SET"),
    "CheckPointStmt": (Effect.DDL, "CHECKPOINT"),
    "CommentStmt": (Effect.DDL, "COMMENT"),
    "SecLabelStmt": (Effect.DDL, "SECURITY"),
    "RenameStmt": (Effect.DDL, "ALTER"),
    "RuleStmt": (Effect.DDL, "CREATE"),
    "ViewStmt": (Effect.DDL, "CREATE"),
    "IndexStmt": (Effect.DDL, "CREATE"),
    "CompositeTypeStmt": (Effect.DDL, "CREATE"),
    "DefineStmt": (Effect.DDL, "CREATE"),
    "CreateTableAsStmt": (Effect.DDL, "CREATE"),
    "RefreshMatViewStmt": (Effect.DDL, "REFRESH"),
    "ImportForeignSchemaStmt": (Effect.DDL, "IMPORT"),
    "DropOwnedStmt": (Effect.DDL, "DROP"),
    "CreateRoleStmt": (Effect.PRIVILEGE, "CREATE"),
    "AlterRoleStmt": (Effect.PRIVILEGE, "ALTER"),
    "AlterRoleSetStmt": (Effect.PRIVILEGE, "ALTER"),
    "DropRoleStmt": (Effect.PRIVILEGE, "DROP"),
    "AlterDefaultPrivilegesStmt": (Effect.PRIVILEGE, "ALTER"),
    "ReassignOwnedStmt": (Effect.PRIVILEGE, "REASSIGN"),
    "AlterOwnerStmt": (Effect.PRIVILEGE, "ALTER"),
    "CreatePolicyStmt": (Effect.PRIVILEGE, "CREATE"),
    "AlterPolicyStmt": (Effect.PRIVILEGE, "ALTER"),
}


def _decide(kind: str, fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    """
    A statement's effect and command word, once its tree was walked.
    """
    fixed = _FIXED.get(kind)
    if fixed is not None:
        effect, command = fixed
    elif kind in _DECIDERS:
        effect, command = _DECIDERS[kind](fields, walk)
    elif kind.startswith("Create"):
        effect, command = Effect.DDL, "CREATE"
    elif kind.startswith("Alter"):
        effect, command = Effect.DDL, "ALTER"
    elif kind.startswith("Drop"):
        effect, command = Effect.DDL, "DROP"
    else:
        walk.reasons.append(f"statement type {kind} is not classified")
        effect, command = Effect.UNKNOWN, kind.removesuffix("Stmt").upper()

    if effect is Effect.READ and walk.select_into:
        effect = Effect.DDL
    elif effect is Effect.READ and walk.dml:
        effect = Effect.WRITE
    return effect, command


def _decide_copy(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    # COPY TO a server file writes that file.
    if fields.get("is_from") or fields.get("filename"):
        return Effect.WRITE, "COPY"
    return Effect.READ, "COPY"


def _decide_explain(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    kind, inner = _unwrap(fields.get("query"))
    if _analyzes(fields.get("options")):
        effect, _ = _decide(kind, inner, walk)
        return effect, "EXPLAIN"

    # Only planned: what the statement would change, it merely reads.
    walk.read |= walk.written
    walk.written.clear()
    walk.shapes -= _PLANNED_ONLY
    walk.dml = 0
    walk.select_into = False
    return Effect.READ, "EXPLAIN"


def _analyzes(options: object) -> bool:
    for option in options if isinstance(options, list) else []:
        _, element = _unwrap(option)
        if element.get("defname") != "analyze":
            continue
        if not _false(element.get("arg")):
            return True
    return False


def _false(arg: object) -> bool:
    # An option's value as PostgreSQL's defGetBoolean reads it; no
    # value at all means true.
    kind, value = _unwrap(arg)
    if kind == "String":
        return str(value.get("sval", "")).lower() in ("false", "off")
    return kind == "Integer" and not value.get("ival")


def _decide_cursor(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    kind, inner = _unwrap(fields.get("query"))
    effect, _ = _decide(kind, inner, walk)
    return effect, "DECLARE"


def _decide_set(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    name = fields.get("name", "")
    reset = fields.get("kind") in ("VAR_RESET", "VAR_RESET_ALL")
    command = "RESET" if reset else "SET"
    if name in ("role", "session_authorization"):
        return Effect.PRIVILEGE, command
    if name == "TRANSACTION":
        return Effect.TRANSACTION, command
    return Effect.SESSION, command


def _decide_transaction(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    command = _TRANSACTION_COMMANDS.get(str(fields.get("kind")), "TRANSACTION")
    return Effect.TRANSACTION, command


def _decide_grant(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    return Effect.PRIVILEGE, "GRANT" if fields.get("is_grant") else "REVOKE"


def _decide_vacuum(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    command = "VACUUM" if fields.get("is_vacuumcmd") else "ANALYZE"
    if not fields.get("rels"):
        walk.reasons.append(_EVERY_TABLE.format(command=command))
    return Effect.DDL, command


_EVERY_TABLE = (
    "{command} of every table runs the index expressions of all of them,"
    " which the gateway does not follow"
)


def _decide_reindex(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    if not fields.get("relation"):
        walk.reasons.append(_EVERY_TABLE.format(command="REINDEX"))
    return Effect.DDL, "REINDEX"


def _decide_cluster(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    if not fields.get("relation"):
        walk.reasons.append(_EVERY_TABLE.format(command="CLUSTER"))
    return Effect.DDL, "CLUSTER"


def _decide_fetch(fields: _Fields, walk: _Walk) -> tuple[Effect, str]:
    return Effect.READ, "MOVE" if fields.get("ismove") else "FETCH"


_Decider = Callable[[_Fields, _Walk], tuple[Effect, str]]

_DECIDERS: Final[dict[str, _Decider]] = {
    "CopyStmt": _decide_copy,
    "ExplainStmt": _decide_explain,
    "DeclareCursorStmt": _decide_cursor,
    "VariableSetStmt": _decide_set,
    "TransactionStmt": _decide_transaction,
    "GrantStmt": _decide_grant,
    "GrantRoleStmt": _decide_grant,
    "VacuumStmt": _decide_vacuum,
    "ReindexStmt": _decide_reindex,
    "ClusterStmt": _decide_cluster,
    "FetchStmt": _decide_fetch,
}
