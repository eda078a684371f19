"""
Wire limits on the PostgreSQL path, end to end: real psycopg sessions
through C{twistd hoopgate} to the test PostgreSQL.

A statement may bind as many parameters as PostgreSQL takes (65,535:
the protocol's counts are unsigned 16-bit numbers).

test-case-name: tests.integration.test_postgres_limits
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.timeout(120)

Conn = psycopg.Connection[tuple[Any, ...]]

#: More parameters than a signed 16-bit count can hold.
MANY = 40_000


def _sum_of_parameters(conn: Conn, count: int, *, prepare: bool) -> Any:
    """
    The server's sum of C{count} bound parameters 1..count, and how
    many it received.
    """
    placeholders = ", ".join(["%s::int"] * count)
    # Placeholders only: the values travel as parameters.
    sql = f"select count(*), sum(v) from unnest(array[{placeholders}]) as t(v)"  # noqa: S608
    row = conn.execute(sql, list(range(1, count + 1)), prepare=prepare).fetchone()
    assert row is not None
    return tuple(row)


class TestManyParameters:
    """
    Parse, Bind, ParameterDescription with more than 32,767 parameters.
    """

    @pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "prepared"])
    def test_forty_thousand_parameters(
        self, gateway: RunningGateway, direct: Conn, prepare: bool
    ) -> None:
        """
        A statement binding 40,000 parameters returns through the gateway
        what it returns directly: the server counted 40,000 values summing
        to 800,020,000 (a prepared statement is described first, so the
        server's ParameterDescription with 40,000 types passes too).
        """
        want = _sum_of_parameters(direct, MANY, prepare=prepare)
        args = gateway.connect_args(gateway.token())
        with psycopg.connect(**args, autocommit=True) as conn:
            got = _sum_of_parameters(conn, MANY, prepare=prepare)

        assert want == (MANY, MANY * (MANY + 1) // 2) == (40_000, 800_020_000)
        assert got == want
