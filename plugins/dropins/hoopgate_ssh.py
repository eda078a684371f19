"""
Declares the built-in SSH plugin to the gateway's plugin loader.
"""

from hoopgate.plugin import ProtocolPluginDeclaration

ssh = ProtocolPluginDeclaration(
    name="ssh",
    description="SSH 2 on Twisted Conch (exec, shell, SFTP/scp, local forwarding)",
    module="hoopgate_plugins.ssh._plugin",
)
