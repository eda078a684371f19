"""
The dropin package protocol plugins are discovered in.

Its search path is set at discovery time from the configured plugin
packages and dropin folders; see L{hoopgate._discovery}.
"""
