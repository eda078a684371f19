"""
The SSH plugin object: its configuration keys and its listener.

test-case-name: tests.unit.ssh.test_plugin
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from hoopgate.plugin import (
    ConfigReader,
    IGateway,
    IProtocolPlugin,
    ListenerConfig,
)
from hoopgate_plugins.ssh._keys import fingerprint, load_or_create_host_key
from hoopgate_plugins.ssh._server import GatewaySSHFactory
from hoopgate_plugins.ssh._settings import (
    ListenerSettings,
    TargetSettings,
    listener_settings,
    read_listener,
    read_target,
)


@implementer(IProtocolPlugin)
class SSHPlugin:
    """
    Relays SSH sessions: exec, shell, SFTP and local forwarding.
    """

    name = "ssh"
    _log = Logger()

    def read_listener(self, reader: ConfigReader) -> ListenerSettings:
        return read_listener(reader)

    def read_target(self, reader: ConfigReader) -> TargetSettings:
        return read_target(reader)

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> Any:
        path = listener_settings(listener).host_key
        key, created = load_or_create_host_key(path)
        self._log.info(
            "SSH listener {listener}: host key {fingerprint} from {path}{created}",
            listener=listener.name,
            fingerprint=fingerprint(key.public().blob()),
            path=path,
            created=" (created now)" if created else "",
        )
        return GatewaySSHFactory(gateway, listener, key)


plugin = SSHPlugin()
