"""
Tests for the identity stage's handling of identities a plugin presents
(L{hoopgate._events.SessionRequested.presented}) and for
L{hoopgate._gateway.Gateway.identify}.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.python.failure import Failure

from hoopgate import _gateway
from hoopgate._events import SessionRequested
from hoopgate._identity import Identity
from hoopgate._session import Session, SessionRefusedError
from tests.unit.test_gateway import (
    GOOD,
    NOW,
    FakeVerifier,
    Fixture,
    Handle,
    identity,
    refusal,
)


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(_gateway, "OIDCVerifier", FakeVerifier)
    monkeypatch.setattr(FakeVerifier, "identities", {GOOD: identity()})
    fixture = Fixture()
    yield fixture
    fixture.close()


def certified(who: str = "ci-runner", expires_at: float | None = NOW + 300) -> Identity:
    return Identity(
        subject=who,
        issuer="https://id.example.test",
        token_id_hash="feedface",
        expires_at=expires_at,
    )


def open_request(gw: Fixture, request: SessionRequested) -> Session | Failure:
    results: list[Session | Failure] = []
    gw.gateway.open_session(request, Handle()).addBoth(results.append)
    gw.clock.advance(1)
    [result] = results
    return result


def presented(
    gw: Fixture,
    kind: str = "ssh-certificate",
    who: Identity | None = None,
    token: str = "",
) -> SessionRequested:
    return attrs.evolve(
        gw.request(token=token),
        presented=kind,
        identity=who if who is not None else certified(),
    )


class TestPresetIdentity:
    """
    Only the identity stage fills in an identity, except for the
    credential kinds a plugin verifies itself.
    """

    def test_token_request_with_identity_refused(self, gw: Fixture) -> None:
        """
        A token request that arrives with an identity already set is
        refused, even with a token the verifier would accept: a plugin
        cannot skip the identity stage by filling the field in.
        """
        request = attrs.evolve(gw.request(token=GOOD), identity=certified())

        error = refusal(open_request(gw, request))

        assert error.reason.code == "identity.preset"
        assert error.reason.message == "authentication failed"
        assert gw.gateway.sessions == {}

    def test_certificate_identity_admitted(self, gw: Fixture) -> None:
        """
        With C{ssh-certificate} the identity the plugin verified opens the
        session (no token), and its expiry bounds the session.
        """
        session = open_request(gw, presented(gw))

        assert isinstance(session, Session)
        assert session.identity == certified()
        assert session.rule.name == "ci"

    def test_certificate_identity_still_needs_access(self, gw: Fixture) -> None:
        """
        A certified identity without an access rule is refused like a
        token's.
        """
        error = refusal(open_request(gw, presented(gw, who=certified("mallory"))))

        assert error.reason.code == "access.denied"

    def test_expired_certificate_identity(self, gw: Fixture) -> None:
        error = refusal(open_request(gw, presented(gw, who=certified(expires_at=NOW))))

        assert error.reason.code == "identity.expired"

    def test_certificate_identity_without_expiry(self, gw: Fixture) -> None:
        """
        A certificate always expires: an identity without an expiry is
        refused.
        """
        request = presented(gw, who=certified(expires_at=None))

        error = refusal(open_request(gw, request))

        assert error.reason.code == "identity.expired"

    def test_certificate_without_identity(self, gw: Fixture) -> None:
        request = attrs.evolve(gw.request(token=""), presented="ssh-certificate")

        error = refusal(open_request(gw, request))

        assert error.reason.code == "identity.presented"

    def test_certificate_with_token(self, gw: Fixture) -> None:
        """
        A certificate request carrying a token too is refused (it is one
        credential or the other).
        """
        error = refusal(open_request(gw, presented(gw, token=GOOD)))

        assert error.reason.code == "identity.presented"

    def test_unknown_kind(self, gw: Fixture) -> None:
        error = refusal(open_request(gw, presented(gw, kind="kerberos")))

        assert error.reason.code == "identity.presented"
        assert "'kerberos'" in error.reason.detail


class TestIdentify:
    """
    L{Gateway.identify} proves a token outside a session.
    """

    def run(self, gw: Fixture, token: str, protocol: str = "fake") -> Any:
        results: list[Any] = []
        gw.gateway.identify(token, protocol, "127.0.0.1:1").addBoth(results.append)
        gw.clock.advance(1)
        [result] = results
        return result

    def test_good_token(self, gw: Fixture) -> None:
        assert self.run(gw, GOOD) == identity()

    def test_bad_token_after_delay(self, gw: Fixture) -> None:
        """
        A token the verifier rejects fails with the identity code, only
        after the refusal delay.
        """
        results: list[Any] = []
        gw.gateway.identify("forged", "fake").addBoth(results.append)
        gw.clock.advance(0.2)
        assert results == []

        gw.clock.advance(0.1)
        [result] = results
        assert refusal(result).reason.code == "identity.signature"

    def test_no_access_rule(self, gw: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(FakeVerifier, "identities", {"m": certified("mallory")})

        error = refusal(self.run(gw, "m"))

        assert error.reason.code == "access.denied"
        assert error.reason.subject == "mallory"

    def test_no_target_of_protocol(self, gw: Fixture) -> None:
        """
        An identity whose rules reach no target of the protocol asked
        for is refused.
        """
        error = refusal(self.run(gw, GOOD, protocol="ssh"))

        assert error.reason.code == "access.denied"
        assert error.reason.detail == "ci-runner may reach no ssh target"

    def test_stage_failure_fails_closed(
        self, gw: Fixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        An exception in the identity stage is a refusal, never an
        identity.
        """

        def broken(token: str) -> Any:
            raise RuntimeError("verifier bug")

        monkeypatch.setattr(gw.gateway.verifier, "verify", broken)

        error = refusal(self.run(gw, GOOD))

        assert error.reason.code == "interceptor.failure"
        assert isinstance(error, SessionRefusedError)
