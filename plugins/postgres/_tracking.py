"""
Matching the server's responses to the client's requests, sans-IO.

PostgreSQL answers requests strictly in order, so a queue of what the
client asked for tells which statement each CommandComplete, ErrorResponse
and ReadyForQuery belongs to.  The tracker knows the protocol's rules that
make the counts uneven: after an error in an extended-protocol batch the
server skips everything up to the next Sync, and during COPY FROM STDIN it
ignores Sync altogether.

test-case-name: tests.unit.postgres.test_tracking
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from attrs import define, frozen

from hoopgate_plugins.postgres._codec import parse_fields


class Kind(Enum):
    """
    What a queue entry waits for.
    """

    SIMPLE = "simple"  # a Query: ends at ReadyForQuery
    EXECUTE = "execute"  # an Execute: ends at its completion or an error
    SYNC = "sync"  # a Sync: ends at ReadyForQuery
    DENIED = "denied"  # a refused Parse, replaced by one that fails
    COPY_END = (
        "copy_end"  # CopyDone or CopyFail sent before the server's CopyInResponse
    )


@define
class Pending:
    """
    One request awaiting its response.

    Attributes:
        kind: What it is.
        statement_id: The statement it runs, if any.
        started: Clock time it was sent.
        replacement: An ErrorResponse to send the client instead of the
            server's error (for refused statements).
        tags: Completion tags seen so far (a Query may hold several).
        bytes_out: Response bytes relayed for it.
        error_code: The SQLSTATE of its error, if any.
        error_message: The error text the client saw, if any.
    """

    kind: Kind
    statement_id: str = ""
    started: float = 0.0
    replacement: bytes | None = None
    tags: list[str] | None = None
    bytes_out: int = 0
    error_code: str = ""
    error_message: str = ""


@frozen
class Outcome:
    """
    A finished statement, ready to record.

    Attributes:
        statement_id: The statement.
        status: C{ok}, C{error}, C{denied}, C{suspended} or C{aborted}.
        command_tag: The completion tags, joined by C{;}.
        rows: Rows from the last tag that counts rows.
        bytes_out: Response bytes relayed.
        duration: Seconds from request to completion.
        error_code: SQLSTATE, if any.
        error_message: Error text, if any.
    """

    statement_id: str
    status: str
    command_tag: str
    rows: int
    bytes_out: int
    duration: float
    error_code: str = ""
    error_message: str = ""


def rows_of(tag: str) -> int:
    """
    The row count a completion tag reports (C{SELECT 5}, C{INSERT 0 5}).
    """
    last = tag.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _error_text(error: bytes) -> tuple[str, str]:
    """
    The SQLSTATE and message of an ErrorResponse the gateway built.
    """
    fields = parse_fields(error[5:])
    return fields.get("C", ""), fields.get("M", "")


def _finish(entry: Pending, status: str, now: float) -> Outcome:
    tags = entry.tags or []
    return Outcome(
        statement_id=entry.statement_id,
        status=status,
        command_tag=";".join(tags),
        rows=rows_of(tags[-1]) if tags else 0,
        bytes_out=entry.bytes_out,
        duration=max(0.0, now - entry.started),
        error_code=entry.error_code,
        error_message=entry.error_message,
    )


class ResponseTracker:
    """
    The queue of requests the server has yet to answer.
    """

    def __init__(self) -> None:
        self._queue: deque[Pending] = deque()
        self.client_in_copy = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def head(self) -> Pending | None:
        """
        The request the next response belongs to.
        """
        return self._queue[0] if self._queue else None

    def query(
        self, statement_id: str, now: float, replacement: bytes | None = None
    ) -> None:
        """
        The client sent a Query.
        """
        self._queue.append(Pending(Kind.SIMPLE, statement_id, now, replacement, []))

    def execute(self, statement_id: str, now: float) -> None:
        """
        The client sent an Execute.
        """
        self._queue.append(Pending(Kind.EXECUTE, statement_id, now, None, []))

    def denied(self, statement_id: str, now: float, replacement: bytes) -> None:
        """
        A Parse was refused and replaced by one the server will fail.
        """
        self._queue.append(Pending(Kind.DENIED, statement_id, now, replacement))

    def sync(self) -> None:
        """
        The client sent a Sync (ignored by the server during copy-in).
        """
        if not self.client_in_copy:
            self._queue.append(Pending(Kind.SYNC))

    def copy_end(self) -> None:
        """
        The client sent CopyDone or CopyFail.
        """
        if self.client_in_copy:
            self.client_in_copy = False
        else:
            self._queue.append(Pending(Kind.COPY_END))

    def add_bytes(self, count: int) -> None:
        """
        Count relayed response bytes toward the current request.
        """
        if self._queue:
            self._queue[0].bytes_out += count

    def on_copy_in(self) -> None:
        """
        The server entered copy-in: Syncs the client sent since the
        request, up to its CopyDone or CopyFail, will be ignored.
        """
        kept: deque[Pending] = deque()
        if self._queue:
            kept.append(self._queue.popleft())
        ended = False
        while self._queue:
            entry = self._queue.popleft()
            if not ended and entry.kind is Kind.SYNC:
                continue
            if not ended and entry.kind is Kind.COPY_END:
                ended = True
                continue
            kept.append(entry)
        self._queue = kept
        self.client_in_copy = not ended

    def on_complete(self, tag: str, now: float) -> Outcome | None:
        """
        CommandComplete (or EmptyQueryResponse, with an empty tag).
        """
        head = self.head
        if head is None:
            return None
        if head.kind is Kind.SIMPLE:
            assert head.tags is not None
            head.tags.append(tag)
            return None
        if head.kind is Kind.EXECUTE:
            self._queue.popleft()
            head.tags = [tag] if tag else []
            return _finish(head, "ok", now)
        return None

    def on_suspended(self, now: float) -> Outcome | None:
        """
        PortalSuspended: an Execute's row limit was reached.
        """
        head = self.head
        if head is None or head.kind is not Kind.EXECUTE:
            return None
        self._queue.popleft()
        return _finish(head, "suspended", now)

    def on_error(
        self, code: str, message: str, now: float
    ) -> tuple[list[Outcome], bytes | None]:
        """
        An ErrorResponse.

        Returns:
            The requests it finished, and the error to send the client
            instead of the server's, if the request was refused.
        """
        head = self.head
        if head is None:
            return [], None
        if head.kind is Kind.SYNC:
            return [], None
        if head.replacement is not None:
            # The client sees the refusal, not the server's error about
            # the statement sent in its place; so does the recording.
            code, message = _error_text(head.replacement)
        if head.kind is Kind.SIMPLE:
            head.error_code, head.error_message = code, message
            return [], head.replacement

        self._queue.popleft()
        head.error_code, head.error_message = code, message
        if head.kind is Kind.DENIED:
            finished = [_finish(head, "denied", now)]
            replacement = head.replacement
        else:
            finished = [_finish(head, "error", now)]
            replacement = None
        finished.extend(self._skip_to_sync(now))
        return finished, replacement

    def _skip_to_sync(self, now: float) -> list[Outcome]:
        skipped = []
        while self._queue and self._queue[0].kind is not Kind.SYNC:
            entry = self._queue.popleft()
            if entry.kind is Kind.EXECUTE:
                skipped.append(_finish(entry, "aborted", now))
            elif entry.kind is Kind.DENIED:
                skipped.append(_finish(entry, "denied", now))
        return skipped

    def on_ready(self, now: float) -> list[Outcome]:
        """
        ReadyForQuery: finishes a Query, or everything up to a Sync.
        """
        finished = (
            self._skip_to_sync(now)
            if self.head
            and self.head.kind
            in (
                Kind.EXECUTE,
                Kind.DENIED,
            )
            else []
        )
        head = self.head
        if head is None:
            return finished
        self._queue.popleft()
        if head.kind is Kind.SIMPLE:
            status = (
                "denied" if head.replacement else ("error" if head.error_code else "ok")
            )
            finished.append(_finish(head, status, now))
        return finished
