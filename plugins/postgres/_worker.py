"""
Classifying long or deep statements in a worker process.

Parsing a statement costs many times its size in memory and time
(pglast's parse tree as JSON loaded into dicts: about 60 times the text
for a multi-row INSERT of small values, whose 8 MB take seconds).  In
the gateway's own process that would stall every session on its
reactor and keep the memory.  Statements longer than L{LONG}, and those
nesting deeper than the gateway's own recursion limit lets it walk, are
classified in a worker process instead: one at a time, a fresh process
for each (run as C{python -m hoopgate_plugins.postgres._worker}), so
that what it allocated goes back to the system when it exits.  The
relay of that session waits; the others do not.

The request (text, session state, allowed functions) goes to the
worker's standard input and the classification comes back on its
standard output, both pickled: the worker is the gateway's own code.

test-case-name: tests.integration.test_postgres_limits
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate_plugins.postgres._sql import Classification, SessionState, classify

#: Statements longer than this many characters go to the worker.
LONG = 256 * 1024

#: The worker's recursion limit: deep enough for the expressions
#: PostgreSQL's default stack depth accepts (a few thousand nested
#: operators).  A worker that runs out of stack dies alone, and the
#: statement is refused.
DEEP = 60_000

#: The most a worker may answer, in bytes.
_MAX_ANSWER = 64 << 20


class WorkerError(Exception):
    """
    The worker did not answer with a classification.
    """


class _Worker(protocol.ProcessProtocol):
    def __init__(self, request: bytes) -> None:
        self._request = request
        self._answer: list[bytes] = []
        self._size = 0
        self._errors = b""
        self.done: Deferred[tuple[Classification, ...]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > _MAX_ANSWER:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
            return
        self._answer.append(data)

    def errReceived(self, data: bytes) -> None:
        self._errors = (self._errors + data)[-2000:]

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        if code != 0 or self._size > _MAX_ANSWER:
            tail = self._errors.decode("utf-8", "replace").strip().splitlines()
            why = tail[-1] if tail else f"exit status {code}"
            self.done.errback(WorkerError(why))
            return
        try:
            classes = pickle.loads(b"".join(self._answer))  # noqa: S301 - our own worker
        except Exception as e:
            self.done.errback(WorkerError(f"unreadable answer: {e!r}"))
            return
        self.done.callback(classes)


class LongClassifier:
    """
    Runs workers one at a time for the sessions of a process.

    Args:
        reactor: Spawns the workers.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._lock = DeferredLock()

    def classify(
        self, text: str, state: SessionState, allowed: frozenset[str]
    ) -> Deferred[tuple[Classification, ...]]:
        """
        Classify C{text} in a worker; fails with L{WorkerError} if it
        cannot.
        """
        request = pickle.dumps((text, state, allowed), pickle.HIGHEST_PROTOCOL)
        return self._lock.run(self._spawn, request)

    def _spawn(self, request: bytes) -> Deferred[tuple[Classification, ...]]:
        worker = _Worker(request)
        argv = [sys.executable, "-m", "hoopgate_plugins.postgres._worker"]
        # The gateway's own module path, so that the worker imports the
        # same code; nothing else of the environment (secrets may be in it).
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self._reactor.spawnProcess(
            worker, sys.executable, argv, env=environment, path=None
        )

        def failed(failure: Failure) -> Failure:
            self._log.error(
                "The classifying worker failed: {error}",
                error=failure.getErrorMessage(),
            )
            return failure

        return worker.done.addErrback(failed)


_classifiers: dict[int, LongClassifier] = {}


def long_classifier(reactor: Any) -> LongClassifier:
    """
    The worker runner of the process (one per reactor).
    """
    found = _classifiers.get(id(reactor))
    if found is None:
        found = _classifiers[id(reactor)] = LongClassifier(reactor)
    return found


def main() -> None:
    """
    The worker: one request on standard input, its answer on output.
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DEEP))
    text, state, allowed = pickle.load(sys.stdin.buffer)  # noqa: S301 - from the gateway
    classes = classify(text, state, allowed_functions=allowed)
    sys.stdout.buffer.write(pickle.dumps(classes, pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
