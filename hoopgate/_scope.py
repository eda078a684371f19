"""
Who and where a policy rule is about: the subjects, groups and targets
every kind of rule (guardrail, masking, approval, recording) is scoped
by, read and matched the same way.

test-case-name: tests.unit.test_policy
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from hoopgate._configreader import ConfigError
from hoopgate._identity import Identity


class Scoped(Protocol):
    """
    A rule scoped to subjects, groups and targets.
    """

    @property
    def name(self) -> str: ...

    @property
    def subjects(self) -> tuple[str, ...]: ...

    @property
    def groups(self) -> tuple[str, ...]: ...

    @property
    def targets(self) -> tuple[str, ...]: ...

    @property
    def where(self) -> str: ...


def in_scope(rule: Scoped, identity: Identity | None, target: str) -> bool:
    """
    Whether C{rule} is about C{identity} on C{target}.  With neither
    subjects nor groups it is about everyone; without a known identity
    every rule for the target is (fail closed).
    """
    if "*" not in rule.targets and target not in rule.targets:
        return False
    if identity is None or not (rule.subjects or rule.groups):
        return True
    if "*" in rule.subjects or identity.subject in rule.subjects:
        return True
    return not set(rule.groups).isdisjoint(identity.groups)


def check_scope_targets(
    rules: Iterable[Scoped], known: Collection[str], kind: str
) -> None:
    """
    Refuse rules naming targets the configuration does not define: a
    misspelt target would silently switch a rule off.

    Args:
        rules: The rules.
        known: The configured targets' names.
        kind: What the rules are, for the message (C{guardrail}).

    Raises:
        ConfigError: Naming the rule's targets key and line.
    """
    for rule in rules:
        for name in rule.targets:
            if name != "*" and name not in known:
                raise ConfigError(
                    f"{rule.where}: {kind} {rule.name!r} names unknown target {name!r}"
                )
