"""
Shared state behind one interface: in memory for one process.

A Redis implementation of the same interface (L{hoopgate._redisstore})
lets several gateway processes share sessions, approvals and grants.

test-case-name: tests.unit.test_store
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from hoopgate._interfaces import IStore


class StoreUnavailableError(Exception):
    """
    The shared state cannot be reached (or did not answer in time); the
    message says which store and why, without secrets.
    """


@implementer(IStore)
class MemoryStore:
    """
    Shared state for a single gateway process.

    Args:
        clock: Measures time to live.
    """

    _log = Logger()

    description = "in-memory (one process)"

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float | None]] = {}
        self._subscribers: defaultdict[str, list[Callable[[str], object]]] = (
            defaultdict(list)
        )

    def _alive(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= self._clock.seconds():
            del self._values[key]
            return None
        return value

    def put(self, key: str, value: str, ttl: float | None = None) -> Deferred[None]:
        expires = None if ttl is None else self._clock.seconds() + ttl
        self._values[key] = (value, expires)
        return succeed(None)

    def get(self, key: str) -> Deferred[str | None]:
        return succeed(self._alive(key))

    def delete(self, key: str) -> Deferred[None]:
        self._values.pop(key, None)
        return succeed(None)

    def keys(self, prefix: str) -> Deferred[list[str]]:
        found = [
            k
            for k in list(self._values)
            if k.startswith(prefix) and self._alive(k) is not None
        ]
        return succeed(sorted(found))

    def publish(self, channel: str, message: str) -> Deferred[int]:
        receivers = [
            callback
            for pattern, callbacks in self._subscribers.items()
            if fnmatch.fnmatchcase(channel, pattern)
            for callback in callbacks
        ]
        for callback in receivers:
            try:
                callback(message)
            except Exception:
                self._log.failure("Subscriber of {channel} failed", channel=channel)
        return succeed(len(receivers))

    def subscribe(self, channel: str, callback: Callable[[str], object]) -> None:
        self._subscribers[channel].append(callback)

    def put_if_absent(
        self, key: str, value: str, ttl: float | None = None
    ) -> Deferred[bool]:
        if self._alive(key) is not None:
            return succeed(False)
        self.put(key, value, ttl)
        return succeed(True)

    def increment(self, key: str, ttl: float | None = None) -> Deferred[int]:
        current = self._alive(key)
        if current is None:
            self.put(key, "1", ttl)
            return succeed(1)
        count = int(current) + 1
        self._values[key] = (str(count), self._values[key][1])
        return succeed(count)

    def on_resubscribe(self, callback: Callable[[], object]) -> None:
        # One process never loses its own subscriptions.
        return None
