"""
Tests for C{hoopgate policy test} (L{hoopgate.cli}): verdicts, deciding
rules and classifications printed for statements, and exit codes for CI.
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from hoopgate import cli
from hoopgate._events import StatementPart
from hoopgate._interfaces import IProtocolPlugin, IStatementClassifier
from tests.unit.test_config import FakePlugin, temporary_folder

#: The line saying how the fake SQL plugin's texts are judged, for a
#: session of the credential user C{app}.
JUDGED = (
    "judged as: statement events (each text one query string), classified by "
    "the fakesql plugin for a session of user app"
)

#: What the fake classifier knows, statement by statement.
KNOWN = {
    "select * from customers": StatementPart(
        text="select * from customers",
        command="SELECT",
        effect="read",
        reads=("public.customers",),
    ),
    "select 1": StatementPart(text="select 1", command="SELECT", effect="read"),
    "drop table canary": StatementPart(
        text="drop table canary",
        command="DROP",
        effect="ddl",
        writes=("public.canary",),
        shapes=("drop",),
    ),
    "insert into customers values (1)": StatementPart(
        text="insert into customers values (1)",
        command="INSERT",
        effect="write",
        writes=("public.customers",),
    ),
}


@implementer(IProtocolPlugin, IStatementClassifier)
class ClassifyingPlugin(FakePlugin):
    """
    A fake SQL plugin whose classifier splits on semicolons and knows the
    statements in L{KNOWN}; anything else it cannot classify.
    """

    name = "fakesql"

    def __init__(self) -> None:
        self.classified: list[tuple[str, str | None]] = []

    def classify(self, text: str, user: str | None = None) -> tuple[StatementPart, ...]:
        self.classified.append((text, user))
        parts = []
        for piece in (p.strip() for p in text.split(";")):
            if not piece:
                continue
            parts.append(
                KNOWN.get(piece)
                or StatementPart(
                    text=piece, command="", effect="unknown", problem="not understood"
                )
            )
        return tuple(parts)


@implementer(IProtocolPlugin, IStatementClassifier)
class BrokenClassifierPlugin(ClassifyingPlugin):
    """
    A plugin whose classifier fails.
    """

    name = "brokensql"

    def classify(self, text: str, user: str | None = None) -> tuple[StatementPart, ...]:
        raise RuntimeError("classifier bug")


CONFIG = """\
targets:
  - name: appdb
    protocol: fakesql
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: app
        user: app
  - name: legacy
    protocol: fake
    host: 127.0.0.1
    port: 5433
    credentials:
      - name: app
        user: app
  - name: broken
    protocol: brokensql
    host: 127.0.0.1
    port: 5434
    credentials:
      - name: app
        user: app
policy:
  access:
    - name: ci-runner-all
      subjects: [ci-runner]
      targets: ["*"]
      credential: app
    - name: analysts
      groups: [analysts]
      targets: [appdb]
      credential: app
  guardrails:
    - name: no-destructive
      deny:
        commands: [DROP, TRUNCATE]
        shapes: [delete_without_where, update_without_where]
        effects: [unknown]
        writes: [public.canary]
    - name: analysts-read-only
      groups: [analysts]
      targets: [appdb]
      allow_only:
        effects: [read]
        reads: [public.customers]
    - name: watch-customers
      mode: dry-run
      deny:
        reads: [public.customers]
