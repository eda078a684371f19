"""
Joining what a statement's text names with what the catalog says it
reaches, sans-IO.

The classifier sees text; the catalog sees views, rules, triggers,
inheritance and the target's own overloads of built-in names.  Before
a statement is judged the relay asks the catalog (L{request}), then
widens each statement part with the answer (L{widened}): relations
reached join the ones named, and a statement that runs functions of the
target's own it does not name, or uses a name such a function shadows,
is of unknown effect, with the reason.

The catalog is read on another connection, so it cannot see what the
session's own open transaction changed.  A statement that may change
what later ones reach (L{Classification.indirect}) therefore makes the
ones after it in the same transaction unjudgeable (L{after_change}),
until that transaction ends and the catalog is read afresh.

test-case-name: tests.unit.postgres.test_reach
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from hoopgate.plugin import StatementPart
from hoopgate_plugins.postgres._catalog import (
    Facts,
    Request,
    relation_name,
    split_name,
)
from hoopgate_plugins.postgres._sql import Classification, SessionState, quote_name


def request(classes: Sequence[Classification]) -> Request | None:
    """
    What to ask the catalog about a query string's statements, or
    C{None} when they name nothing it could add to.
    """
    parts = tuple(
        (_with_temporary(c.relations_read, c), _with_temporary(c.relations_written, c))
        for c in classes
    )
    functions = frozenset().union(*(c.functions for c in classes))
    operators = frozenset().union(*(c.operators for c in classes))
    attributes = frozenset().union(*(frozenset(c.columns) - {"*"} for c in classes))
    if not (functions or operators or any(r or w for r, w in parts)):
        return None
    return Request(parts, functions, operators, attributes)


def _with_temporary(relations: frozenset[str], item: Classification) -> frozenset[str]:
    """
    C{relations} and, for those named without a schema, the session's
    temporary relation of that name, which PostgreSQL looks up first.
    """
    if not item.unqualified:
        return relations
    temporary = {
        relation_name("pg_temp", name)
        for name in (split_name(r)[1] for r in relations)
        if name in item.unqualified
    }
    return relations | temporary


def with_paths(state: SessionState, facts: Facts) -> SessionState:
    """
    C{state} with the search paths the role's and database's defaults
    set, which the session may be using.
    """
    paths = [p for p in facts.paths if p not in state.more_paths]
    if not paths:
        return state
    return attrs.evolve(state, more_paths=(*state.more_paths, *paths))


def widened(
    parts: Sequence[StatementPart],
    classes: Sequence[Classification],
    facts: Facts,
    trusted: frozenset[str] = frozenset(),
) -> tuple[StatementPart, ...]:
    """
    The parts with what the catalog says each reaches.

    Args:
        parts: The parts of a query string.
        classes: Their classifications.
        facts: The catalog's answer.
        trusted: Functions of the target's own the operator vouches for
            (C{schema.name} or C{schema.*}): running them, or their
            names matching a built-in's, makes nothing unknown.
    """
    return tuple(
        _widened(part, item, facts, i, trusted)
        for i, (part, item) in enumerate(zip(parts, classes, strict=True))
    )


def is_trusted(function: str, trusted: frozenset[str]) -> bool:
    """
    Whether a function, rendered C{schema.name}, is one of C{trusted}.
    """
    if not trusted:
        return False
    schema, _ = split_name(function)
    return function in trusted or f"{quote_name(schema)}.*" in trusted


def _widened(
    part: StatementPart,
    item: Classification,
    facts: Facts,
    number: int,
    trusted: frozenset[str],
) -> StatementPart:
    found = facts.parts[number] if number < len(facts.parts) else None
    if found is None:
        return part

    reasons = []
    code = [f"{f} ({how})" for f, how in found.code if not is_trusted(f, trusted)]
    if code:
        reasons.append(f"it runs the target's own {', '.join(code)}")
    names = item.functions | item.operators | (frozenset(item.columns) - {"*"})
    shadows = [
        s
        for s in facts.shadowed
        if split_name(s)[1] in names and not is_trusted(s, trusted)
    ]
    if shadows:
        reasons.append(
            f"the target's own {', '.join(shadows)} may answer for a name it uses"
        )

    widened = attrs.evolve(
        part,
        reads=tuple(sorted(set(part.reads) | found.reads)),
        writes=tuple(sorted(set(part.writes) | found.writes)),
        through_views=tuple(sorted(found.through_rules - set(part.reads))),
    )
    if not reasons:
        return widened
    reason = "; ".join(filter(None, [part.reason, *reasons]))
    return attrs.evolve(widened, effect="unknown", reason=reason)


def after_change(
    parts: Sequence[StatementPart],
    classes: Sequence[Classification],
    pending: str,
) -> tuple[tuple[StatementPart, ...], str]:
    """
    The parts, those after a catalog change not yet committed refused,
    and the change pending after them.

    Args:
        parts: The parts of a query string.
        classes: Their classifications.
        pending: The command of an earlier statement of the transaction
            that may have changed the catalog, or C{""}.
    """
    result = []
    for part, item in zip(parts, classes, strict=True):
        names = item.relations_read | item.relations_written
        if pending and (names or item.functions or item.operators):
            problem = (
                f"an earlier {pending} of this transaction may change what it"
                " does, and the gateway reads the catalog only once that is"
                " committed"
            )
            result.append(attrs.evolve(part, problem=problem))
        else:
            result.append(part)
        if item.indirect and not pending:
            pending = item.command or "statement"
    return tuple(result), pending
