"""
Tests for L{hoopgate._guardrails}: reading guardrail rules, matching
statements, command lines and HTTP requests, strictest-wins evaluation,
dry-run, and the interceptor in the chain.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from hoopgate._chain import Chain, Context
from hoopgate._config import parse_config
from hoopgate._configreader import ConfigError, ConfigReader, load_yaml
from hoopgate._events import (
    CommandReceived,
    Event,
    FileOperationRequested,
    ForwardRequested,
    HttpRequestReceived,
    Notice,
    StatementPart,
    StatementReceived,
)
from hoopgate._gateway import Gateway
from hoopgate._guardrails import (
    EFFECTS,
    FILE_OPERATIONS,
    MAX_REASONS,
    SHAPES,
    GuardrailInterceptor,
    GuardrailRule,
    evaluate,
    parse_relation_pattern,
    request_path,
    statement_parts,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IInterceptor, ISessionHandle
from hoopgate._policy import read_policy
from hoopgate._recording import Recorder, read_recording
from hoopgate._session import Session
from hoopgate._store import MemoryStore
from hoopgate._verdicts import ALLOW, Allow, Deny, DenyReason, Hold, Note, Verdict
from tests.unit.test_chain import Step
from tests.unit.test_config import BASE, PLUGINS, temporary_folder

ALICE = Identity(subject="alice", issuer="https://id.test", groups=("analysts",))
BOB = Identity(subject="bob", issuer="https://id.test", groups=("dba",))

SESSION = "20260101T000000Z-00000000aa"


def part(
    command: str = "SELECT",
    effect: str = "read",
    *,
    reads: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
    shapes: tuple[str, ...] = (),
    problem: str = "",
) -> StatementPart:
    return StatementPart(
        text=f"{command.lower()} ...",
        command=command,
        effect=effect,
        reads=reads,
        writes=writes,
        shapes=shapes,
        problem=problem,
    )


SELECT_CUSTOMERS = part(reads=("public.customers",))
DROP_CANARY = part("DROP", "ddl", writes=("public.canary",), shapes=("drop",))


def statement(*parts: StatementPart, text: str = "SELECT 1") -> StatementReceived:
    return StatementReceived(
        session_id=SESSION,
        protocol="postgres",
        statement_id=f"{SESSION}.1",
        text=text,
        parts=parts,
    )


def command(line: str) -> CommandReceived:
    return CommandReceived(
        session_id=SESSION, protocol="ssh", command_id=f"{SESSION}.1", command=line
    )


def request(method: str, path: str) -> HttpRequestReceived:
    return HttpRequestReceived(
        session_id=SESSION,
        protocol="http",
        request_id=f"{SESSION}.1",
        method=method,
        path=path,
    )


def reader(text: str) -> ConfigReader:
    return load_yaml(textwrap.dedent(text), "policy.yaml")


def rules(text: str) -> tuple[GuardrailRule, ...]:
    """
    The guardrails of a C{policy} section given as YAML.
    """
    return read_policy(reader(text)).guardrails


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        rules(text)
    return str(raised.value)


def context(identity: Identity | None = ALICE, target: str = "appdb") -> Context:
    return Context(
        session_id=SESSION,
        protocol="postgres",
        target=target,
        identity=identity,
        policy=None,
    )


def judged(
    policy: str,
    event: Event,
    identity: Identity | None = ALICE,
    target: str = "appdb",
) -> Verdict:
    """
    The guardrail verdict on C{event} under the guardrails in C{policy}.
    """
    interceptor = GuardrailInterceptor(rules(policy))
    return interceptor.decide(event, context(identity, target))


def denied_by(verdict: Verdict) -> str | None:
    """
    The deciding rule of a guardrail deny, or C{None} for an allow.
    """
    if isinstance(verdict, Allow):
        return None
    assert isinstance(verdict, Deny), verdict
    assert verdict.reason.code == "guardrail.blocked"
    return verdict.reason.rule


NO_DESTRUCTIVE_RULE = """\
  - name: no-destructive
    deny:
      commands: [DROP, truncate]
      shapes: [delete_without_where, update_without_where]
      effects: [unknown]
      writes: [public.canary]
"""

READ_ONLY_RULE = """\
  - name: analysts-read-only
    groups: [analysts]
    targets: [appdb]
    allow_only:
      effects: [read]
      reads: [public.customers, public.orders]
"""

WATCH_RULES = """\
  - name: watch-drops
    mode: dry-run
    deny: {commands: [DROP]}
  - name: watch-reads
    mode: dry-run
    allow_only: {effects: [write]}