"""


class PolicyTestCommandTests(SynchronousTestCase):
    """
    C{hoopgate policy test} judges statements as the gateway would.
    """

    def setUp(self) -> None:
        folder = temporary_folder(self)
        self.config = str(Path(folder, "hoopgate.yaml"))
        Path(self.config).write_text(CONFIG, encoding="utf-8")
        self.sql = ClassifyingPlugin()
        self.plugins: dict[str, IProtocolPlugin] = {
            "fakesql": self.sql,
            "fake": FakePlugin(),
            "brokensql": BrokenClassifierPlugin(),
        }

    def run_cli(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        """
        Run C{hoopgate --config CONFIG policy test ARGV}.

        Returns:
            The exit code, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        self.addCleanup(setattr, sys, "stdin", sys.stdin)
        sys.stdin = io.StringIO(stdin)
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(
                ["--config", self.config, "policy", "test", *argv], self.plugins
            )
        return code, out.getvalue(), err.getvalue()

    def run_json(self, *argv: str) -> dict[str, Any]:
        code, out, _ = self.run_cli("--json", *argv)
        assert code == 0
        result: dict[str, Any] = json.loads(out)
        return result

    def test_fake_plugins(self) -> None:
        """
        The fake SQL plugin provides both interfaces.
        """
        assert verifyObject(IProtocolPlugin, self.sql)
        assert verifyObject(IStatementClassifier, self.sql)

    def test_allowed(self) -> None:
        """
        An allowed statement prints its verdict, the dry-run rules that
        would have blocked it and its classification; the exit code is 0.
        """
        code, out, err = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "select * from customers"
        )

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "access: ci-runner may reach appdb (rule ci-runner-all)",
            JUDGED,
            "statement 1: select * from customers",
            "  verdict: allow; dry-run hits: watch-customers",
            "  dry-run watch-customers would block: part 1 SELECT: reads "
            "public.customers",
            "  part 1: SELECT, effect read, reads public.customers",
        ]
        assert self.sql.classified == [("select * from customers", "app")]

    def test_denied(self) -> None:
        """
        A query holding a blocked statement is denied; the deciding rule
        and every part's classification are printed; the exit code is
        still 0.
        """
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "select 1; drop table canary"
        )

        assert code == 0
        assert out.splitlines()[2:] == [
            "statement 1: select 1; drop table canary",
            "  verdict: deny (guardrail no-destructive)",
            "  blocked by no-destructive: part 2 DROP: command DROP, writes "
            "public.canary",
            "  part 1 (select 1): SELECT, effect read",
            "  part 2 (drop table canary): DROP, effect ddl, writes public.canary, "
            "shapes drop",
        ]

    def test_expect(self) -> None:
        """
        C{--expect} makes the exit code 1 when any statement's verdict
        differs, naming it on standard error.
        """
        args = ("--subject", "ci-runner", "--target", "appdb")

        wrong = self.run_cli(
            *args, "--expect", "allow", "select 1", "drop table canary"
        )
        right = self.run_cli(*args, "--expect", "deny", "drop table canary")
        allowed = self.run_cli(*args, "--expect", "allow", "select 1")

        assert (wrong[0], wrong[2]) == (1, "statement 2: expected allow\n")
        assert (right[0], right[2]) == (0, "")
        assert (allowed[0], allowed[2]) == (0, "")

    def test_json(self) -> None:
        """
        C{--json} prints the access decision and one record per statement.
        """
        result = self.run_json(
            "--subject", "ci-runner", "--target", "appdb", "drop table canary"
        )

        assert result["access"] == {
            "allowed": True,
            "rule": "ci-runner-all",
            "summary": "ci-runner may reach appdb (rule ci-runner-all)",
        }
        assert result["judged_as"] == {
            "event": "statement",
            "plugin": "fakesql",
            "classified": True,
            "user": "app",
        }
        assert result["results"] == [
            {
                "event": "statement",
                "statement": "drop table canary",
                "verdict": "deny",
                "decided_by": "guardrails",
                "rule": "no-destructive",
                "blocked": [
                    {
                        "rule": "no-destructive",
                        "reasons": ["part 1 DROP: command DROP, writes public.canary"],
                    }
                ],
                "dry_run": [],
                "rules_applied": ["no-destructive", "watch-customers"],
                "parts": [
                    {
                        "text": "drop table canary",
                        "command": "DROP",
                        "effect": "ddl",
                        "reads": [],
                        "writes": ["public.canary"],
                        "shapes": ["drop"],
                        "problem": "",
                    }
                ],
                "masking": None,
                "approval": None,
                "outcome": "deny",
            }
        ]

    def test_stdin(self) -> None:
        """
        Without statement arguments, standard input gives one statement
        per line; blank lines are skipped.
        """
        code, out, _ = self.run_cli(
            "--json",
            "--subject",
            "ci-runner",
            "--target",
            "appdb",
            stdin="select 1\n\ndrop table canary\n",
        )

        results = json.loads(out)["results"]
        assert code == 0
        assert [(r["statement"], r["verdict"]) for r in results] == [
            ("select 1", "allow"),
            ("drop table canary", "deny"),
        ]

    def test_groups(self) -> None:
        """
        C{--group} scopes group rules: an analyst may only read customers.
        """
        args = ("--subject", "ann", "--group", "analysts", "--target", "appdb")

        result = self.run_json(*args, "select * from customers", "select 1")
        write = self.run_json(*args, "insert into customers values (1)")

        assert [r["verdict"] for r in result["results"]] == ["allow", "allow"]
        (denied,) = write["results"]
        assert (denied["verdict"], denied["rule"]) == ("deny", "analysts-read-only")
        assert denied["blocked"][0]["reasons"] == [
            "part 1 INSERT: effect write is not allowed"
        ]

    def test_no_access(self) -> None:
        """
        An identity that may not reach the target is told so, and every
        statement is denied by access.
        """
        code, out, _ = self.run_cli(
            "--subject", "mallory", "--target", "appdb", "--expect", "deny", "select 1"
        )

        assert code == 0
        assert out.splitlines()[:4] == [
            "access: mallory may not reach appdb (no access rule matches)",
            "judged as: statement events (each text one query string), "
            "classified by the fakesql plugin",
            "statement 1: select 1",
            "  verdict: deny (no access rule matches)",
        ]
        result = self.run_json("--subject", "mallory", "--target", "appdb", "select 1")
        assert result["access"]["allowed"] is False
        assert result["results"][0]["decided_by"] == "access"

    def test_plugin_without_classifier(self) -> None:
        """
        For a plugin without a classifier each text is one part of effect
        unknown, as in the gateway: it fails every deny list, dry-run ones
        too.
        """
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "legacy", "select 1"
        )

        unknown = "part 1: its effect is unknown, so it may do what the rule denies"
        assert code == 0
        assert out.splitlines()[1:] == [
            "judged as: statement events (each text one query string); the fake "
            "plugin classifies no statements, so each text counts as one "
            "statement of effect unknown",
            "statement 1: select 1",
            "  verdict: deny (guardrail no-destructive); dry-run hits: watch-customers",
            f"  blocked by no-destructive: {unknown}",
            f"  dry-run watch-customers would block: {unknown}",
            "  part 1: (no command), effect unknown",
        ]

    def test_unclassifiable(self) -> None:
        """
        A part the classifier could not classify is denied, with the
        classifier's problem printed.
        """
        result = self.run_json(
            "--subject", "ci-runner", "--target", "appdb", "select 1; vacuum"
        )

        (record,) = result["results"]
        assert record["verdict"] == "deny"
        assert record["parts"][1]["problem"] == "not understood"
        assert record["blocked"][0]["reasons"] == [
            "part 2: could not be classified (not understood)"
        ]

    def test_classifier_failure(self) -> None:
        """
        A classifier that fails leaves the text unclassifiable: denied.
        """
        result = self.run_json(
            "--subject", "ci-runner", "--target", "broken", "select 1"
        )

        (record,) = result["results"]
        assert record["verdict"] == "deny"
        assert record["parts"][0]["problem"] == (
            "the classifier failed: RuntimeError: classifier bug"
        )

    def test_unknown_target(self) -> None:
        """
        An unknown target is an error, exit code 2.
        """
        code, out, err = self.run_cli("--subject", "ci-runner", "--target", "nope", "x")

        assert (code, out) == (2, "")
        assert err == "no target named 'nope' (known: appdb, broken, legacy)\n"

    def test_check_counts_guardrails(self) -> None:
        """
        C{hoopgate check} counts guardrails with the other sections.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            code = cli.main(["--config", self.config, "check"], self.plugins)

        assert code == 0
        assert out.getvalue() == (
            f"{self.config}: valid (0 listeners, 3 targets, 2 access rules, "
            "3 guardrails)\n"
        )


POSTGRES_CONFIG = """\
targets:
  - name: appdb
    protocol: postgres
    host: 127.0.0.1
    port: 5432
    database: appdb
    credentials:
      - name: app
        user: app
