"""
Tests for the C{gateway.store} section: the in-memory store by default,
Redis when configured, and the mistakes the Redis keys refuse.
"""

from __future__ import annotations

import os
import re
import tempfile

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from hoopgate._config import Config, ListenerConfig, parse_config
from hoopgate._configreader import ConfigError, ConfigReader
from hoopgate._interfaces import IGateway, IProtocolPlugin
from hoopgate._redisstore import RedisStore
from hoopgate._service import make_store
from hoopgate._store import MemoryStore

CONFIG = """\
gateway:
  recordings:
    directory: {recordings}
{store}
targets:
  - name: db
    protocol: fake
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: rw
        user: app
policy:
  access:
    - name: ci
      subjects: [ci-runner]
      targets: [db]
      credential: rw
"""


@implementer(IProtocolPlugin)
class FakePlugin:
    """
    A protocol plugin without keys of its own.
    """

    name = "fake"

    def read_listener(self, reader: ConfigReader) -> None:
        return None

    def read_target(self, reader: ConfigReader) -> None:
        return None

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> object:
        raise NotImplementedError("config tests serve nothing")


def config(store: str) -> Config:
    folder = tempfile.mkdtemp(prefix="hoopgate-store-")
    text = CONFIG.format(recordings=folder, store=store)
    return parse_config(text, "test.yaml", {"fake": FakePlugin()})


def redis(*lines: str) -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return "  store:\n    kind: redis\n" + body


class TestStoreSection:
    """
    What C{gateway.store} accepts and refuses.
    """

    def test_default_memory(self) -> None:
        """
        Without a store section the store is in memory, and says so.
        """
        loaded = config("")
        store = make_store(Clock(), loaded)

        assert loaded.gateway.store == "memory"
        assert loaded.gateway.redis is None
        assert isinstance(store, MemoryStore)
        assert store.description == "in-memory (one process)"

    def test_redis(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A Redis URL, a password from the environment, an ACL user name, a
        prefix and a timeout are read; the store describes itself without
        the password.
        """
        monkeypatch.setenv("HG_TEST_REDIS_PW", "s3cret-value")
        loaded = config(
            redis(
                "url: redis://gateway@10.0.0.5:6380/3",
                "password: {env: HG_TEST_REDIS_PW}",
                'prefix: "bank:"',
                "timeout: 500ms",
            )
        )
        settings = loaded.gateway.redis
        store = make_store(Clock(), loaded)

        assert settings is not None
        assert (settings.host, settings.port, settings.database) == (
            "10.0.0.5",
            6380,
            3,
        )
        assert settings.username == "gateway"
        assert settings.password is not None
        assert settings.password.reveal() == "s3cret-value"
        assert (settings.prefix, settings.timeout, settings.tls) == (
            "bank:",
            0.5,
            False,
        )
        assert isinstance(store, RedisStore)
        assert store.description == "Redis at redis://10.0.0.5:6380/3"
        assert "s3cret" not in repr(settings)

    def test_tls_with_ca(self) -> None:
        """
        C{rediss://} turns TLS on, with a CA file when given.
        """
        with tempfile.NamedTemporaryFile(suffix=".pem") as ca:
            loaded = config(redis("url: rediss://redis.example.test", f"ca: {ca.name}"))

        settings = loaded.gateway.redis
        assert settings is not None
        assert (settings.tls, settings.ca, settings.port) == (True, ca.name, 6379)

    @pytest.mark.parametrize(
        ("lines", "message"),
        [
            (
                ("url: http://127.0.0.1:6379",),
                "gateway.store.url (line 6): must be redis://",
            ),
            (
                ("url: redis://:pw@127.0.0.1:6379",),
                "gateway.store.url (line 6): must not hold a password",
            ),
            (
                ("url: redis://127.0.0.1:6379/zero",),
                "has a bad port or database number",
            ),
            (
                ("url: redis://127.0.0.1", "ca: /nonexistent.pem"),
                "gateway.store.ca (line 7)",
            ),
            ((), "gateway.store.url (line 5): is required"),
            (
                ("url: redis://h", "colour: red"),
                "gateway.store.colour (line 7): is not a known key",
            ),
        ],
    )
    def test_mistakes(self, lines: tuple[str, ...], message: str) -> None:
        """
        Mistakes name the key and the line.
        """
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(redis(*lines))

    def test_unknown_kind(self) -> None:
        """
        Only memory and redis are stores.
        """
        with pytest.raises(ConfigError, match="must be one of memory, redis"):
            config("  store:\n    kind: etcd\n")

    def test_password_file_missing(self) -> None:
        """
        A password file that cannot be read is a configuration error.
        """
        missing = os.path.join(tempfile.gettempdir(), "hoopgate-no-such-file")

        with pytest.raises(ConfigError, match=r"gateway\.store\.password"):
            config(redis("url: redis://h", f"password: {{file: {missing}}}"))
