"""
Masking rules: which values are hidden from whom, read from
C{policy.masking}.

A masking rule names whom it is about (subjects, groups), where
(targets), for which statements (C{effects}, optional), how it acts
(C{enforce} or C{dry-run}), what it masks and how:

  - C{columns}: columns by lineage, C{schema.table.column},
    C{table.column} (any schema) or C{schema.table.*}; the protocol
    plugin tells which table and column each result column comes from;
  - C{detect}: detectors (built-in names or custom ones from
    C{masking.detectors}) that scan every other textual value of a
    result, and the texts of errors and notices;
  - C{strategy}: C{redact}, C{null}, C{hash} (keyed, with
    C{masking.key}) or C{keep_last: N}.

When several rules of one mode mask a column, the strictest strategy
wins (C{null}, then C{redact}, C{hash}, C{keep_last}), ties in file
order.  C{masking.strict} refuses statements that use a masked column
other than as a plain output column (conditions, expressions, casts,
whole rows), for identities an enforce column rule applies to.

L{SessionMasking} is one session's view of the rules, computed once per
identity and target; it also masks what recordings write of statements
and parameters.  C{docs/configuration.md} is the user's reference.

test-case-name: tests.unit.test_maskrules
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from attrs import field, frozen
from pglast.parser import ParseError, scan

from hoopgate._configreader import ConfigReader
from hoopgate._events import (
    DiagnosticReceived,
    Event,
    Notice,
    Parameter,
    SessionClosed,
    SessionRefused,
    StatementBound,
    StatementCompleted,
    StatementPart,
    StatementReceived,
)
from hoopgate._guardrails import (
    RelationPattern,
    parse_relation_pattern,
    read_groups,
    statement_parts,
)
from hoopgate._identity import Identity
from hoopgate._masking import (
    DETECTORS,
    NULLIFY,
    REDACT,
    REDACTED,
    Detector,
    KeepLast,
    KeyedHash,
    Strategy,
    custom_detector,
    mask_text,
)
from hoopgate._scope import check_scope_targets, in_scope

MODES: Final = ("enforce", "dry-run")

#: Strategy names, strictest first: when rules disagree, the first wins.
STRATEGIES: Final = ("null", "redact", "hash", "keep_last")

#: Statement effects a rule's C{effects} may list.
EFFECTS: Final = frozenset(
    {"read", "write", "ddl", "privilege", "transaction", "session", "unknown"}
)

#: Rows of each result a recording keeps, by default.
DEFAULT_RECORD_ROWS: Final = 1000

#: Bytes of each result a recording keeps, by default (1 MiB).
DEFAULT_RECORD_BYTES: Final = 1 << 20

#: Stream formats (C{StatementPart.stream_format}) masking can read.
READABLE_STREAMS: Final = frozenset({"text", "text+header", "csv", "csv+header"})

_PLAIN_NAME: Final = re.compile(r"[a-z_][a-z0-9_$]*")
_SIZE: Final = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*")
_UNITS: Final = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_LITERALS: Final = frozenset({"SCONST", "USCONST", "BCONST", "XCONST"})
_MASKED_LITERAL: Final = f"'{REDACTED}'"
_REMEMBERED_STATEMENTS: Final = 1024
_UNCHECKED: Final = "cannot be checked for masked columns"
_UNKNOWN_USE: Final = (
    "uses a table with masked columns in a way the gateway cannot check"
)
_WHOLE_ROW: Final = "uses a whole row or * of a table with masked columns"
_UNSCANNABLE: Final = "[statement withheld: it uses masked columns and cannot be read]"


def render_name(name: str) -> str:
    """
    A column or relation name part as rules and classifiers write it: a
    plain lower-case identifier as is, anything else double-quoted.
    """
    if name == "*" or _PLAIN_NAME.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


# Column patterns.


def _segments(text: str) -> list[str] | None:
    """
    Split a dotted name into its parts as written (quotes kept); C{None}
    when the quotes or dots do not add up.
    """
    segments = []
    position = 0
    while True:
        start = position
        if text.startswith('"', position):
            end = position + 1
            while True:
                end = text.find('"', end)
                if end < 0:
                    return None
                if not text.startswith('""', end):
                    break
                end += 2
            position = end + 1
        else:
            end = text.find(".", position)
            position = len(text) if end < 0 else end
        segment = text[start:position]
        if segment in ("", '""'):
            return None
        segments.append(segment)
        if position == len(text):
            return segments
        if text[position] != ".":
            return None
        position += 1


def _column_name(segment: str, text: str) -> str:
    if segment.startswith('"'):
        return render_name(segment[1:-1].replace('""', '"'))
    if segment == "*" or _PLAIN_NAME.fullmatch(segment):
        return segment
    raise ValueError(
        f"column {segment!r} in {text!r} must be written in lower case, as "
        f'PostgreSQL folds unquoted names, or quoted: "{segment}"'
    )


@frozen
class ColumnPattern:
    """
    A column in a rule, matched against result columns by lineage.

    Attributes:
        text: The pattern as written.
        relation: The table it names.
        column: The rendered column name, or C{*} for every column.
    """

    text: str
    relation: RelationPattern
    column: str

    def matches(self, table: str, column: str) -> bool:
        """
        Whether a result column from C{column} of C{table} is this one.
        A column without lineage (an expression) matches no pattern.
        """
        if not table or not column:
            return False
        if self.column != "*" and self.column != render_name(column):
            return False
        return self.relation.could_match(table)

    def covers(self, relation: str) -> bool:
        """
        Whether C{relation} (as a statement part names it) may be this
        pattern's table.
        """
        return self.relation.could_match(relation)


def parse_column_pattern(text: str) -> ColumnPattern:
    """
    Read a column pattern: C{schema.table.column}, C{table.column} or
    either with C{*} for the column.

    Raises:
        ValueError: It is not one; the message says why.
    """
    segments = _segments(text)
    if segments is None or not 2 <= len(segments) <= 3:
        raise ValueError(
            f"{text!r} is not a column (schema.table.column or table.column)"
        )
    column = _column_name(segments[-1], text)
    relation = parse_relation_pattern(".".join(segments[:-1]))
    if relation.name == "*":
        raise ValueError(f"{text!r} must name a table, not every table")
    return ColumnPattern(text, relation, column)


# Rules.


def _rank(strategy: Strategy) -> int:
    return STRATEGIES.index(strategy.kind)


@frozen
class MaskRule:
    """
    One masking rule.

    Attributes:
        name: Shown in counts, notes and deny reasons.
        mode: C{enforce} masks; C{dry-run} only counts and notes what it
            would have masked.
        subjects: Subjects it applies to; C{*} for all.
        groups: Groups it applies to.  With neither subjects nor groups
            the rule applies to every identity.
        targets: Target names, or C{*} for all.
        effects: The statement effects whose results it masks; C{None}
            for all.  A statement of effect C{unknown}, or one the
            gateway cannot tell, is masked by every rule.
        columns: Columns masked as a whole, by lineage.
        detectors: Detectors for every other textual value.
        strategy: What replaces a value or a detected span.
        where: Where the rule is written, for errors found later.
    """

    name: str
    mode: str
    strategy: Strategy
    subjects: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("*",)
    effects: frozenset[str] | None = None
    columns: tuple[ColumnPattern, ...] = ()
    detectors: tuple[Detector, ...] = ()
    where: str = field(default="", eq=False)

    @property
    def enforced(self) -> bool:
        """
        Whether the rule masks (rather than only noting).
        """
        return self.mode == "enforce"

    @property
    def rank(self) -> int:
        """
        Its strategy's strictness: lower is stricter.
        """
        return _rank(self.strategy)

    def applies(self, identity: Identity | None, target: str) -> bool:
        """
        Whether the rule is about C{identity} on C{target}.  Without a
        known identity every rule for the target applies (fail closed).
        """
        return in_scope(self, identity, target)

    def covers_effects(self, effects: frozenset[str] | None) -> bool:
        """
        Whether the rule masks results of a statement with C{effects}
        (C{None}: not known).
        """
        if self.effects is None or effects is None or "unknown" in effects:
            return True
        return not self.effects.isdisjoint(effects)

    def column_matches(self, table: str, column: str) -> bool:
        """
        Whether one of the rule's column patterns is this column.
        """
        return any(p.matches(table, column) for p in self.columns)


def _strictest(rules: Iterable[MaskRule]) -> MaskRule | None:
    best = None
    for rule in rules:
        if best is None or rule.rank < best.rank:
            best = rule
    return best


# What a statement does with masked columns.


@frozen
class ColumnUse:
    """
    A use of masked columns that strict masking refuses.

    Attributes:
        rule: The column rule whose column is used.
        reason: What the statement does, without any value.
    """

    rule: MaskRule
    reason: str


def _relations(part: StatementPart) -> tuple[str, ...]:
    return part.reads + part.writes


@frozen
class SessionMasking:
    """
    The masking rules that apply to one identity on one target.

    Attributes:
        rules: Those rules, in file order.
        strict: Whether C{masking.strict} is on.
    """

    rules: tuple[MaskRule, ...] = ()
    strict: bool = False

    def of_mode(self, enforced: bool) -> tuple[MaskRule, ...]:
        """
        The rules of one mode.
        """
        return tuple(r for r in self.rules if r.enforced is enforced)

    def column_rule(
        self,
        table: str,
        column: str,
        effects: frozenset[str] | None,
        enforced: bool,
    ) -> MaskRule | None:
        """
        The strictest column rule of a mode masking this result column.
        """
        return _strictest(
            rule
            for rule in self.of_mode(enforced)
            if rule.columns
            and rule.covers_effects(effects)
            and rule.column_matches(table, column)
        )

    def detect_rules(
        self, effects: frozenset[str] | None, enforced: bool
    ) -> tuple[MaskRule, ...]:
        """
        The detecting rules of a mode for a statement with C{effects}.
        """
        return tuple(
            rule
            for rule in self.of_mode(enforced)
            if rule.detectors and rule.covers_effects(effects)
        )

    def masked_columns(
        self, relations: Iterable[str], enforced: bool | None
    ) -> list[tuple[MaskRule, str]]:
        """
        The column rules (of a mode, or of both for C{None}) that may
        mask columns of C{relations}, with each column name they name.
        """
        found = []
        relations = tuple(relations)
        for rule in self.rules:
            if enforced is not None and rule.enforced is not enforced:
                continue
            for pattern in rule.columns:
                if any(pattern.covers(r) for r in relations):
                    found.append((rule, pattern.column))
        return found

    def uses(self, part: StatementPart, enforced: bool | None) -> list[ColumnUse]:
        """
        How a statement part uses masked columns other than as plain
        output: each use strict masking refuses.  A part running SQL the
        gateway cannot see (a DO block, EXECUTE) may do anything; so may
        a part the classifier is unsure of (a function not on its
        allow-list, text it could not read) whose relations are unknown
        or include a table with masked columns.
        """
        # Views and rules over masked tables are refused by moves(); a
        # function that reads them unnamed makes the part unknown.
        rules = [r for r in self.rules if r.columns]
        if enforced is not None:
            rules = [r for r in rules if r.enforced is enforced]
        if not rules:
            return []
        unsure = bool(part.problem) or part.effect == "unknown"
        if "dynamic_sql" in part.shapes or (unsure and not _relations(part)):
            why = part.problem or "it runs SQL the gateway cannot see"
            return [ColumnUse(rules[0], f"{_UNCHECKED} ({why})")]

        found = []
        derived = set(part.derived_columns)
        masked = self.masked_columns(_relations(part), enforced)
        if masked and unsure:
            found.append(ColumnUse(masked[0][0], _UNKNOWN_USE))
        for rule, column in masked:
            if "*" in derived:
                found.append(ColumnUse(rule, _WHOLE_ROW))
            elif column == "*" and derived:
                used = sorted(derived)[0]
                found.append(ColumnUse(rule, f"uses {used} of a masked table"))
            elif column in derived:
                reason = f"uses masked column {column} in an expression"
                found.append(ColumnUse(rule, reason))
        return found

    def touches(self, parts: Sequence[StatementPart], enforced: bool | None) -> bool:
        """
        Whether a statement uses masked columns other than plainly: then
        its literals, parameters and errors may carry masked values.
        """
        return any(self.uses(part, enforced) for part in parts)

    def copy_problems(self, part: StatementPart, enforced: bool) -> list[ColumnUse]:
        """
        Why a part streaming rows outside the result description (COPY
        TO STDOUT) cannot be masked by the rules of a mode, if it cannot.
        """
        rules = self.of_mode(enforced)
        if not part.stream_format or not rules:
            return []

        found = []
        columns = self.masked_columns(part.reads, enforced)
        unlisted = "*" in part.columns or part.derived_columns
        if columns and unlisted:
            found.append(
                ColumnUse(
                    columns[0][0],
                    "COPY of a table with masked columns must name its columns",
                )
            )
        detecting = [r for r in rules if r.detectors]
        if part.stream_format not in READABLE_STREAMS and (columns or detecting):
            rule = columns[0][0] if columns else detecting[0]
            found.append(
                ColumnUse(rule, f"COPY in {part.stream_format} format cannot be masked")
            )
        return found

    def moves(self, part: StatementPart, enforced: bool) -> list[ColumnUse]:
        """
        How a part takes masked values where column rules cannot follow
        them, strict or not: reading them through a view or rule (the
        result describes the view's columns), changing a table with
        masked columns (a rename, an inheritance, a new column type
        leaves its rules naming nothing), or copying them into another
        relation (C{INSERT ... SELECT}, C{CREATE TABLE ... AS}).
        """
        found = []
        for relation in part.through_views:
            masked = self.masked_columns((relation,), enforced)
            if masked:
                reason = (
                    f"reads {relation}, which has masked columns, through a"
                    " view or rule"
                )
                found.append(ColumnUse(masked[0][0], reason))

        changed = self.masked_columns(part.writes, enforced)
        if changed and part.effect in ("ddl", "privilege"):
            found.append(
                ColumnUse(changed[0][0], "changes a table with masked columns")
            )

        elsewhere = [w for w in part.writes if not self.masked_columns((w,), enforced)]
        if elsewhere:
            names = set(part.columns)
            for rule, column in self.masked_columns(part.reads, enforced):
                if "*" in names or column == "*" or column in names:
                    reason = f"copies masked column {column} into {elsewhere[0]}"
                    found.append(ColumnUse(rule, reason))
                    break
        return found

    # Free text, for recordings.

    def mask_free_text(self, text: str) -> str:
        """
        Mask what every detecting rule (either mode) finds in a text.
        """
        for rule in self.rules:
            if rule.detectors:
                text, _ = mask_text(text, rule.detectors, rule.strategy)
        return text

    def mask_statement(self, text: str, touching: bool) -> str:
        """
        A statement text as recordings write it: detected values masked,
        and every string literal when the statement uses masked columns
        other than plainly (a literal compared with or written to one).
        """
        if touching:
            text = _mask_literals(text)
        return self.mask_free_text(text)

    def mask_parameters(
        self, parameters: Iterable[Parameter], touching: bool
    ) -> tuple[Parameter, ...]:
        """
        Bound parameters as recordings write them: all of them masked
        when the statement uses masked columns other than plainly,
        otherwise what the detectors find in text values.
        """
        masked = []
        for parameter in parameters:
            if parameter.value is None:
                masked.append(parameter)
            elif touching:
                masked.append(Parameter(REDACTED, parameter.binary))
            elif parameter.binary:
                masked.append(parameter)
            else:
                value = self.mask_free_text(parameter.value)
                masked.append(Parameter(value, parameter.binary))
        return tuple(masked)


def _mask_literals(text: str) -> str:
    try:
        tokens = scan(text)
    except ParseError:
        return _UNSCANNABLE

    pieces = []
    position = 0
    for token in tokens:
        if token.name in _LITERALS:
            pieces.append(text[position : token.start])
            pieces.append(_MASKED_LITERAL)
            position = token.end + 1
    pieces.append(text[position:])
    return "".join(pieces)


NO_MASKING: Final = SessionMasking()

#: What replaces the message of an error or notice whose statement used
#: masked columns other than plainly.
GENERIC_MESSAGE: Final = (
    "hoopgate: the message was withheld because the statement uses masked columns"
)

#: Diagnostic fields a generic text leaves out (detail, hint, context,
#: internal query).
DROPPED_FIELDS: Final = frozenset("DHWq")


def generic_fields(
    fields: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    """
    An error's or notice's fields with the message made generic and the
    fields that may quote values dropped; codes and positions kept.
    """
    kept = []
    for key, text in fields:
        if key == "M":
            kept.append((key, GENERIC_MESSAGE))
        elif key not in DROPPED_FIELDS:
            kept.append((key, text))
    return tuple(kept)


class RecordMasker:
    """
    Masks what a recording line would write of statements, parameters,
    errors and notices, with the rules of the session (both modes: a
    recording never keeps what a dry-run rule would have masked).

    It remembers, for a short while per session, which statements use
    masked columns other than plainly, so that their bound parameters
    are masked whole.
    """

    def __init__(self) -> None:
        self._touching: dict[str, OrderedDict[str, bool]] = {}

    def mask(
        self, event: Event, fields: dict[str, Any], masking: SessionMasking
    ) -> None:
        """
        Mask the recordable C{fields} of C{event} in place.
        """
        if isinstance(event, SessionClosed | SessionRefused):
            self._touching.pop(event.session_id, None)
        if not masking.rules:
            return

        if isinstance(event, StatementReceived):
            self._statement(event, fields, masking)
        elif isinstance(event, StatementBound):
            known = self._touching.get(event.session_id)
            touching = _has_columns(masking)
            if known is not None:
                touching = known.get(event.statement_id, touching)
            fields["parameters"] = [
                {"value": p.value, "binary": p.binary}
                for p in masking.mask_parameters(event.parameters, touching)
            ]
        elif isinstance(event, DiagnosticReceived):
            texts = event.fields
            if self._touched(event.session_id, event.statement_id):
                texts = generic_fields(texts)
            fields["fields"] = [
                [key, masking.mask_free_text(text)] for key, text in texts
            ]
        elif isinstance(event, StatementCompleted):
            message = event.error_message
            if message and self._touched(event.session_id, event.statement_id):
                message = GENERIC_MESSAGE
            fields["error_message"] = masking.mask_free_text(message)
        elif isinstance(event, Notice):
            fields["detail"] = masking.mask_free_text(event.detail)

    def _touched(self, session_id: str, statement_id: str) -> bool:
        known = self._touching.get(session_id)
        return known is not None and known.get(statement_id, False)

    def _statement(
        self,
        event: StatementReceived,
        fields: dict[str, Any],
        masking: SessionMasking,
    ) -> None:
        touching = masking.touches(statement_parts(event), None)
        known = self._touching.setdefault(event.session_id, OrderedDict())
        known[event.statement_id] = touching
        while len(known) > _REMEMBERED_STATEMENTS:
            known.popitem(last=False)

        fields["text"] = masking.mask_statement(fields["text"], touching)
        for part in fields["parts"]:
            part["text"] = masking.mask_statement(part["text"], touching)


def _has_columns(masking: SessionMasking) -> bool:
    # A statement forgotten since: its parameters are masked whole if
    # any column rule applies (fail closed).
    return any(rule.columns for rule in masking.rules)


# The policy section.


@frozen
class MaskingPolicy:
    """
    The C{masking} part of the policy.

    Attributes:
        rules: Masking rules in file order.
        strict: Refuse statements that use masked columns other than
            plainly, for identities an enforce column rule applies to.
        record_rows: Rows of each result a recording keeps (0: none).
        record_bytes: Bytes of each result a recording keeps.
    """

    rules: tuple[MaskRule, ...] = ()
    strict: bool = False
    record_rows: int = DEFAULT_RECORD_ROWS
    record_bytes: int = DEFAULT_RECORD_BYTES
    _views: dict[tuple[str | None, tuple[str, ...], str], SessionMasking] = field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )

    def for_session(self, identity: Identity | None, target: str) -> SessionMasking:
        """
        The rules that apply to C{identity} on C{target} (cached).
        """
        subject = identity.subject if identity is not None else None
        groups = tuple(identity.groups) if identity is not None else ()
        key = (subject, groups, target)
        view = self._views.get(key)
        if view is None:
            applying = tuple(r for r in self.rules if r.applies(identity, target))
            view = SessionMasking(applying, self.strict) if applying else NO_MASKING
            if len(self._views) < 4096:
                self._views[key] = view
        return view


def _read_size(reader: ConfigReader, key: str, default: int) -> int:
    value = reader.raw(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise reader.error(key, "must be a size in bytes, such as 1048576 or 1MiB")
    return int(match.group(1)) * _UNITS[match.group(2) or "B"]


def _read_strategy(reader: ConfigReader, key: str, hash_key: bytes | None) -> Strategy:
    value = reader.raw(key, "redact")
    if isinstance(value, dict) and len(value) == 1:
        ((kind, argument),) = value.items()
    else:
        kind, argument = value, None

    if kind == "redact" and argument is None:
        return REDACT
    if kind == "null" and argument is None:
        return NULLIFY
    if kind == "keep_last":
        if isinstance(argument, bool) or not isinstance(argument, int) or argument < 0:
            raise reader.error(key, "keep_last needs a count: {keep_last: 4}")
        return KeepLast(argument)
    if kind == "hash":
        return _read_hash(reader, key, argument, hash_key)
    raise reader.error(
        key,
        "must be redact, null, hash, {hash: {digits: N}} or {keep_last: N}",
    )


def _read_hash(
    reader: ConfigReader, key: str, argument: object, hash_key: bytes | None
) -> KeyedHash:
    if hash_key is None:
        raise reader.error(key, "hash needs masking.key (a secret of 16 bytes or more)")
    digits = 12
    if isinstance(argument, dict) and set(argument) == {"digits"}:
        digits = argument["digits"]
    elif argument is not None:
        raise reader.error(key, "hash takes {digits: N} or nothing")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 8 <= digits <= 64:
        raise reader.error(key, "hash digits must be between 8 and 64")
    return KeyedHash(hash_key, digits)


def _read_detector(reader: ConfigReader) -> Detector:
    name = reader.string("name")
    if name in DETECTORS:
        raise reader.error("name", f"{name!r} is a built-in detector")
    try:
        detector = custom_detector(
            name,
            reader.string("pattern"),
            reader.string("validator") if reader.has("validator") else None,
            hints=reader.strings("hints", ()),
        )
    except ValueError as e:
        raise reader.error("pattern", str(e)) from None
    reader.done()
    return detector


def _read_detect(
    reader: ConfigReader, known: dict[str, Detector]
) -> tuple[Detector, ...]:
    names = reader.strings("detect", ())
    detectors = []
    for name in names:
        detector = known.get(name)
        if detector is None:
            listed = ", ".join(sorted(known))
            raise reader.error("detect", f"unknown detector {name!r} (known: {listed})")
        detectors.append(detector)
    return tuple(dict.fromkeys(detectors))


def _read_columns(reader: ConfigReader) -> tuple[ColumnPattern, ...]:
    if not reader.has("columns"):
        return ()
    values = reader.strings("columns")
    try:
        return tuple(parse_column_pattern(v) for v in values)
    except ValueError as e:
        raise reader.error("columns", str(e)) from None


def _read_effects(reader: ConfigReader) -> frozenset[str] | None:
    if not reader.has("effects"):
        return None
    values = reader.strings("effects")
    for value in values:
        if value not in EFFECTS:
            known = ", ".join(sorted(EFFECTS))
            raise reader.error("effects", f"unknown effect {value!r} (known: {known})")
    return frozenset(values)


def read_mask_rule(
    reader: ConfigReader, detectors: dict[str, Detector], hash_key: bytes | None
) -> MaskRule:
    """
    Validate one entry of C{policy.masking.rules}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    groups = read_groups(reader)

    rule = MaskRule(
        name=reader.string("name"),
        mode=reader.choice("mode", MODES, "enforce"),
        subjects=reader.strings("subjects", ()),
        groups=groups,
        targets=reader.strings("targets", ("*",)),
        effects=_read_effects(reader),
        columns=_read_columns(reader),
        detectors=_read_detect(reader, detectors),
        strategy=_read_strategy(reader, "strategy", hash_key),
        where=f"{reader.path}.targets (line {reader.line_of('targets')})",
    )
    if not rule.columns and not rule.detectors:
        raise reader.error("columns", "a masking rule needs columns, detect or both")
    reader.done()
    return rule


def read_masking(reader: ConfigReader) -> MaskingPolicy:
    """
    Validate the C{policy.masking} section (absent: no masking).

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    hash_key = None
    if reader.has("key"):
        hash_key = reader.secret("key").reveal().encode("utf-8")
        if len(hash_key) < 16:
            raise reader.error("key", "must be at least 16 bytes long")

    detectors = dict(DETECTORS)
    for section in reader.sections("detectors"):
        detector = _read_detector(section)
        if detector.name in detectors:
            raise section.error("name", f"detector {detector.name!r} is defined twice")
        detectors[detector.name] = detector

    rules = tuple(
        read_mask_rule(r, detectors, hash_key) for r in reader.sections("rules")
    )
    policy = MaskingPolicy(
        rules=rules,
        strict=reader.boolean("strict", False),
        record_rows=reader.integer("record_rows", DEFAULT_RECORD_ROWS, high=10**6),
        record_bytes=_read_size(reader, "record_bytes", DEFAULT_RECORD_BYTES),
    )
    reader.done()
    return policy


def check_mask_targets(rules: Iterable[MaskRule], known: Collection[str]) -> None:
    """
    Refuse rules naming targets the configuration does not define: a
    misspelt target would silently switch masking off.

    Raises:
        ConfigError: Naming the rule's targets key and line.
    """
    check_scope_targets(rules, known, "masking rule")


__all__ = [
    "ColumnPattern",
    "ColumnUse",
    "MaskRule",
    "MaskingPolicy",
    "RecordMasker",
    "SessionMasking",
    "check_mask_targets",
    "parse_column_pattern",
    "read_masking",
    "render_name",
]
