"""
The SSH protocol plugin: OpenSSH clients reach targets through the gateway.
"""