policy:
  access:
    - name: ci-runner-all
      subjects: [ci-runner]
      targets: ["*"]
      credential: app
  guardrails:
    - name: no-destructive
      deny:
        commands: [DROP, TRUNCATE]
        shapes: [delete_without_where, update_without_where]
        effects: [unknown]
        writes: [canary]
"""


class PostgresClassifierTests(SynchronousTestCase):
    """
    With the PostgreSQL plugin, C{policy test} judges text through the
    plugin's own classifier, so the shape of the text hides nothing.
    """

    def results(
        self, *statements: str, subject: str = "ci-runner", user: str = "app"
    ) -> dict[str, Any]:
        from hoopgate_plugins.postgres._plugin import plugin

        path = Path(temporary_folder(self), "hoopgate.yaml")
        text = POSTGRES_CONFIG.replace("user: app", f"user: {user}")
        path.write_text(text, encoding="utf-8")
        out = io.StringIO()
        argv = ["--config", str(path), "policy", "test", "--json"]
        argv += ["--subject", subject, "--target", "appdb", *statements]
        with redirect_stdout(out):
            code = cli.main(argv, {"postgres": plugin})

        assert code == 0
        result: dict[str, Any] = json.loads(out.getvalue())
        return result

    def verdicts(self, *statements: str) -> list[str]:
        return [r["verdict"] for r in self.results(*statements)["results"]]

    def test_credential_user(self) -> None:
        """
        Names resolve as for a session of the user of the credential set
        the access rule picks, as the relay's classifier does: C{"$user"}
        first on the search path, so an unqualified table is both that
        user's and public's.
        """
        app = self.results("drop table canary")
        svc = self.results("drop table canary", user="svc")

        assert app["judged_as"]["user"] == "app"
        assert app["results"][0]["parts"][0]["writes"] == [
            "app.canary",
            "public.canary",
        ]
        assert app["results"][0]["blocked"] == [
            {
                "rule": "no-destructive",
                "reasons": [
                    "part 1 DROP: command DROP, writes app.canary, writes public.canary"
                ],
            }
        ]
        assert svc["results"][0]["parts"][0]["writes"] == [
            "public.canary",
            "svc.canary",
        ]

    def test_no_access_no_user(self) -> None:
        """
        Without access there is no credential, so no C{"$user"} schema.
        """
        result = self.results("drop table canary", subject="mallory")

        assert result["judged_as"]["user"] is None
        assert result["results"][0]["parts"][0]["writes"] == ["public.canary"]

    def test_bc10_hidden_statements(self) -> None:
        """
        A DROP after another statement, behind a comment or split over
        lines is denied; DROP inside a literal or a comment is not.
        """
        assert self.verdicts(
            "select 1; drop table canary",
            "/* x */ drop table canary",
            "drop\ntable canary",
            "select ';drop table canary;'",
            "select 1 /* drop table canary */",
        ) == ["deny", "deny", "deny", "allow", "allow"]

    def test_unknown_statements(self) -> None:
        """
        DO blocks, CALL and SQL-level PREPARE and EXECUTE are unknown, so
        the policy denies them.
        """
        assert (
            self.verdicts(
                "DO $$ begin execute 'drop table canary'; end $$",
                "CALL p()",
                "PREPARE q AS SELECT 1",
                "EXECUTE q",
            )
            == ["deny"] * 4
        )


MASKING_CONFIG = """\
gateway:
  approvals:
    groups:
      dba: cn=dba-approvers,ou=groups,dc=example,dc=org
    directory:
      url: ldap://127.0.0.1:1
      bind_dn: cn=gateway,dc=example,dc=org
      bind_password: not-used
      people: ou=people,dc=example,dc=org
