"""
A token's end of use during a session: the policy's C{on_token_expiry}
(C{close}, the default in the test configuration) ends the session with
a FATAL error in PostgreSQL's own form, and the recording says why.

A token is usable until its C{exp} plus the issuer's leeway: accepted
before that instant (also a little past C{exp}) and refused from it on
with SQLSTATE 28000; a session it opened lives until that same instant.
This module's gateway has a leeway of L{LEEWAY} seconds instead of the
harness's 30, so that waiting for it stays short.

test-case-name: tests.integration.test_postgres_expiry
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from joserfc import jwt

from tests.integration.test_postgres_auth import (
    IDENTITY_MESSAGE,
    good_claims,
    issuer_key,
    refused_lines,
)
from tests.support.gateway import RunningGateway, lines_of, start_gateway
from tests.support.pgwire import WireClient, error_fields

pytestmark = pytest.mark.timeout(120)

TTL = 6

#: The issuer's leeway in this module's gateway, in seconds.
LEEWAY = 12

#: How long past its exp the accepted token is presented.
PAST_EXP = 5


def short_leeway(text: str) -> str:
    """
    The harness's configuration with a leeway of L{LEEWAY} seconds.
    """
    assert text.count("leeway: 30s") == 1
    return text.replace("leeway: 30s", f"leeway: {LEEWAY}s")


@pytest.fixture(scope="module")
def gateway(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    The harness's gateway (L{tests.support.gateway}) with a short leeway.
    """
    running = start_gateway(
        servers, tmp_path_factory.mktemp("gateway"), edit=short_leeway
    )
    try:
        yield running
    finally:
        running.stop()


def expired_token(gateway: RunningGateway, ago: int) -> tuple[str, int]:
    """
    A genuine token of ci-runner whose exp was C{ago} seconds ago.

    Returns:
        The token and its exp.
    """
    now = int(time.time())
    exp = now - ago
    claims = good_claims(gateway.servers, iat=now - 600, nbf=now - 600, exp=exp)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "test-rs256"}
    return jwt.encode(header, claims, issuer_key(gateway.servers)), exp


class TestTokenExpiry:
    """
    The session lives as long as its token may be used, not as long as
    the client wants.
    """

    def test_session_ends_when_token_expires(self, gateway: RunningGateway) -> None:
        """
        A session opened with a 6-second token answers at once, then is
        ended with SQLSTATE 57P01 once the token's use ends (exp plus
        leeway); a fresh token opens a new session.
        """
        token = gateway.token(ttl=TTL)
        with psycopg.connect(**gateway.connect_args(token)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            session = gateway.session_of(token)

            closed = gateway.wait_event(
                session, "session.closed", timeout=TTL + LEEWAY + 10
            )
            with pytest.raises(psycopg.OperationalError) as caught:
                conn.execute("select 2")

        assert closed["reason"] == "token_expired"
        assert "token expired" in str(caught.value)

        fresh = gateway.token(ttl=600)
        with psycopg.connect(**gateway.connect_args(fresh)) as conn:
            assert conn.execute("select 3").fetchone() == (3,)


class TestLeeway:
    """
    Acceptance and expiry follow one rule: usable until exp plus leeway.
    """

    def test_past_exp_within_leeway(self, gateway: RunningGateway) -> None:
        """
        A token 5 s past its exp is accepted; its session runs statements
        for a couple of seconds (one of them two seconds long), then is
        ended as expired with 57P01, not before exp plus leeway; the
        recorded identity says when its use ends.
        """
        token, exp = expired_token(gateway, PAST_EXP)

        with psycopg.connect(**gateway.connect_args(token)) as conn:
            first = conn.execute("select 1").fetchone()
            slept = conn.execute("select pg_sleep(2), 2").fetchone()
            after = conn.execute("select 3").fetchone()
            session = gateway.session_of(token)
            closed = gateway.wait_event(session, "session.closed", timeout=LEEWAY + 10)
            with pytest.raises(psycopg.OperationalError) as caught:
                conn.execute("select 4")
        opened = lines_of(gateway.recording_lines(session), "session.opened")

        assert (first, slept, after) == ((1,), ("", 2), (3,))
        assert opened[0]["identity"]["expires_at"] == exp + LEEWAY
        assert closed["reason"] == "token_expired"
        assert closed["at"] >= exp + LEEWAY
        assert "token expired" in str(caught.value)
        assert gateway.files_containing(token) == []

    def test_past_leeway_refused(self, gateway: RunningGateway) -> None:
        """
        A token whose exp plus leeway has passed is refused with a FATAL
        28000 and the generic message, recorded as identity.expired.
        """
        token, _ = expired_token(gateway, LEEWAY + 2)
        mark = gateway.recording_mark()

        with WireClient(gateway.pg_port) as raw:
            raw.start_tls(gateway.servers["TLS_CERT"])
            answer = raw.login(token)
            closed = raw.closed_by_peer()
        lines = refused_lines(gateway, mark, 1)

        fields = error_fields(answer[-1])
        assert (fields["V"], fields["C"]) == ("FATAL", "28000")
        assert IDENTITY_MESSAGE in fields["M"]
        assert closed
        assert [x["reason"] for x in lines_of(lines, "session.refused")] == [
            "identity.expired"
        ]
        assert lines_of(lines, "session.opened") == []
