"""
Tests for L{hoopgate._store}: the in-memory shared state.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgate._interfaces import IStore
from hoopgate._store import MemoryStore

T = TypeVar("T")


class StoreTestCase(SynchronousTestCase):
    """
    A L{MemoryStore} on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000)
        self.store = MemoryStore(self.clock)

    def result(self, deferred: Deferred[T]) -> T:
        value: T = self.successResultOf(deferred)
        return value

    def get(self, key: str) -> str | None:
        return self.result(self.store.get(key))


class ValueTests(StoreTestCase):
    """
    Values are set, read, listed and removed.
    """

    def test_interface(self) -> None:
        """
        The memory store provides L{IStore}.
        """
        assert verifyObject(IStore, self.store)

    def test_put_get(self) -> None:
        """
        A value put is read back; an absent key reads as C{None}.
        """
        assert self.result(self.store.put("session:a", "one")) is None

        assert self.get("session:a") == "one"
        assert self.get("session:b") is None

    def test_overwrite(self) -> None:
        """
        A second put replaces the value.
        """
        self.store.put("k", "one")
        self.store.put("k", "two")

        assert self.get("k") == "two"

    def test_delete(self) -> None:
        """
        A deleted key is gone; deleting an absent key is fine.
        """
        self.store.put("k", "v")

        assert self.result(self.store.delete("k")) is None
        assert self.result(self.store.delete("never")) is None
        assert self.get("k") is None

    def test_keys(self) -> None:
        """
        Keys are listed by prefix, sorted.
        """
        for key in ("session:b", "cancel:x", "session:a", "sessions"):
            self.store.put(key, "v")

        assert self.result(self.store.keys("session:")) == ["session:a", "session:b"]
        assert self.result(self.store.keys("nothing:")) == []


class TimeToLiveTests(StoreTestCase):
    """
    Values with a time to live vanish once it has passed.
    """

    def test_alive_until_ttl(self) -> None:
        """
        A value lives until its time to live has passed, not after.
        """
        self.store.put("k", "v", ttl=10)

        self.clock.advance(9.9)
        assert self.get("k") == "v"
        self.clock.advance(0.1)
        assert self.get("k") is None

    def test_no_ttl(self) -> None:
        """
        A value without a time to live stays.
        """
        self.store.put("k", "v")

        self.clock.advance(10 * 365 * 86400)

        assert self.get("k") == "v"

    def test_put_renews(self) -> None:
        """
        Putting a value again starts its time to live again.
        """
        self.store.put("k", "one", ttl=10)
        self.clock.advance(8)
        self.store.put("k", "two", ttl=10)
        self.clock.advance(8)

        assert self.get("k") == "two"

    def test_put_without_ttl_keeps_forever(self) -> None:
        """
        Putting a value again without a time to live removes the old one.
        """
        self.store.put("k", "one", ttl=5)
        self.store.put("k", "two")
        self.clock.advance(60)

        assert self.get("k") == "two"

    def test_keys_skip_expired(self) -> None:
        """
        Expired keys are not listed.
        """
        self.store.put("session:short", "v", ttl=5)
        self.store.put("session:long", "v", ttl=50)

        self.clock.advance(5)

        assert self.result(self.store.keys("session:")) == ["session:long"]


class PublishTests(StoreTestCase):
    """
    Messages reach the subscribers of their channel.
    """

    def test_subscribers(self) -> None:
        """
        Every subscriber of a channel gets the message; the count says how
        many did.
        """
        first: list[str] = []
        second: list[str] = []
        self.store.subscribe("hoopgate:cancel", first.append)
        self.store.subscribe("hoopgate:cancel", second.append)

        count = self.result(self.store.publish("hoopgate:cancel", "s-1"))

        assert count == 2
        assert first == ["s-1"]
        assert second == ["s-1"]

    def test_other_channel(self) -> None:
        """
        A message on another channel reaches nobody.
        """
        seen: list[str] = []
        self.store.subscribe("hoopgate:cancel", seen.append)

        count = self.result(self.store.publish("hoopgate:terminate", "s-1"))

        assert count == 0
        assert seen == []

    def test_pattern(self) -> None:
        """
        A subscription may be a glob pattern over channel names.
        """
        seen: list[str] = []
        self.store.subscribe("hoopgate:*", seen.append)

        self.store.publish("hoopgate:cancel", "a")
        self.store.publish("hoopgate:terminate", "b")
        self.store.publish("other:cancel", "c")

        assert seen == ["a", "b"]

    def test_failing_subscriber(self) -> None:
        """
        A subscriber that raises is logged and does not keep the message
        from the others.
        """
        seen: list[str] = []

        def broken(message: str) -> None:
            raise KeyError(message)

        self.store.subscribe("hoopgate:cancel", broken)
        self.store.subscribe("hoopgate:cancel", seen.append)

        count = self.result(self.store.publish("hoopgate:cancel", "s-1"))

        assert count == 2
        assert seen == ["s-1"]
        # trial's flushLoggedErrors is unannotated (Twisted 26.10).
        assert len(self.flushLoggedErrors(KeyError)) == 1  # type: ignore[no-untyped-call]


class AtomicTests(StoreTestCase):
    """
    Set-if-absent and counters, which approvals rely on.
    """

    def test_put_if_absent(self) -> None:
        """
        Only the first call sets the value; once it expired, a new call
        sets it again.
        """
        assert self.result(self.store.put_if_absent("k", "one", ttl=10)) is True
        assert self.result(self.store.put_if_absent("k", "two", ttl=10)) is False
        assert self.get("k") == "one"

        self.clock.advance(10)

        assert self.result(self.store.put_if_absent("k", "three")) is True
        assert self.get("k") == "three"

    def test_increment(self) -> None:
        """
        A counter starts at one with its time to live, counts up without
        renewing it, and starts again once expired.
        """
        counts = [self.result(self.store.increment("n", ttl=10)) for _ in range(3)]
        self.clock.advance(9)
        assert self.result(self.store.increment("n", ttl=10)) == 4
        self.clock.advance(1)

        assert counts == [1, 2, 3]
        assert self.result(self.store.increment("n", ttl=10)) == 1

    def test_description(self) -> None:
        """
        The store says what it is, for the log at start.
        """
        assert self.store.description == "in-memory (one process)"
