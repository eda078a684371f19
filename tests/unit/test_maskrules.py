"""
Tests for L{hoopgate._maskrules} and L{hoopgate._maskinterceptor}:
reading masking rules, one session's view of them, the masking stage's
decisions on statements, results and diagnostics, and what recordings
write of masked sessions.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from hoopgate._chain import Chain, Context
from hoopgate._config import parse_config
from hoopgate._configreader import ConfigError, load_yaml
from hoopgate._events import (
    Column,
    DiagnosticReceived,
    MaskCount,
    Parameter,
    ResultDescribed,
    SessionClosed,
    StatementBound,
    StatementCompleted,
    StatementPart,
    StatementReceived,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IInterceptor, IObserver
from hoopgate._masking import REDACTED, KeepLast, KeyedHash, Nullify, Redact
from hoopgate._maskinterceptor import MaskingInterceptor, MaskingPlan
from hoopgate._maskrules import (
    GENERIC_MESSAGE,
    MaskingPolicy,
    parse_column_pattern,
    read_masking,
    render_name,
)
from hoopgate._policy import Policy, read_policy
from hoopgate._recording import Recorder, read_recording
from hoopgate._verdicts import ALLOW, Allow, Deny, Note, Rewrite
from tests.unit.test_config import BASE, PLUGINS

ALICE = Identity(subject="alice", issuer="https://id.test", groups=("analysts",))
BOB = Identity(subject="bob", issuer="https://id.test", groups=("dba",))
SESSION = "20260101T000000Z-00000000aa"

POLICY = """
key: 0123456789abcdef0123
strict: true
detectors:
  - name: employee-id
    pattern: 'EMP-[0-9]{6}'
    hints: [EMP-]
rules:
  - name: customer-pii
    subjects: ["*"]
    columns: [public.customers.email, customers.ssn]
  - name: cards
    columns: [public.customers.card_number]
    strategy: {keep_last: 4}
  - name: hashed
    groups: [analysts]
    columns: [public.orders.customer_email]
    strategy: {hash: {digits: 16}}
  - name: detected
    detect: [email, card_number, employee-id]
  - name: watch
    mode: dry-run
    columns: [public.customers.name]
    strategy: "null"
