"""
A token that expires during a session: the policy's C{on_token_expiry}
(C{close}, the default in the test configuration) ends the session with
a FATAL error in PostgreSQL's own form, and the recording says why.

test-case-name: tests.integration.test_postgres_expiry
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.timeout(120)

TTL = 6


class TestTokenExpiry:
    """
    The session lives as long as its token, not as long as the client.
    """

    def test_session_ends_when_token_expires(self, gateway: RunningGateway) -> None:
        """
        A session opened with a 6-second token answers at once, then is
        ended with SQLSTATE 57P01 once the token expires; a fresh token
        opens a new session.
        """
        token = gateway.token(ttl=TTL)
        with psycopg.connect(**gateway.connect_args(token)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            session = gateway.session_of(token)

            closed = gateway.wait_event(session, "session.closed", timeout=TTL + 10)
            with pytest.raises(psycopg.OperationalError) as caught:
                conn.execute("select 2")

        assert closed["reason"] == "token_expired"
        assert "token expired" in str(caught.value)

        fresh = gateway.token(ttl=600)
        with psycopg.connect(**gateway.connect_args(fresh)) as conn:
            assert conn.execute("select 3").fetchone() == (3,)
