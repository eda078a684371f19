"""
Tests for L{hoopgate_plugins.postgres._reach} and the parts of
L{hoopgate_plugins.postgres._catalog} that need no server: what is asked
of the catalog, how its rows widen statement parts, and which statements
a catalog change not yet committed makes unjudgeable.  The catalog
query itself runs against real PostgreSQL in
L{tests.integration.test_postgres_reach}.
"""

from __future__ import annotations

import pytest

from hoopgate_plugins.postgres._catalog import (
    Facts,
    PartFacts,
    Request,
    _execute,
    _facts,
    split_name,
)
from hoopgate_plugins.postgres._reach import (
    after_change,
    is_trusted,
    request,
    widened,
    with_paths,
)
from hoopgate_plugins.postgres._settings import allowed_functions
from hoopgate_plugins.postgres._sql import SessionState, carry, classify


def _rows(*rows: tuple[str, ...]) -> list[list[bytes | None]]:
    return [[value.encode() for value in row] for row in rows]


class TestSplitName:
    @pytest.mark.parametrize(
        ("rendered", "expected"),
        [
            ("public.canary", ("public", "canary")),
            ('public."CaNaRy"', ("public", "CaNaRy")),
            ('"a.b"."c""d"', ("a.b", 'c"d')),
            ("pg_temp.t", ("pg_temp", "t")),
            ("canary", ("", "canary")),
        ],
    )
    def test_names(self, rendered: str, expected: tuple[str, str]) -> None:
        assert split_name(rendered) == expected


class TestRequest:
    def test_names_and_calls(self) -> None:
        classes = classify("insert into t select lower(a) + 1 from u")

        wanted = request(classes)

        # A temporary relation of a name used without schema answers first.
        assert wanted == Request(
            parts=(
                (
                    frozenset({"public.u", "pg_temp.u"}),
                    frozenset({"public.t", "pg_temp.t"}),
                ),
            ),
            functions=frozenset({"lower"}),
            operators=frozenset({"+"}),
            attributes=frozenset({"a"}),
        )

    def test_nothing_to_ask(self) -> None:
        assert request(classify("begin; set work_mem = '4MB'; commit")) is None

    def test_execute_quotes_every_value(self) -> None:
        wanted = Request(
            parts=((frozenset({'public."it\'s ""x"""'}), frozenset()),),
            functions=frozenset({"lower"}),
        )

        text = _execute(wanted)

        assert text == (
            "execute hoopgate_facts('{\"public\"}', '{\"it''s \\\"x\\\"\"}',"
            " '{\"r\"}', '{0}', '{\"lower\"}', '{}', '{}')"
        )


class TestFacts:
    REQUEST = Request(
        parts=(
            (frozenset(), frozenset({"public.v"})),
            (frozenset({"public.parent"}), frozenset()),
        ),
        functions=frozenset({"lower"}),
    )

    def test_rows(self) -> None:
        rows = _rows(
            ("relation", "w", "0", "public", "v", "named"),
            ("relation", "w", "0", "public", "canary", "rule"),
            ("code", "w", "0", "public", "fill", "pg_catalog.pg_trigger"),
            ("relation", "r", "1", "public", "customers", "child"),
            ("function", "", "-1", "public", "lower", ""),
            ("path", "", "-1", "", 'search_path=evil, "$user", public', ""),
            ("path", "", "-1", "", "work_mem=4MB", ""),
        )

        facts = _facts(self.REQUEST, rows)

        assert facts == Facts(
            parts=(
                PartFacts(
                    writes=frozenset({"public.v", "public.canary"}),
                    code=(("public.fill", "trigger"),),
                ),
                PartFacts(reads=frozenset({"public.parent", "public.customers"})),
            ),
            shadowed=("public.lower",),
            paths=(("evil", "$user", "public"),),
        )

    def test_views_are_read_through(self) -> None:
        rows = _rows(("relation", "r", "1", "public", "customers", "rule"))

        facts = _facts(self.REQUEST, rows)

        assert facts.parts[1].through_rules == frozenset({"public.customers"})

    def test_role_paths_join_the_state(self) -> None:
        facts = Facts(parts=(), paths=(("evil", "public"),))

        state = with_paths(SessionState(), facts)

        assert state.more_paths == (("evil", "public"),)
        assert with_paths(state, facts) is state
        (found,) = classify("insert into t values (1)", state)
        assert found.relations_written == {"public.t", "evil.t"}


