"""
Tests for L{hoopgate._redisstore.RedisStore} without a server: when the
waiting parties are told to read again, and how far apart reconnection
attempts may be.  The store against a real Redis (restarts included) is
in C{tests.integration.test_approvals_store} and
C{tests.integration.test_redis_reconnect}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgate._redisstore import (
    RECONNECT_INITIAL_DELAY,
    RECONNECT_MAX_DELAY,
    RedisSettings,
    RedisStore,
    _classes,
)


class FakePool:
    """
    The part of txredisapi's factory the store reads: how many command
    connections are up.
    """

    def __init__(self) -> None:
        self.size = 0


class FakeTransport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class FakeSubscriber:
    """
    A subscriber connection whose PSUBSCRIBE works or is refused.
    """

    def __init__(self, refused: bool = False) -> None:
        self.refused = refused
        self.transport = FakeTransport()
        self.patterns: list[list[str]] = []

    def psubscribe(self, patterns: list[str]) -> Deferred[Any]:
        self.patterns.append(patterns)
        if self.refused:
            return fail(ConnectionError("NOPERM"))
        return succeed(None)


class ReadAgainTests(SynchronousTestCase):
    """
    The resubscribe callbacks run once the store is usable again: the
    subscription in place I{and} a command connection up, in whichever
    order the two reconnect, and once per return.
    """

    def setUp(self) -> None:
        self.store = RedisStore(Clock(), RedisSettings(host="redis.test", port=1))
        self.pool = FakePool()
        self.store._pool = self.pool
        self.told: list[int] = []
        self.store.on_resubscribe(lambda: self.told.append(1))
        self.store.subscribe("wake", lambda _: None)

    def pool_up(self) -> None:
        self.pool.size = 1
        self.store._connections_changed()

    def pool_down(self) -> None:
        self.pool.size = 0
        self.store._connections_changed()

    def test_subscriber_first(self) -> None:
        """
        A subscription made while no command connection is up tells
        nobody yet: what they would read or write back would fail.  The
        first command connection tells them.
        """
        subscriber = FakeSubscriber()

        self.store._subscriber_ready(subscriber)
        before = list(self.told)
        self.pool_up()

        assert subscriber.patterns == [["hoopgate:wake"]]
        assert before == []
        assert self.told == [1]

    def test_pool_first(self) -> None:
        """
        With commands answering already, the subscription tells them at
        once; more command connections do not tell them again.
        """
        self.pool_up()
        before = list(self.told)

        self.store._subscriber_ready(FakeSubscriber())
        self.pool.size = 4
        self.store._connections_changed()

        assert before == []
        assert self.told == [1]

    def test_each_return(self) -> None:
        """
        After the subscriber was lost, they are told again when it is
        back; after the pool was lost, when a command connection is back.
        """
        first = FakeSubscriber()
        self.pool_up()
        self.store._subscriber_ready(first)

        self.store._subscriber_lost(first)
        self.pool_down()
        self.store._subscriber_ready(FakeSubscriber())
        after_subscriber = list(self.told)
        self.pool_up()
        after_pool = list(self.told)
        self.pool_down()
        self.pool_up()

        assert after_subscriber == [1]
        assert after_pool == [1, 1]
        assert self.told == [1, 1, 1]

    def test_refused_subscription(self) -> None:
        """
        A refused PSUBSCRIBE drops the connection and tells nobody.
        """
        subscriber = FakeSubscriber(refused=True)
        self.pool_up()

        self.store._subscriber_ready(subscriber)

        assert subscriber.transport.lost
        assert self.told == []

    def test_stale_subscriber(self) -> None:
        """
        A subscription answered on a connection already replaced by
        another tells nobody: only the current one counts.
        """
        old, new = FakeSubscriber(), FakeSubscriber()
        self.pool_up()
        self.store._subscriber = new

        self.store._subscription_made(True, old)

        assert self.told == []

    def test_failing_callback(self) -> None:
        """
        A callback that raises is logged; the others still run.
        """
        self.store.on_resubscribe(lambda: 1 / 0)
        self.store.on_resubscribe(lambda: self.told.append(2))
        self.pool_up()

        self.store._subscriber_ready(FakeSubscriber())

        assert self.told == [1, 2]
        # trial's flushLoggedErrors is unannotated (Twisted 26.10).
        errors = self.flushLoggedErrors(ZeroDivisionError)  # type: ignore[no-untyped-call]
        assert len(errors) == 1


class ReconnectDelayTests(SynchronousTestCase):
    """
    Attempts to reconnect start soon and never drift far apart, however
    long Redis stays down.
    """

    def test_delays(self) -> None:
        """
        Without jitter: the first retry after L{RECONNECT_INITIAL_DELAY},
        then growing, capped at L{RECONNECT_MAX_DELAY} (also after very
        many attempts, where the power would overflow).
        """
        factory = _classes().factory("test", None, 1, isLazy=True)
        factory.jitter = 0

        delays = [factory.retryDelay(n) for n in (1, 2, 3, 10, 10_000)]

        assert delays[0] == RECONNECT_INITIAL_DELAY
        assert delays[0] < delays[1] < delays[2] == RECONNECT_MAX_DELAY
        assert delays[3:] == [RECONNECT_MAX_DELAY] * 2
        assert RECONNECT_MAX_DELAY <= 2.0