"""


def masking_policy(text: str = POLICY) -> MaskingPolicy:
    return read_masking(load_yaml(textwrap.dedent(text), "test.yaml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        masking_policy(text)
    return str(caught.value)


def context(policy: MaskingPolicy, identity: Identity | None = ALICE) -> Context:
    return Context(
        session_id=SESSION,
        protocol="postgres",
        target="appdb",
        identity=identity,
        policy=Policy(version=1, access=(), masking=policy),
    )


def column(
    name: str,
    table: str = "public.customers",
    type_name: str = "text",
    textual: bool = True,
) -> Column:
    return Column(
        name=name, type_name=type_name, table=table, column=name, textual=textual
    )


def described(*columns: Column, statement_id: str = "s1") -> ResultDescribed:
    return ResultDescribed(
        session_id=SESSION,
        protocol="postgres",
        statement_id=statement_id,
        columns=columns,
    )


def part(
    *,
    reads: tuple[str, ...] = ("public.customers",),
    columns: tuple[str, ...] = (),
    derived: tuple[str, ...] = (),
    effect: str = "read",
    stream_format: str = "",
    problem: str = "",
    command: str = "SELECT",
) -> StatementPart:
    return StatementPart(
        text="select ...",
        command=command,
        effect=effect,
        reads=reads,
        columns=columns,
        derived_columns=derived,
        stream_format=stream_format,
        problem=problem,
    )


def statement(*parts: StatementPart, statement_id: str = "s1") -> StatementReceived:
    return StatementReceived(
        session_id=SESSION,
        protocol="postgres",
        statement_id=statement_id,
        text="select ...",
        parts=parts,
        classified=True,
    )


class TestReading:
    """
    C{policy.masking} as written in the configuration.
    """

    def test_rules_and_options(self) -> None:
        """
        Every key is read: strategies, detectors, scopes and modes.
        """
        policy = masking_policy()

        names = [rule.name for rule in policy.rules]
        pii, cards, hashed, detected, watch = policy.rules
        assert names == ["customer-pii", "cards", "hashed", "detected", "watch"]
        assert policy.strict is True
        assert (policy.record_rows, policy.record_bytes) == (1000, 1 << 20)
        assert pii.strategy == Redact() and pii.mode == "enforce"
        assert [p.text for p in pii.columns] == [
            "public.customers.email",
            "customers.ssn",
        ]
        assert cards.strategy == KeepLast(4)
        assert isinstance(hashed.strategy, KeyedHash)
        assert hashed.strategy.digits == 16
        assert hashed.groups == ("analysts",)
        assert [d.name for d in detected.detectors] == [
            "email",
            "card_number",
            "employee-id",
        ]
        assert watch.mode == "dry-run" and watch.strategy == Nullify()

    def test_absent_section(self) -> None:
        """
        Without a masking section nothing is masked; the recording caps
        have their defaults.
        """
        policy = read_policy(load_yaml("version: 1\naccess: []\n", "t"))

        assert policy.masking.rules == ()
        assert policy.masking.strict is False
        assert policy.masking.record_rows == 1000

    def test_sizes(self) -> None:
        """
        record_bytes takes a number of bytes or a KiB/MiB/GiB size.
        """
        assert masking_policy("record_bytes: 2048").record_bytes == 2048
        assert masking_policy("record_bytes: 4MiB").record_bytes == 4 << 20
        assert masking_policy("record_rows: 0").record_rows == 0
        assert "must be a size" in error_of("record_bytes: lots")

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "rules: [{name: a, detect: [emial]}]",
                "rules[0].detect (line 1): unknown detector 'emial' (known: api_key",
            ),
            (
                "rules: [{name: a, columns: [customers]}]",
                "is not a column (schema.table.column or table.column)",
            ),
            (
                "rules: [{name: a, columns: [public.Customers.email]}]",
                "must be written in lower case",
            ),
            (
                "rules: [{name: a, columns: [public.customers.Email]}]",
                'or quoted: "Email"',
            ),
            (
                "rules: [{name: a, columns: [public.t.x], strategy: keep_last}]",
                "keep_last needs a count",
            ),
            (
                "rules: [{name: a, columns: [public.t.x], strategy: hash}]",
                "hash needs masking.key",
            ),
            (
                "rules: [{name: a, columns: [public.t.x], strategy: scramble}]",
                "must be redact, null, hash",
            ),
            ("rules: [{name: a}]", "a masking rule needs columns, detect or both"),
            (
                "rules: [{name: a, groups: ['*'], detect: [email]}]",
                "'*' is not a group",
            ),
            (
                "rules: [{name: a, effects: [reed], detect: [email]}]",
                "unknown effect 'reed'",
            ),
            ("key: short", "key (line 1): must be at least 16 bytes"),
            (
                "detectors: [{name: email, pattern: x}]",
                "'email' is a built-in detector",
            ),
            (
                "detectors: [{name: e, pattern: '(', validator: luhn}]",
                "invalid pattern",
            ),
            (
                "rules: [{name: a, detect: [email], colour: red}]",
                "colour (line 1): is not a known key",
            ),
        ],
    )
    def test_errors(self, text: str, message: str) -> None:
        """
        Mistakes are refused naming the key and line.
        """
        assert message in error_of(text)

    def test_names_unique_across_rules(self) -> None:
        """
        A masking rule may not reuse an access or guardrail rule's name.
        """
        text = textwrap.dedent(
            """
            version: 1
            access: []
            guardrails:
              - name: same
                deny: {commands: [DROP]}
            masking:
              rules:
                - name: same
                  detect: [email]
            """
        )

        with pytest.raises(ConfigError, match="rule 'same' is defined twice"):
            read_policy(load_yaml(text, "t"))

    def test_unknown_target(self) -> None:
        """
        A masking rule naming a target the configuration lacks is refused:
        it would silently mask nothing.
        """
        text = BASE + (
            "  masking:\n"
            "    rules:\n"
            "      - name: pii\n"
            "        targets: [apdb]\n"
            "        detect: [email]\n"
        )

        with pytest.raises(ConfigError, match="masking rule 'pii' names unknown"):
            parse_config(text, "t.yaml", PLUGINS)


class TestColumnPatterns:
    """
    Column patterns against result lineage.
    """

    def test_qualified_and_bare(self) -> None:
        """
        A schema-qualified pattern matches its table only; a bare table
        matches it in any schema; C{*} every column of the table.
        """
        qualified = parse_column_pattern("public.customers.email")
        bare = parse_column_pattern("customers.email")
        every = parse_column_pattern("public.customers.*")

        assert qualified.matches("public.customers", "email")
        assert not qualified.matches("audit.customers", "email")
        assert not qualified.matches("public.customers", "ssn")
        assert bare.matches("audit.customers", "email")
        assert every.matches("public.customers", "anything")
        assert not qualified.matches("", "email")

    def test_quoted(self) -> None:
        """
        Quoted names match the catalog's mixed-case names exactly.
        """
        pattern = parse_column_pattern('public."Customers"."Email"')

        assert pattern.matches('public."Customers"', "Email")
        assert not pattern.matches("public.customers", "email")
        assert render_name("Email") == '"Email"'
        assert render_name("email") == "email"


class TestSessionView:
    """
    The rules that apply to one identity on one target.
    """

    def test_scoped(self) -> None:
        """
        Subjects, groups and targets decide which rules apply; the view
        is computed once per identity and target.
        """
        policy = masking_policy()

        alice = policy.for_session(ALICE, "appdb")
        bob = policy.for_session(BOB, "appdb")

        assert "hashed" in [r.name for r in alice.rules]
        assert "hashed" not in [r.name for r in bob.rules]
        assert policy.for_session(ALICE, "appdb") is alice

    def test_uses(self) -> None:
        """
        A masked column used in an expression, a whole row, or a part
        that cannot be checked is a use; a plain output column is not.
        """
        view = masking_policy().for_session(ALICE, "appdb")

        plain = part(columns=("email",))
        derived = part(columns=("email",), derived=("email",))
        whole = part(columns=("*",), derived=("*",))
        other = part(columns=("id",), derived=("id",))
        unknown = part(effect="unknown", columns=())
        unseen = part(
            reads=("pg_catalog.pg_class",),
            effect="unknown",
            problem="function pg_catalog.pg_table_is_visible is not on the allow-list",
        )
        blind = part(reads=(), effect="unknown", problem="function f is unknown")
        dynamic = StatementPart(
            text="do $$ ... $$", command="DO", effect="unknown", shapes=("dynamic_sql",)
        )
        broken = part(reads=(), problem="the parser rejected the text")
        elsewhere = part(reads=("public.orders",), derived=("email",))

        assert view.uses(plain, True) == []
        assert [u.reason for u in view.uses(derived, True)] == [
            "uses masked column email in an expression"
        ]
        assert view.uses(whole, True)
        assert view.uses(other, True) == []
        assert "cannot check" in view.uses(unknown, True)[0].reason
        assert view.uses(unseen, True) == []
        assert "function f is unknown" in view.uses(blind, True)[0].reason
        assert "cannot see" in view.uses(dynamic, True)[0].reason
        assert "parser rejected" in view.uses(broken, True)[0].reason
        assert view.uses(elsewhere, True) == []
        assert view.uses(part(derived=("name",)), False)[0].rule.name == "watch"

    def test_copy_problems(self) -> None:
        """
        COPY of a masked table must list its columns in a format masking
        reads.
        """
        view = masking_policy().for_session(ALICE, "appdb")

        listed = part(columns=("id", "email"), stream_format="text")
        unlisted = part(columns=("*",), stream_format="csv")
        binary = part(columns=("email",), stream_format="binary")
        query = part(columns=("email",), derived=("email",), stream_format="text")

        assert view.copy_problems(listed, True) == []
        assert "must name its columns" in view.copy_problems(unlisted, True)[0].reason
        assert "binary format" in view.copy_problems(binary, True)[0].reason
        assert view.copy_problems(query, True)

    def test_statement_text_for_recordings(self) -> None:
        """
        Recordings mask detected values always, and every literal of a
        statement using masked columns in expressions.
        """
        view = masking_policy().for_session(ALICE, "appdb")

        text = "select id from customers where ssn = '123-45-6789' and x = 'EMP-123456'"
        mailed = "select 'a@example.com'"

        assert view.mask_statement(text, True) == (
            "select id from customers where ssn = '[masked]' and x = '[masked]'"
        )
        assert view.mask_statement(mailed, False) == "select '[masked]'"
        assert view.mask_statement("select 'plain'", False) == "select 'plain'"
        assert "withheld" in view.mask_statement("select 'unclosed", True)

    def test_parameters_for_recordings(self) -> None:
        """
        Parameters are masked whole for statements using masked columns
        in expressions, by detectors otherwise; NULL stays NULL.
        """
        view = masking_policy().for_session(ALICE, "appdb")
        parameters = (
            Parameter("123-45-6789"),
            Parameter(None),
            Parameter("mail a@example.com"),
        )

        assert view.mask_parameters(parameters, True) == (
            Parameter(REDACTED),
            Parameter(None),
            Parameter(REDACTED),
        )
        assert view.mask_parameters(parameters, False) == (
            Parameter("123-45-6789"),
            Parameter(None),
            Parameter("mail [masked]"),
        )


class TestStatements:
    """
    The masking stage on statements.
    """

    def test_provides(self) -> None:
        """
        It is an interceptor of stage masking and an observer.
        """
        stage = MaskingInterceptor(masking_policy())

        assert verifyObject(IInterceptor, stage)
        assert verifyObject(IObserver, stage)
        assert stage.stage == "masking"

    def test_strict_refuses_uses(self) -> None:
        """
        With strict on, a masked column in an expression is refused with
        the rule and the part named; a dry-run rule's use is noted.
        """
        stage = MaskingInterceptor(masking_policy())

        verdict = stage.decide(
            statement(part(columns=("email", "name"), derived=("email", "name"))),
            context(stage._policy),
        )

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "masking.blocked"
        assert verdict.reason.rule == "customer-pii"
        assert verdict.reason.message == "statement blocked by masking policy"
        assert verdict.reason.detail == (
            "customer-pii: part 1 SELECT uses masked column email in an expression"
        )
        assert verdict.notes == (Note("dry_run", "watch"),)
        assert stage.blocked == {"customer-pii": 1}
        assert stage.dry_run_hits == {"watch": 1}

    def test_plain_allowed(self) -> None:
        """
        Plain output of masked columns is allowed, strict or not.
        """
        stage = MaskingInterceptor(masking_policy())

        verdict = stage.decide(
            statement(part(columns=("email", "id"), derived=("id",))),
            context(stage._policy),
        )

        assert verdict is ALLOW

    def test_not_strict(self) -> None:
        """
        Without strict, uses are allowed (masking only stops accidents),
        but COPY that cannot be masked is still refused.
        """
        policy = masking_policy(POLICY.replace("strict: true", "strict: false"))
        stage = MaskingInterceptor(policy)

        used = stage.decide(
            statement(part(columns=("email",), derived=("email",))), context(policy)
        )
        copied = stage.decide(
            statement(part(columns=("*",), stream_format="text", command="COPY")),
            context(policy),
        )

        assert used is ALLOW
        assert isinstance(copied, Deny)
        assert "must name its columns" in copied.reason.detail

    def test_strict_refuses_statistics(self) -> None:
        """
        With strict on, reading pg_stats (whose most common values and
        histogram bounds are column values) is refused for an identity
        masking applies to; without strict it is allowed.
        """
        stage = MaskingInterceptor(masking_policy())
        loose = masking_policy(POLICY.replace("strict: true", "strict: false"))
        read = statement(part(reads=("pg_catalog.pg_stats",), columns=("*",)))

        verdict = stage.decide(read, context(stage._policy))

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "masking.blocked"
        assert "pg_catalog.pg_stats holds sample values" in verdict.reason.detail
        assert MaskingInterceptor(loose).decide(read, context(loose)) is ALLOW

    def test_no_rules_for_identity(self) -> None:
        """
        An identity no rule applies to is not judged.
        """
        policy = masking_policy(
            "strict: true\nrules: [{name: a, subjects: [carol], columns: [t.x]}]"
        )
        stage = MaskingInterceptor(policy)

        verdict = stage.decide(
            statement(part(reads=("public.t",), derived=("x",))), context(policy)
        )

        assert verdict is ALLOW


def _plan(verdict: Any) -> MaskingPlan:
    assert isinstance(verdict, Rewrite)
    assert isinstance(verdict.plan, MaskingPlan)
    return verdict.plan


class TestResults:
    """
    The masking stage on result descriptions: one plan per result.
    """

    def test_lineage_and_detectors(self) -> None:
        """
        Column rules mask by lineage and re-describe the column; detectors
        scan other text columns; other values pass as the same objects.
        """
        stage = MaskingInterceptor(masking_policy())
        event = described(
            column("id", type_name="int4"),
            column("email"),
            column("card_number"),
            column("note"),
        )

        verdict = stage.decide(event, context(stage._policy))
        plan = _plan(verdict)
        row: list[bytes | None] = [b"1", b"a@b.com", b"4111111111111111", b"x"]
        note = b"write to x@example.com"
        out = plan(row)
        second = plan([b"2", None, None, note])

        assert isinstance(verdict, Rewrite)
        assert isinstance(verdict.event, ResultDescribed)
        assert [c.masked for c in verdict.event.columns] == [False, True, True, False]
        assert out[0] is row[0] and out[3] is row[3]
        assert out[1:3] == [b"[masked]", b"************1111"]
        assert second == [b"2", None, None, b"write to [masked]"]

    def test_binary_values(self) -> None:
        """
        A masked value that does not arrive as text is replaced whole:
        redact gives the mask, other strategies NULL.
        """
        policy = masking_policy(
            """
            rules:
              - name: r
                columns: [public.t.salary]
              - name: k
                columns: [public.t.bonus]
                strategy: {keep_last: 2}
            """
        )
        stage = MaskingInterceptor(policy)
        event = described(
            column("salary", "public.t", "numeric", textual=False),
            column("bonus", "public.t", "numeric", textual=False),
        )

        plan = _plan(stage.decide(event, context(policy)))

        assert plan([b"\x00\x01", b"\x00\x02"]) == [b"[masked]", None]

    def test_detectors_keep_types(self) -> None:
        """
        A detector hit in a number nulls it (a mask would break the
        type); types that cannot hold hits are not scanned at all.
        """
        policy = masking_policy("rules: [{name: d, detect: [card_number]}]")
        stage = MaskingInterceptor(policy)
        event = described(
            column("n", "", "numeric"), column("b", "", "bytea"), column("t", "")
        )

        plan = _plan(stage.decide(event, context(policy)))
        card = b"4111111111111111"

        assert plan([card, card, card]) == [None, card, b"[masked]"]

    def test_nothing_applies(self) -> None:
        """
        A result with nothing to mask is allowed as it is.
        """
        policy = masking_policy("rules: [{name: a, columns: [public.t.x]}]")
        stage = MaskingInterceptor(policy)

        verdict = stage.decide(described(column("y", "public.t")), context(policy))

        assert verdict is ALLOW

    def test_dry_run_counts_and_records(self) -> None:
        """
        A dry-run rule changes nothing the client gets; it is noted, its
        hits are counted, and the recorded row is masked as it would be.
        """
        stage = MaskingInterceptor(masking_policy())
        event = described(column("name"), column("email"))

        verdict = stage.decide(event, context(stage._policy))
        plan = _plan(verdict)
        row: list[bytes | None] = [b"Ann", b"a@b.com"]
        out = plan(row)

        assert isinstance(verdict, Rewrite)
        assert verdict.notes == (Note("dry_run", "watch"),)
        assert out == [b"Ann", b"[masked]"]
        assert plan.recorded(out) == [None, b"[masked]"]
        assert plan.report() == (
            MaskCount("email", "customer-pii", "column", 1),
            MaskCount("name", "watch", "column", 1, dry_run=True),
        )
        assert plan.report() is plan.report()
        assert stage.masked[("customer-pii", "email", "column")] == 1
        assert stage.masked[("watch", "name", "column")] == 1

    def test_effects(self) -> None:
        """
        A rule limited to some effects masks only their results; a result
        whose statement is unknown is masked by every rule.
        """
        policy = masking_policy(
            "rules: [{name: w, effects: [write], columns: [public.customers.email]}]"
        )
        stage = MaskingInterceptor(policy)
        ctx = context(policy)

        stage.decide(statement(part(), statement_id="r"), ctx)
        stage.decide(statement(part(effect="write"), statement_id="w"), ctx)
        read = stage.decide(described(column("email"), statement_id="r"), ctx)
        written = stage.decide(described(column("email"), statement_id="w"), ctx)
        unknown = stage.decide(described(column("email"), statement_id="?"), ctx)

        assert read is ALLOW
        assert isinstance(written, Rewrite)
        assert isinstance(unknown, Rewrite)

    def test_through_the_chain(self) -> None:
        """
        In the chain the rewrite carries the plan and the new description.
        """
        policy = masking_policy()
        stage = MaskingInterceptor(policy)
        chain = Chain([stage], [stage])

        verdict = chain.decide(described(column("email")), context(policy))

        assert isinstance(verdict, Rewrite)
        assert verdict.plan is not None
        assert verdict.plan([b"x@y.org"]) == [b"[masked]"]


class TestDiagnostics:
    """
    The masking stage on errors and notices.
    """

    def _diagnostic(
        self, statement_id: str = "s1", **fields: str
    ) -> DiagnosticReceived:
        return DiagnosticReceived(
            session_id=SESSION,
            protocol="postgres",
            statement_id=statement_id,
            severity="ERROR",
            code="22P02",
            fields=(("S", "ERROR"), ("C", "22P02"), *fields.items()),
        )

    def test_detected_values_masked(self) -> None:
        """
        Detected values are masked in every text field; codes are kept.
        """
        stage = MaskingInterceptor(masking_policy())
        event = self._diagnostic(M='bad "a@b.com"', D="EMP-123456 here")

        verdict = stage.decide(event, context(stage._policy))

        assert isinstance(verdict, Rewrite)
        assert isinstance(verdict.event, DiagnosticReceived)
        assert verdict.event.fields == (
            ("S", "ERROR"),
            ("C", "22P02"),
            ("M", 'bad "[masked]"'),
            ("D", "[masked] here"),
        )
        assert stage.diagnostics == {"masked": 1}

    def test_generic_when_masked_columns_used(self) -> None:
        """
        An error of a statement that used masked columns in expressions
        gets a generic message and loses detail, hint and context.
        """
        policy = masking_policy(POLICY.replace("strict: true", "strict: false"))
        stage = MaskingInterceptor(policy)
        ctx = context(policy)
        stage.decide(statement(part(derived=("ssn",))), ctx)

        verdict = stage.decide(
            self._diagnostic(M='invalid "123-45-6789"', D="d", H="h", W="w"), ctx
        )

        assert isinstance(verdict, Rewrite)
        assert isinstance(verdict.event, DiagnosticReceived)
        assert verdict.event.fields == (
            ("S", "ERROR"),
            ("C", "22P02"),
            ("M", GENERIC_MESSAGE),
        )

    def test_values_of_the_result(self) -> None:
        """
        An error of a statement on a table with masked columns never
        quotes a value (a failing row, a missing key): it is made generic.
        """
        policy = masking_policy("rules: [{name: p, columns: [public.customers.ssn]}]")
        stage = MaskingInterceptor(policy)
        ctx = context(policy)
        stage.decide(statement(part(columns=("ssn",))), ctx)
        plan = _plan(stage.decide(described(column("ssn")), ctx))
        plan([b"123-45-6789"])

        verdict = stage.decide(self._diagnostic(M="row 123-45-6789 failed"), ctx)

        assert isinstance(verdict, Rewrite)
        assert isinstance(verdict.event, DiagnosticReceived)
        assert all("123-45-6789" not in text for _, text in verdict.event.fields)

    def test_clean_text_allowed(self) -> None:
        """
        A text with nothing to mask is allowed as it is.
        """
        stage = MaskingInterceptor(masking_policy())

        verdict = stage.decide(
            self._diagnostic(M='invalid "abc"'), context(stage._policy)
        )

        assert verdict is ALLOW

    def test_session_forgotten(self) -> None:
        """
        A closed session's statements are forgotten.
        """
        stage = MaskingInterceptor(masking_policy())
        ctx = context(stage._policy)
        stage.decide(statement(part()), ctx)

        stage.observe(
            SessionClosed(session_id=SESSION, protocol="postgres", reason="client"),
            ALLOW,
            ctx,
        )

        assert stage._sessions == {}


class TestRecorder:
    """
    What the recorder writes of a session with masking rules.
    """

    def test_masked_lines(self, tmp_path: Path) -> None:
        """
        Statement literals, parameters and diagnostic texts are masked;
        a rewritten diagnostic is recorded as the client got it.
        """
        policy = masking_policy()
        ctx = context(policy)
        recorder = Recorder(str(tmp_path))
        text = "select id from customers where email = 'x@y.org'"
        event = StatementReceived(
            session_id=SESSION,
            protocol="postgres",
            statement_id="s1",
            text=text,
            parts=(part(derived=("email",)),),
            classified=True,
        )
        bound = StatementBound(
            session_id=SESSION,
            protocol="postgres",
            statement_id="s1",
            portal="",
            parameters=(Parameter("plain"),),
        )
        diagnostic = DiagnosticReceived(
            session_id=SESSION,
            protocol="postgres",
            statement_id="s2",
            severity="ERROR",
            code="XX000",
            fields=(("M", "raw a@b.com"),),
        )
        rewritten = Rewrite(
            event=DiagnosticReceived(
                session_id=SESSION,
                protocol="postgres",
                statement_id="s2",
                severity="ERROR",
                code="XX000",
                fields=(("M", "as sent"),),
            )
        )

        recorder.observe(event, ALLOW, ctx)
        recorder.observe(bound, ALLOW, ctx)
        recorder.observe(diagnostic, Allow(), ctx)
        recorder.observe(diagnostic, rewritten, ctx)
        lines = read_recording(recorder.path_for(SESSION))
        recorder.close()

        assert lines[0]["text"] == "select id from customers where email = '[masked]'"
        assert lines[1]["parameters"] == [{"value": "[masked]", "binary": False}]
        assert lines[2]["fields"] == [["M", "raw [masked]"]]
        assert lines[3]["fields"] == [["M", "as sent"]]

    def test_dry_run_diagnostics(self, tmp_path: Path) -> None:
        """
        For an identity only dry-run column rules apply to, the client
        gets an error as the server sent it, but the recording keeps the
        generic text when the statement used masked columns.
        """
        policy = masking_policy(
            "rules: [{name: w, mode: dry-run, columns: [public.customers.ssn]}]"
        )
        ctx = context(policy)
        recorder = Recorder(str(tmp_path))
        stage = MaskingInterceptor(policy)
        received = statement(part(derived=("ssn",)))
        error = DiagnosticReceived(
            session_id=SESSION,
            protocol="postgres",
            statement_id="s1",
            severity="ERROR",
            code="22P02",
            fields=(("C", "22P02"), ("M", 'invalid "123-45-6789"')),
        )
        completed = StatementCompleted(
            session_id=SESSION,
            protocol="postgres",
            statement_id="s1",
            status="error",
            error_message='invalid "123-45-6789"',
        )

        stage.decide(received, ctx)
        verdict = stage.decide(error, ctx)
        for event in (received, error, completed):
            recorder.observe(event, ALLOW, ctx)
        lines = read_recording(recorder.path_for(SESSION))
        recorder.close()

        assert verdict is ALLOW
        assert lines[1]["fields"] == [["C", "22P02"], ["M", GENERIC_MESSAGE]]
        assert lines[2]["error_message"] == GENERIC_MESSAGE
        assert "x@y.org" not in recorder.path_for(SESSION).read_text()


def test_gateway_adds_stage_only_with_rules() -> None:
    """
    Without masking rules the chain has no masking stage, so plugins can
    see that nobody judges results.
    """
    stage = MaskingInterceptor(MaskingPolicy())
    chain = Chain([stage])

    assert chain._for(ResultDescribed) == (stage,)
    assert Chain([])._for(ResultDescribed) == ()
