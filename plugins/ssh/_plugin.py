"""
The SSH plugin object: its configuration keys and its listener.

test-case-name: tests.unit.ssh.test_plugin
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from hoopgate.plugin import (
    ConfigReader,
    IAdminResource,
    IGateway,
    IProtocolPlugin,
    ListenerConfig,
)
from hoopgate_plugins.ssh._issuer import certificate_resource
from hoopgate_plugins.ssh._keys import fingerprint, load_or_create_host_key
from hoopgate_plugins.ssh._server import GatewaySSHFactory
from hoopgate_plugins.ssh._settings import (
    ListenerSettings,
    TargetSettings,
    listener_settings,
    read_listener,
    read_target,
)


@implementer(IProtocolPlugin, IAdminResource)
class SSHPlugin:
    """
    Relays SSH sessions: exec, shell, SFTP and local forwarding; issues
    certificates on the admin listener (C{/plugins/ssh/certificates}).
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

    def admin_resource(
        self, gateway: IGateway, listeners: Sequence[ListenerConfig]
    ) -> Any:
        authorities = {}
        for listener in listeners:
            certificates = listener_settings(listener).certificates
            if certificates is not None:
                authorities[listener.name] = certificates
        return certificate_resource(gateway, authorities)


plugin = SSHPlugin()