targets:
  - name: appdb
    protocol: fakesql
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: app
        user: app
  - name: vault
    protocol: fakesql
    host: 127.0.0.1
    port: 5433
    credentials:
      - name: app
        user: app
policy:
  access:
    - name: ci-runner-all
      subjects: [ci-runner]
      targets: ["*"]
      credential: app
  masking:
    strict: true
    rules:
      - name: customer-pii
        targets: [appdb]
        columns: [public.customers.email, public.customers.ssn]
        strategy: redact
      - name: customer-cards
        targets: [appdb]
        columns: [customers.card_number]
        strategy: {keep_last: 4}
      - name: detected
        targets: [appdb]
        detect: [email, iban]
        strategy: redact
      - name: watch-salary
        targets: [appdb]
        mode: dry-run
        columns: [customers.salary]
        strategy: "null"
  approvals:
    - name: customer-deletes
      mode: hold
      targets: [appdb]
      approvers: [dba]
      timeout: 10m
      when:
        commands: [DELETE]
        writes: [customers]
    - name: vault-access
      mode: session
      targets: [vault]
      approvers: [dba]
"""

#: More statements the fake classifier knows, for masking and approval.
MORE = {
    "select id from customers where email = 'a@b.test'": StatementPart(
        text="select id from customers where email = 'a@b.test'",
        command="SELECT",
        effect="read",
        reads=("public.customers",),
        columns=("id", "email"),
        derived_columns=("email",),
    ),
    "delete from customers where id = 1": StatementPart(
        text="delete from customers where id = 1",
        command="DELETE",
        effect="write",
        writes=("public.customers",),
        columns=("id",),
        derived_columns=("id",),
    ),
}


class PolicyTestMaskingApprovalTests(SynchronousTestCase):
    """
    C{hoopgate policy test} also says what masking and approval would do:
    the columns and detectors that would mask results, strict refusals,
    and the approval rule that would hold a statement.
    """

    def setUp(self) -> None:
        folder = temporary_folder(self)
        self.config = str(Path(folder, "hoopgate.yaml"))
        Path(self.config).write_text(MASKING_CONFIG, encoding="utf-8")
        self.sql = ClassifyingPlugin()
        for text in MORE:
            self.addCleanup(KNOWN.pop, text)
        KNOWN.update(MORE)

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(
                ["--config", self.config, "policy", "test", *argv],
                {"fakesql": self.sql},
            )
        return code, out.getvalue(), err.getvalue()

    def test_masked_columns(self) -> None:
        """
        A read of a table with masked columns names each masked column
        with its rule and strategy, says lineage decides at run time,
        lists the detectors and the dry-run rules; no approval needed.
        """
        code, out, err = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "select * from customers"
        )

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "access: ci-runner may reach appdb (rule ci-runner-all)",
            JUDGED,
            "statement 1: select * from customers",
            "  verdict: allow",
            "  masking: columns public.customers.email (customer-pii, redact), "
            "public.customers.ssn (customer-pii, redact), "
            "public.customers.card_number (customer-cards, keep last 4), where a "
            "result carries them (the target's column lineage decides at run time)",
            "  masking: detectors email, iban (detected, redact) in every other "
            "text value",
            "  masking dry-run: columns public.customers.salary (watch-salary, null)",
            "  approval: none needed",
            "  part 1: SELECT, effect read, reads public.customers",
        ]

    def test_no_masked_table(self) -> None:
        """
        A statement on no masked table says so; detectors still scan.
        """
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "--json", "select 1"
        )

        assert code == 0
        (record,) = json.loads(out)["results"]
        assert record["masking"] == {
            "refused": False,
            "rule": None,
            "detail": "",
            "columns": [],
            "detectors": [
                {
                    "rule": "detected",
                    "detectors": ["email", "iban"],
                    "strategy": "redact",
                }
            ],
            "lineage": False,
            "dry_run": {"columns": [], "detectors": [], "refused": []},
        }
        assert record["outcome"] == "allow"

    def test_strict_refusal(self) -> None:
        """
        Strict masking refusing a masked column in a condition makes the
        verdict deny, decided by masking, with the rule and reason.
        """
        text = "select id from customers where email = 'a@b.test'"

        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "--expect", "deny", text
        )

        assert code == 0
        lines = out.splitlines()
        assert lines[3] == "  verdict: deny (masking rule customer-pii)"
        assert lines[4] == (
            "  masking: refused: customer-pii: part 1 SELECT uses masked column "
            "email in an expression"
        )
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "--json", text
        )
        (record,) = json.loads(out)["results"]
        assert (record["decided_by"], record["rule"], record["outcome"]) == (
            "masking",
            "customer-pii",
            "deny",
        )

    def test_held_for_approval(self) -> None:
        """
        A DELETE on customers is held by the approval rule; the outcome
        is approval, which --expect can check.
        """
        args = ("--subject", "ci-runner", "--target", "appdb")
        text = "delete from customers where id = 1"

        code, out, _ = self.run_cli(*args, text)
        expect_approval = self.run_cli(*args, "--expect", "approval", text)
        expect_allow = self.run_cli(*args, "--expect", "allow", text)
        _, raw, _ = self.run_cli(*args, "--json", text)

        assert code == 0
        assert out.splitlines()[3:] == [
            "  verdict: allow",
            "  masking: columns public.customers.email (customer-pii, redact), "
            "public.customers.ssn (customer-pii, redact), "
            "public.customers.card_number (customer-cards, keep last 4), where a "
            "result carries them (the target's column lineage decides at run time)",
            "  masking: detectors email, iban (detected, redact) in every other "
            "text value",
            "  masking dry-run: columns public.customers.salary (watch-salary, null)",
            "  approval: held until approved (rule customer-deletes, hold, "
            "1 approval(s), timeout 600 s): part 1 DELETE: command DELETE, "
            "writes public.customers",
            "  part 1: DELETE, effect write, writes public.customers",
        ]
        assert expect_approval[0] == 0
        assert expect_allow[0:3:2] == (1, "statement 1: expected allow\n")
        (record,) = json.loads(raw)["results"]
        assert record["approval"] == {
            "needed": True,
            "rule": "customer-deletes",
            "mode": "hold",
            "quorum": 1,
            "timeout": 600.0,
            "reasons": ["part 1 DELETE: command DELETE, writes public.customers"],
        }
        assert record["outcome"] == "approval"

    def test_session_approval(self) -> None:
        """
        On a target whose sessions need approved access the access line
        says so and every statement's outcome is approval.
        """
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "vault", "select 1"
        )
        _, raw, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "vault", "--json", "select 1"
        )

        assert code == 0
        assert out.splitlines()[:2] == [
            "access: ci-runner may reach vault (rule ci-runner-all)",
            "access: sessions need approved access first (approval rule "
            "vault-access): hoopgate approvals request vault --for ...",
        ]
        result = json.loads(raw)
        assert result["access"]["approval"] == "vault-access"
        assert result["results"][0]["outcome"] == "approval"
        assert result["results"][0]["masking"] is None

    def test_control_characters(self) -> None:
        """
        Client text with terminal escapes is printed with the escapes
        visible, never raw.
        """
        code, out, _ = self.run_cli(
            "--subject", "ci-runner", "--target", "appdb", "select '\x1b[2J\x07'"
        )

        assert code == 0
        assert "\x1b" not in out and "\x07" not in out
        assert out.splitlines()[2] == "statement 1: select '\\x1b[2J\\x07'"


SSH_CONFIG = """\
gateway:
  approvals:
    groups:
      ops: cn=ops,ou=groups,dc=example,dc=org
    directory:
      url: ldap://127.0.0.1:1
      bind_dn: cn=gateway,dc=example,dc=org
      bind_password: {file: /nonexistent/ldap.pw}
      people: ou=people,dc=example,dc=org
