"""
What the PostgreSQL relay keeps of results for masking, sans-IO.

L{DescribeQueue} tells which Describe a RowDescription or NoData
answers.  The server answers Describes in order, but skips every message
after an error up to the next Sync, and ignores Syncs sent during COPY
FROM STDIN; the queue keeps each Describe between the Sync (or Query)
boundaries the client sent, so a ReadyForQuery drops what its segment
left unanswered.  The relay puts a Describe of its own before each
Execute while masking judges results: its answer carries the result
formats the Bind asked for, and is never relayed.  That covers clients
that describe a prepared statement once and execute it many times
(asyncpg, JDBC) and clients that never describe at all.

L{ResultSampler} keeps the first rows of a result as they left, up to a
row and byte cap, and counts all of them.

test-case-name: tests.unit.postgres.test_results
"""

from __future__ import annotations

import re
from collections import deque
from enum import Enum

from attrs import frozen


@frozen
class Describe:
    """
    A Describe the server has yet to answer.

    Attributes:
        kind: C{S} (a statement) or C{P} (a portal).
        name: The statement or portal name.
        statement_id: The statement it describes, if known.
        injected: Whether the relay sent it (its answer is not relayed).
    """

    kind: str
    name: str
    statement_id: str = ""
    injected: bool = False


class _Mark(Enum):
    SYNC = "sync"
    QUERY = "query"
    COPY_END = "copy_end"


_BOUNDARIES = (_Mark.SYNC, _Mark.QUERY)


class DescribeQueue:
    """
    The Describes the server has yet to answer, in order, between the
    boundaries of the client's messages.
    """

    def __init__(self) -> None:
        self._queue: deque[Describe | _Mark] = deque()
        self._in_copy = False

    def __len__(self) -> int:
        return sum(isinstance(entry, Describe) for entry in self._queue)

    # What the client sent.

    def describe(self, entry: Describe) -> None:
        """
        A Describe went to the server.
        """
        self._queue.append(entry)

    def sync(self) -> None:
        """
        A Sync went to the server (ignored by it during copy-in).
        """
        if not self._in_copy:
            self._queue.append(_Mark.SYNC)

    def query(self) -> None:
        """
        A Query went to the server: it ends with a ReadyForQuery.
        """
        self._queue.append(_Mark.QUERY)

    def copy_end(self) -> None:
        """
        A CopyDone or CopyFail went to the server.
        """
        if self._in_copy:
            self._in_copy = False
        else:
            self._queue.append(_Mark.COPY_END)

    # What the server answered.

    def on_description(self) -> Describe | None:
        """
        A RowDescription or NoData: the Describe it answers, or C{None}
        when it belongs to a simple Query.
        """
        queue = self._queue
        while queue and queue[0] is _Mark.COPY_END:
            queue.popleft()
        if queue and isinstance(queue[0], Describe):
            entry = queue.popleft()
            assert isinstance(entry, Describe)
            return entry
        return None

    def on_copy_in(self) -> None:
        """
        The server entered copy-in: the Syncs the client sent since, up
        to its CopyDone or CopyFail, will be ignored.
        """
        kept: deque[Describe | _Mark] = deque()
        queue = self._queue
        if queue and queue[0] is _Mark.QUERY:
            kept.append(queue.popleft())
        ended = False
        while queue:
            entry = queue.popleft()
            if not ended and entry is _Mark.SYNC:
                continue
            if not ended and entry is _Mark.COPY_END:
                ended = True
                continue
            kept.append(entry)
        self._queue = kept
        self._in_copy = not ended

    def on_ready(self) -> list[Describe]:
        """
        A ReadyForQuery ends the oldest segment.

        Returns:
            The Describes of that segment the server never answered
            (skipped after an error).
        """
        dropped = []
        queue = self._queue
        while queue:
            entry = queue.popleft()
            if entry in _BOUNDARIES:
                break
            if isinstance(entry, Describe):
                dropped.append(entry)
        return dropped


# Control characters text seldom holds: a value with them is binary.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _value(raw: bytes | None, encoding: str) -> str | None:
    if raw is None:
        return None
    if _CONTROL.search(raw) is None:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return "\\x" + raw.hex()


class ResultSampler:
    """
    The first rows of one result as they left, and its totals.

    Args:
        max_rows: Rows to keep.
        max_bytes: Bytes of values to keep.
        encoding: The client encoding, to render values as text.

    Attributes:
        rows: The kept rows, each value text, or C{\\x} and hex when it
            is not text in the client encoding (or holds control
            characters, as binary values do), or C{None}.
        total_rows: Rows counted.
        total_bytes: Bytes the result sent.
        truncated: Whether rows were left out.
    """

    def __init__(self, max_rows: int, max_bytes: int, encoding: str) -> None:
        self._max_rows = max_rows
        self._room = max_bytes
        self._encoding = encoding
        self.rows: list[tuple[str | None, ...]] = []
        self.total_rows = 0
        self.total_bytes = 0
        self.truncated = False

    @property
    def full(self) -> bool:
        """
        Whether no more rows will be kept (rows may still be counted).
        """
        return self.truncated or len(self.rows) >= self._max_rows

    def add(self, values: list[bytes | None], size: int) -> None:
        """
        A row left, C{size} bytes on the wire.
        """
        self.total_rows += 1
        self.total_bytes += size
        if self.full:
            self.truncated = True
            return
        length = sum(len(v) for v in values if v is not None)
        if length > self._room:
            self.truncated = True
            return
        self._room -= length
        encoding = self._encoding
        self.rows.append(tuple(_value(v, encoding) for v in values))

    def passed(self, size: int) -> None:
        """
        Bytes of the result relayed without being looked at.
        """
        self.total_bytes += size

    def completed(self, rows: int) -> None:
        """
        The result ended, reporting C{rows} rows (from its tag).
        """
        if rows > self.total_rows:
            self.truncated = True
            self.total_rows = rows
