"""
Fixtures for integration tests against the real servers on loopback.

The servers are started outside pytest by C{tests/services.sh start}, which
writes C{$HG_RUN/env}; C{make test} sources that file and sets
C{HOOPGATE_REQUIRE_SERVERS=1} before running pytest. By hand:

    HG_RUN=/tmp/hg tests/services.sh start
    set -a; . /tmp/hg/env; set +a
    .venv/bin/python -m pytest -q tests/integration
    HG_RUN=/tmp/hg tests/services.sh stop

When the servers are missing, a test using C{servers} B{fails} if
C{HOOPGATE_REQUIRE_SERVERS=1} or C{CI=true}, and is skipped (with the reason)
otherwise. See L{tests.support.servers} for the variables and helpers:

    from tests.support.servers import pg_connect_args

    def test_direct_login(servers: dict[str, str]) -> None:
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            ...
"""

from __future__ import annotations

import pytest

from tests.support.servers import SERVER_VARS, require_env


@pytest.fixture(scope="session")
def servers() -> dict[str, str]:
    """
    The test servers' environment: every name in C{SERVER_VARS} with its
    value. Fails or skips the test when the servers were not started.
    """
    return require_env(SERVER_VARS, "test servers (PostgreSQL, OIDC issuer)")
