"""
Tests for L{hoopgate._policy}: default-deny access rules.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.trial.unittest import SynchronousTestCase

from hoopgate._chain import Context
from hoopgate._configreader import ConfigError, load_yaml
from hoopgate._events import SessionRequested
from hoopgate._gateway import AccessInterceptor
from hoopgate._identity import Identity
from hoopgate._policy import AccessDecision, AccessRule, Policy, read_policy
from hoopgate._verdicts import ALLOW, Deny

ALICE = Identity(subject="alice", issuer="https://id.test", groups=("dba",))
BOB = Identity(subject="bob", issuer="https://id.test", groups=("dev", "oncall"))
CAROL = Identity(subject="carol", issuer="https://id.test")


def rule(name: str, **changes: Any) -> AccessRule:
    """
    An allow rule for C{alice} on target C{db}, with C{changes}.
    """
    base = AccessRule(
        name=name,
        effect="allow",
        subjects=("alice",),
        groups=(),
        targets=("db",),
        credential="rw",
        logins=(),
        session_limit=3600.0,
        on_token_expiry="close",
    )
    return attrs.evolve(base, **changes)


def policy(*rules: AccessRule) -> Policy:
    return Policy(version=1, access=rules)


def parsed(text: str) -> Policy:
    """
    The policy in YAML C{text} (the C{policy} section's contents).
    """
    return read_policy(load_yaml(text, "policy.yaml"))


class AuthorizeTests(SynchronousTestCase):
    """
    L{Policy.authorize} denies by default and lets deny beat allow.
    """

    def test_no_rules(self) -> None:
        """
        With no rules, nobody reaches anything, and no rule decided.
        """
        assert policy().authorize(ALICE, "db") == AccessDecision(None, None)

    def test_default_deny(self) -> None:
        """
        A subject or target no rule names is denied by default.
        """
        rules = policy(rule("alice-db"))

        assert rules.authorize(CAROL, "db") == AccessDecision(None, None)
        assert rules.authorize(ALICE, "other") == AccessDecision(None, None)

    def test_allow_by_subject(self) -> None:
        """
        A matching allow rule grants access and is named as deciding.
        """
        allow = rule("alice-db")

        decision = policy(allow).authorize(ALICE, "db")

        assert decision == AccessDecision(allow, "alice-db")

    def test_deny_beats_allow(self) -> None:
        """
        A matching deny rule wins even over an earlier matching allow.
        """
        rules = policy(
            rule("alice-db"),
            rule("no-alice", effect="deny", credential=""),
        )

        assert rules.authorize(ALICE, "db") == AccessDecision(None, "no-alice")

    def test_deny_for_others_only(self) -> None:
        """
        A deny rule about someone else leaves the allow in force.
        """
        allow = rule("alice-db")
        rules = policy(
            rule("no-bob", effect="deny", subjects=("bob",), credential=""), allow
        )

        assert rules.authorize(ALICE, "db") == AccessDecision(allow, "alice-db")
        assert rules.authorize(BOB, "db") == AccessDecision(None, "no-bob")

    def test_first_allow_wins(self) -> None:
        """
        Of several matching allow rules, the first in the file grants.
        """
        first = rule("first", credential="ro")
        rules = policy(first, rule("second", credential="rw"))

        decision = rules.authorize(ALICE, "db")

        assert decision.rule is first
        assert decision.decided_by == "first"

    def test_groups(self) -> None:
        """
        A rule naming groups matches any subject in one of them, and no one
        outside them.
        """
        oncall = rule("oncall", subjects=(), groups=("oncall", "sre"))
        rules = policy(oncall)

        assert rules.authorize(BOB, "db").rule is oncall
        assert rules.authorize(ALICE, "db").rule is None
        assert rules.authorize(CAROL, "db").rule is None

    def test_subjects_or_groups(self) -> None:
        """
        A rule with subjects and groups matches either.
        """
        both = rule("both", subjects=("carol",), groups=("dba",))
        rules = policy(both)

        assert rules.authorize(CAROL, "db").rule is both
        assert rules.authorize(ALICE, "db").rule is both
        assert rules.authorize(BOB, "db").rule is None

    def test_group_deny(self) -> None:
        """
        A deny rule by group refuses members even when their subject is
        allowed by name.
        """
        rules = policy(
            rule("bob-db", subjects=("bob",)),
            rule("no-dev", effect="deny", subjects=(), groups=("dev",), credential=""),
        )

        assert rules.authorize(BOB, "db") == AccessDecision(None, "no-dev")

    def test_any_target(self) -> None:
        """
        C{"*"} as a target matches every target.
        """
        everywhere = rule("everywhere", targets=("*",))

        for target in ("db", "warehouse", "ssh-host"):
            assert policy(everywhere).authorize(ALICE, target).rule is everywhere

    def test_any_subject(self) -> None:
        """
        C{"*"} as a subject matches every subject.
        """
        anyone = rule("anyone", subjects=("*",))

        for who in (ALICE, BOB, CAROL):
            assert policy(anyone).authorize(who, "db").rule is anyone

    def test_deny_everywhere(self) -> None:
        """
        A deny rule on C{"*"} beats an allow on one named target.
        """
        rules = policy(
            rule("alice-db"),
            rule("freeze", effect="deny", targets=("*",), credential=""),
        )

        assert rules.authorize(ALICE, "db") == AccessDecision(None, "freeze")


class ReadPolicyTests(SynchronousTestCase):
    """
    L{read_policy} validates the C{policy} section.
    """

    def test_rule_fields(self) -> None:
        """
        Every field of a rule is read; durations are seconds.
        """
        result = parsed(
            "version: 1\n"
            "access:\n"
            "  - name: ops\n"
            "    groups: [ops]\n"
            "    targets: [db, cache]\n"
            "    credential: rw\n"
            "    logins: [root, deploy]\n"
            "    session_limit: 30m\n"
            "    on_token_expiry: continue\n"
        )

        assert result == Policy(
            version=1,
            access=(
                AccessRule(
                    name="ops",
                    effect="allow",
                    subjects=(),
                    groups=("ops",),
                    targets=("db", "cache"),
                    credential="rw",
                    logins=("root", "deploy"),
                    session_limit=1800.0,
                    on_token_expiry="continue",
                ),
            ),
        )

    def test_defaults(self) -> None:
        """
        A rule allows by default, for 8 hours, closing at token expiry,
        with no logins.
        """
        (only,) = parsed(
            "access:\n"
            "  - name: a\n"
            "    subjects: alice\n"
            "    targets: db\n"
            "    credential: ro\n"
        ).access

        assert only.effect == "allow"
        assert only.subjects == ("alice",)
        assert only.session_limit == 8 * 3600.0
        assert only.on_token_expiry == "close"
        assert only.logins == ()

    def test_deny_rule_needs_no_credential(self) -> None:
        """
        A deny rule has no credential set.
        """
        (only,) = parsed(
            "access:\n"
            "  - name: refuse\n"
            "    effect: deny\n"
            "    subjects: [mallory]\n"
            "    targets: ['*']\n"
        ).access

        assert only.effect == "deny"
        assert only.credential == ""

    def test_needs_subjects_or_groups(self) -> None:
        """
        A rule about nobody is refused, naming the rule's line.
        """
        with pytest.raises(ConfigError) as raised:
            parsed("access:\n  - name: a\n    targets: [db]\n    credential: ro\n")

        assert str(raised.value) == (
            "access[0].subjects (line 2): a rule needs subjects or groups"
        )

    def test_allow_needs_credential(self) -> None:
        """
        An allow rule must name the credential set to log in with.
        """
        with pytest.raises(ConfigError) as raised:
            parsed("access:\n  - name: a\n    subjects: [x]\n    targets: [db]\n")

        assert str(raised.value) == (
            "access[0].credential (line 2): is required for an allow rule"
        )

    def test_duplicate_names(self) -> None:
        """
        Two rules of one name are refused.
        """
        rule_text = "  - name: a\n    subjects: [x]\n    targets: [db]\n"
        with pytest.raises(ConfigError, match="rule 'a' is defined twice"):
            parsed(
                "access:\n"
                + rule_text
                + "    credential: ro\n"
                + rule_text
                + "    credential: rw\n"
            )

    def test_unknown_effect(self) -> None:
        """
        An effect other than allow or deny is refused at its line.
        """
        with pytest.raises(ConfigError) as raised:
            parsed(
                "access:\n"
                "  - name: a\n"
                "    effect: maybe\n"
                "    subjects: [x]\n"
                "    targets: [db]\n"
            )

        assert str(raised.value) == (
            "access[0].effect (line 3): must be one of allow, deny"
        )

    def test_unknown_key(self) -> None:
        """
        A misspelt rule key is refused, not ignored.
        """
        with pytest.raises(ConfigError) as raised:
            parsed(
                "access:\n"
                "  - name: a\n"
                "    subjects: [x]\n"
                "    target: [db]\n"
                "    targets: [db]\n"
                "    credential: ro\n"
            )

        assert str(raised.value) == (
            "access[0].target (line 4): is not a known key (known: credential, "
            "effect, groups, logins, name, on_token_expiry, session_limit, "
            "subjects, targets)"
        )

    def test_version(self) -> None:
        """
        Only schema version 1 exists.
        """
        with pytest.raises(ConfigError) as raised:
            parsed("version: 2\n")

        assert str(raised.value) == "version (line 1): must be between 1 and 1"


class LoginTests(SynchronousTestCase):
    """
    The access stage checks the login a client asks for against the
    admitting rule's logins.
    """

    def decide(self, rules: Policy, login: str, who: Identity = ALICE) -> object:
        request = SessionRequested(
            session_id="s-1",
            protocol="ssh",
            peer="127.0.0.1:5000",
            target="db",
            login=login,
            identity=who,
        )
        context = Context(
            session_id="s-1",
            protocol="ssh",
            target="db",
            identity=who,
            policy=rules,
        )
        return AccessInterceptor().decide(request, context)

    def test_allowed_login(self) -> None:
        """
        A login the rule lists is allowed.
        """
        rules = policy(rule("ops", logins=("root", "deploy")))

        assert self.decide(rules, "deploy") == ALLOW

    def test_other_login(self) -> None:
        """
        A login the rule does not list is denied, naming the rule.
        """
        rules = policy(rule("ops", logins=("deploy",)))

        verdict = self.decide(rules, "root")

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "access.login"
        assert verdict.reason.rule == "ops"
        assert verdict.reason.message == "access denied"
        assert "root" in verdict.reason.detail

    def test_no_logins_listed(self) -> None:
        """
        A rule without logins admits no login at all.
        """
        verdict = self.decide(policy(rule("db")), "postgres")

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "access.login"

    def test_no_login_asked(self) -> None:
        """
        A protocol without logins (PostgreSQL) asks for none and passes.
        """
        assert self.decide(policy(rule("db")), "") == ALLOW

    def test_access_denied(self) -> None:
        """
        Without a matching rule the access stage denies, saying no rule
        matched; with a deny rule, naming it.
        """
        unmatched = self.decide(policy(rule("db")), "", who=CAROL)
        denied = self.decide(
            policy(rule("db"), rule("no", effect="deny", credential="")), ""
        )

        assert isinstance(unmatched, Deny)
        assert unmatched.reason.code == "access.denied"
        assert unmatched.reason.detail == (
            "carol may not reach db: no access rule matches"
        )
        assert isinstance(denied, Deny)
        assert denied.reason.rule == "no"
        assert denied.reason.detail == "alice may not reach db: rule no denies"
