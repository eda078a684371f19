"""
Tests for L{hoopgate_plugins.postgres._options}: only allowed run-time
settings of the start-up C{options} reach the target.
"""

from __future__ import annotations

import pytest

from hoopgate_plugins.postgres._options import filter_options

ALLOWED = ("search_path", "statement_timeout")


class TestFilterOptions:
    """
    C{filter_options} keeps allowed settings and names the rest.
    """

    def test_empty(self) -> None:
        """
        No options, nothing to send, nothing dropped.
        """
        assert filter_options("  ", ALLOWED) == ("", [])

    @pytest.mark.parametrize(
        "options",
        [
            "-c search_path=app",
            "-csearch_path=app",
            "--search_path=app",
            "--search-path=app",
            "-c SEARCH_PATH=app",
        ],
    )
    def test_spellings(self, options: str) -> None:
        """
        Every spelling the server accepts is read, names case-folded and
        dashes turned into underscores.
        """
        assert filter_options(options, ALLOWED) == ("-c search_path=app", [])

    def test_drops_what_is_not_allowed(self) -> None:
        """
        A setting that could change what the gateway's credential may do
        is dropped and named.
        """
        kept, dropped = filter_options(
            "-c role=postgres -c statement_timeout=5s --session_authorization=x",
            ALLOWED,
        )

        assert kept == "-c statement_timeout=5s"
        assert dropped == ["role", "session_authorization"]

    def test_escaped_space_kept(self) -> None:
        """
        A backslash-escaped space stays inside the value and is escaped
        again toward the target.
        """
        kept, dropped = filter_options(r"-c search_path=a\ b", ALLOWED)

        assert kept == r"-c search_path=a\ b"
        assert dropped == []

    @pytest.mark.parametrize(
        "options", ["search_path=app", "-c", "-c =x", "-c search_path", "-x y"]
    )
    def test_unreadable_dropped_whole(self, options: str) -> None:
        """
        Anything that is not a list of settings is dropped as a whole.
        """
        assert filter_options(options, ALLOWED) == ("", ["options"])
