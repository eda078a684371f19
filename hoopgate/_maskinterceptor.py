"""
The masking stage of the chain.

Per result description it compiles one row plan: whole-column masks for
the columns an enforce column rule names by lineage, detectors on every
other textual column, and a shadow plan for dry-run rules that only
counts.  It masks the texts of errors and notices (detectors, values the
statement's rows masked, or a generic text when the statement used masked
columns in expressions), refuses COPY it cannot mask, and with
C{masking.strict} refuses statements that use masked columns other than
as plain output.  Nothing is decided per row.

test-case-name: tests.unit.test_maskrules
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final

import attrs
from attrs import define, field
from twisted.logger import Logger
from zope.interface import implementer

from hoopgate._chain import Context
from hoopgate._events import (
    Column,
    DiagnosticReceived,
    Event,
    MaskCount,
    ResultDescribed,
    SessionClosed,
    StatementCompleted,
    StatementPart,
    StatementReceived,
)
from hoopgate._guardrails import statement_parts
from hoopgate._interfaces import IInterceptor, IObserver
from hoopgate._masking import (
    COLUMN_RULE,
    NULLIFY,
    PASS,
    ColumnAction,
    Detector,
    MaskColumn,
    Nullify,
    Redact,
    RowPlan,
    ScanColumn,
    compile_plan,
    mask_text,
    mask_values_in_text,
)
from hoopgate._maskrules import (
    ColumnUse,
    MaskingPolicy,
    MaskRule,
    SessionMasking,
    generic_fields,
)
from hoopgate._verdicts import ALLOW, Allow, Deny, DenyReason, Note, Rewrite, Verdict

#: The severity of a diagnostic that carries a notification's payload
#: (PostgreSQL's NOTIFY) as its C{M} field.
NOTIFICATION: Final = "NOTIFY"

#: Column types whose values are text: masks keep the type valid.
TEXT_TYPES: Final = frozenset({"text", "varchar", "bpchar", "name", "unknown"})

#: Column types that cannot hold what detectors look for.
UNSCANNED_TYPES: Final = frozenset(
    {
        "bool",
        "bytea",
        "char",
        "date",
        "float4",
        "float8",
        "int2",
        "int4",
        "interval",
        "oid",
        "time",
        "timestamp",
        "timestamptz",
        "timetz",
        "uuid",
    }
)

#: Diagnostic fields that never hold values (codes, positions, sources).
FIXED_FIELDS: Final = frozenset("SVCPpFLR")


#: Distinct masked originals a plan keeps for errors of its result.
REMEMBERED: Final = 32

_STATEMENTS_PER_SESSION: Final = 256
_PLANS_PER_STATEMENT: Final = 16
_SESSIONS: Final = 100_000


class MaskingPlan:
    """
    The row plan masking hands a plugin for one result.

    Calling it masks a row for the client.  Plugins that record what
    left may also call L{recorded} (the row as recordings keep it, with
    dry-run masks too) and, once the result ended, L{report} (what was
    masked, counted).

    Args:
        enforce: The plan whose output the client gets, if any column is
            masked.
        dry: The plan of dry-run rules, if any applies.
        labels: The columns' labels.
        rules: The rule behind each count key of C{enforce}.
        dry_rules: The rule behind each count key of C{dry}.
        counter: The stage's running totals, added to by L{report}.
    """

    __slots__ = (
        "_counter",
        "_dry",
        "_dry_rules",
        "_enforce",
        "_labels",
        "_last",
        "_report",
        "_rules",
    )

    def __init__(
        self,
        enforce: RowPlan | None,
        dry: RowPlan | None,
        *,
        labels: Sequence[str],
        rules: dict[tuple[int, str], str],
        dry_rules: dict[tuple[int, str], str],
        counter: Counter[tuple[str, str, str]],
    ) -> None:
        self._enforce = enforce
        self._dry = dry
        self._labels = tuple(labels)
        self._rules = rules
        self._dry_rules = dry_rules
        self._counter = counter
        self._last: list[bytes | None] | None = None
        self._report: tuple[MaskCount, ...] | None = None

    def __call__(self, values: list[bytes | None]) -> list[bytes | None]:
        enforce = self._enforce
        out = values if enforce is None else enforce(values)
        if self._dry is not None:
            self._last = self._dry(out)
        return out

    def recorded(self, values: list[bytes | None]) -> list[bytes | None]:
        """
        The row last masked, as a recording keeps it.

        Args:
            values: What the call returned for that row.
        """
        if self._dry is None or self._last is None:
            return values
        return self._last

    @property
    def remembered(self) -> tuple[str, ...]:
        """
        Originals of whole-column masks from the first rows, decoded.
        """
        plan = self._enforce
        if plan is None:
            return ()
        encoding = plan.encoding
        return tuple(v.decode(encoding, "replace") for v in plan.remembered)

    def report(self) -> tuple[MaskCount, ...]:
        """
        What the plan masked so far, per column, rule and detector; the
        first call also adds it to the stage's totals.
        """
        if self._report is not None:
            return self._report

        counts = []
        for plan, rules, dry_run in (
            (self._enforce, self._rules, False),
            (self._dry, self._dry_rules, True),
        ):
            if plan is None:
                continue
            for (index, detector), count in sorted(plan.counts.items()):
                rule = rules.get((index, detector), "")
                label = self._labels[index]
                counts.append(MaskCount(label, rule, detector, count, dry_run))
                self._counter[rule, label, detector] += count
        self._report = tuple(counts)
        return self._report


@define
class _Statement:
    effects: frozenset[str]
    touches: bool
    plans: list[MaskingPlan] = field(factory=list)


class _SessionState:
    """
    What the stage remembers of one session: its recent statements.
    """

    def __init__(self) -> None:
        self.statements: OrderedDict[str, _Statement] = OrderedDict()

    def add(self, statement_id: str, statement: _Statement) -> None:
        self.statements[statement_id] = statement
        self.statements.move_to_end(statement_id)
        while len(self.statements) > _STATEMENTS_PER_SESSION:
            self.statements.popitem(last=False)

    def get(self, statement_id: str) -> _Statement | None:
        return self.statements.get(statement_id) if statement_id else None


# Column actions.


def _whole(rule: MaskRule, column: Column) -> MaskColumn:
    # A value that does not arrive as text can only be replaced whole.
    if column.textual or isinstance(rule.strategy, Redact | Nullify):
        return MaskColumn(rule.strategy)
    return MaskColumn(NULLIFY)


def _scan(
    column: Column, rules: Sequence[MaskRule], names: dict[tuple[int, str], str], i: int
) -> ColumnAction:
    if not rules or column.type_name in UNSCANNED_TYPES:
        return PASS
    if not column.textual and not column.binary:
        return PASS

    detectors: dict[str, tuple[Detector, MaskRule]] = {}
    for rule in sorted(rules, key=lambda r: r.rank):
        for detector in rule.detectors:
            detectors.setdefault(detector.name, (detector, rule))
    for name, (_, rule) in detectors.items():
        names[i, name] = rule.name

    strictest = min(rules, key=lambda r: r.rank)
    # A mask in a number or a JSON document would break its type.
    strategy = strictest.strategy if column.type_name in TEXT_TYPES else NULLIFY
    binary = "" if column.textual else column.binary
    return ScanColumn((d for d, _ in detectors.values()), strategy, binary)


def _compiled(actions: list[ColumnAction], encoding: str) -> RowPlan | None:
    if all(a is PASS for a in actions):
        return None
    return compile_plan(actions, encoding=encoding, remember=REMEMBERED)


def _deny_detail(uses: Iterable[tuple[int, StatementPart, ColumnUse]]) -> str:
    lines = []
    for number, part, use in uses:
        label = f"part {number} {part.command}".rstrip()
        lines.append(f"{use.rule.name}: {label} {use.reason}")
    return " | ".join(dict.fromkeys(lines))


# Catalog views that hold sample values of columns (most common values,
# histogram bounds): strict masking refuses reading them.
_STATISTICS = frozenset(
    {
        "pg_catalog.pg_stats",
        "pg_catalog.pg_stats_ext",
        "pg_catalog.pg_stats_ext_exprs",
        "pg_catalog.pg_statistic",
        "pg_catalog.pg_statistic_ext_data",
    }
)


def _statistics_read(parts: Sequence[StatementPart]) -> str:
    """
    The first statistics view a statement reads, or C{""}.
    """
    for part in parts:
        for relation in part.reads:
            if relation in _STATISTICS:
                return relation
    return ""


@implementer(IInterceptor, IObserver)
class MaskingInterceptor:
    """
    The masking stage.  Also an observer, to forget what it kept of a
    statement or a session once it ended.

    Args:
        policy: The policy's masking section.

    Attributes:
        blocked: Per rule, statements refused (strict, COPY).
        dry_run_hits: Per rule, statements and results a dry-run rule
            would have refused or masked.
        masked: Per (rule, column label, detector or C{column}), the
            values or hits masked, dry-run rules included.
        diagnostics: Per outcome (C{masked}, C{generic}), the errors and
            notices whose texts masking changed.
    """

    name = "masking"
    stage = "masking"
    event_types = (StatementReceived, ResultDescribed, DiagnosticReceived)

    _log = Logger()

    def __init__(self, policy: MaskingPolicy) -> None:
        self._policy = policy
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()
        self.blocked: Counter[str] = Counter()
        self.dry_run_hits: Counter[str] = Counter()
        self.masked: Counter[tuple[str, str, str]] = Counter()
        self.diagnostics: Counter[str] = Counter()

    def _state(self, session_id: str) -> _SessionState:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _SessionState()
            if len(self._sessions) > _SESSIONS:
                self._sessions.popitem(last=False)
        return state

    def decide(self, event: Event, context: Context) -> Verdict:
        masking = self._policy.for_session(context.identity, context.target)
        if not masking.rules:
            return ALLOW

        state = self._state(context.session_id)
        if isinstance(event, StatementReceived):
            return self._statement(event, context, masking, state)
        if isinstance(event, ResultDescribed):
            return self._result(event, masking, state)
        if isinstance(event, DiagnosticReceived):
            return self._diagnostic(event, masking, state)
        raise TypeError(f"masking cannot judge a {type(event).__name__}")

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        if isinstance(event, SessionClosed):
            self._sessions.pop(event.session_id, None)
        elif isinstance(event, StatementCompleted):
            state = self._sessions.get(event.session_id)
            statement = state.get(event.statement_id) if state else None
            if statement is not None:
                statement.plans.clear()

    # Statements.

    def _uses(
        self, parts: Sequence[StatementPart], masking: SessionMasking, enforced: bool
    ) -> list[tuple[int, StatementPart, ColumnUse]]:
        found: list[tuple[int, StatementPart, ColumnUse]] = []
        for number, part in enumerate(parts, 1):
            uses = masking.copy_problems(part, enforced)
            uses += masking.moves(part, enforced)
            if masking.strict:
                uses += masking.uses(part, enforced)
            found.extend((number, part, use) for use in uses)
        return found

    def _statement(
        self,
        event: StatementReceived,
        context: Context,
        masking: SessionMasking,
        state: _SessionState,
    ) -> Verdict:
        parts = statement_parts(event)
        effects = frozenset(p.effect for p in parts)
        # Errors of a statement on a table with masked columns may quote
        # its rows (a failing row, a key that is not present): they are
        # made generic, whatever the statement does with the columns.
        on_masked = any(
            masking.masked_columns((*p.reads, *p.writes), True) for p in parts
        )
        touches = on_masked or masking.touches(parts, True)
        state.add(event.statement_id, _Statement(effects, touches))

        dry = self._uses(parts, masking, False)
        notes = tuple(
            Note("dry_run", n) for n in dict.fromkeys(u.rule.name for *_, u in dry)
        )
        self.dry_run_hits.update(note.rule for note in notes)
        refused = self._uses(parts, masking, True)
        statistics = _statistics_read(parts) if masking.strict else ""
        if not refused and not (statistics and masking.of_mode(True)):
            return Allow(notes=notes) if notes else ALLOW

        if refused:
            rule = refused[0][2].rule.name
            detail = _deny_detail(refused)
        else:
            rule = masking.of_mode(True)[0].name
            detail = f"{rule}: {statistics} holds sample values of columns"
        self.blocked[rule] += 1
        self._log.warn(
            "Masking rule {rule} refused statement {statement_id} of session "
            "{session_id}: {detail}",
            rule=rule,
            statement_id=event.statement_id,
            session_id=context.session_id,
            detail=detail,
        )
        reason = DenyReason(
            code="masking.blocked",
            message="statement blocked by masking policy",
            detail=detail,
            rule=rule,
        )
        return Deny(reason, notes=notes)

    # Results.

    def _result(
        self, event: ResultDescribed, masking: SessionMasking, state: _SessionState
    ) -> Verdict:
        statement = state.get(event.statement_id)
        effects = statement.effects if statement is not None else None
        detect = masking.detect_rules(effects, True)
        dry_detect = masking.detect_rules(effects, False)

        actions: list[ColumnAction] = []
        dry_actions: list[ColumnAction] = []
        rules: dict[tuple[int, str], str] = {}
        dry_rules: dict[tuple[int, str], str] = {}
        columns = []
        noted: dict[str, None] = {}
        for i, column in enumerate(event.columns):
            rule = _column_rule(masking, column, effects, True)
            if rule is not None:
                actions.append(_whole(rule, column))
                rules[i, COLUMN_RULE] = rule.name
                columns.append(attrs.evolve(column, masked=True))
                dry_actions.append(PASS)
                continue

            actions.append(_scan(column, detect, rules, i))
            columns.append(column)
            dry_rule = _column_rule(masking, column, effects, False)
            if dry_rule is not None:
                dry_actions.append(_whole(dry_rule, column))
                dry_rules[i, COLUMN_RULE] = dry_rule.name
                noted[dry_rule.name] = None
            else:
                dry_actions.append(_scan(column, dry_detect, dry_rules, i))

        return self._planned(
            event,
            columns=columns,
            enforce=(actions, rules),
            dry=(dry_actions, dry_rules),
            noted=noted,
            statement=statement,
        )

    def _planned(
        self,
        event: ResultDescribed,
        *,
        columns: list[Column],
        enforce: tuple[list[ColumnAction], dict[tuple[int, str], str]],
        dry: tuple[list[ColumnAction], dict[tuple[int, str], str]],
        noted: dict[str, None],
        statement: _Statement | None,
    ) -> Verdict:
        plan = _compiled(enforce[0], event.encoding)
        dry_plan = _compiled(dry[0], event.encoding)
        notes = tuple(Note("dry_run", name) for name in noted)
        self.dry_run_hits.update(list(noted))
        if plan is None and dry_plan is None:
            return Allow(notes=notes) if notes else ALLOW

        labels = [column.name for column in event.columns]
        masking_plan = MaskingPlan(
            plan,
            dry_plan,
            labels=labels,
            rules=enforce[1],
            dry_rules=dry[1],
            counter=self.masked,
        )
        if statement is not None:
            statement.plans.append(masking_plan)
            del statement.plans[:-_PLANS_PER_STATEMENT]
        rewritten = None
        if any(column.masked for column in columns):
            rewritten = attrs.evolve(event, columns=tuple(columns))
        return Rewrite(event=rewritten, plan=masking_plan, notes=notes)

    # Errors and notices.

    def _diagnostic(
        self, event: DiagnosticReceived, masking: SessionMasking, state: _SessionState
    ) -> Verdict:
        statement = state.get(event.statement_id)
        if event.severity == NOTIFICATION and masking.strict and masking.of_mode(True):
            # Column rules cannot follow what a trigger or another session
            # sends: under strict masking the payload is withheld.
            self.diagnostics["withheld"] += 1
            return Rewrite(event=attrs.evolve(event, fields=(("M", ""),)))
        if statement is not None and statement.touches:
            self.diagnostics["generic"] += 1
            return Rewrite(
                event=attrs.evolve(event, fields=generic_fields(event.fields))
            )

        values: list[str] = []
        for plan in statement.plans if statement is not None else ():
            values.extend(plan.remembered)
        fields = _masked_fields(event.fields, masking.detect_rules(None, True), values)
        notes: tuple[Note, ...] = ()
        dry = _masked_fields(event.fields, masking.detect_rules(None, False), ())
        if dry != event.fields:
            names = dict.fromkeys(r.name for r in masking.detect_rules(None, False))
            notes = tuple(Note("dry_run", name) for name in names)
            self.dry_run_hits.update(list(names))
        if fields == event.fields:
            return Allow(notes=notes) if notes else ALLOW

        self.diagnostics["masked"] += 1
        return Rewrite(event=attrs.evolve(event, fields=fields), notes=notes)


def _masked_fields(
    fields: tuple[tuple[str, str], ...],
    rules: Sequence[MaskRule],
    values: Sequence[str],
) -> tuple[tuple[str, str], ...]:
    if not rules and not values:
        return fields

    return tuple(
        (key, text if key in FIXED_FIELDS else _masked_text(text, rules, values))
        for key, text in fields
    )


def _masked_text(text: str, rules: Sequence[MaskRule], values: Sequence[str]) -> str:
    for rule in rules:
        text, _ = mask_text(text, rule.detectors, rule.strategy)
    if values:
        text, _ = mask_values_in_text(text, values)
    return text


__all__ = ["MaskingInterceptor", "MaskingPlan"]


def _column_rule(
    masking: SessionMasking,
    column: Column,
    effects: frozenset[str] | None,
    enforced: bool,
) -> MaskRule | None:
    """
    The strictest rule masking a result column, through the relations
    whose rows it may carry too (a parent table's column carries its
    children's).
    """
    found = [
        masking.column_rule(table, column.column, effects, enforced)
        for table in (column.table, *column.sources)
    ]
    ranked = [rule for rule in found if rule is not None]
    return min(ranked, key=lambda rule: rule.rank) if ranked else None
