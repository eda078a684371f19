"""
L{hoopgate._redisstore.RedisStore} across restarts of a real Redis: the
parties told to read again can write at once (what the approval service
does: it puts its held requests back), every time, whichever of the pool
and the subscriber reconnects first.

The pool (four connections) and the subscriber reconnect on their own
schedules, so either may come back first; over several restarts both
orders occur (the unit tests in C{tests.unit.test_redisstore} pin each
order without a server).

test-case-name: tests.integration.test_redis_reconnect
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from hoopgate._redisstore import RedisSettings, RedisStore
from hoopgate._secrets import inline_secret
from tests.integration.test_approvals_store import until
from tests.support.redis import PrivateRedis
from tests.support.servers import APPROVAL_SERVER_VARS, require_env

#: Restarts per test, and seconds Redis stays down each time: long
#: enough for the reconnect attempts to back off to their longest delay.
RESTARTS = 3
OUTAGE = 2.5


class RestartTests(TestCase):
    """
    A store on a Redis of the test's own, restarted a few times.
    """

    def setUp(self) -> None:
        require_env(APPROVAL_SERVER_VARS, "Redis")
        folder = Path(tempfile.mkdtemp(prefix="hoopgate-redis-"))
        self.redis = PrivateRedis(folder)
        self.redis.start()
        self.addCleanup(self.redis.stop)

        settings = RedisSettings(
            host="127.0.0.1",
            port=self.redis.port,
            password=inline_secret(self.redis.password),
            prefix="t:",
            timeout=1.0,
        )
        self.store = RedisStore(reactor, settings)
        self.writes: list[str] = []
        self.store.on_resubscribe(self.write_back)
        self.store.start()
        self.addCleanup(self.store.stop)

    def write_back(self) -> None:
        """
        As the approval service does: put our state back at once.
        """

        def written(_: object) -> None:
            self.writes.append("written")

        def failed(failure: Failure) -> None:
            self.writes.append(failure.getErrorMessage())

        self.store.put("held", "request").addCallbacks(written, failed)

    @inlineCallbacks
    def test_written_back_after_each_restart(self) -> Any:
        """
        After each restart the parties are told to read again exactly
        once, and what they write at that moment reaches the new Redis.
        """
        yield until(lambda: bool(self.writes), "the first subscription")
        outcomes = [list(self.writes)]

        for _ in range(RESTARTS):
            self.writes.clear()
            self.redis.stop()
            yield until(lambda: not self.store._pool.size, "the pool to notice")
            yield task.deferLater(reactor, OUTAGE, lambda: None)
            self.redis.start()
            yield until(lambda: bool(self.writes), "the write after the restart")
            yield task.deferLater(reactor, 0.5, lambda: None)
            outcomes.append(list(self.writes))
            outcomes.append([self.redis.cli("get", "t:held")])

        assert outcomes == [["written"]] + [["written"], ["request"]] * RESTARTS
