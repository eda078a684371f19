"""
Tests for L{hoopgate_plugins.postgres._tracking}: which statement each
server response finishes, across the protocol's uneven counts.
"""

from __future__ import annotations

from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres._tracking import Outcome, ResponseTracker, rows_of

REFUSAL = pg.error_response("ERROR", "42501", "hoopgate: statement blocked")


def statuses(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    return [(o.statement_id, o.status) for o in outcomes]


class TestSimple:
    """
    A Query ends at its ReadyForQuery, whatever it held.
    """

    def test_multi_statement(self) -> None:
        """
        Several completions of one Query are joined; rows come from the
        last tag that counts rows.
        """
        tracker = ResponseTracker()
        tracker.query("s.1", 0.0)

        assert tracker.on_complete("INSERT 0 2", 0.1) is None
        assert tracker.on_complete("SELECT 7", 0.2) is None
        [outcome] = tracker.on_ready(0.3)

        assert (outcome.status, outcome.command_tag, outcome.rows) == (
            "ok",
            "INSERT 0 2;SELECT 7",
            7,
        )
        assert outcome.duration == 0.3

    def test_refused_query_records_the_refusal(self) -> None:
        """
        A refused Query's error is swapped for the gateway's, and its
        outcome carries the gateway's SQLSTATE, not the server's.
        """
        tracker = ResponseTracker()
        tracker.query("s.1", 0.0, replacement=REFUSAL)

        finished, replacement = tracker.on_error("42601", "syntax error", 0.1)
        [outcome] = tracker.on_ready(0.2)

        assert (finished, replacement) == ([], REFUSAL)
        assert (outcome.status, outcome.error_code, outcome.error_message) == (
            "denied",
            "42501",
            "hoopgate: statement blocked",
        )


class TestExtended:
    """
    Executes end at their completion; an error skips to the Sync.
    """

    def test_error_aborts_rest_of_batch(self) -> None:
        """
        After an error the server skips to the Sync: later Executes of
        the batch are aborted, and the next batch is counted afresh.
        """
        tracker = ResponseTracker()
        tracker.execute("s.1", 0.0)
        tracker.execute("s.2", 0.0)
        tracker.sync()
        tracker.execute("s.3", 0.0)
        tracker.sync()

        finished, replacement = tracker.on_error("22012", "division by zero", 0.1)
        assert replacement is None
        assert statuses(finished) == [("s.1", "error"), ("s.2", "aborted")]
        assert tracker.on_ready(0.2) == []

        [done] = [tracker.on_complete("SELECT 1", 0.3)]
        assert done is not None
        assert statuses([done]) == [("s.3", "ok")]
        assert tracker.on_ready(0.4) == []
        assert len(tracker) == 0

    def test_denied_parse(self) -> None:
        """
        A refused Parse finishes denied with the gateway's error, and the
        Executes behind it in the batch are aborted.
        """
        tracker = ResponseTracker()
        tracker.denied("s.1", 0.0, REFUSAL)
        tracker.execute("s.1", 0.0)
        tracker.sync()

        finished, replacement = tracker.on_error("42601", "syntax error", 0.1)

        assert replacement == REFUSAL
        assert statuses(finished) == [("s.1", "denied"), ("s.1", "aborted")]
        assert finished[0].error_code == "42501"

    def test_suspended(self) -> None:
        """
        An Execute with a row limit ends at PortalSuspended.
        """
        tracker = ResponseTracker()
        tracker.execute("s.1", 0.0)

        outcome = tracker.on_suspended(0.1)

        assert outcome is not None
        assert outcome.status == "suspended"


class TestCopy:
    """
    During COPY FROM STDIN the server ignores Sync.
    """

    def test_sync_before_copy_in_ignored(self) -> None:
        """
        The Sync a driver sends right after Execute does not get a
        ReadyForQuery of its own (pgbouncer#1023): one completion, then
        the ReadyForQuery of the Sync after CopyDone.
        """
        tracker = ResponseTracker()
        tracker.execute("s.1", 0.0)
        tracker.sync()

        tracker.on_copy_in()
        tracker.copy_end()
        tracker.sync()
        done = tracker.on_complete("COPY 1000", 0.1)

        assert done is not None
        assert (done.status, done.rows) == ("ok", 1000)
        assert tracker.on_ready(0.2) == []
        assert len(tracker) == 0


class TestRows:
    """
    Row counts come from completion tags.
    """

    def test_tags(self) -> None:
        """
        The last number of a tag is its row count; others have none.
        """
        assert [rows_of(t) for t in ("SELECT 5", "INSERT 0 3", "BEGIN", "")] == [
            5,
            3,
            0,
            0,
        ]
