"""
Tests for L{hoopgate_plugins.postgres._plugin}: the listener keys the
plugin reads.
"""

from __future__ import annotations

import pytest

from hoopgate._configreader import load_yaml
from hoopgate.plugin import ConfigError
from hoopgate_plugins.postgres._plugin import plugin
from hoopgate_plugins.postgres._settings import (
    DEFAULT_MAX_STATEMENT,
    ListenerSettings,
    TargetSettings,
)
from hoopgate_plugins.postgres._sql import DEFAULT_ALLOWED_FUNCTIONS


def read(text: str) -> ListenerSettings:
    return plugin.read_listener(load_yaml(text, "test.yaml"))


class TestListenerKeys:
    """
    C{max_message} and C{max_statement}.
    """

    def test_defaults(self) -> None:
        """
        Without keys: 1 GiB messages, 8 MiB statements, 60 s to log in.
        """
        settings = read("{}")

        assert DEFAULT_MAX_STATEMENT == 8 << 20
        assert settings == ListenerSettings(
            max_message=1 << 30, login_timeout=60.0, max_statement=8 << 20
        )

    def test_max_statement(self) -> None:
        """
        C{max_statement} is a number of bytes.
        """
        assert read("max_statement: 33554432").max_statement == 32 << 20

    def test_small_max_message_bounds_default(self) -> None:
        """
        With messages smaller than 8 MiB, statements default to that size.
        """
        settings = read("max_message: 1048576")

        assert (settings.max_message, settings.max_statement) == (1 << 20, 1 << 20)

    def test_statement_over_message(self) -> None:
        """
        A statement limit above the message limit is an error naming the
        key and line.
        """
        with pytest.raises(ConfigError) as caught:
            read("max_message: 1048576\nmax_statement: 2097152\n")

        assert str(caught.value) == (
            "max_statement (line 2): must be between 65536 and 1048576"
        )

    def test_statement_too_small(self) -> None:
        """
        Under 64 KiB is refused.
        """
        with pytest.raises(ConfigError, match="max_statement"):
            read("max_statement: 1000")


def read_target(text: str) -> TargetSettings:
    return plugin.read_target(load_yaml("database: appdb\n" + text, "test.yaml"))


class TestTrustedFunctions:
    """
    C{trusted_functions}: functions of the target's own the operator
    vouches for.
    """

    def test_default(self) -> None:
        settings = read_target("")

        assert settings.trusted_functions == frozenset()
        assert settings.allowed_functions == DEFAULT_ALLOWED_FUNCTIONS

    def test_names_and_schemas(self) -> None:
        settings = read_target(
            'trusted_functions: [public.calc_tax, audit.*, \'"Billing"."Sum"\']\n'
        )

        assert settings.trusted_functions == {
            "public.calc_tax",
            "audit.*",
            '"Billing"."Sum"',
        }
        assert settings.allowed_functions - DEFAULT_ALLOWED_FUNCTIONS == {
            "public.calc_tax",
            "audit.*",
            '"Billing"."Sum"',
            "calc_tax",
            '"Sum"',
        }

    @pytest.mark.parametrize(
        ("entry", "why"),
        [
            ("calc_tax", "must be schema.name or schema.*"),
            ("Public.Calc", "unquoted names must be in lower case"),
        ],
    )
    def test_refused(self, entry: str, why: str) -> None:
        with pytest.raises(ConfigError) as caught:
            read_target(f"trusted_functions: [{entry}]\n")

        assert str(caught.value).startswith(
            f"trusted_functions (line 2): {entry!r}: {why}"
        )
