"""
Tests for C{policy.recording} (L{hoopgate._policy.RecordingRule}): which
sessions have their typed terminal input recorded.
"""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase

from hoopgate._configreader import ConfigError, load_yaml
from hoopgate._identity import Identity
from hoopgate._policy import Policy, check_recording_targets, read_policy

ADA = Identity(subject="ada", issuer="https://id.test", groups=("ops",))
BOB = Identity(subject="bob", issuer="https://id.test", groups=("dev",))

ACCESS = """\
access:
  - name: all
    subjects: ["*"]
    targets: ["*"]
    credential: main
"""


def parsed(recording: str) -> Policy:
    """
    A policy with one access rule and the C{recording} list given.
    """
    text = ACCESS + "recording:\n" + recording
    return read_policy(load_yaml(text, "policy.yaml"))


class KeyboardInputTests(SynchronousTestCase):
    """
    L{Policy.keyboard_input} names the rule that records typed input;
    off unless a rule turns it on, and an applying rule saying off wins.
    """

    def test_off_without_rules(self) -> None:
        policy = read_policy(load_yaml(ACCESS, "policy.yaml"))

        assert policy.keyboard_input(ADA, "box") is None

    def test_scoped_by_group_and_target(self) -> None:
        """
        A rule for group C{ops} on C{box} records Ada there, not Bob, and
        not Ada elsewhere.
        """
        policy = parsed(
            "  - name: ops-keys\n"
            "    groups: [ops]\n"
            "    targets: [box]\n"
            "    keyboard_input: true\n"
        )

        assert policy.keyboard_input(ADA, "box") == "ops-keys"
        assert policy.keyboard_input(BOB, "box") is None
        assert policy.keyboard_input(ADA, "db") is None

    def test_off_wins(self) -> None:
        """
        A rule turning input recording off for a subject beats a broader
        one turning it on, whatever their order.
        """
        policy = parsed(
            "  - name: everyone\n"
            "    keyboard_input: true\n"
            "  - name: not-bob\n"
            "    subjects: [bob]\n"
            "    keyboard_input: false\n"
        )

        assert policy.keyboard_input(ADA, "box") == "everyone"
        assert policy.keyboard_input(BOB, "box") is None

    def test_star_group_refused(self) -> None:
        with pytest.raises(ConfigError, match="'\\*' is not a group"):
            parsed("  - name: r\n    groups: ['*']\n    keyboard_input: true\n")

    def test_unknown_key_refused(self) -> None:
        with pytest.raises(ConfigError, match="keyboard"):
            parsed("  - name: r\n    keyboard: true\n")

    def test_names_shared_with_other_rules(self) -> None:
        with pytest.raises(ConfigError, match="defined twice"):
            parsed("  - name: all\n    keyboard_input: true\n")

    def test_unknown_target_refused(self) -> None:
        policy = parsed("  - name: r\n    targets: [bxo]\n    keyboard_input: true\n")

        with pytest.raises(ConfigError, match="unknown target 'bxo'"):
            check_recording_targets(policy.recording, {"box"})
        check_recording_targets(parsed("  - name: r\n").recording, {"box"})
