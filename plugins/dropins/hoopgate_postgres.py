"""
Declares the built-in PostgreSQL plugin to the gateway's plugin loader.
"""

from hoopgate.plugin import ProtocolPluginDeclaration

postgres = ProtocolPluginDeclaration(
    name="postgres",
    description="PostgreSQL frontend/backend protocol 3 (psql, libpq, drivers)",
    module="hoopgate_plugins.postgres._plugin",
)
