"""
Tests for L{hoopgate_plugins.postgres._worker}: the worker process's
protocol, and the worker itself run as the relay runs it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from hoopgate_plugins.postgres._sql import (
    DEFAULT_ALLOWED_FUNCTIONS,
    SessionState,
    classify,
)
from hoopgate_plugins.postgres._worker import WorkerError, _Worker

DEEP_SQL = "insert into canary select " + "+".join(["1"] * 3000)


def _run_worker(request: bytes) -> subprocess.CompletedProcess[bytes]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    return subprocess.run(
        [sys.executable, "-m", "hoopgate_plugins.postgres._worker"],
        input=request,
        capture_output=True,
        env=environment,
        timeout=60,
        check=False,
    )


class TestWorkerProcess:
    def test_deep_statement(self) -> None:
        """
        The worker classifies what the gateway's own recursion limit
        refuses, as the classifier would with room to recurse.
        """
        request = pickle.dumps((DEEP_SQL, SessionState(), DEFAULT_ALLOWED_FUNCTIONS))

        done = _run_worker(request)

        assert done.returncode == 0, done.stderr
        (found,) = pickle.loads(done.stdout)  # noqa: S301 - our own worker
        assert (
            classify(DEEP_SQL)[0].reason == "the statement nests too deeply to classify"
        )
        assert found.effect.value == "write"
        assert found.relations_written == {"public.canary"}
        assert found.reason is None

    def test_bad_request(self) -> None:
        done = _run_worker(b"not a pickle")

        assert done.returncode != 0
        assert done.stdout == b""


class TestWorkerProtocol:
    def _ended(self, worker: _Worker, reason: Failure) -> object:
        results: list[object] = []
        worker.done.addBoth(results.append)
        worker.processEnded(reason)
        return results[0]

    def test_answer(self) -> None:
        classes = classify("select 1")
        worker = _Worker(b"")
        worker.outReceived(pickle.dumps(classes))

        assert self._ended(worker, Failure(ProcessDone(0))) == classes

    def test_failed_exit(self) -> None:
        worker = _Worker(b"")
        worker.errReceived(b"Traceback ...\nMemoryError\n")

        result = self._ended(worker, Failure(ProcessTerminated(1)))

        assert isinstance(result, Failure)
        assert result.check(WorkerError)
        assert result.getErrorMessage() == "MemoryError"

    def test_unreadable_answer(self) -> None:
        worker = _Worker(b"")
        worker.outReceived(b"garbage")

        result = self._ended(worker, Failure(ProcessDone(0)))

        assert isinstance(result, Failure)
        assert result.check(WorkerError)
