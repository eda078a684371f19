"""
Classifying long statements in a worker process.

Parsing a statement costs many times its size in memory and time
(pglast's parse tree as JSON loaded into dicts: about 60 times the text
for a multi-row INSERT of small values, whose 8 MB take seconds).  In
the gateway's own process that would stall every session on its
reactor and keep the memory.  Statements longer than L{LONG}, and those
nesting deeper than the gateway's own recursion limit lets it walk, are
classified in a worker process instead, one at a time, each worker
ending after one statement so that what it allocated is returned to the
system; the relay of that session waits, the others do not.

test-case-name: tests.integration.test_postgres_limits
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hoopgate_plugins.postgres._sql import Classification, SessionState, classify

#: Statements longer than this many characters go to the worker.
LONG = 256 * 1024

#: The worker's recursion limit: deep enough for the expressions
#: PostgreSQL's default stack depth accepts (a few thousand nested
#: operators).  A worker that runs out of stack dies alone, and the
#: statement is refused.
DEEP = 60_000


def classify_deep(
    text: str, state: SessionState, allowed: frozenset[str]
) -> tuple[Classification, ...]:
    """
    Classify in the worker, where the tree may nest deeper.
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DEEP))
    return classify(text, state, allowed_functions=allowed)


class LongClassifier:
    """
    One worker process at a time, shared by the sessions of a process.

    Args:
        reactor: Where results are delivered.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool: ProcessPoolExecutor | None = None

    def classify(
        self, text: str, state: SessionState, allowed: frozenset[str]
    ) -> Deferred[tuple[Classification, ...]]:
        """
        Classify C{text} in the worker; fails if the worker cannot.
        """
        result: Deferred[tuple[Classification, ...]] = Deferred()
        try:
            future = self._executor().submit(classify_deep, text, state, allowed)
        except Exception as e:  # a broken pool: start another next time
            self._reset()
            result.errback(e)
            return result

        def done(future: Future[tuple[Classification, ...]]) -> None:
            self._reactor.callFromThread(self._deliver, future, result)

        future.add_done_callback(done)
        return result

    def _deliver(
        self,
        future: Future[tuple[Classification, ...]],
        result: Deferred[tuple[Classification, ...]],
    ) -> None:
        error = future.exception()
        if error is None:
            result.callback(future.result())
            return
        self._log.error(
            "The classifying worker failed: {error}", error=f"{error!r}"[:200]
        )
        self._reset()
        result.errback(error)

    def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=1,
            )
        return self._pool


_classifiers: dict[int, LongClassifier] = {}


def long_classifier(reactor: Any) -> LongClassifier:
    """
    The worker of the process (one per reactor).
    """
    found = _classifiers.get(id(reactor))
    if found is None:
        found = _classifiers[id(reactor)] = LongClassifier(reactor)
    return found
