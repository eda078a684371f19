"""
Policy v1: who may reach which target, as whom, and for how long.

Access is denied unless an C{allow} rule matches; a matching C{deny} rule
beats every C{allow}.  Guardrail rules (L{hoopgate._guardrails}) decide
what an admitted session may do; masking and approval rules join this
same schema.

test-case-name: tests.unit.test_policy
"""

from __future__ import annotations

from attrs import field, frozen

from hoopgate._approvals import ApprovalRule, read_approval_rule
from hoopgate._configreader import ConfigReader
from hoopgate._guardrails import GuardrailRule, read_guardrail
from hoopgate._identity import Identity
from hoopgate._maskrules import MaskingPolicy, read_masking


@frozen
class AccessRule:
    """
    One access rule.

    Attributes:
        name: The rule's name, shown when it decides.
        effect: C{allow} or C{deny}.
        subjects: Subjects it applies to (empty with groups: any subject
            in those groups).
        groups: Groups it applies to.
        targets: Target names, or C{("*",)} for all.
        credential: The credential set used upstream (allow rules).
        logins: Accounts on the target the identity may ask for
            (protocols with a login, such as SSH); empty for none.
        session_limit: Longest session, in seconds.
        on_token_expiry: C{close} ends the session when the token
            expires; C{continue} lets it run to the session limit.
    """

    name: str
    effect: str
    subjects: tuple[str, ...]
    groups: tuple[str, ...]
    targets: tuple[str, ...]
    credential: str
    logins: tuple[str, ...]
    session_limit: float
    on_token_expiry: str

    def matches(self, identity: Identity, target: str) -> bool:
        """
        Whether this rule is about C{identity} reaching C{target}.
        """
        if "*" not in self.targets and target not in self.targets:
            return False
        if identity.subject in self.subjects or "*" in self.subjects:
            return True
        return bool(set(self.groups) & set(identity.groups))


@frozen
class Policy:
    """
    All rules of a configuration.

    Attributes:
        version: The schema version (1).
        access: Access rules in file order.
        guardrails: Guardrail rules in file order.
        masking: Masking rules and options (L{hoopgate._maskrules}).
        approvals: Approval rules in file order (L{hoopgate._approvals}).
    """

    version: int
    access: tuple[AccessRule, ...]
    guardrails: tuple[GuardrailRule, ...] = ()
    masking: MaskingPolicy = field(factory=MaskingPolicy)
    approvals: tuple[ApprovalRule, ...] = ()

    def authorize(self, identity: Identity, target: str) -> AccessDecision:
        """
        Decide whether C{identity} may open a session on C{target}.
        """
        allowed = None
        for rule in self.access:
            if not rule.matches(identity, target):
                continue
            if rule.effect == "deny":
                return AccessDecision(None, rule.name)
            if allowed is None:
                allowed = rule

        return AccessDecision(allowed, allowed.name if allowed else None)


@frozen
class AccessDecision:
    """
    The outcome of L{Policy.authorize}.

    Attributes:
        rule: The allow rule that grants access, or C{None} if denied.
        decided_by: The name of the deciding rule (C{None}: no rule
            matched, the default deny).
    """

    rule: AccessRule | None
    decided_by: str | None


def _read_access(reader: ConfigReader) -> AccessRule:
    effect = reader.choice("effect", ("allow", "deny"), "allow")
    subjects = reader.strings("subjects", ())
    groups = reader.strings("groups", ())
    if not subjects and not groups:
        raise reader.error("subjects", "a rule needs subjects or groups")

    rule = AccessRule(
        name=reader.string("name"),
        effect=effect,
        subjects=subjects,
        groups=groups,
        targets=reader.strings("targets"),
        credential=reader.string("credential", "") if effect == "allow" else "",
        logins=reader.strings("logins", ()),
        session_limit=reader.duration("session_limit", 8 * 3600.0),
        on_token_expiry=reader.choice(
            "on_token_expiry", ("close", "continue"), "close"
        ),
    )
    if effect == "allow" and not rule.credential:
        raise reader.error("credential", "is required for an allow rule")
    reader.done()
    return rule


def read_policy(reader: ConfigReader) -> Policy:
    """
    Validate the C{policy} section.
    """
    version = reader.integer("version", 1, low=1, high=1)
    access = tuple(_read_access(r) for r in reader.sections("access"))
    _unique(reader, "access", [r.name for r in access])
    guardrails = tuple(read_guardrail(r) for r in reader.sections("guardrails"))
    # One namespace for every rule, so a deciding rule's name is never
    # ambiguous in a log line, a recording or a policy test.
    _unique(reader, "guardrails", [r.name for r in access + guardrails])
    masking = read_masking(reader.section("masking"))
    names = [r.name for r in access + guardrails] + [r.name for r in masking.rules]
    _unique(reader, "masking", names)
    approvals = tuple(read_approval_rule(r) for r in reader.sections("approvals"))
    _unique(reader, "approvals", names + [r.name for r in approvals])
    reader.done()
    return Policy(
        version=version,
        access=access,
        guardrails=guardrails,
        masking=masking,
        approvals=approvals,
    )


def _unique(reader: ConfigReader, key: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise reader.error(key, f"rule {duplicates[0]!r} is defined twice")