class TestWidened:
    def test_reached_relations_and_code(self) -> None:
        classes = classify("insert into v values (1); select lower(id) from t")
        parts = tuple(c.to_part() for c in classes)
        facts = Facts(
            parts=(
                PartFacts(writes=frozenset({"public.v", "public.canary"})),
                PartFacts(reads=frozenset({"public.t"})),
            ),
            shadowed=("public.lower",),
        )

        first, second = widened(parts, classes, facts)

        assert first.writes == ("public.canary", "public.v")
        assert first.effect == "write"
        assert second.effect == "unknown"
        assert (
            second.reason
            == "the target's own public.lower may answer for a name it uses"
        )

    def test_shadow_of_another_name(self) -> None:
        classes = classify("select upper(name) from t")
        parts = tuple(c.to_part() for c in classes)
        facts = Facts(parts=(PartFacts(),), shadowed=("public.lower",))

        (part,) = widened(parts, classes, facts)

        assert part.effect == "read"

    def test_trigger_code(self) -> None:
        classes = classify("insert into t values (1)")
        parts = tuple(c.to_part() for c in classes)
        facts = Facts(parts=(PartFacts(code=(("public.fill", "trigger"),)),))

        (part,) = widened(parts, classes, facts)

        assert part.effect == "unknown"
        assert part.reason == "it runs the target's own public.fill (trigger)"


class TestAfterChange:
    def test_later_parts_of_the_string(self) -> None:
        classes = classify(
            "create view v as select * from canary; insert into v values (1); commit"
        )
        parts = tuple(c.to_part() for c in classes)

        judged, pending = after_change(parts, classes, "")

        assert [p.problem for p in judged] == [
            "",
            "an earlier CREATE of this transaction may change what it does, and"
            " the gateway reads the catalog only once that is committed",
            "",
        ]
        assert pending == "CREATE"

    def test_plain_ddl_changes_nothing(self) -> None:
        classes = classify(
            "create table x (a int default 1); create index on x (a);"
            " alter table x add column b text; insert into x values (1)"
        )
        parts = tuple(c.to_part() for c in classes)

        judged, pending = after_change(parts, classes, "")

        assert [p.problem for p in judged] == ["", "", "", ""]
        assert pending == ""

    @pytest.mark.parametrize(
        "text",
        [
            "create trigger tg after insert on t for each row execute function f()",
            "create function public.lower(int) returns int language sql as 'select 1'",
            "create operator public.+ (leftarg = text, rightarg = text, function = f)",
            "alter table t inherit canary",
            "alter table ptab attach partition t for values from (1) to (2)",
            "alter table t rename to u",
            "alter table t add foreign key (a) references u on delete cascade",
            "create table c () inherits (canary)",
            "create table p partition of canary for values in (1)",
            "alter role app set search_path = evil, public",
            "do $$ begin end $$",
        ],
    )
    def test_changes(self, text: str) -> None:
        (item,) = classify(text)

        assert item.indirect, text

    def test_search_path_carried(self) -> None:
        state = carry(SessionState(), classify("set search_path = evil, public"))

        (found,) = classify("insert into t values (1)", state)

        assert found.relations_written == {"public.t", "evil.t"}


class TestTrusted:
    """
    Functions of the target's own the operator vouches for.
    """

    TRUSTED = frozenset({"public.fill", "audit.*"})

    def test_code_and_shadows_of_trusted_functions(self) -> None:
        classes = classify("insert into t select lower(a) from u")
        parts = tuple(c.to_part() for c in classes)
        facts = Facts(
            parts=(
                PartFacts(code=(("public.fill", "trigger"), ("audit.log", "rule"))),
            ),
            shadowed=("audit.lower",),
        )

        (part,) = widened(parts, classes, facts, self.TRUSTED)

        assert part.effect == "write"
        assert part.reason == ""

    def test_others_still_count(self) -> None:
        classes = classify("insert into t values (1)")
        parts = tuple(c.to_part() for c in classes)
        facts = Facts(
            parts=(
                PartFacts(code=(("public.fill", "trigger"), ("public.other", "rule"))),
            )
        )

        (part,) = widened(parts, classes, facts, self.TRUSTED)

        assert part.reason == "it runs the target's own public.other (rule)"

    def test_is_trusted(self) -> None:
        assert is_trusted("public.fill", self.TRUSTED)
        assert is_trusted("audit.anything", self.TRUSTED)
        assert not is_trusted("public.fill2", self.TRUSTED)
        assert not is_trusted('"Audit".x', self.TRUSTED)

    def test_classifier_calls(self) -> None:
        allowed = allowed_functions(frozenset({"public.calc_tax", "audit.*"}))

        plain, qualified, schema, other = (
            classify(text, allowed_functions=allowed)[0]
            for text in (
                "select calc_tax(1)",
                "select public.calc_tax(1)",
                "select audit.anything(1)",
                "select public.other(1)",
            )
        )

        assert [c.effect.value for c in (plain, qualified, schema)] == ["read"] * 3
        assert other.effect.value == "unknown"


class TestTemporaryCandidates:
    def test_only_found_temporary_relations_count(self) -> None:
        """
        The temporary candidate of a bare name is asked about, and counts
        only when the catalog finds one.
        """
        classes = classify("select * from t; select * from u")
        wanted = request(classes)
        assert wanted is not None
        rows = _rows(("relation", "r", "1", "pg_temp_3", "u", "named"))

        facts = _facts(wanted, rows)

        assert facts.parts[0].reads == {"public.t"}
        assert facts.parts[1].reads == {"public.u", "pg_temp_3.u"}