"""


def guardrails(*items: str) -> str:
    """
    A policy section holding the guardrail rules C{items}.
    """
    return "guardrails:\n" + "".join(items)


NO_DESTRUCTIVE = guardrails(NO_DESTRUCTIVE_RULE)
READ_ONLY = guardrails(READ_ONLY_RULE)
BOTH = guardrails(NO_DESTRUCTIVE_RULE, READ_ONLY_RULE)


class ReadGuardrailTests(SynchronousTestCase):
    """
    Guardrail rules are read from C{policy.guardrails}; every mistake is
    named by key and line.
    """

    def test_schema_example(self) -> None:
        """
        The documented example reads into two rules with their defaults.
        """
        deny, allow = rules(BOTH)

        assert (deny.name, deny.mode, deny.targets) == (
            "no-destructive",
            "enforce",
            ("*",),
        )
        assert (deny.subjects, deny.groups) == ((), ())
        assert deny.allow_only is None
        assert deny.deny is not None
        assert deny.deny.statement.commands == frozenset({"DROP", "TRUNCATE"})
        assert deny.deny.statement.effects == frozenset({"unknown"})
        assert deny.deny.statement.reads is None
        assert not deny.deny.command.present
        assert not deny.deny.http.present
        assert (allow.name, allow.groups, allow.targets) == (
            "analysts-read-only",
            ("analysts",),
            ("appdb",),
        )
        assert allow.deny is None
        assert allow.allow_only is not None
        reads = allow.allow_only.statement.reads
        assert reads is not None
        assert [p.text for p in reads] == ["public.customers", "public.orders"]

    def test_policy_without_guardrails(self) -> None:
        """
        A policy without the key has no guardrails.
        """
        assert rules("version: 1\n") == ()

    def test_dry_run_mode(self) -> None:
        """
        C{mode: dry-run} is read as such.
        """
        (rule,) = rules(
            """
            guardrails:
              - name: watch
                mode: dry-run
                deny: {commands: [DROP]}
            """
        )

        assert rule.mode == "dry-run"
        assert not rule.enforced

    def test_unknown_mode(self) -> None:
        """
        A mode other than enforce or dry-run is refused at its line.
        """
        message = refusal(
            """
            guardrails:
              - name: watch
                mode: audit
                deny: {commands: [DROP]}
            """
        )

        assert message == (
            "guardrails[0].mode (line 4): must be one of enforce, dry-run"
        )

    def test_unknown_effect(self) -> None:
        """
        An effect the classifiers never report is refused, naming the
        known ones.
        """
        message = refusal(
            """
            guardrails:
              - name: r
                allow_only:
                  effects: [read, reed]
            """
        )

        assert message == (
            "guardrails[0].allow_only.effects (line 5): unknown effect 'reed' "
            "(known: ddl, privilege, read, session, transaction, unknown, write)"
        )

    def test_unknown_shape(self) -> None:
        """
        A shape the classifiers never report is refused at its line.
        """
        message = refusal(
            """
            guardrails:
              - name: r
                deny:
                  shapes: [delete_without_were]
            """
        )

        assert message.startswith(
            "guardrails[0].deny.shapes (line 5): unknown shape 'delete_without_were'"
        )

    def test_unknown_condition_key(self) -> None:
        """
        A misspelt condition key is refused, never ignored.
        """
        message = refusal(
            """
            guardrails:
              - name: r
                deny:
                  command: [DROP]
            """
        )

        assert message == (
            "guardrails[0].deny.command (line 5): is not a known key (known: "
            "command_lines, command_patterns, commands, destinations, effects, "
            "file_operations, file_paths, methods, paths, reads, requests, shapes, "
            "shell, writes)"
        )

    def test_unknown_rule_key(self) -> None:
        """
        A misspelt rule key is refused.
        """
        message = refusal(
            """
            guardrails:
              - name: r
                subject: [alice]
                deny: {commands: [DROP]}
            """
        )

        assert message == (
            "guardrails[0].subject (line 4): is not a known key (known: allow_only, "
            "deny, groups, mode, name, subjects, targets)"
        )

    def test_needs_conditions(self) -> None:
        """
        A rule with neither deny nor allow_only is refused.
        """
        message = refusal("guardrails:\n  - name: r\n    mode: enforce\n")

        assert message == (
            "guardrails[0].deny (line 2): a guardrail needs deny, allow_only or both"
        )

    def test_empty_block(self) -> None:
        """
        A deny block without conditions is refused.
        """
        message = refusal("guardrails:\n  - name: r\n    deny: {}\n")

        assert message == "guardrails[0].deny (line 3): lists no condition"

    def test_empty_deny_list(self) -> None:
        """
        An empty list under deny would deny nothing, so it is refused.
        """
        message = refusal("guardrails:\n  - name: r\n    deny:\n      writes: []\n")

        assert (
            message
            == "guardrails[0].deny.writes (line 4): an empty list denies nothing"
        )

    def test_empty_allow_list(self) -> None:
        """
        An empty list under allow_only allows nothing for that key.
        """
        (rule,) = rules("guardrails:\n  - name: r\n    allow_only:\n      writes: []\n")

        assert rule.allow_only is not None
        assert rule.allow_only.statement.writes == ()

    def test_upper_case_relation(self) -> None:
        """
        An unquoted relation name in upper case is refused, since the
        classifier never reports one: PostgreSQL folds unquoted names.
        """
        message = refusal(
            "guardrails:\n  - name: r\n    deny:\n      writes: [public.Canary]\n"
        )

        assert message == (
            "guardrails[0].deny.writes (line 4): 'Canary' in 'public.Canary' must "
            "be written in lower case, as PostgreSQL folds unquoted names, or "
            'quoted: "Canary"'
        )

    def test_bad_relation(self) -> None:
        """
        A name with three parts or broken quotes is refused.
        """
        for bad in ("db.public.canary", '"canary', "public."):
            message = refusal(
                f"guardrails:\n  - name: r\n    deny:\n      writes: ['{bad}']\n"
            )
            assert message == (
                f"guardrails[0].deny.writes (line 4): {bad!r} is not a relation "
                "name (schema.name or name)"
            )

    def test_bad_command_pattern(self) -> None:
        """
        A command pattern that is not a regular expression is refused.
        """
        message = refusal(
            "guardrails:\n  - name: r\n    deny:\n      command_patterns: ['rm (']\n"
        )

        assert message.startswith(
            "guardrails[0].deny.command_patterns (line 4): pattern 'rm (' is not "
            "a regular expression: "
        )

    def test_bad_path_glob(self) -> None:
        """
        A path glob must start with a slash.
        """
        message = refusal("guardrails:\n  - name: r\n    deny:\n      paths: [admin]\n")

        assert message == (
            "guardrails[0].deny.paths (line 4): path glob 'admin' must start with /"
        )

    def test_bad_request_pattern(self) -> None:
        """
        A request pattern is a method (or C{*}) and a path glob.
        """
        message = refusal(
            "guardrails:\n  - name: r\n    deny:\n      requests: ['/admin']\n"
        )

        assert message == (
            "guardrails[0].deny.requests (line 4): '/admin' is not METHOD /path "
            "(METHOD may be *)"
        )

    def test_bad_method_and_command(self) -> None:
        """
        Methods and statement commands are words.
        """
        assert (
            refusal("guardrails:\n  - name: r\n    deny:\n      methods: ['GET /']\n")
            == "guardrails[0].deny.methods (line 4): 'GET /' is not a method name"
        )
        assert (
            refusal("guardrails:\n  - name: r\n    deny:\n      commands: ['DROP;']\n")
            == "guardrails[0].deny.commands (line 4): 'DROP;' is not a command name"
        )

    def test_shell_flag(self) -> None:
        """
        C{shell} is a boolean.
        """
        message = refusal(
            "guardrails:\n  - name: r\n    deny:\n      shell: yes-please\n"
        )

        assert message == "guardrails[0].deny.shell (line 4): must be true or false"

    def test_star_group(self) -> None:
        """
        C{*} is not a group; every identity is C{subjects: ['*']}.
        """
        message = refusal(
            "guardrails:\n  - name: r\n    groups: ['*']\n    deny: {commands: [DROP]}\n"
        )

        assert message == (
            "guardrails[0].groups (line 3): '*' is not a group; use subjects: ['*']"
        )

    def test_duplicate_names(self) -> None:
        """
        Rule names are unique across access and guardrail rules.
        """
        message = refusal(
            """
            access:
              - name: ops
                subjects: [alice]
                targets: [appdb]
                credential: rw
            guardrails:
              - name: ops
                deny: {commands: [DROP]}
            """
        )

        assert message == "guardrails (line 7): rule 'ops' is defined twice"

    def test_unknown_target(self) -> None:
        """
        A guardrail naming a target the configuration lacks is refused at
        its targets line: a misspelt target would switch the rule off.
        """
        base = open_config_text()
        text = base + (
            "  guardrails:\n"
            "    - name: no-drop\n"
            "      targets: [db, dbb]\n"
            "      deny: {commands: [DROP]}\n"
        )
        targets_line = len(base.splitlines()) + 3

        with pytest.raises(ConfigError) as raised:
            parse_config(text, "test.yaml", PLUGINS)

        assert str(raised.value) == (
            f"policy.guardrails[0].targets (line {targets_line}): guardrail "
            "'no-drop' names unknown target 'dbb'"
        )

    def test_known_targets(self) -> None:
        """
        Guardrails on known targets, or on C{*}, load with the config.
        """
        text = open_config_text() + (
            "  guardrails:\n"
            "    - name: no-drop\n"
            "      targets: [db]\n"
            "      deny: {commands: [DROP]}\n"
            "    - name: everywhere\n"
            "      deny: {effects: [unknown]}\n"
        )

        config = parse_config(text, "test.yaml", PLUGINS)

        assert [r.name for r in config.policy.guardrails] == ["no-drop", "everywhere"]


def open_config_text() -> str:
    """
    A valid configuration for the fake plugin, ending inside C{policy}.
    """
    return BASE


class RelationPatternTests(SynchronousTestCase):
    """
    Relation names are compared case-sensitively in the classifier's
    rendering; a bare name stands for any schema.
    """

    def test_qualified(self) -> None:
        """
        C{schema.name} matches only that schema's relation.
        """
        pattern = parse_relation_pattern("public.canary")

        assert pattern.surely_matches("public.canary")
        assert not pattern.could_match("audit.canary")
        assert not pattern.could_match("public.canary2")

    def test_bare_name_any_schema(self) -> None:
        """
        A bare name matches that name in every schema.
        """
        pattern = parse_relation_pattern("canary")

        for relation in ("public.canary", "audit.canary", "pg_temp.canary", "canary"):
            assert pattern.surely_matches(relation), relation
        assert not pattern.could_match("public.canary_log")

    def test_case_sensitive(self) -> None:
        """
        A quoted mixed-case name is another relation than its lower-case
        spelling; quoting a plain name changes nothing.
        """
        quoted = parse_relation_pattern('public."Canary"')
        plain = parse_relation_pattern('"public"."canary"')

        assert quoted.surely_matches('public."Canary"')
        assert not quoted.could_match("public.canary")
        assert plain.surely_matches("public.canary")
        assert not plain.could_match('public."Canary"')

    def test_dots_and_quotes_inside_names(self) -> None:
        """
        A quoted part may hold dots and doubled quotes.
        """
        pattern = parse_relation_pattern('"my.schema"."a""b"')

        assert pattern.surely_matches('"my.schema"."a""b"')
        assert not pattern.could_match('"my.schema".ab')

    def test_wildcards(self) -> None:
        """
        C{schema.*} matches a whole schema, C{*} every relation.
        """
        schema = parse_relation_pattern("reporting.*")
        everything = parse_relation_pattern("*")

        assert schema.surely_matches("reporting.sales")
        assert not schema.could_match("public.sales")
        assert everything.surely_matches('odd."Name"')

    def test_unknown_schema(self) -> None:
        """
        A relation the classifier could not place in a schema may be any
        schema's for a deny, but is surely none in particular for an
        allow-list.
        """
        pattern = parse_relation_pattern("public.customers")

        assert pattern.could_match("customers")
        assert not pattern.surely_matches("customers")

    def test_unreadable_relation(self) -> None:
        """
        Relation text that is not a name may be anything: a deny matches
        it, an allow-list does not.
        """
        pattern = parse_relation_pattern("public.customers")

        assert pattern.could_match('public."broken')
        assert not pattern.surely_matches('public."broken')

    def test_database_part_dropped(self) -> None:
        """
        A classified relation with a database part in front is compared
        by its schema and name.
        """
        assert parse_relation_pattern("public.canary").surely_matches(
            "appdb.public.canary"
        )


class DenyTests(SynchronousTestCase):
    """
    A C{deny} block refuses when any of its conditions holds for any part.
    """

    def test_each_condition_alone(self) -> None:
        """
        Commands, shapes, effects and written relations each refuse.
        """
        cases = [
            part("DROP", "ddl", writes=("public.t",)),
            part("TRUNCATE", "write", writes=("public.t",), shapes=("truncate",)),
            part(
                "DELETE",
                "write",
                writes=("public.t",),
                shapes=("delete_without_where",),
            ),
            part("DO", "unknown"),
            part("INSERT", "write", writes=("public.canary",)),
        ]
        for case in cases:
            verdict = judged(NO_DESTRUCTIVE, statement(case))
            assert denied_by(verdict) == "no-destructive", case

    def test_reasons(self) -> None:
        """
        The detail names each condition that held.
        """
        verdict = judged(NO_DESTRUCTIVE, statement(DROP_CANARY))

        assert isinstance(verdict, Deny)
        assert verdict.reason == DenyReason(
            code="guardrail.blocked",
            message="statement blocked by policy",
            detail="no-destructive: part 1 DROP: command DROP, writes public.canary",
            rule="no-destructive",
        )

    def test_nothing_holds(self) -> None:
        """
        Parts none of whose conditions hold pass.
        """
        harmless = (
            SELECT_CUSTOMERS,
            part("DELETE", "write", writes=("public.t",)),
            part("INSERT", "write", writes=("public.canary_log",)),
        )

        assert judged(NO_DESTRUCTIVE, statement(*harmless)) is ALLOW

    def test_query_refused_whole(self) -> None:
        """
        One denied statement refuses the query holding it, naming the part.
        """
        verdict = judged(NO_DESTRUCTIVE, statement(SELECT_CUSTOMERS, DROP_CANARY))

        assert isinstance(verdict, Deny)
        assert verdict.reason.detail.startswith("no-destructive: part 2 DROP: ")

    def test_reads(self) -> None:
        """
        C{reads} refuses a part reading a listed relation, in any schema
        for a bare name.
        """
        policy = "guardrails:\n  - name: no-secrets\n    deny: {reads: [secrets]}\n"

        assert denied_by(judged(policy, statement(part(reads=("vault.secrets",))))) == (
            "no-secrets"
        )
        assert judged(policy, statement(SELECT_CUSTOMERS)) is ALLOW

    def test_reasons_capped(self) -> None:
        """
        A query of many denied parts keeps the detail bounded.
        """
        many = [DROP_CANARY] * 50

        verdict = judged(
            "guardrails:\n  - name: r\n    deny: {commands: [DROP]}\n", statement(*many)
        )

        assert isinstance(verdict, Deny)
        reasons = verdict.reason.detail.removeprefix("r: ").split("; ")
        assert len(reasons) == MAX_REASONS
        assert reasons[-1] == f"and {50 - MAX_REASONS + 1} more"


class AllowOnlyTests(SynchronousTestCase):
    """
    An C{allow_only} block refuses any part for which one of its given
    keys does not hold.
    """

    def test_every_key_holds(self) -> None:
        """
        A read of listed relations passes, as does a read of none.
        """
        parts = (
            SELECT_CUSTOMERS,
            part(reads=("public.customers", "public.orders")),
            part(),
        )

        assert judged(READ_ONLY, statement(*parts)) is ALLOW

    def test_one_key_fails(self) -> None:
        """
        Holding one key is not enough: a read of another relation and a
        write of a listed one are both refused, each for its own key.
        """
        other = part(reads=("public.salaries",))
        write = part("INSERT", "write", writes=("public.orders",))

        verdict = judged(READ_ONLY, statement(other, write))

        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == (
            "analysts-read-only: part 1 SELECT: reads public.salaries, which is "
            "not allowed; part 2 INSERT: effect write is not allowed"
        )

    def test_unknown_never_allowed_unless_listed(self) -> None:
        """
        A part of effect unknown (a DO block, dynamic SQL) fails every
        statement allow-list that does not list that effect, even one
        giving only relations.
        """
        reads_only = (
            "guardrails:\n  - name: r\n    allow_only: {reads: [public.customers]}\n"
        )
        listed = (
            "guardrails:\n  - name: r\n    allow_only: {effects: [read, unknown]}\n"
        )
        do_block = part("DO", "unknown")

        assert denied_by(judged(reads_only, statement(do_block))) == "r"
        assert judged(listed, statement(do_block)) is ALLOW

    def test_no_writes(self) -> None:
        """
        C{writes: []} allows no relation to be written.
        """
        policy = "guardrails:\n  - name: r\n    allow_only: {writes: []}\n"

        assert judged(policy, statement(SELECT_CUSTOMERS)) is ALLOW
        assert (
            denied_by(
                judged(policy, statement(part("INSERT", "write", writes=("public.t",))))
            )
            == "r"
        )

    def test_schema_must_be_sure(self) -> None:
        """
        A relation the classifier could not place in a schema is not on
        a schema-qualified allow-list.
        """
        verdict = judged(READ_ONLY, statement(part(reads=("customers",))))

        assert denied_by(verdict) == "analysts-read-only"

    def test_commands_and_shapes(self) -> None:
        """
        C{commands} and C{shapes} allow-lists refuse what they do not list.
        """
        policy = """
        guardrails:
          - name: r
            allow_only:
              commands: [SELECT, INSERT]
              shapes: [function_call]
        """

        assert judged(policy, statement(part(shapes=("function_call",)))) is ALLOW
        assert denied_by(judged(policy, statement(part("UPDATE", "write")))) == "r"
        assert denied_by(judged(policy, statement(part(shapes=("lock",))))) == "r"

    def test_both_blocks(self) -> None:
        """
        A rule with deny and allow_only refuses what either refuses.
        """
        policy = """
        guardrails:
          - name: r
            deny: {reads: [public.orders]}
            allow_only: {effects: [read]}
        """

        assert judged(policy, statement(SELECT_CUSTOMERS)) is ALLOW
        assert (
            denied_by(judged(policy, statement(part(reads=("public.orders",))))) == "r"
        )
        assert denied_by(judged(policy, statement(part("INSERT", "write")))) == "r"


class PrecedenceTests(SynchronousTestCase):
    """
    Every applicable rule is evaluated; the strictest verdict wins, and
    all failing rules are reported together.
    """

    def test_deny_beats_allow(self) -> None:
        """
        A part the allow-list admits is still refused by a deny rule.
        """
        policy = READ_ONLY + "  - name: no-orders\n    deny: {reads: [orders]}\n"

        verdict = judged(policy, statement(part(reads=("public.orders",))))

        assert denied_by(verdict) == "no-orders"

    def test_all_failures_reported(self) -> None:
        """
        Every failing enforce rule is in the detail; the first in file
        order is the deciding rule.
        """
        policy = BOTH

        verdict = judged(policy, statement(DROP_CANARY))

        assert isinstance(verdict, Deny)
        assert verdict.reason.rule == "no-destructive"
        assert verdict.reason.detail == (
            "no-destructive: part 1 DROP: command DROP, writes public.canary | "
            "analysts-read-only: part 1 DROP: effect ddl is not allowed"
        )

    def test_evaluation(self) -> None:
        """
        L{evaluate} lists the rules that applied, those that block and
        the parts judged.
        """
        policy = BOTH

        result = evaluate(rules(policy), BOB, "appdb", statement(SELECT_CUSTOMERS))

        assert result.applied == ("no-destructive",)
        assert not result.denied
        assert result.deciding_rule is None
        assert result.parts == (SELECT_CUSTOMERS,)


class DryRunTests(SynchronousTestCase):
    """
    Dry-run rules note what they would have refused and change nothing.
    """

    POLICY = guardrails(WATCH_RULES)

    def test_allow_with_notes(self) -> None:
        """
        An event only dry-run rules fail is allowed, with a note per rule.
        """
        verdict = judged(self.POLICY, statement(DROP_CANARY))

        assert verdict == Allow(
            notes=(Note("dry_run", "watch-drops"), Note("dry_run", "watch-reads"))
        )

    def test_outcome_unchanged(self) -> None:
        """
        Adding dry-run rules never changes a verdict: what passed passes,
        what was refused is refused by the same rule with the same detail.
        """
        events = [
            statement(SELECT_CUSTOMERS),
            statement(DROP_CANARY),
            statement(part("DO", "unknown")),
            statement(part(problem="cannot parse")),
        ]
        for event in events:
            plain = judged(NO_DESTRUCTIVE, event)
            with_dry = judged(guardrails(NO_DESTRUCTIVE_RULE, WATCH_RULES), event)
            assert denied_by(with_dry) == denied_by(plain), event
            if isinstance(plain, Deny):
                assert isinstance(with_dry, Deny)
                assert with_dry.reason == plain.reason

    def test_dry_run_of_enforced_rule(self) -> None:
        """
        The same rule in dry-run never refuses what it refuses enforced.
        """
        dry = NO_DESTRUCTIVE.replace("    deny:", "    mode: dry-run\n    deny:")

        verdict = judged(dry, statement(DROP_CANARY))

        assert verdict == Allow(notes=(Note("dry_run", "no-destructive"),))

    def test_deny_keeps_notes(self) -> None:
        """
        When an enforce rule refuses, the dry-run hits ride on the deny.
        """
        verdict = judged(
            guardrails(NO_DESTRUCTIVE_RULE, WATCH_RULES), statement(DROP_CANARY)
        )

        assert isinstance(verdict, Deny)
        assert verdict.reason.rule == "no-destructive"
        assert [n.rule for n in verdict.notes] == ["watch-drops", "watch-reads"]

    def test_counted(self) -> None:
        """
        The interceptor counts blocks and dry-run hits per rule.
        """
        interceptor = GuardrailInterceptor(
            rules(guardrails(NO_DESTRUCTIVE_RULE, WATCH_RULES))
        )

        for event in (
            statement(DROP_CANARY),
            statement(DROP_CANARY),
            statement(part()),
        ):
            interceptor.decide(event, context())

        assert dict(interceptor.blocked) == {"no-destructive": 2}
        assert dict(interceptor.dry_run_hits) == {"watch-drops": 2, "watch-reads": 3}

    def test_recorded(self) -> None:
        """
        The recording line of the event names the dry-run rules that hit,
        through the chain, whether the event was allowed or refused.
        """
        folder = tempfile.mkdtemp(prefix="hoopgate-guard-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        recorder = Recorder(folder)
        self.addCleanup(recorder.close)
        policy = guardrails(NO_DESTRUCTIVE_RULE, WATCH_RULES)
        chain = Chain([GuardrailInterceptor(rules(policy))], [recorder])

        chain.decide(statement(SELECT_CUSTOMERS), context())
        chain.decide(statement(DROP_CANARY, text="DROP TABLE canary"), context())

        first, second = read_recording(recorder.path_for(SESSION))
        assert (first["verdict"], first["dry_run"]) == ("allow", ["watch-reads"])
        assert (second["verdict"], second["dry_run"]) == (
            "deny",
            ["watch-drops", "watch-reads"],
        )
        assert second["reason"]["rule"] == "no-destructive"

    def test_logged(self) -> None:
        """
        A dry-run hit is logged with the rules and why they would block.
        """
        seen = EventLoggingObserver()
        globalLogPublisher.addObserver(seen)
        self.addCleanup(globalLogPublisher.removeObserver, seen)

        judged(self.POLICY, statement(DROP_CANARY))

        (event,) = [seen[i] for i in range(len(seen)) if "rules" in seen[i]]
        assert event["rules"] == ["watch-drops", "watch-reads"]
        assert event["session_id"] == SESSION
        assert event["detail"].startswith("watch-drops: part 1 DROP: command DROP")


class ScopeTests(SynchronousTestCase):
    """
    A rule applies to the subjects, groups and targets it names.
    """

    def test_groups(self) -> None:
        """
        A rule for a group applies to its members only.
        """
        write = statement(part("INSERT", "write", writes=("public.orders",)))

        assert denied_by(judged(READ_ONLY, write, ALICE)) == "analysts-read-only"
        assert judged(READ_ONLY, write, BOB) is ALLOW

    def test_subjects(self) -> None:
        """
        A rule for subjects applies to them, C{*} to everyone, and a rule
        with subjects and groups to either.
        """
        drop = statement(DROP_CANARY)
        template = "guardrails:\n  - name: r\n{who}    deny: {{commands: [DROP]}}\n"

        by_name = template.format(who="    subjects: [bob]\n")
        anyone = template.format(who="    subjects: ['*']\n")
        either = template.format(who="    subjects: [carol]\n    groups: [dba]\n")

        assert judged(by_name, drop, ALICE) is ALLOW
        assert denied_by(judged(by_name, drop, BOB)) == "r"
        assert denied_by(judged(anyone, drop, ALICE)) == "r"
        assert denied_by(judged(either, drop, BOB)) == "r"
        assert judged(either, drop, ALICE) is ALLOW

    def test_targets(self) -> None:
        """
        A rule for named targets leaves other targets alone.
        """
        write = statement(part("INSERT", "write"))

        assert judged(READ_ONLY, write, ALICE, target="warehouse") is ALLOW
        assert denied_by(judged(READ_ONLY, write, ALICE, target="appdb")) == (
            "analysts-read-only"
        )

    def test_no_identity(self) -> None:
        """
        Without a known identity every rule for the target applies.
        """
        write = statement(part("INSERT", "write"))

        assert denied_by(judged(READ_ONLY, write, None)) == "analysts-read-only"

    def test_no_rules(self) -> None:
        """
        Without guardrails everything passes.
        """
        interceptor = GuardrailInterceptor(())

        verdict = interceptor.decide(statement(part(problem="?")), context())

        assert verdict is ALLOW


class UnclassifiedTests(SynchronousTestCase):
    """
    Parts the plugin could not classify, and statements without parts.
    """

    COMMANDS_ONLY = "guardrails:\n  - name: r\n    deny: {commands: [DROP]}\n"

    def test_empty_parts_are_unknown(self) -> None:
        """
        A statement without parts counts as one part of effect unknown,
        which may do whatever any deny list names: even a rule denying
        only DROP refuses it.
        """
        event = statement(text="DROP TABLE canary")

        assert statement_parts(event) == (
            StatementPart(text="DROP TABLE canary", command="", effect="unknown"),
        )
        assert denied_by(judged(NO_DESTRUCTIVE, event)) == "no-destructive"
        assert denied_by(judged(READ_ONLY, event)) == "analysts-read-only"
        verdict = judged(self.COMMANDS_ONLY, event)
        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == (
            "r: part 1: its effect is unknown, so it may do what the rule denies"
        )

    def test_blank_text(self) -> None:
        """
        Text of only blanks and semicolons runs nothing and is judged as
        no part at all.
        """
        event = statement(text=" ;\n ; ")

        assert statement_parts(event) == ()
        assert judged(READ_ONLY, event) is ALLOW

    def test_classified_without_statements(self) -> None:
        """
        Text the plugin classified and found no statement in (a comment,
        as pgx's ping sends) leaves nothing to judge, even for an
        allow-list; unclassified text of the same words is unknown.
        """
        text = "-- ping"
        classified = attrs.evolve(statement(text=text), classified=True)

        assert statement_parts(classified) == ()
        assert judged(READ_ONLY, classified) is ALLOW
        assert denied_by(judged(READ_ONLY, statement(text=text))) == (
            "analysts-read-only"
        )

    def test_problem_fails_every_applicable_rule(self) -> None:
        """
        A part with a problem is refused by any enforce rule that applies,
        whatever its conditions; the problem is in the detail.
        """
        unsure = part("SELECT", "read", problem="the parser rejected the text")

        verdict = judged(self.COMMANDS_ONLY, statement(SELECT_CUSTOMERS, unsure))

        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == (
            "r: part 2 SELECT: could not be classified (the parser rejected the text)"
        )

    def test_effect_out_of_vocabulary(self) -> None:
        """
        A part whose effect no rule can name (a plugin's mistake) is
        refused like a part with a problem, even by an allow-list that
        does not check effects.
        """
        odd = part("SELECT", "read-ish", reads=("public.customers",))
        reads_only = (
            "guardrails:\n  - name: r\n    allow_only: {reads: [public.customers]}\n"
        )

        verdict = judged(reads_only, statement(odd))

        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == (
            "r: part 1 SELECT: has an effect no rule can name ('read-ish')"
        )

    def test_problem_without_applicable_rule(self) -> None:
        """
        A problem part is judged by the rules that apply, so a session no
        rule is about is not refused.
        """
        unsure = part(problem="unsure")

        assert judged(READ_ONLY, statement(unsure), BOB) is ALLOW

    def test_problem_in_dry_run(self) -> None:
        """
        A dry-run rule notes a problem part and refuses nothing.
        """
        dry = self.COMMANDS_ONLY.replace("    deny", "    mode: dry-run\n    deny")

        verdict = judged(dry, statement(part(problem="unsure")))

        assert verdict == Allow(notes=(Note("dry_run", "r"),))


class CommandTests(SynchronousTestCase):
    """
    Command-line conditions judge L{CommandReceived}.
    """

    ALLOW_LIST = """
    guardrails:
      - name: ops-commands
        allow_only:
          command_lines: ["ls *", "cat /var/log/*", uptime]
          command_patterns: ['systemctl status [a-z.-]+']
    """

    DENY_LIST = """
    guardrails:
      - name: no-rm
        deny:
          command_lines: ["rm *"]
          command_patterns: ['(sudo )?shutdown( .*)?']
          shell: true
    """

    def test_allow_list(self) -> None:
        """
        Lines matching a glob or a pattern pass; others are refused.
        """
        for line in (
            "ls -l /tmp",
            "cat /var/log/syslog",
            "uptime",
            "systemctl status nginx",
        ):
            assert judged(self.ALLOW_LIST, command(line)) is ALLOW, line
        for line in ("rm -rf /", "uptime -p", "systemctl stop nginx"):
            verdict = judged(self.ALLOW_LIST, command(line))
            assert denied_by(verdict) == "ops-commands", line

    def test_wildcards_stop_at_shell_control(self) -> None:
        """
        A glob's wildcard never spans a command separator, substitution,
        pipe, redirect or line break.
        """
        for line in (
            "ls; rm -rf /",
            "ls && rm -rf /",
            "ls | sh",
            "ls $(rm -rf /)",
            "ls `rm -rf /`",
            "ls > /etc/passwd",
            "ls\nrm -rf /",
            "cat /var/log/x; id",
        ):
            assert (
                denied_by(judged(self.ALLOW_LIST, command(line))) == "ops-commands"
            ), line

    def test_shell_under_allow_list(self) -> None:
        """
        An interactive shell is refused by a command allow-list unless
        it says C{shell: true}.
        """
        shells = self.ALLOW_LIST.rstrip(" ") + "          shell: true\n"

        verdict = judged(self.ALLOW_LIST, command(""))

        assert isinstance(verdict, Deny)
        assert verdict.reason.message == "command blocked by policy"
        assert verdict.reason.detail == "ops-commands: interactive shell is not allowed"
        assert judged(shells, command("")) is ALLOW

    def test_deny_list(self) -> None:
        """
        A deny list refuses matching lines and shells, anchored at both
        ends: a listed command elsewhere in the line does not match.
        """
        assert denied_by(judged(self.DENY_LIST, command("rm -rf /"))) == "no-rm"
        assert (
            denied_by(judged(self.DENY_LIST, command("sudo shutdown -h now")))
            == "no-rm"
        )
        assert denied_by(judged(self.DENY_LIST, command(""))) == "no-rm"
        assert judged(self.DENY_LIST, command("echo rm -rf /")) is ALLOW
        # Why deny lists are weak: the same command, written otherwise.
        assert judged(self.DENY_LIST, command("/bin/rm -rf /")) is ALLOW

    def test_reasons(self) -> None:
        """
        The detail names the glob or pattern that matched.
        """
        verdict = judged(self.DENY_LIST, command("rm -rf /"))

        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == "no-rm: command line matches 'rm *'"

    def test_nul(self) -> None:
        """
        A command line holding NUL is refused by any applicable rule.
        """
        verdict = judged(self.ALLOW_LIST, command("ls\x00; rm -rf /"))

        assert denied_by(verdict) == "ops-commands"

    def test_other_kinds_untouched(self) -> None:
        """
        Statement conditions say nothing about command lines, and command
        conditions nothing about statements.
        """
        assert judged(READ_ONLY, command("rm -rf /")) is ALLOW
        assert judged(self.ALLOW_LIST, statement(DROP_CANARY)) is ALLOW


class HttpTests(SynchronousTestCase):
    """
    HTTP conditions judge L{HttpRequestReceived}.
    """

    DENY_LIST = """
    guardrails:
      - name: no-admin
        deny:
          methods: [TRACE]
          paths: ["/admin/**", "/internal/*/debug"]
          requests: ["DELETE /customers/*"]
    """

    ALLOW_LIST = """
    guardrails:
      - name: read-api
        allow_only:
          methods: [GET, HEAD]
          paths: ["/api/**", /health]
    """

    def test_deny_list(self) -> None:
        """
        Methods, path globs and method-and-path pairs each refuse.
        """
        for method, path in (
            ("TRACE", "/"),
            ("trace", "/"),
            ("GET", "/admin"),
            ("GET", "/admin/"),
            ("GET", "/admin/users/1"),
            ("GET", "/internal/x/debug"),
            ("DELETE", "/customers/7"),
        ):
            verdict = judged(self.DENY_LIST, request(method, path))
            assert denied_by(verdict) == "no-admin", (method, path)

    def test_deny_list_passes(self) -> None:
        """
        Requests matching no condition pass: C{*} stays in one segment.
        """
        for method, path in (
            ("GET", "/administrator"),
            ("GET", "/internal/x/y/debug"),
            ("GET", "/customers/7"),
            ("DELETE", "/customers/7/notes/1"),
        ):
            assert judged(self.DENY_LIST, request(method, path)) is ALLOW, path

    def test_reasons(self) -> None:
        """
        The detail names what matched.
        """
        verdict = judged(self.DENY_LIST, request("DELETE", "/customers/7"))

        assert isinstance(verdict, Deny)
        assert verdict.reason.message == "request blocked by policy"
        assert verdict.reason.detail == (
            "no-admin: request matches 'DELETE /customers/*'"
        )

    def test_allow_list(self) -> None:
        """
        Every given key must hold: an allowed method on an allowed path.
        """
        assert judged(self.ALLOW_LIST, request("GET", "/api/customers/1")) is ALLOW
        assert judged(self.ALLOW_LIST, request("HEAD", "/health")) is ALLOW
        post = judged(self.ALLOW_LIST, request("POST", "/api/customers"))
        other = judged(self.ALLOW_LIST, request("GET", "/metrics"))

        assert isinstance(post, Deny)
        assert post.reason.detail == "read-api: method POST is not allowed"
        assert isinstance(other, Deny)
        assert other.reason.detail == "read-api: path is not on the allow-list"

    def test_decoded_once(self) -> None:
        """
        Paths are matched percent-decoded, as the server reads them.
        """
        verdict = judged(self.DENY_LIST, request("GET", "/%61dmin/users"))

        assert denied_by(verdict) == "no-admin"

    def test_ambiguous_paths(self) -> None:
        """
        Paths that servers may read in more than one way are refused by
        any applicable rule, even one that would pass them otherwise.
        """
        for raw in (
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/api/./x",
            "//admin",
            "/api%2fadmin",
            "/api%5cadmin",
            "/api/%252e%252e/admin",
            "/api/x;jsessionid=1",
            "/api/%ff",
            "api/x",
        ):
            _, problem = request_path(raw)
            assert problem, raw
            verdict = judged(self.ALLOW_LIST, request("GET", raw))
            assert isinstance(verdict, Deny), raw
            assert "ambiguous path" in verdict.reason.detail

    def test_plain_paths(self) -> None:
        """
        Ordinary paths, encoded characters included, are not ambiguous.
        """
        assert request_path("/api/caf%C3%A9/") == ("/api/café/", "")
        assert request_path("/") == ("/", "")

    def test_other_kinds_untouched(self) -> None:
        """
        HTTP conditions say nothing about statements.
        """
        assert judged(self.ALLOW_LIST, statement(DROP_CANARY)) is ALLOW


class InterceptorTests(SynchronousTestCase):
    """
    L{GuardrailInterceptor} in the chain and in the gateway.
    """

    def test_interface(self) -> None:
        """
        It is an interceptor of the guardrails stage for statements,
        commands and requests.
        """
        interceptor = GuardrailInterceptor(())

        assert verifyObject(IInterceptor, interceptor)
        assert interceptor.stage == "guardrails"
        assert interceptor.event_types == (
            StatementReceived,
            CommandReceived,
            HttpRequestReceived,
            FileOperationRequested,
            ForwardRequested,
        )

    def test_other_events_fail_closed(self) -> None:
        """
        Handed an event it cannot judge, it raises, which the chain turns
        into a deny.
        """
        interceptor = GuardrailInterceptor(rules(NO_DESTRUCTIVE))
        notice = Notice(session_id=SESSION, protocol="postgres", kind="x")

        with pytest.raises(TypeError):
            interceptor.decide(notice, context())

    def test_denies_in_chain(self) -> None:
        """
        In a chain, a blocked statement is denied and later steps never
        see it.
        """
        later = Step("approval", stage="approval")
        chain = Chain([later, GuardrailInterceptor(rules(NO_DESTRUCTIVE))])

        verdict = chain.decide(statement(DROP_CANARY), context())

        assert denied_by(verdict) == "no-destructive"
        assert later.seen == []

    def test_later_deny_keeps_notes(self) -> None:
        """
        A dry-run hit is still carried when a later stage refuses, also
        after a hold.
        """
        dry = NO_DESTRUCTIVE.replace("    deny:", "    mode: dry-run\n    deny:")
        waiting: Deferred[Verdict] = Deferred()
        chain = Chain(
            [
                Step("approval", stage="approval", answer=waiting),
                GuardrailInterceptor(rules(dry)),
            ]
        )

        verdict = chain.decide(statement(DROP_CANARY), context())
        assert isinstance(verdict, Hold)
        refusal = Deny(DenyReason("approval.rejected", "rejected"))
        waiting.callback(refusal)

        final = self.successResultOf(verdict.decision)
        assert final == Deny(refusal.reason, notes=(Note("dry_run", "no-destructive"),))

    def gateway(self, guardrails: str = "") -> Gateway:
        """
        A gateway for the fake plugin's configuration with C{guardrails}
        (rule items under C{policy.guardrails}).
        """
        text = open_config_text()
        if guardrails:
            text += "  guardrails:\n" + textwrap.indent(guardrails, "  ")
        config = parse_config(text, "test.yaml", PLUGINS)
        recorder = Recorder(temporary_folder(self))
        self.addCleanup(recorder.close)
        reactor = MemoryReactorClock()
        return Gateway(reactor, config, MemoryStore(reactor), recorder)

    def session(self, gateway: Gateway) -> Session:
        config = gateway.config
        return Session(
            session_id=SESSION,
            protocol="fake",
            identity=ALICE,
            target=config.targets["db"],
            rule=config.policy.access[0],
            peer="127.0.0.1:40000",
            config=config,
            chain=gateway.chain,
            handle=QuietHandle(),
            on_close=lambda session: None,
        )

    def test_gateway_chain(self) -> None:
        """
        The gateway's chain runs the configured guardrails on a session's
        statements and counts what they block.
        """
        gateway = self.gateway("  - name: no-drop\n    deny: {commands: [DROP]}\n")
        session = self.session(gateway)

        verdict = session.decide(statement(DROP_CANARY))

        assert session.wants(StatementReceived)
        assert denied_by(verdict) == "no-drop"
        assert dict(gateway.guardrails.blocked) == {"no-drop": 1}

    def test_gateway_without_guardrails(self) -> None:
        """
        Without guardrail rules nobody judges statements, commands or
        requests, so plugins may skip preparing them.
        """
        session = self.session(self.gateway())

        for kind in (StatementReceived, CommandReceived, HttpRequestReceived):
            assert not session.wants(kind), kind
        assert session.decide(statement(part(problem="?"))) is ALLOW


@implementer(ISessionHandle)
class QuietHandle:
    """
    A session handle for sessions no test ends.
    """

    def terminate(self, reason: str, message: str) -> None:
        raise AssertionError(f"terminated: {reason}")

    def cancel(self) -> None:
        raise AssertionError("cancelled")


class VocabularyTests(SynchronousTestCase):
    """
    The effects and shapes rules may name are those the classifiers
    report.
    """

    def test_postgres_classifier(self) -> None:
        """
        Every effect and shape the PostgreSQL classifier reports can be
        named in a rule, and every effect a rule may name exists there.
        """
        from hoopgate_plugins.postgres import _sql

        assert {e.value for e in _sql.Effect} == EFFECTS
        assert {s.value for s in _sql.Shape} <= SHAPES


def file_operation(
    *operations: str, path: str, target_path: str = ""
) -> FileOperationRequested:
    return FileOperationRequested(
        session_id=SESSION,
        protocol="ssh",
        operation_id=f"{SESSION}.2",
        operations=operations,
        path=path,
        target_path=target_path,
    )


def forward(host: str, port: int) -> ForwardRequested:
    return ForwardRequested(
        session_id=SESSION,
        protocol="ssh",
        forward_id=f"{SESSION}.3",
        host=host,
        port=port,
    )


class FileAndForwardTests(SynchronousTestCase):
    """
    C{file_paths}, C{file_operations} and C{destinations} judge
    L{FileOperationRequested} and L{ForwardRequested}.
    """

    FILES = """
    guardrails:
      - name: protect-etc
        deny:
          file_paths: ["/etc/**"]
          file_operations: [write, remove, rename]
      - name: uploads-only
        allow_only:
          file_paths: ["/srv/**", /tmp]
    """

    FORWARDS = """
    guardrails:
      - name: no-internal
        deny:
          destinations: ["10.0.0.0/8:*", "[fd00::]/8:*", "*.corp:22"]
      - name: known-only
        allow_only:
          destinations: ["*.internal:5432", "192.0.2.0/24:*"]
    """

    def test_file_deny_needs_operation_and_path(self) -> None:
        """
        The deny's keys are one condition: a listed operation on a listed
        path; a listed path read, or a listed operation elsewhere, passes
        it.
        """
        policy = guardrails(
            "  - name: protect-etc\n"
            "    deny: {file_paths: [/etc/**], file_operations: [write, remove]}\n"
        )

        assert denied_by(judged(policy, file_operation("write", path="/etc/x")))
        assert denied_by(judged(policy, file_operation("remove", path="/etc")))
        both = file_operation("read", "write", path="/etc/passwd")
        assert denied_by(judged(policy, both)) == "protect-etc"
        assert judged(policy, file_operation("read", path="/etc/passwd")) is ALLOW
        assert judged(policy, file_operation("remove", path="/srv/x")) is ALLOW

    def test_file_reasons(self) -> None:
        """
        The detail names the operation, the path and the glob; a rename
        is judged on both its paths.
        """
        event = file_operation("rename", path="/srv/a", target_path="/etc/cron.d/a")

        verdict = judged(self.FILES, event)

        assert isinstance(verdict, Deny)
        assert verdict.reason.message == "file operation blocked by policy"
        assert verdict.reason.detail == (
            "protect-etc: rename on /etc/cron.d/a matches '/etc/**' | "
            "uploads-only: path /etc/cron.d/a is not on the allow-list"
        )

    def test_file_allow_list(self) -> None:
        """
        Under an allow-list every path must match; operations listed
        must include every one the request does.
        """
        policy = guardrails(
            "  - name: readers\n"
            "    allow_only: {file_paths: [/srv/**], file_operations: [read, list]}\n"
        )

        assert judged(policy, file_operation("read", path="/srv/a/b")) is ALLOW
        assert judged(policy, file_operation("list", path="/srv")) is ALLOW
        assert denied_by(judged(policy, file_operation("read", path="/srvx")))
        rw = file_operation("read", "write", path="/srv/a")
        verdict = judged(policy, rw)
        assert isinstance(verdict, Deny)
        assert verdict.reason.detail == ("readers: file operation write is not allowed")

    def test_ambiguous_paths_fail_file_rules(self) -> None:
        """
        Relative paths, dot and empty segments and NUL fail every rule
        with file conditions, deny-lists included; rules without file
        conditions say nothing about files.
        """
        for path in (
            "etc/passwd",
            "/srv/../etc/passwd",
            "/srv//x",
            "/srv/./x",
            "/a\x00",
        ):
            event = file_operation("read", path=path)
            verdict = judged(self.FILES, event)
            assert isinstance(verdict, Deny), path
            assert "ambiguous" in verdict.reason.detail, path

        assert judged(NO_DESTRUCTIVE, file_operation("read", path="x")) is ALLOW

    def test_file_operations_vocabulary(self) -> None:
        """
        An operation outside the vocabulary is a configuration error
        naming the key and what is known.
        """
        message = refusal(
            guardrails("  - name: x\n    deny: {file_operations: [delete]}\n")
        )

        assert "file_operations" in message
        assert "unknown file_operation 'delete'" in message
        assert "remove" in message
        assert "stat" in FILE_OPERATIONS

    def test_file_path_globs_start_with_slash(self) -> None:
        """
        A relative file glob is refused when read.
        """
        message = refusal(guardrails("  - name: x\n    deny: {file_paths: [etc]}\n"))

        assert "file_paths" in message
        assert "must start with /" in message

    def test_forward_deny_list(self) -> None:
        """
        Ranges match addresses (IPv4-mapped ones too), name globs match
        names case-insensitively, ports count; a name could resolve into
        any range, so a deny by range refuses it.
        """
        policy = guardrails(
            "  - name: no-internal\n"
            "    deny:\n"
            '      destinations: ["10.0.0.0/8:*", "[fd00::]/8:*", "*.corp:22"]\n'
        )

        for host, port in (
            ("10.1.2.3", 80),
            ("::ffff:10.0.0.1", 22),
            ("fd00::1", 443),
            ("Git.CORP.", 22),
            ("anything.example", 80),
        ):
            assert denied_by(judged(policy, forward(host, port))), host

    def test_forward_allow_list(self) -> None:
        """
        An allow-list lets through only what surely matches: a name glob
        for names, a range for addresses.
        """
        policy = guardrails(
            "  - name: known-only\n"
            "    allow_only:\n"
            '      destinations: ["*.internal:5432", "192.0.2.0/24:*", "*:7"]\n'
        )

        assert judged(policy, forward("db.internal", 5432)) is ALLOW
        assert judged(policy, forward("192.0.2.9", 22)) is ALLOW
        assert judged(policy, forward("10.0.0.1", 7)) is ALLOW
        verdict = judged(policy, forward("db.internal", 22))
        assert isinstance(verdict, Deny)
        assert verdict.reason.message == "forward blocked by policy"
        assert verdict.reason.detail == (
            "known-only: destination db.internal:22 is not on the allow-list"
        )
        assert denied_by(judged(policy, forward("a.b.internal", 5432)))
        assert denied_by(judged(policy, forward("192.0.3.1", 22)))

    def test_ambiguous_hosts_fail_forward_rules(self) -> None:
        """
        Numbers a resolver reads as an address, and characters no host
        name has, fail every rule with destinations.
        """
        for host in ("127.1", "2130706433", "0x7f.0.0.1", "a b", "x;y"):
            verdict = judged(self.FORWARDS, forward(host, 22))
            assert isinstance(verdict, Deny), host
            assert "ambiguous" in verdict.reason.detail, host

    def test_bad_destinations(self) -> None:
        """
        Destinations without a port, with a bad port or a bad host are
        refused when read.
        """
        for text, expected in (
            ("db.internal", "is not HOST:PORT"),
            ("db:99999", "has no valid port"),
            ("db/x:22", "neither a host glob nor an address"),
        ):
            message = refusal(
                guardrails(f"  - name: x\n    deny: {{destinations: ['{text}']}}\n")
            )
            assert "destinations" in message, text
            assert expected in message, (text, message)
