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

The C{gateway} fixture runs C{twistd hoopgate} in front of them, one per
test module (L{tests.support.gateway}):

    def test_through_gateway(gateway: RunningGateway) -> None:
        args = gateway.connect_args(gateway.token(), target="appdb")
        with psycopg.connect(**args) as conn:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.gateway import RunningGateway, start_gateway
from tests.support.servers import SERVER_VARS, pg_connect_args, require_env


@pytest.fixture(scope="session")
def servers() -> dict[str, str]:
    """
    The test servers' environment: every name in C{SERVER_VARS} with its
    value. Fails or skips the test when the servers were not started.
    """
    return require_env(SERVER_VARS, "test servers (PostgreSQL, OIDC issuer)")


@pytest.fixture(scope="module")
def gateway(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    C{twistd hoopgate} in front of the test servers, one per test module
    (see L{tests.support.gateway}); stopped after the module's last test.
    A gateway that does not start fails the tests with its log tail.
    """
    running = start_gateway(servers, tmp_path_factory.mktemp("gateway"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def direct(servers: dict[str, str]) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """
    A direct connection to the test PostgreSQL as C{app} (autocommit),
    bypassing the gateway: the ground truth to compare with.
    """
    args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
    with psycopg.connect(**args, autocommit=True) as conn:
        yield conn
