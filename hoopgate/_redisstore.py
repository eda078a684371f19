"""
Shared state in Redis (txredisapi): what several gateway processes share.

L{RedisStore} provides L{IStore} on a small connection pool plus one
subscriber connection.  Every key and channel gets a prefix, so several
deployments can share one Redis.  Decisions live in keys; published
messages only wake subscribers, and L{IStore.on_resubscribe} tells them
when to read again after the subscriber connection came back.

txredisapi 1.6 has limits this module works around:

  - it gives up for good when AUTH (or SELECT) fails on a reconnect
    (it stops its retrying service): here AUTH and SELECT are sent by
    our own protocol, which drops a refused connection and lets the
    retrying go on with backoff, logging each refusal;
  - AUTH is sent with an ACL user name when the configuration has one
    (C{AUTH user password}), otherwise as the legacy one-argument form;
  - its TLS (C{ssl_context_factory=True}) does not verify the server:
    here C{rediss://} wraps the connection in Twisted's client TLS with
    the configured CA (or the system's) and the host name checked;
  - its subscriber does not subscribe again after a reconnect: here the
    subscriber protocol subscribes to every pattern once it is ready;
    the resubscribe callbacks run once the subscription is in place
    I{and} a command connection is up again (whichever comes last), so
    that what they write back reaches Redis;
  - its reconnecting backs off to 10 s between attempts, so a Redis
    that is back would be noticed up to 10 s late: here attempts are at
    most L{RECONNECT_MAX_DELAY} apart;
  - a command issued while no connection is up waits, unbounded, for
    one: here an operation fails at once with L{StoreUnavailableError}
    when no connection is up, and a reply that does not come within the
    configured timeout fails it too (and drops the connection).

txredisapi imports the global reactor when imported, so it is imported
only when a store is built, after twistd chose its reactor.

test-case-name: tests.integration.test_approvals_store
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate._configreader import ConfigReader
from hoopgate._interfaces import IStore
from hoopgate._secrets import Secret
from hoopgate._store import StoreUnavailableError

#: Counts up and sets the time to live when it creates the counter.
_INCREMENT: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 and tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""

_GLOB_SPECIAL: Final = "*?[]\\"

#: Seconds before the first attempt to reconnect; later attempts back
#: off (txredisapi multiplies by e, with some jitter).
RECONNECT_INITIAL_DELAY: Final = 0.5

#: Most seconds between two attempts to reconnect, however long Redis
#: has been down: how late a returning Redis may be noticed.  Each
#: connection retries on its own (pool and subscriber), and a refused
#: attempt on loopback or a LAN costs next to nothing.
RECONNECT_MAX_DELAY: Final = 2.0


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _milliseconds(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    return max(1, int(ttl * 1000))


@frozen
class RedisSettings:
    """
    Where the shared state lives and how to log in.

    Attributes:
        host: The server's host name or address.
        port: Its port.
        database: The database number (C{SELECT}).
        tls: Whether to use TLS (C{rediss://}), always verified.
        ca: A CA file for TLS; the system's trust store without one.
        username: An ACL user name, if any.
        password: The password (C{requirepass} or the ACL user's).
        prefix: Put in front of every key and channel.
        timeout: Seconds to wait for a connection or a reply.
        pool_size: Connections for commands (one more subscribes).
    """

    host: str
    port: int
    database: int = 0
    tls: bool = False
    ca: str | None = None
    username: str | None = None
    password: Secret | None = None
    prefix: str = "hoopgate:"
    timeout: float = 2.0
    pool_size: int = 4

    @property
    def where(self) -> str:
        """
        The server, for messages (no credentials).
        """
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.database}"


def read_redis_settings(reader: ConfigReader) -> RedisSettings:
    """
    Validate the Redis keys of C{gateway.store} (C{kind: redis}).

    C{url} is C{redis://HOST:PORT/DB} or C{rediss://...} (TLS); a
    password never goes in the URL but in C{password} (text, C{{env:
    NAME}} or C{{file: PATH}}).

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    url = reader.string("url")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise reader.error("url", "must be redis://HOST:PORT/DB or rediss://...")
    if parts.password is not None:
        raise reader.error("url", "must not hold a password; use password: {env: ...}")
    try:
        port = parts.port or 6379
        path = parts.path.strip("/")
        database = int(path) if path else 0
    except ValueError:
        raise reader.error("url", "has a bad port or database number") from None

    ca = reader.raw("ca", None)
    if ca is not None and not Path(str(ca)).is_file():
        raise reader.error("ca", f"{ca} is not a readable file")
    settings = RedisSettings(
        host=parts.hostname,
        port=port,
        database=database,
        tls=parts.scheme == "rediss",
        ca=ca,
        username=unquote(parts.username) if parts.username else None,
        password=reader.secret("password") if reader.has("password") else None,
        prefix=reader.string("prefix", "hoopgate:"),
        timeout=reader.duration("timeout", 2.0),
        pool_size=reader.integer("pool_size", 4, low=1, high=64),
    )
    if settings.ca and not settings.tls:
        raise reader.error("ca", "is only for rediss:// URLs")
    return settings


def _hello(protocol: Any, settings: RedisSettings) -> Deferred[Any]:
    """
    AUTH (with the ACL user when configured) and SELECT on a new
    connection, before it is handed out.
    """
    steps: Deferred[Any] = succeed(None)
    if settings.password is not None:
        secret = settings.password.reveal()
        auth = (settings.username, secret) if settings.username else (secret,)
        steps.addCallback(lambda _: protocol.execute_command("AUTH", *auth))
    if settings.database:
        steps.addCallback(
            lambda _: protocol.execute_command("SELECT", settings.database)
        )
    return steps


@frozen
class _Classes:
    """
    Our txredisapi subclasses, made once a reactor is installed.

    Attributes:
        factory: The pool factory: our reconnect delays, and it tells
            the store when its pool gains or loses a connection.
        commands: The protocol of the command pool.
        subscriber: The protocol of the subscriber connection.
    """

    factory: type[Any]
    commands: type[Any]
    subscriber: type[Any]


def _classes() -> _Classes:
    """
    Build the factory and protocols on txredisapi's (which is imported
    here, once a reactor is installed).
    """
    import txredisapi  # noqa: PLC0415 - imports the reactor

    log = Logger(namespace="hoopgate.redis")

    class Factory(txredisapi.RedisFactory):  # type: ignore[misc]
        """
        Reconnects within L{RECONNECT_MAX_DELAY}; tells the store each
        time its pool gains or loses a connection.
        """

        initialDelay = RECONNECT_INITIAL_DELAY
        maxDelay = RECONNECT_MAX_DELAY

        def addConnection(self, conn: Any) -> None:
            super().addConnection(conn)
            self.hoopgate_store._connections_changed()

        def delConnection(self, conn: Any) -> None:
            super().delConnection(conn)
            self.hoopgate_store._connections_changed()

    class _Ready:
        """
        Says hello before txredisapi sees the connection as ready; a
        refused hello drops the connection without stopping the retries.
        """

        factory: Any
        transport: Any

        def connectionMade(self) -> None:
            settings: RedisSettings = self.factory.hoopgate_settings
            hello = _hello(self, settings)
            hello.addCallbacks(self._welcomed, self._refused)

        def _welcomed(self, _: object) -> Any:
            # The base protocol has neither password nor database set,
            # so its connectionMade only marks the connection ready.
            return super().connectionMade()  # type: ignore[misc]

        def _refused(self, failure: Failure) -> None:
            settings: RedisSettings = self.factory.hoopgate_settings
            log.error(
                "Redis at {where} refused the log-in: {error}; retrying",
                where=settings.where,
                error=failure.getErrorMessage(),
            )
            self.transport.loseConnection()

    class Commands(_Ready, txredisapi.RedisProtocol):  # type: ignore[misc]
        pass

    class Subscriber(_Ready, txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def _welcomed(self, _: object) -> Any:
            ready = super()._welcomed(_)
            self.factory.hoopgate_store._subscriber_ready(self)
            return ready

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            self.factory.hoopgate_store._message(pattern, message)

        def connectionLost(self, why: Failure) -> None:
            self.factory.hoopgate_store._subscriber_lost(self)
            super().connectionLost(why)

    return _Classes(factory=Factory, commands=Commands, subscriber=Subscriber)


@implementer(IStore)
class RedisStore:
    """
    Shared state in Redis.

    Args:
        reactor: Schedules and connects.
        settings: Where and how.
    """

    _log = Logger()

    def __init__(self, reactor: Any, settings: RedisSettings) -> None:
        self._reactor = reactor
        self._settings = settings
        self._prefix = settings.prefix
        self.description = f"Redis at {settings.where}"
        self._callbacks: defaultdict[str, list[Callable[[str], object]]] = defaultdict(
            list
        )
        self._resubscribed: list[Callable[[], object]] = []
        self._subscriber: Any = None
        self._subscribed = False
        self._usable = False
        self._factories: list[Any] = []
        self._pool: Any = None
        self._handler: Any = None
        self._down = False

    # -- life cycle ------------------------------------------------------

    def _endpoint(self) -> Any:
        settings = self._settings
        endpoint = HostnameEndpoint(
            self._reactor, settings.host, settings.port, timeout=settings.timeout
        )
        if not settings.tls:
            return endpoint
        trust: Any = platformTrust()
        if settings.ca:
            trust = Certificate.loadPEM(Path(settings.ca).read_bytes())
        return wrapClientTLS(
            optionsForClientTLS(settings.host, trustRoot=trust), endpoint
        )

    def _factory(self, classes: _Classes, protocol: type[Any], size: int) -> Any:
        factory = classes.factory(
            self.description,
            None,
            size,
            isLazy=True,
            replyTimeout=self._settings.timeout,
            convertNumbers=False,
        )
        factory.protocol = protocol
        factory.hoopgate_settings = self._settings
        factory.hoopgate_store = self
        self._factories.append(factory)
        return factory

    def start(self) -> None:
        """
        Connect (and keep reconnecting) the pool and the subscriber.
        """
        classes = _classes()
        self._pool = self._factory(classes, classes.commands, self._settings.pool_size)
        self._handler = self._pool.handler
        self._factory(classes, classes.subscriber, 1)
        for factory in self._factories:
            factory.startConnecting(self._endpoint())

    def stop(self) -> Deferred[Any]:
        """
        Close every connection and stop reconnecting.
        """
        stopping = [factory.disconnect() for factory in self._factories]
        self._factories = []
        return gatherResults(stopping, consumeErrors=True)

    # -- commands --------------------------------------------------------

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _unavailable(self, why: str) -> Failure:
        if not self._down:
            self._down = True
            self._log.error(
                "Shared state {store} is unreachable: {why}",
                store=self.description,
                why=why,
            )
        return Failure(StoreUnavailableError(f"{self.description} is unreachable"))

    def _run(self, command: Callable[[Any], Deferred[Any]]) -> Deferred[Any]:
        if self._pool is None or not self._pool.size:
            return fail(self._unavailable("no connection is up"))
        try:
            running = command(self._handler)
        except Exception as e:
            return fail(self._unavailable(str(e)))

        def answered(value: object) -> object:
            if self._down:
                self._down = False
                self._log.info(
                    "Shared state {store} answers again", store=self.description
                )
            return value

        def failed(failure: Failure) -> Failure:
            import txredisapi  # noqa: PLC0415 - imported by now

            if failure.check(txredisapi.RedisError, ConnectionError):
                return self._unavailable(failure.getErrorMessage())
            return failure

        return running.addCallbacks(answered, failed)

    def put(self, key: str, value: str, ttl: float | None = None) -> Deferred[None]:
        full = self._key(key)
        return self._run(
            lambda redis: redis.set(full, value, pexpire=_milliseconds(ttl))
        ).addCallback(lambda _: None)

    def get(self, key: str) -> Deferred[str | None]:
        full = self._key(key)
        return self._run(lambda redis: redis.get(full)).addCallback(_text_or_none)

    def delete(self, key: str) -> Deferred[None]:
        full = self._key(key)
        return self._run(lambda redis: redis.delete(full)).addCallback(lambda _: None)

    def keys(self, prefix: str) -> Deferred[list[str]]:
        pattern = _glob_escape(self._key(prefix)) + "*"
        found: list[str] = []
        strip = len(self._prefix)

        def page(reply: Any) -> Deferred[list[str]] | list[str]:
            cursor, names = reply
            found.extend(_text(n)[strip:] for n in names)
            if int(cursor) == 0:
                return sorted(set(found))
            return self._run(
                lambda redis: redis.scan(int(cursor), pattern, 500)
            ).addCallback(page)

        return self._run(lambda redis: redis.scan(0, pattern, 500)).addCallback(page)

    def publish(self, channel: str, message: str) -> Deferred[int]:
        full = self._key(channel)
        return self._run(lambda redis: redis.publish(full, message)).addCallback(int)

    def put_if_absent(
        self, key: str, value: str, ttl: float | None = None
    ) -> Deferred[bool]:
        full = self._key(key)
        return self._run(
            lambda redis: redis.set(
                full, value, pexpire=_milliseconds(ttl), only_if_not_exists=True
            )
        ).addCallback(lambda reply: reply is not None)

    def increment(self, key: str, ttl: float | None = None) -> Deferred[int]:
        full = self._key(key)
        milliseconds = _milliseconds(ttl) or 0
        return self._run(
            lambda redis: redis.eval(_INCREMENT, [full], [milliseconds])
        ).addCallback(int)

    # -- subscriptions ---------------------------------------------------

    def subscribe(self, channel: str, callback: Callable[[str], object]) -> None:
        new = channel not in self._callbacks
        self._callbacks[channel].append(callback)
        if new and self._subscriber is not None:
            self._psubscribe(self._subscriber, [channel])

    def on_resubscribe(self, callback: Callable[[], object]) -> None:
        self._resubscribed.append(callback)

    def _psubscribe(self, protocol: Any, channels: list[str]) -> Deferred[bool]:
        """
        Subscribe to C{channels}; a refusal drops the connection (the
        subscriber reconnects and tries again).

        Returns:
            A C{Deferred} firing with whether it worked.
        """
        patterns = [_glob_escape(self._prefix) + c for c in channels]

        def failed(failure: Failure) -> bool:
            self._log.error(
                "Cannot subscribe to {patterns} on {store}: {error}",
                patterns=channels,
                store=self.description,
                error=failure.getErrorMessage(),
            )
            protocol.transport.loseConnection()
            return False

        subscribing: Deferred[Any] = protocol.psubscribe(patterns)
        return subscribing.addCallbacks(lambda _: True, failed)

    def _subscriber_ready(self, protocol: Any) -> None:
        self._subscriber = protocol
        self._log.info(
            "Subscribing to {count} channels on {store}",
            count=len(self._callbacks),
            store=self.description,
        )
        channels = list(self._callbacks)
        # PSUBSCRIBE needs a pattern: with none, there is nothing to wait for.
        subscribed = self._psubscribe(protocol, channels) if channels else succeed(True)
        subscribed.addCallback(self._subscription_made, protocol)

    def _subscription_made(self, worked: bool, protocol: Any) -> None:
        if worked and self._subscriber is protocol:
            self._subscribed = True
            self._connections_changed()

    def _connections_changed(self) -> None:
        """
        Tell the waiting parties to read again when the store has just
        become usable: subscribed, and a command connection up.

        Whatever was published while no subscription was in place is
        lost, and a restarted Redis lost every key; what they read (and
        write back) needs a command connection, and the pool and the
        subscriber reconnect independently, in either order.
        """
        pool = self._pool
        usable = self._subscribed and pool is not None and pool.size > 0
        if not usable or self._usable:
            self._usable = usable
            return

        self._usable = True
        self._log.info(
            "Shared state {store} is subscribed and answers commands; "
            "{count} waiting parties read again",
            store=self.description,
            count=len(self._resubscribed),
        )
        for callback in list(self._resubscribed):
            try:
                callback()
            except Exception:
                self._log.failure("A resubscribe callback failed")

    def _subscriber_lost(self, protocol: Any) -> None:
        if self._subscriber is protocol:
            self._subscriber = None
            self._subscribed = False
            self._connections_changed()
            self._log.warn(
                "Lost the subscription connection to {store}; reconnecting",
                store=self.description,
            )

    def _message(self, pattern: Any, message: Any) -> None:
        channel = _text(pattern)[len(_glob_escape(self._prefix)) :]
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(_text(message))
            except Exception:
                self._log.failure("Subscriber of {channel} failed", channel=channel)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _text(value)
