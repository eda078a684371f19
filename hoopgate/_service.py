"""
The C{twistd hoopgate} service: listeners, admin and the gateway.

test-case-name: tests.integration.test_postgres_relay
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from hoopgate._admin import AdminSite
from hoopgate._config import Config, load_config
from hoopgate._configreader import ConfigError
from hoopgate._gateway import Gateway
from hoopgate._interfaces import IStore
from hoopgate._recording import Recorder
from hoopgate._redisstore import RedisStore
from hoopgate._store import MemoryStore


def make_store(reactor: Any, config: Config) -> IStore:
    """
    The shared state the configuration asks for: Redis when
    C{gateway.store.kind} is C{redis}, otherwise in memory.
    """
    settings = config.gateway.redis
    if config.gateway.store == "redis" and settings is not None:
        return RedisStore(reactor, settings)
    return MemoryStore(reactor)


class GatewayService(MultiService):
    """
    Serves every configured listener plus the admin listener.

    Args:
        reactor: The reactor.
        config_path: The configuration file, read again on reload.
        config: Its validated contents.
    """

    _log = Logger()

    def __init__(self, reactor: Any, config_path: str, config: Config) -> None:
        # MultiService's methods have no annotations, and mypy's
        # untyped_calls_exclude does not cover calls through super().
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.config_path = config_path
        self.recorder = Recorder(
            config.gateway.recordings, max_text=config.gateway.recording_max_text
        )
        self.store = make_store(reactor, config)
        self.gateway = Gateway(reactor, config, self.store, self.recorder)
        self.recorder.on_failure = self.gateway.recording_failed
        self._add_listeners(config)

    def _add_listeners(self, config: Config) -> None:
        admin = AdminSite(self.gateway, self.reload)
        endpoint = serverFromString(self.reactor, config.gateway.admin_listen)
        StreamServerEndpointService(endpoint, admin.factory()).setServiceParent(self)

        for listener in config.listeners:
            plugin = config.plugins[listener.protocol]
            factory = plugin.make_factory(listener, self.gateway)
            endpoint = serverFromString(self.reactor, listener.listen)
            service = StreamServerEndpointService(endpoint, factory)
            service._raiseSynchronously = True
            service.setServiceParent(self)

    def startService(self) -> None:
        self._log.info(
            "hoopgate starting: {listeners} listeners, store {store}, recordings in "
            "{recordings}",
            listeners=len(self.gateway.config.listeners),
            store=self.store.description,
            recordings=self.gateway.config.gateway.recordings,
        )
        if isinstance(self.store, RedisStore):
            self.store.start()
        self._start_approvals()
        super().startService()  # type: ignore[no-untyped-call]
        signal.signal(
            signal.SIGHUP,
            lambda *_: self.reactor.callFromThread(self._reload_logged),
        )
        self.gateway.verifier.prime()

    def stopService(self) -> Any:
        result = super().stopService()  # type: ignore[no-untyped-call]
        if self.gateway.approvals is not None:
            self.gateway.approvals.stop()
        self.recorder.close()
        if isinstance(self.store, RedisStore):
            self.store.stop()
        return result

    def _start_approvals(self) -> None:
        approvals = self.gateway.approvals
        if approvals is None:
            return
        approvals.start()
        self._log.info(
            "Approvals: directory {directory}, links to {url}, {rules} rules",
            directory=approvals.directory.where,
            url=approvals.base_url,
            rules=len(self.gateway.config.policy.approvals),
        )
        if approvals.settings.link_secret is None:
            self._log.warn(
                "gateway.approvals.link_secret is not set: approval links "
                "work only in this process, until it restarts"
            )

    def reload(self) -> None:
        """
        Read the configuration again and use it for new sessions.

        Listeners stay as they started; a changed listener needs a
        restart, and the log says so.

        Raises:
            ConfigError: The new configuration is not valid; the old one
                stays in force.
        """
        current = self.gateway.config
        config = load_config(self.config_path, plugins=current.plugins)
        if config.listeners != current.listeners:
            self._log.warn("Listener changes take effect after a restart")
        if config.gateway.approvals is not None and self.gateway.approvals is None:
            raise ConfigError("gateway.approvals was added: it needs a restart")
        self.gateway.reload(config)
        self.gateway.verifier.prime()

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except ConfigError as e:
            self._log.error(
                "Reload refused, keeping the running configuration: {error}",
                error=str(e),
            )
