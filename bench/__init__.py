"""
The benchmark suite behind C{make bench}.

C{bench/run.py} starts its own servers (PostgreSQL and the OIDC issuer of
C{tests/services.sh}, PgBouncer, hoopgate as a C{twistd} subprocess), drives
them with pgbench, psql and an asyncio client, and writes
C{bench/results/latest.md}, C{latest.json} and one chart per protocol.
The other modules are its parts: parsers for what the tools print
(L{bench.parse}), medians and the report (L{bench.report}), the servers it
runs (L{bench.servers}), the idle-session client (L{bench.idle}), the
chart (L{bench.chart}) and the profile summary (L{bench.hotspots}).
"""