targets:
  - name: box
    protocol: ssh
    host: 127.0.0.1
    port: 2222
    known_hosts: /nonexistent/known_hosts
    credentials:
      - name: app
        user: root
        private_key: {file: /nonexistent/client_ed25519}
policy:
  access:
    - name: ci-runner-ssh
      subjects: [ci-runner]
      targets: [box]
      credential: app
      logins: [root]
  guardrails:
    - name: no-destructive
      deny:
        commands: [DROP, TRUNCATE]
        effects: [unknown]
        writes: [canary]
    - name: no-rm
      deny:
        command_lines: ["rm *"]
    - name: watch-cat
      mode: dry-run
      deny:
        command_lines: ["cat *"]
  masking:
    strict: true
    rules:
      - name: pii
        columns: [public.customers.email]
        strategy: redact
  approvals:
    - name: customer-deletes
      mode: hold
      approvers: [ops]
      when:
        commands: [DELETE]
        writes: [customers]
    - name: restarts
      mode: hold
      approvers: [ops]
      timeout: 5m
      when:
        command_lines: ["systemctl restart *"]
"""


class CommandLineTests(SynchronousTestCase):
    """
    On an SSH target, whose plugin classifies no statements, C{policy
    test} judges each text as the command line of an exec request
    (C{CommandReceived}), as the SSH plugin hands it to the chain: by
    the command-line conditions, never as SQL of unknown effect.
    """

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        from hoopgate_plugins.ssh._plugin import plugin

        path = Path(temporary_folder(self), "hoopgate.yaml")
        path.write_text(SSH_CONFIG, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        argv = ("--subject", "ci-runner", "--target", "box", *argv)
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(
                ["--config", str(path), "policy", "test", *argv], {"ssh": plugin}
            )
        return code, out.getvalue(), err.getvalue()

    def test_command_allowed(self) -> None:
        """
        C{ls -l /tmp} is a command line no rule refuses: allowed, with
        no statement rule, masking refusal or approval hold in sight; the
        output says what it was judged as.
        """
        code, out, err = self.run_cli("ls -l /tmp")

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "access: ci-runner may reach box (rule ci-runner-ssh)",
            "judged as: command events (each text one command line, as the ssh "
            "plugin judges an exec request)",
            "command 1: ls -l /tmp",
            "  verdict: allow",
            "  approval: none needed",
        ]

    def test_command_rules(self) -> None:
        """
        Command-line rules decide: a glob refuses C{rm}, a dry-run rule
        notes C{cat}, an approval rule holds a restart; --expect checks
        each outcome.
        """
        code, out, _ = self.run_cli(
            "rm -rf /srv/data", "cat /etc/hostname", "systemctl restart nginx"
        )
        expect = self.run_cli("--expect", "allow", "rm -rf /srv/data", "ls")

        assert code == 0
        assert out.splitlines()[2:] == [
            "command 1: rm -rf /srv/data",
            "  verdict: deny (guardrail no-rm)",
            "  blocked by no-rm: command line matches 'rm *'",
            "  approval: none needed",
            "command 2: cat /etc/hostname",
            "  verdict: allow; dry-run hits: watch-cat",
            "  dry-run watch-cat would block: command line matches 'cat *'",
            "  approval: none needed",
            "command 3: systemctl restart nginx",
            "  verdict: allow",
            "  approval: held until approved (rule restarts, hold, 1 approval(s), "
            "timeout 300 s): command line matches 'systemctl restart *'",
        ]
        assert (expect[0], expect[2]) == (1, "command 1: expected allow\n")

    def test_json(self) -> None:
        """
        C{--json} names the event kind judged, and each record carries
        the command line, no statement parts and no masking.
        """
        code, out, _ = self.run_cli("--json", "systemctl restart nginx")

        result = json.loads(out)
        assert code == 0
        assert result["judged_as"] == {
            "event": "command",
            "plugin": "ssh",
            "classified": False,
            "user": "root",
        }
        assert result["results"] == [
            {
                "event": "command",
                "command": "systemctl restart nginx",
                "verdict": "allow",
                "decided_by": None,
                "rule": None,
                "blocked": [],
                "dry_run": [],
                "rules_applied": ["no-destructive", "no-rm", "watch-cat"],
                "masking": None,
                "approval": {
                    "needed": True,
                    "rule": "restarts",
                    "mode": "hold",
                    "quorum": 1,
                    "timeout": 300.0,
                    "reasons": ["command line matches 'systemctl restart *'"],
                },
                "outcome": "approval",
            }
        ]
