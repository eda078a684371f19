"""
Tests for L{hoopgate_plugins.postgres._results}: which Describe a
RowDescription or NoData answers, through errors, Syncs and COPY, and
result samples with their caps.
"""

from __future__ import annotations

from hoopgate_plugins.postgres._results import Describe, DescribeQueue, ResultSampler

STATEMENT = Describe("S", "s1", "id1")
PORTAL = Describe("P", "", "id2")
OURS = Describe("P", "", "id2", injected=True)


class TestDescribeQueue:
    """
    Describes answered in order, segment by segment.
    """

    def test_in_order(self) -> None:
        """
        Answers come back in the order the Describes went out.
        """
        queue = DescribeQueue()
        queue.describe(STATEMENT)
        queue.describe(PORTAL)
        queue.describe(OURS)
        queue.sync()

        answers = [queue.on_description() for _ in range(3)]

        assert answers == [STATEMENT, PORTAL, OURS]
        assert queue.on_ready() == []
        assert len(queue) == 0

    def test_simple_query_descriptions(self) -> None:
        """
        A Query's RowDescriptions answer no Describe, even with Describes
        of later segments waiting.
        """
        queue = DescribeQueue()
        queue.query()
        queue.describe(STATEMENT)
        queue.sync()

        first = queue.on_description()
        queue.on_ready()
        second = queue.on_description()

        assert first is None
        assert second == STATEMENT

    def test_error_skips_to_sync(self) -> None:
        """
        After an error the server answers nothing up to the Sync: the
        ReadyForQuery drops that segment's Describes, and the next
        segment's answers match their own Describes.
        """
        queue = DescribeQueue()
        queue.describe(STATEMENT)
        queue.describe(OURS)
        queue.sync()
        queue.describe(PORTAL)
        queue.sync()

        dropped = queue.on_ready()
        answer = queue.on_description()

        assert dropped == [STATEMENT, OURS]
        assert answer == PORTAL

    def test_copy_in_ignores_syncs(self) -> None:
        """
        The Syncs sent during COPY FROM STDIN are ignored by the server,
        whether they came before its CopyInResponse or after.
        """
        queue = DescribeQueue()
        queue.describe(OURS)
        queue.sync()  # right after the Execute: ignored
        queue.copy_end()
        queue.sync()
        queue.describe(PORTAL)
        queue.sync()

        assert queue.on_description() == OURS
        queue.on_copy_in()
        assert queue.on_ready() == []
        assert queue.on_description() == PORTAL

    def test_copy_in_before_copy_done(self) -> None:
        """
        A Sync sent while the client is still copying is not a segment.
        """
        queue = DescribeQueue()
        queue.describe(OURS)
        assert queue.on_description() == OURS
        queue.on_copy_in()
        queue.sync()
        queue.copy_end()
        queue.sync()
        queue.describe(PORTAL)
        queue.sync()

        assert queue.on_ready() == []
        assert queue.on_description() == PORTAL


class TestResultSampler:
    """
    The first rows of a result, capped, and its totals.
    """

    def test_rows_capped(self) -> None:
        """
        Rows past the cap are counted, not kept; NULL stays None and
        values that are not text are hex.
        """
        sampler = ResultSampler(2, 1 << 20, "utf-8")

        for row in ([b"a", None], [b"\x00\x01", b"b"], [b"c", b"d"]):
            sampler.add(list(row), 10)

        assert sampler.rows == [("a", None), ("\\x0001", "b")]
        assert (sampler.total_rows, sampler.total_bytes) == (3, 30)
        assert sampler.truncated and sampler.full

    def test_bytes_capped(self) -> None:
        """
        A row that would pass the byte cap ends the sample.
        """
        sampler = ResultSampler(10, 5, "latin-1")

        sampler.add([b"\xe9t\xe9"], 8)
        sampler.add([b"abcd"], 9)

        assert sampler.rows == [("été",)]
        assert sampler.truncated

    def test_totals_from_the_tag(self) -> None:
        """
        Rows relayed unparsed count through the completion tag.
        """
        sampler = ResultSampler(1, 100, "utf-8")
        sampler.add([b"x"], 5)
        sampler.passed(50)

        sampler.completed(7)

        assert (sampler.total_rows, sampler.total_bytes) == (7, 55)
        assert sampler.truncated
