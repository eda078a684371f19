"""
L{hoopgate._redisstore.RedisStore} against real Redis: values, times to
live, atomic set-if-absent and counters, prefixed keys, pub/sub, and
txredisapi's limits handled: a refused AUTH is retried, an ACL user logs
in, a lost connection fails operations at once (fail closed), and after
a restart the subscriptions come back and the waiting side is told to
read again.

test-case-name: tests.integration.test_approvals_store
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from hoopgate._redisstore import RedisSettings, RedisStore
from hoopgate._secrets import inline_secret
from hoopgate._store import StoreUnavailableError
from tests.integration.test_approvals_services import redis_cli
from tests.support.gateway import start_gateway, wait_for
from tests.support.redis import PrivateRedis
from tests.support.servers import APPROVAL_SERVER_VARS, approval_servers, require_env

__all__ = ["approval_servers"]

T = TypeVar("T")

#: Seconds any one wait may take; reconnects back off up to 5 s.
WAIT = 20.0


def until(check: Callable[[], Deferred[bool] | bool], what: str) -> Deferred[None]:
    """
    Poll C{check} every 0.05 s until it is true, for at most L{WAIT} s.
    """

    @inlineCallbacks
    def poll() -> Any:
        waited = 0.0
        while True:
            value = check()
            if isinstance(value, Deferred):
                value = yield value
            if value:
                return
            if waited > WAIT:
                raise AssertionError(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    result: Deferred[None] = poll()
    return result


def failure_of(deferred: Deferred[Any]) -> Deferred[BaseException]:
    """
    The exception C{deferred} fails with, as a value (success is an error).
    """

    def succeeded(value: object) -> BaseException:
        raise AssertionError(f"expected a failure, got {value!r}")

    caught: Deferred[BaseException] = deferred.addCallbacks(
        succeeded, lambda f: f.value
    )
    return caught


def answers(store: RedisStore) -> Deferred[bool]:
    """
    Whether a command gets through now.
    """
    probe = store.get("probe")
    return probe.addCallbacks(
        lambda _: True, lambda f: f.trap(StoreUnavailableError) and False
    )


class SharedRedisTests(TestCase):
    """
    The store on the shared test Redis, with a prefix of the test's own.
    """

    # trial waits for a Deferred that setUp returns; unittest's stub
    # says None.
    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        env = require_env(APPROVAL_SERVER_VARS, "Redis")
        self.prefix = f"test-{secrets.token_hex(4)}:"
        self.settings = RedisSettings(
            host=env["REDIS_HOST"],
            port=int(env["REDIS_PORT"]),
            password=inline_secret(env["REDIS_PASSWORD"]),
            prefix=self.prefix,
        )
        self.store = RedisStore(reactor, self.settings)
        self.store.start()
        self.addCleanup(self.store.stop)
        return until(lambda: answers(self.store), "the store to connect")

    @inlineCallbacks
    def test_values(self) -> Any:
        """
        A value is set, read, overwritten and removed; an absent key is
        C{None}; numbers stay text.
        """
        yield self.store.put("a", "one")
        first = yield self.store.get("a")
        yield self.store.put("a", "42")
        second = yield self.store.get("a")
        yield self.store.delete("a")
        gone = yield self.store.get("a")

        assert (first, second, gone) == ("one", "42", None)

    @inlineCallbacks
    def test_time_to_live(self) -> Any:
        """
        A time to live reaches Redis in milliseconds (read back with PTTL).
        """
        yield self.store.put("ttl", "v", ttl=30)
        yield self.store.put_if_absent("nx", "v", ttl=40)
        yield self.store.increment("count", ttl=50)
        handler = self.store._handler
        ttls = []
        for key in ("ttl", "nx", "count"):
            ttl = yield handler.execute_command("PTTL", self.prefix + key)
            ttls.append(int(ttl))

        assert 29_000 < ttls[0] <= 30_000
        assert 39_000 < ttls[1] <= 40_000
        assert 49_000 < ttls[2] <= 50_000

    @inlineCallbacks
    def test_put_if_absent(self) -> Any:
        """
        Only the first of two set-if-absent calls sets the value.
        """
        first = yield self.store.put_if_absent("link", "alice")
        second = yield self.store.put_if_absent("link", "mallory")
        value = yield self.store.get("link")

        assert (first, second, value) == (True, False, "alice")

    @inlineCallbacks
    def test_increment(self) -> Any:
        """
        Counters count from one, concurrently without losing a count.
        """
        counts = yield Deferred.fromCoroutine(self._counts())

        assert sorted(counts) == list(range(1, 21))

    async def _counts(self) -> list[int]:
        result: list[int] = await gatherResults(
            [self.store.increment("votes", ttl=60) for _ in range(20)]
        )
        return result

    @inlineCallbacks
    def test_keys_by_prefix(self) -> Any:
        """
        Keys are listed by prefix without the store's own prefix; glob
        characters in a prefix are taken literally.
        """
        for key in ("session:b", "session:a", "sessions", "sess*on:x", "cancel:1"):
            yield self.store.put(key, "v", ttl=60)

        sessions = yield self.store.keys("session:")
        literal = yield self.store.keys("sess*")

        assert sessions == ["session:a", "session:b"]
        assert literal == ["sess*on:x"]

    @inlineCallbacks
    def test_publish_subscribe(self) -> Any:
        """
        A subscriber of a pattern gets what is published on its channels,
        and the count says one process listened.
        """
        seen: list[str] = []
        self.store.subscribe("wake:*", seen.append)
        yield until(
            lambda: self.store.publish("wake:probe", "p").addCallback(bool),
            "the subscription",
        )

        count = yield self.store.publish("wake:x", "request-1")
        yield until(lambda: "request-1" in seen, "the message")

        assert count == 1


class PrivateRedisTests(TestCase):
    """
    The store on a Redis of the test's own, stopped and restarted.
    """

    def setUp(self) -> None:
        require_env(APPROVAL_SERVER_VARS, "Redis")
        folder = Path(tempfile.mkdtemp(prefix="hoopgate-redis-"))
        self.redis = PrivateRedis(folder)
        self.redis.start()
        self.addCleanup(self.redis.stop)

    def store(
        self, password: str | None = None, username: str | None = None
    ) -> RedisStore:
        settings = RedisSettings(
            host="127.0.0.1",
            port=self.redis.port,
            username=username,
            password=inline_secret(password or self.redis.password),
            prefix="t:",
            timeout=1.0,
        )
        store = RedisStore(reactor, settings)
        store.start()
        self.addCleanup(store.stop)
        return store

    @inlineCallbacks
    def test_refused_auth_is_retried(self) -> Any:
        """
        A wrong password fails operations (unavailable, at once) but the
        store keeps trying: once the server takes that password, it works.
        """
        other = secrets.token_hex(8)
        store = self.store(password=other)
        yield task.deferLater(reactor, 0.3, lambda: None)

        failure = yield failure_of(store.get("k"))
        self.redis.cli("config", "set", "requirepass", other)
        self.redis.password = other
        yield until(lambda: answers(store), "a retried log-in")

        assert isinstance(failure, StoreUnavailableError)
        assert "unreachable" in str(failure)

    @inlineCallbacks
    def test_acl_user(self) -> Any:
        """
        With a user name the store logs in as that ACL user.
        """
        secret = secrets.token_hex(8)
        self.redis.cli(
            "acl", "setuser", "gateway", "on", f">{secret}", "~t:*", "&t:*", "+@all"
        )
        store = self.store(password=secret, username="gateway")
        yield until(lambda: answers(store), "the ACL user's log-in")

        yield store.put("k", "v")
        whoami = yield store._handler.execute_command("ACL", "WHOAMI")

        assert whoami == "gateway"

    @inlineCallbacks
    def test_restart(self) -> Any:
        """
        While Redis is down, operations fail at once; once it is back the
        subscription is made again, waiting parties are told to read
        again, and messages arrive.
        """
        store = self.store()
        seen: list[str] = []
        told: list[int] = []
        store.subscribe("wake", seen.append)
        store.on_resubscribe(lambda: told.append(1))
        yield until(lambda: bool(told), "the first subscription")
        told.clear()

        self.redis.stop()
        yield until(lambda: not store._pool.size, "the pool to notice")
        failure = yield failure_of(store.put("k", "v"))
        self.redis.start()
        yield until(lambda: bool(told), "the subscription after the restart")
        yield until(lambda: answers(store), "commands after the restart")
        yield store.publish("wake", "after")
        yield until(lambda: "after" in seen, "a message after the restart")

        assert isinstance(failure, StoreUnavailableError)


def redis_store_yaml(url: str, password_file: str, prefix: str) -> str:
    """
    The C{gateway.store} section for Redis (indented as in the harness).
    """
    return (
        "  store:\n"
        "    kind: redis\n"
        f"    url: {json.dumps(url)}\n"
        f"    password: {{file: {json.dumps(password_file)}}}\n"
        f"    prefix: {json.dumps(prefix)}\n"
    )


def test_gateway_registry_in_redis(
    approval_servers: dict[str, str], tmp_path: Path
) -> None:
    """
    A gateway with C{store: redis} says so in its log, and its live
    sessions are in Redis (under its prefix) until they close.
    """
    import psycopg

    prefix = f"gw-{secrets.token_hex(4)}:"
    url = f"redis://127.0.0.1:{approval_servers['REDIS_PORT']}/0"
    section = redis_store_yaml(url, approval_servers["REDIS_PASSWORD_FILE"], prefix)
    running = start_gateway(
        approval_servers,
        tmp_path,
        edit=lambda text: text.replace("  store:\n    kind: memory\n", section),
    )
    try:
        token = running.token()
        with psycopg.connect(**running.connect_args(token)) as conn:
            conn.execute("select 1")
            session = running.session_of(token)
            live = redis_cli(
                approval_servers, "--scan", "--pattern", f"{prefix}session:*"
            )
        pattern = f"{prefix}session:*"
        wait_for(
            lambda: redis_cli(approval_servers, "--scan", "--pattern", pattern) == "",
            10,
            "the session to leave Redis",
        )
        log = running.log_path.read_text()
    finally:
        running.stop()

    assert live.split() == [f"{prefix}session:{session}"]
    assert f"store Redis at {url}" in log
