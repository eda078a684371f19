"""
Policy v1: who may reach which target, as whom, and for how long.

Access is denied unless an C{allow} rule matches; a matching C{deny} rule
beats every C{allow}.  Guardrail rules (L{hoopgate._guardrails}) decide
what an admitted session may do; masking and approval rules join this
same schema.  Recording rules (C{policy.recording}) widen what a
session's recording keeps: typed terminal input, off unless a rule
turns it on.

test-case-name: tests.unit.test_policy
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from attrs import field, frozen

from hoopgate._approvals import ApprovalRule, read_approval_rule
from hoopgate._configreader import ConfigReader
from hoopgate._guardrails import GuardrailRule, read_groups, read_guardrail
from hoopgate._identity import Identity
from hoopgate._maskrules import MaskingPolicy, read_masking
from hoopgate._scope import check_scope_targets, in_scope


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
class RecordingRule:
    """
    One recording rule: what a session's recording keeps beyond what it
    always keeps.

    Attributes:
        name: Shown when it decides.
        subjects: Subjects it applies to; C{*} for all.
        groups: Groups it applies to.  With neither subjects nor groups
            the rule applies to every identity.
        targets: Target names, or C{*} for all.
        keyboard_input: Whether what is typed into terminals is recorded
            (masked); C{False} keeps it out even where another rule
            would record it.
        where: Where the rule's targets are written, for errors found
            once the targets are known.
    """

    name: str
    subjects: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("*",)
    keyboard_input: bool = False
    where: str = field(default="", eq=False)

    def applies(self, identity: Identity | None, target: str) -> bool:
        """
        Whether the rule is about C{identity} on C{target}.
        """
        return in_scope(self, identity, target)


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
        recording: Recording rules in file order.
    """

    version: int
    access: tuple[AccessRule, ...]
    guardrails: tuple[GuardrailRule, ...] = ()
    masking: MaskingPolicy = field(factory=MaskingPolicy)
    approvals: tuple[ApprovalRule, ...] = ()
    recording: tuple[RecordingRule, ...] = ()

    def keyboard_input(self, identity: Identity, target: str) -> str | None:
        """
        The recording rule that has what C{identity} types on C{target}
        recorded, or C{None}: no rule turns it on, or an applying rule
        turns it off (keeping typed secrets out wins).
        """
        deciding = None
        for rule in self.recording:
            if not rule.applies(identity, target):
                continue
            if not rule.keyboard_input:
                return None
            deciding = deciding or rule.name
        return deciding

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


def read_recording_rule(reader: ConfigReader) -> RecordingRule:
    """
    Validate one entry of C{policy.recording}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    groups = read_groups(reader)

    rule = RecordingRule(
        name=reader.string("name"),
        subjects=reader.strings("subjects", ()),
        groups=groups,
        targets=reader.strings("targets", ("*",)),
        keyboard_input=reader.boolean("keyboard_input", False),
        where=f"{reader.path}.targets (line {reader.line_of('targets')})",
    )
    reader.done()
    return rule


def check_recording_targets(
    rules: Iterable[RecordingRule], known: Collection[str]
) -> None:
    """
    Refuse recording rules naming targets the configuration does not
    define: a misspelt target would silently switch a rule off.

    Raises:
        ConfigError: Naming the rule's targets key and line.
    """
    check_scope_targets(rules, known, "recording rule")


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
    names += [r.name for r in approvals]
    _unique(reader, "approvals", names)
    recording = tuple(read_recording_rule(r) for r in reader.sections("recording"))
    _unique(reader, "recording", names + [r.name for r in recording])
    reader.done()
    return Policy(
        version=version,
        access=access,
        guardrails=guardrails,
        masking=masking,
        approvals=approvals,
        recording=recording,
    )


def _unique(reader: ConfigReader, key: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise reader.error(key, f"rule {duplicates[0]!r} is defined twice")
