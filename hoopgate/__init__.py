"""
hoopgate: an identity-aware layer-7 access gateway.

The public face for protocol plugin authors is L{hoopgate.plugin}; the
service is started with C{twistd hoopgate}; operators use the C{hoopgate}
command.
"""

__version__ = "0.1.0"
