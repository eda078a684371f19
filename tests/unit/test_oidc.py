"""
Tests for L{hoopgate._oidc}: access-token verification against issuers.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwk, jwt
from joserfc.jws import JWSRegistry
from OpenSSL import SSL
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IStreamServerEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from twisted.web.server import Request
from zope.interface import implementer

from hoopgate import _oidc
from hoopgate._identity import Identity
from hoopgate._oidc import (
    MAX_DOCUMENT_SIZE,
    MAX_TOKEN_SIZE,
    IssuerConfig,
    OIDCVerifier,
    TokenRejected,
    validate_algorithms,
)

ISSUER = "https://id.example.test"
AUDIENCE = "https://hoopgate.test"
DISCOVERY_URL = ISSUER + "/.well-known/openid-configuration"
JWKS_URL = ISSUER + "/keys"
NOW = 1_700_000_000

RSA_KEY = jwk.RSAKey.generate_key(
    2048, parameters={"kid": "rsa-1", "alg": "RS256", "use": "sig"}
)
NEW_RSA_KEY = jwk.RSAKey.generate_key(
    2048, parameters={"kid": "rsa-2", "alg": "RS256", "use": "sig"}
)
EC_KEY = jwk.ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


def public(*keys: jwk.Key) -> dict[str, Any]:
    """
    A JWKS document publishing the public halves of C{keys}.
    """
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(**changes: Any) -> dict[str, Any]:
    """
    Valid access-token claims at L{NOW}, with C{changes}; a change to
    C{None} removes the claim.
    """
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "ci-runner",
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
        "jti": "token-1",
        "client_id": "svc-ci",
        "scope": "db:read db:write",
        "groups": ["dba", "oncall"],
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(
    payload: dict[str, Any],
    key: jwk.Key = RSA_KEY,
    **header: Any,
) -> str:
    """
    Sign C{payload} with C{key}; the header defaults to RS256, C{typ}
    C{at+jwt} and the key's kid.
    """
    fields = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid, **header}
    fields = {name: value for name, value in fields.items() if value is not None}
    registry = JWSRegistry(algorithms=[fields["alg"]], strict_check_header=False)
    registry.max_header_length = 4096
    return jwt.encode(fields, payload, key, registry=registry, default_type=None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def handmade(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """
    The signing input of a token whose parts we write by hand.
    """
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())


class FakeIssuer:
    """
    Serve discovery and JWKS documents through an injected C{fetch}.

    Attributes:
        documents: JSON documents by URL.
        calls: Every URL fetched, in order.
        failing: URLs whose fetch fails.
        holding: When true, fetches wait in C{pending} until released.
        pending: Fetches held, with their URL.
    """

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {
            DISCOVERY_URL: {"issuer": ISSUER, "jwks_uri": JWKS_URL},
            JWKS_URL: public(RSA_KEY, EC_KEY),
        }
        self.calls: list[str] = []
        self.failing: set[str] = set()
        self.holding = False
        self.pending: list[tuple[Deferred[bytes], str]] = []

    def fetch(self, url: str) -> Deferred[bytes]:
        self.calls.append(url)
        if url in self.failing or url not in self.documents:
            return fail(ConnectionRefusedError(url))
        if self.holding:
            waiting: Deferred[bytes] = Deferred()
            self.pending.append((waiting, url))
            return waiting
        return succeed(self.body(url))

    def body(self, url: str) -> bytes:
        document = self.documents[url]
        if isinstance(document, bytes):
            return document
        return json.dumps(document).encode()

    def release(self) -> None:
        """
        Answer every held fetch.
        """
        pending, self.pending = self.pending, []
        for waiting, url in pending:
            waiting.callback(self.body(url))

    def count(self, url: str) -> int:
        return self.calls.count(url)


class VerifierTestCase(SynchronousTestCase):
    """
    A verifier for L{ISSUER} on a L{Clock} at L{NOW}, served by a
    L{FakeIssuer}, and typed helpers over trial's unannotated assertions.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.issuer = FakeIssuer()
        self.verifier = self.make_verifier()

    def make_verifier(self, **changes: Any) -> OIDCVerifier:
        config = IssuerConfig(
            name="corp",
            issuer=ISSUER,
            audiences=(AUDIENCE, "https://other.test"),
            groups_claim="groups",
        )
        return OIDCVerifier(
            [attrs.evolve(config, **changes)],
            reactor=self.clock,
            fetch=self.issuer.fetch,
        )

    def verified(self, token: str) -> Identity:
        return self.successResultOf(self.verifier.verify(token))

    def rejected(self, token: str, reason: str) -> TokenRejected:
        """
        Verify C{token}, expecting an immediate refusal for C{reason}.
        """
        error = self.refusal(self.verifier.verify(token))
        assert error.reason == reason, (error.reason, error.detail)
        return error

    def refusal(self, result: Deferred[Identity]) -> TokenRejected:
        """
        The L{TokenRejected} C{result} has failed with.
        """
        # trial's failureResultOf is unannotated (Twisted 26.10).
        failure = self.failureResultOf(result)  # type: ignore[no-untyped-call]
        assert isinstance(failure.value, TokenRejected), failure
        return failure.value

    def log_events(self) -> EventLoggingObserver:
        # Annotated for trial's TestCase; it only needs addCleanup.
        return EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )

    def logged_errors(self, kind: type[Exception]) -> int:
        """
        Count and forget the failures of C{kind} logged so far.
        """
        # trial's flushLoggedErrors is unannotated (Twisted 26.10).
        return len(self.flushLoggedErrors(kind))  # type: ignore[no-untyped-call]


class AcceptTests(VerifierTestCase):
    """
    Valid tokens become identities.
    """

    def test_identity_fields(self) -> None:
        """
        The identity carries subject, issuer, groups, a hash of the jti,
        the end of its use (exp plus the 30 s leeway) and the recorded
        non-secret claims.
        """
        token = sign(claims(repository="org/app", ref=7))

        identity = self.verified(token)

        assert identity == Identity(
            subject="ci-runner",
            issuer=ISSUER,
            groups=("dba", "oncall"),
            token_id_hash=hashlib.sha256(b"token-1").hexdigest()[:16],
            expires_at=float(NOW + 300 + 30),
            claims=(
                ("client_id", "svc-ci"),
                ("scope", "db:read db:write"),
                ("repository", "org/app"),
            ),
        )

    def test_hashes_token_without_jti(self) -> None:
        """
        Without a jti, the token id hash is taken from the whole token.
        """
        token = sign(claims(jti=None))

        identity = self.verified(token)

        expected = hashlib.sha256(token.encode()).hexdigest()[:16]
        assert identity.token_id_hash == expected
        assert len(identity.token_id_hash) == 16

    def test_groups_from_string(self) -> None:
        """
        A groups claim given as one string is split on spaces and commas.
        """
        token = sign(claims(groups="dba, oncall  ops"))

        assert self.verified(token).groups == ("dba", "oncall", "ops")

    def test_no_groups_claim(self) -> None:
        """
        A token without the groups claim has no groups.
        """
        assert self.verified(sign(claims(groups=None))).groups == ()

    def test_custom_subject_claim(self) -> None:
        """
        The subject comes from the configured claim.
        """
        self.verifier = self.make_verifier(subject_claim="client_id")

        assert self.verified(sign(claims())).subject == "svc-ci"

    def test_audience_list(self) -> None:
        """
        An audience list is accepted when one entry is configured.
        """
        token = sign(claims(aud=["https://else.test", "https://other.test"]))

        assert self.verified(token).subject == "ci-runner"

    def test_token_types(self) -> None:
        """
        typ may be JWT, at+jwt (RFC 9068, with or without its media-type
        prefix, in any case) or absent.
        """
        for typ in ("JWT", "at+jwt", "application/at+JWT", None):
            with self.subTest(typ=typ):
                token = sign(claims(), typ=typ)
                assert self.verified(token).subject == "ci-runner"

    def test_es256(self) -> None:
        """
        An ES256 token verifies with the issuer's EC key.
        """
        token = sign(claims(), key=EC_KEY, alg="ES256")

        assert self.verified(token).subject == "ci-runner"

    def test_without_kid_single_key(self) -> None:
        """
        A token naming no kid verifies when one key fits its algorithm.
        """
        token = sign(claims(), kid=None)

        assert self.verified(token).subject == "ci-runner"

    def test_near_size_limit(self) -> None:
        """
        A token just under 16 KiB, with a large header, is accepted: the
        library's own 512-byte header limit does not apply, and header
        parameters we do not know are ignored.
        """
        note = "n" * 1000
        room = MAX_TOKEN_SIZE - len(sign(claims(padding=""), note=note))
        token = sign(claims(padding="x" * (room * 3 // 4 - 10)), note=note)
        assert MAX_TOKEN_SIZE - 20 < len(token) <= MAX_TOKEN_SIZE

        assert self.verified(token).subject == "ci-runner"

    def test_leeway(self) -> None:
        """
        A token expired less than the leeway ago is still accepted, and
        usable until the leeway is over: its identity expires then.
        """
        token = sign(claims(exp=NOW - 20, nbf=NOW + 20))

        assert self.verified(token).expires_at == NOW + 10

    def test_usable_until_the_leeway_ends(self) -> None:
        """
        Acceptance and the identity's expiry follow one rule: a token is
        accepted up to the instant its identity expires, not from then
        on, to the fraction of a second.
        """
        token = sign(claims(exp=NOW - 5))
        self.verifier = self.make_verifier(leeway=12.5)
        expires_at = self.verified(token).expires_at
        assert expires_at is not None

        self.clock.advance(expires_at - self.clock.seconds() - 0.01)
        still = self.verified(token).expires_at
        self.clock.advance(0.01)
        error = self.rejected(token, "expired")

        assert expires_at == NOW - 5 + 12.5
        assert still == expires_at
        assert "leeway is 12.5s" in error.detail

    def test_fractional_times(self) -> None:
        """
        A fractional exp and a clock between seconds count exactly: the
        token is refused once exp plus leeway has passed, though the
        whole second has not.
        """
        token = sign(claims(exp=NOW - 29.5))
        accepted = self.verified(token).expires_at

        self.clock.advance(0.7)

        self.rejected(token, "expired")
        assert accepted == NOW + 0.5


class RejectTests(VerifierTestCase):
    """
    Invalid tokens are refused with a precise reason.
    """

    def test_expired(self) -> None:
        """
        A token that expired beyond the leeway is refused as expired.
        """
        error = self.rejected(sign(claims(exp=NOW - 31)), "expired")

        assert str(NOW - 31) in error.detail

    def test_not_yet_valid(self) -> None:
        """
        A token whose nbf is beyond the leeway is refused.
        """
        self.rejected(sign(claims(nbf=NOW + 31)), "not_yet_valid")

    def test_issued_in_future(self) -> None:
        """
        A token issued beyond the leeway in the future is refused.
        """
        self.rejected(sign(claims(iat=NOW + 600, nbf=None)), "not_yet_valid")

    def test_wrong_audience(self) -> None:
        """
        A token for another audience is refused.
        """
        error = self.rejected(sign(claims(aud="https://evil.test")), "audience")

        assert "'https://evil.test'" in error.detail

    def test_unknown_issuer(self) -> None:
        """
        A token from an issuer not configured is refused without fetching.
        """
        token = sign(claims(iss="https://evil.test"))

        self.rejected(token, "unknown_issuer")
        assert self.issuer.calls == []

    def test_issuer_must_match_exactly(self) -> None:
        """
        An issuer URL differing only by a trailing slash is another issuer.
        """
        self.rejected(sign(claims(iss=ISSUER + "/")), "unknown_issuer")

    def test_discovery_issuer_mismatch(self) -> None:
        """
        A discovery document naming another issuer yields no keys.
        """
        self.issuer.documents[DISCOVERY_URL]["issuer"] = "https://evil.test"

        error = self.rejected(sign(claims()), "issuer_unreachable")

        assert "'https://evil.test'" in error.detail
        assert self.issuer.count(JWKS_URL) == 0

    def test_alg_none(self) -> None:
        """
        An unsigned token (alg none) is refused, whatever it claims.
        """
        token = handmade({"alg": "none", "typ": "JWT"}, claims()) + "."

        error = self.rejected(token, "algorithm")

        assert error.detail == "alg 'none' is never accepted"
        assert self.issuer.calls == []

    def test_alg_none_case(self) -> None:
        """
        alg none is refused in any spelling.
        """
        token = handmade({"alg": "nOnE"}, claims()) + ".c2ln"

        self.rejected(token, "algorithm")

    def test_hmac_with_public_key(self) -> None:
        """
        A token MACed with the issuer's public key as the HMAC secret is
        refused (the RS256/HS256 confusion).
        """
        header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
        signing_input = handmade(header, claims())
        secret = RSA_KEY.as_pem(private=False)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

        error = self.rejected(signing_input + "." + b64(mac), "algorithm")

        assert "HS256" in error.detail
        assert self.issuer.calls == []

    def test_algorithm_not_configured(self) -> None:
        """
        An algorithm outside the issuer's list is refused.
        """
        self.verifier = self.make_verifier(algorithms=("ES256",))

        self.rejected(sign(claims()), "algorithm")

    def test_key_type_mismatch(self) -> None:
        """
        A token claiming ES256 but naming an RSA key's kid finds no key.
        """
        token = sign(claims(), key=EC_KEY, alg="ES256", kid="rsa-1")

        self.rejected(token, "unknown_key")

    def test_no_kid_several_keys(self) -> None:
        """
        A token naming no kid is refused when several keys could verify it.
        """
        self.issuer.documents[JWKS_URL] = public(RSA_KEY, NEW_RSA_KEY)

        error = self.rejected(sign(claims(), kid=None), "unknown_key")

        assert error.detail == (
            "the token names no kid and issuer corp has no single RS256 key"
        )

    def test_tampered_payload(self) -> None:
        """
        A payload changed after signing fails the signature check.
        """
        header, _, signature = sign(claims()).split(".")
        forged = b64(json.dumps(claims(sub="admin")).encode())

        self.rejected(f"{header}.{forged}.{signature}", "signature")

    def test_signed_by_other_key(self) -> None:
        """
        A token signed by a key the issuer does not publish, naming a kid
        the issuer does publish, fails the signature check.
        """
        impostor = jwk.RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})

        self.rejected(sign(claims(), key=impostor), "signature")

    def test_missing_exp(self) -> None:
        """
        A token without exp is refused.
        """
        error = self.rejected(sign(claims(exp=None)), "missing_claim")

        assert error.detail == "the token lacks exp"

    def test_missing_required_claim(self) -> None:
        """
        A token without a configured required claim is refused.
        """
        self.verifier = self.make_verifier(required_claims=("client_id", "env"))

        error = self.rejected(sign(claims()), "missing_claim")

        assert error.detail == "the token lacks required claim env"

    def test_missing_subject(self) -> None:
        """
        A token without its subject, or with an empty one, is refused.
        """
        self.rejected(sign(claims(sub=None)), "missing_claim")
        self.rejected(sign(claims(sub="")), "missing_claim")

    def test_subject_not_text(self) -> None:
        """
        A subject that is not printable text is refused.
        """
        self.verifier = self.make_verifier(subject_claim="uid")

        self.rejected(sign(claims(uid=42)), "malformed")
        self.rejected(sign(claims(uid="alice\nbob")), "malformed")

    def test_groups_not_names(self) -> None:
        """
        A groups claim that is neither a string nor a list of strings is
        refused rather than ignored.
        """
        self.rejected(sign(claims(groups=[1, 2])), "malformed")
        self.rejected(sign(claims(groups={"a": 1})), "malformed")

    def test_oversized(self) -> None:
        """
        A token over 16 KiB is refused before it is decoded.
        """
        token = sign(claims(padding="x" * MAX_TOKEN_SIZE))

        error = self.rejected(token, "malformed")

        assert "over the limit of 16384" in error.detail
        assert self.issuer.calls == []

    def test_other_token_type(self) -> None:
        """
        A typ other than JWT or at+jwt (here an ID token's sibling, a
        logout token) is refused.
        """
        self.rejected(sign(claims(), typ="logout+jwt"), "malformed")

    def test_critical_header(self) -> None:
        """
        A header demanding an extension we do not know is refused.
        """
        header = {"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}
        token = handmade(header, claims()) + ".c2ln"

        error = self.rejected(token, "malformed")

        assert error.detail == "header parameter crit is not supported"

    def test_duplicate_members(self) -> None:
        """
        A payload naming a member twice is refused: parsers disagree on
        which value wins.
        """
        payload = json.dumps(claims())[:-1] + ', "sub": "admin"}'
        token = b64(b'{"alg":"RS256"}') + "." + b64(payload.encode()) + ".c2ln"

        self.rejected(token, "malformed")

    def test_not_text(self) -> None:
        """
        Something other than a string is refused.
        """
        self.rejected(b"abc.def.ghi", "malformed")  # type: ignore[arg-type]

    def test_non_finite_exp(self) -> None:
        """
        An exp of NaN or of an enormous integer is refused.
        """
        header = {"alg": "RS256", "kid": "rsa-1"}
        body = handmade(header, claims())
        payload = json.dumps(claims()).replace(str(NOW + 300), "NaN")
        token = body.split(".")[0] + "." + b64(payload.encode()) + ".c2ln"

        self.rejected(token, "malformed")
        self.rejected(sign(claims(exp=10**400)), "malformed")


class KeyRefreshTests(VerifierTestCase):
    """
    Keys are cached, refreshed on rotation at a bounded rate, fetched once
    for concurrent callers and kept when a refresh fails.
    """

    def test_cached(self) -> None:
        """
        Two tokens within the cache lifetime cause one discovery and one
        JWKS fetch.
        """
        self.verified(sign(claims()))
        self.clock.advance(299)
        self.verified(sign(claims()))

        assert self.issuer.calls == [DISCOVERY_URL, JWKS_URL]

    def test_expires(self) -> None:
        """
        After the cache lifetime, the keys are fetched again.
        """
        self.verified(sign(claims()))
        self.clock.advance(300)
        self.verified(sign(claims(exp=NOW + 900)))

        assert self.issuer.count(JWKS_URL) == 2

    def test_removed_key_expires(self) -> None:
        """
        A key the issuer stops publishing stops verifying tokens once the
        cache lifetime is over.
        """
        self.verified(sign(claims()))
        self.issuer.documents[JWKS_URL] = public(NEW_RSA_KEY)
        self.clock.advance(300)

        self.rejected(sign(claims(exp=NOW + 900)), "unknown_key")

        assert self.issuer.count(JWKS_URL) == 2

    def test_unknown_kid_refreshes(self) -> None:
        """
        A token naming a new kid causes one refetch, which finds the key.
        """
        self.verified(sign(claims()))
        self.issuer.documents[JWKS_URL] = public(RSA_KEY, NEW_RSA_KEY)
        self.clock.advance(30)

        identity = self.verified(sign(claims(), key=NEW_RSA_KEY))

        assert identity.subject == "ci-runner"
        assert self.issuer.count(JWKS_URL) == 2

    def test_unknown_kid_rate_limited(self) -> None:
        """
        Two tokens naming unknown kids within the refresh interval cause
        one refetch; after the interval, another is allowed.
        """
        self.verified(sign(claims()))
        self.clock.advance(30)

        self.rejected(sign(claims(), key=NEW_RSA_KEY), "unknown_key")
        self.clock.advance(29)
        error = self.rejected(sign(claims(), key=NEW_RSA_KEY), "unknown_key")
        assert self.issuer.count(JWKS_URL) == 2

        self.clock.advance(1)
        self.rejected(sign(claims(), key=NEW_RSA_KEY), "unknown_key")
        assert self.issuer.count(JWKS_URL) == 3
        assert error.detail == "issuer corp has no RS256 key with kid 'rsa-2'"

    def test_concurrent_coalesced(self) -> None:
        """
        Many tokens arriving before the keys are fetched share one fetch.
        """
        self.issuer.holding = True
        results = [self.verifier.verify(sign(claims())) for _ in range(20)]
        assert self.issuer.calls == [DISCOVERY_URL]
        assert all(not result.called for result in results)

        self.issuer.release()
        self.issuer.release()

        assert self.issuer.calls == [DISCOVERY_URL, JWKS_URL]
        subjects = {self.successResultOf(r).subject for r in results}
        assert subjects == {"ci-runner"}

    def test_cancelled_waiter(self) -> None:
        """
        A caller may cancel its verification while the shared fetch is
        under way; the others still get their answer.
        """
        self.issuer.holding = True
        first, second = (self.verifier.verify(sign(claims())) for _ in range(2))

        first.cancel()
        self.issuer.release()
        self.issuer.release()

        self.failureResultOf(first, CancelledError)  # type: ignore[no-untyped-call]
        assert self.successResultOf(second).subject == "ci-runner"

    def test_failed_refresh_keeps_keys(self) -> None:
        """
        When a refresh fails, the keys fetched before stay in use and the
        failure is logged as a warning.
        """
        events = self.log_events()
        self.verified(sign(claims()))
        self.issuer.failing.add(DISCOVERY_URL)
        self.clock.advance(400)

        identity = self.verified(sign(claims(exp=NOW + 900)))

        assert identity.subject == "ci-runner"
        assert self.issuer.count(DISCOVERY_URL) == 2
        warned = [e for e in events if e.get("problem")]
        assert len(warned) == 1
        assert warned[0]["log_level"].name == "warn"
        assert warned[0]["count"] == 2

    def test_unreachable(self) -> None:
        """
        Without keys, a failed fetch refuses tokens as issuer_unreachable;
        retries wait for the refresh interval.
        """
        self.issuer.failing.add(DISCOVERY_URL)

        error = self.rejected(sign(claims()), "issuer_unreachable")
        self.clock.advance(10)
        self.rejected(sign(claims()), "issuer_unreachable")
        assert self.issuer.count(DISCOVERY_URL) == 1
        assert "ConnectionRefusedError" in error.detail

        self.issuer.failing.clear()
        self.clock.advance(20)
        assert self.verified(sign(claims(exp=NOW + 900))).subject == "ci-runner"

    def test_timeout(self) -> None:
        """
        A fetch that does not answer within five seconds fails.
        """
        self.issuer.holding = True
        result = self.verifier.verify(sign(claims()))

        self.clock.advance(5)

        error = self.refusal(result)
        assert error.reason == "issuer_unreachable"
        assert "timed out after 5s" in error.detail

    def test_configured_jwks_uri(self) -> None:
        """
        With a configured jwks_uri, discovery is skipped.
        """
        self.verifier = self.make_verifier(jwks_uri=JWKS_URL)

        self.verified(sign(claims()))

        assert self.issuer.calls == [JWKS_URL]

    def test_plain_http_jwks_uri(self) -> None:
        """
        Discovery of an https issuer may not send us to plain http.
        """
        plain = "http://id.example.test/keys"
        self.issuer.documents[DISCOVERY_URL]["jwks_uri"] = plain

        error = self.rejected(sign(claims()), "issuer_unreachable")

        assert "plain http" in error.detail

    def test_unusable_keys_skipped(self) -> None:
        """
        Symmetric keys, private keys, encryption keys and garbage in the
        JWKS are ignored; the usable keys still work.
        """
        document = public(RSA_KEY)
        document["keys"][:0] = [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1"},
            NEW_RSA_KEY.as_dict(private=True) | {"kid": "rsa-1"},
            EC_KEY.as_dict(private=False) | {"use": "enc"},
            {"kty": "RSA", "n": 5},
            "junk",
        ]
        self.issuer.documents[JWKS_URL] = document

        assert self.verified(sign(claims())).subject == "ci-runner"
        self.rejected(sign(claims(), key=EC_KEY, alg="ES256"), "unknown_key")

    def test_no_usable_keys(self) -> None:
        """
        A JWKS holding no usable key counts as a failed fetch.
        """
        self.issuer.documents[JWKS_URL] = {"keys": [{"kty": "oct", "k": "eA"}]}

        error = self.rejected(sign(claims()), "issuer_unreachable")

        assert error.detail.endswith("no usable public signing key")

    def test_large_document(self) -> None:
        """
        A document over 1 MiB is refused.
        """
        self.issuer.documents[JWKS_URL] = b" " * (MAX_DOCUMENT_SIZE + 1) + b"{}"

        error = self.rejected(sign(claims()), "issuer_unreachable")

        assert "more than 1048576 bytes" in error.detail

    def test_not_json(self) -> None:
        """
        A discovery answer that is not JSON is refused.
        """
        self.issuer.documents[DISCOVERY_URL] = b"<html>"

        error = self.rejected(sign(claims()), "issuer_unreachable")

        assert "did not send valid JSON" in error.detail

    def test_prime(self) -> None:
        """
        prime fetches the keys once, after which tokens need no fetch.
        """
        self.successResultOf(self.verifier.prime())
        self.verified(sign(claims()))

        assert self.issuer.calls == [DISCOVERY_URL, JWKS_URL]

    def test_prime_never_fails(self) -> None:
        """
        prime logs an unreachable issuer as an error and succeeds anyway.
        """
        events = self.log_events()
        self.issuer.failing.add(DISCOVERY_URL)

        assert self.successResultOf(self.verifier.prime()) is None

        errors = [e for e in events if e["log_level"].name == "error"]
        assert [e["issuer"] for e in errors] == ["corp"]


class FailClosedTests(VerifierTestCase):
    """
    Our own bugs refuse tokens and are logged as failures; tokens are never
    logged.
    """

    def test_bug_in_verification(self) -> None:
        """
        An unexpected exception while verifying becomes a refusal.
        """

        def broken(
            token: str, claims: Any, config: IssuerConfig, usable_until: float
        ) -> Identity:
            raise ZeroDivisionError()

        self.addCleanup(setattr, _oidc, "_identity", _oidc._identity)
        _oidc._identity = broken

        error = self.rejected(sign(claims()), "malformed")

        assert error.detail == "internal error while verifying the token"
        assert self.logged_errors(ZeroDivisionError) == 1

    def test_bug_in_fetch(self) -> None:
        """
        An exception raised by fetch itself is logged and treated as an
        unreachable issuer.
        """

        def broken(url: str) -> Deferred[bytes]:
            raise ZeroDivisionError()

        self.issuer.fetch = broken  # type: ignore[method-assign]
        self.verifier = self.make_verifier()

        self.rejected(sign(claims()), "issuer_unreachable")
        assert self.logged_errors(ZeroDivisionError) == 1

    def test_token_never_logged(self) -> None:
        """
        Neither accepted nor refused tokens appear in any log event.
        """
        events = self.log_events()
        tokens = [
            sign(claims()),
            sign(claims(exp=NOW - 100)),
            sign(claims(aud="x")),
            sign(claims(), key=NEW_RSA_KEY),
        ]

        for token in tokens:
            self.verifier.verify(token).addErrback(lambda f: None)

        assert len(events) >= 4
        for event in events:
            text = formatEvent(event) + repr(event)
            for token in tokens:
                assert token not in text
                assert token.split(".")[2] not in text


class GarbageTests(VerifierTestCase):
    """
    Whatever is presented, verification fails only with L{TokenRejected}.
    """

    def assert_refused(self, token: str) -> None:
        error = self.refusal(self.verifier.verify(token))
        assert error.detail != "internal error while verifying the token"

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_text(self, token: str) -> None:
        """
        Arbitrary text is refused.
        """
        self.assert_refused(token)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=40),
            min_size=1,
            max_size=5,
        )
    )
    def test_dotted(self, parts: list[str]) -> None:
        """
        Dotted base64url-looking strings are refused.
        """
        self.assert_refused(".".join(parts))

    @settings(max_examples=300, deadline=None)
    @given(
        header=st.dictionaries(
            st.sampled_from(["alg", "typ", "kid", "crit", "b64", "x"]),
            st.sampled_from(["RS256", "ES256", "none", "HS256", "rsa-1", 1, None])
            | st.lists(st.text(max_size=3), max_size=2),
        ),
        payload=st.dictionaries(
            st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]),
            st.sampled_from([ISSUER, AUDIENCE, NOW, NOW + 60, -1, 1e308, True])
            | st.text(max_size=5)
            | st.lists(st.sampled_from([AUDIENCE, 1]), max_size=2),
        ),
        signature=st.binary(max_size=300),
    )
    def test_structured(
        self, header: dict[str, Any], payload: dict[str, Any], signature: bytes
    ) -> None:
        """
        Well-formed tokens with arbitrary headers and claims and random
        signatures are refused.
        """
        self.assert_refused(handmade(header, payload) + "." + b64(signature))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


class SignedClaimsTests(VerifierTestCase):
    """
    Whatever a correctly signed token claims, the result is an identity or
    a L{TokenRejected}, never our own error.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        changes=st.dictionaries(
            st.sampled_from(
                [
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "nbf",
                    "iat",
                    "jti",
                    "groups",
                    "scope",
                    "client_id",
                ]
            ),
            JSON_VALUES,
        )
    )
    def test_signed_claims(self, changes: dict[str, Any]) -> None:
        """
        Arbitrary values in the claims we read are judged, never crash.
        """
        result = self.verifier.verify(sign(claims(**changes)))

        outcome = self.successResultOf(result.addErrback(lambda f: f.value))
        if isinstance(outcome, TokenRejected):
            assert outcome.detail != "internal error while verifying the token"
        else:
            assert isinstance(outcome, Identity)
            assert outcome.subject == changes.get("sub", "ci-runner")


class ConfigTests(SynchronousTestCase):
    """
    Issuer configuration refuses what can never be safe.
    """

    def test_refuses_unsafe_algorithms(self) -> None:
        """
        none, HMAC, unknown algorithms, an empty list and a bare string are
        refused.
        """
        for algorithms in (
            ["none"],
            ["RS256", "HS256"],
            ["hs512"],
            ["RS1"],
            [],
            "RS256",
        ):
            with (
                self.subTest(algorithms=algorithms),
                pytest.raises(ValueError, match=r"never|unsupported|least|list"),
            ):
                validate_algorithms(algorithms)

    def test_accepts_asymmetric_algorithms(self) -> None:
        """
        Asymmetric algorithms are accepted.
        """
        validate_algorithms(["RS256", "PS384", "ES512", "Ed25519"])

    def test_config_refuses_hmac(self) -> None:
        """
        An issuer cannot be configured with HS256.
        """
        with pytest.raises(ValueError, match="'HS256' is never accepted"):
            IssuerConfig(
                name="x",
                issuer=ISSUER,
                audiences=(AUDIENCE,),
                algorithms=("HS256",),
            )

    def test_config_values(self) -> None:
        """
        Issuers need an http(s) URL and at least one audience given as a
        tuple; jwks_uri, leeway and the intervals are checked.
        """
        base: dict[str, Any] = {
            "name": "x",
            "issuer": ISSUER,
            "audiences": (AUDIENCE,),
        }
        for change in (
            {"issuer": "id.example.test"},
            {"issuer": "ftp://id.example.test"},
            {"issuer": ISSUER + "?x=1"},
            {"audiences": ()},
            {"audiences": AUDIENCE},
            {"jwks_uri": "file:///etc/keys"},
            {"leeway": -1},
            {"leeway": True},
            {"cache_ttl": 0},
            {"name": ""},
            {"groups_claim": ""},
        ):
            with self.subTest(change=change), pytest.raises((ValueError, TypeError)):
                IssuerConfig(**(base | change))

    def test_refuses_duplicate_issuer(self) -> None:
        """
        One issuer URL cannot be configured twice.
        """
        config = IssuerConfig(name="a", issuer=ISSUER, audiences=(AUDIENCE,))
        twin = attrs.evolve(config, name="b")

        with pytest.raises(ValueError, match="configured twice"):
            OIDCVerifier([config, twin], reactor=Clock(), fetch=FakeIssuer().fetch)

    def test_needs_a_way_to_fetch(self) -> None:
        """
        Without agent or fetch, the reactor must be able to connect.
        """
        config = IssuerConfig(name="a", issuer=ISSUER, audiences=(AUDIENCE,))

        with pytest.raises(TypeError, match="pass an agent or fetch"):
            OIDCVerifier([config], reactor=Clock())

    def test_refuses_unreadable_ca_file(self) -> None:
        """
        A ca_file that cannot be read fails at start, not at first use.
        """
        config = IssuerConfig(
            name="a", issuer=ISSUER, audiences=(AUDIENCE,), ca_file="/nonexistent"
        )

        with pytest.raises(ValueError, match="ca_file '/nonexistent'"):
            OIDCVerifier([config], reactor=global_reactor)


class IssuerResource(resource.Resource):
    """
    A test issuer serving JSON documents by path, counting requests.

    Attributes:
        documents: Document makers by request path.
        status: Response codes by request path (200 when absent).
        hits: Requests by path.
    """

    isLeaf = True

    def __init__(self) -> None:
        # Resource.__init__ is unannotated (Twisted 26.10).
        super().__init__()  # type: ignore[no-untyped-call]
        self.documents: dict[bytes, Callable[[], bytes]] = {}
        self.status: dict[bytes, int] = {}
        self.hits: Counter[bytes] = Counter()

    def render_GET(self, request: Request) -> bytes:
        path = request.path
        self.hits[path] += 1
        if path not in self.documents:
            request.setResponseCode(404)
            return b"{}"

        request.setResponseCode(self.status.get(path, 200))
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [b"application/json"])
        return self.documents[path]()


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """
    The TLS context of the test issuer, built from cryptography objects.
    """

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
    ) -> None:
        self.key = key
        self.certificate = certificate

    def getContext(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate(self.certificate)
        context.use_privatekey(self.key)
        return context


def private_ca(directory: str) -> tuple[str, ServerTLS]:
    """
    Make a CA, written to a PEM file in C{directory}, and a server
    certificate for 127.0.0.1 that it signed.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))

    ca = (
        certificate_builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        certificate_builder(leaf_name, ca_name, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName([loopback]), False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = os.path.join(directory, "ca.pem")
    with open(ca_path, "wb") as pem:
        pem.write(ca.public_bytes(serialization.Encoding.PEM))
    return ca_path, ServerTLS(server_key, leaf)


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
    )


class HTTPIssuerTests(TestCase):
    """
    Discovery and JWKS over real HTTP(S) from an issuer on loopback, with
    the verifier's own HTTP client on the global reactor.
    """

    async def serve(self, tls: ServerTLS | None = None) -> IssuerResource:
        """
        Start the issuer on a free loopback port; its URL is C{self.url}.
        """
        issuer = IssuerResource()
        issuer.documents[b"/.well-known/openid-configuration"] = lambda: json.dumps(
            {"issuer": self.url, "jwks_uri": self.url + "/jwks"}
        ).encode()
        issuer.documents[b"/jwks"] = lambda: json.dumps(public(RSA_KEY)).encode()

        port = await self.listen(issuer, tls)
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{address.port}"
        return issuer

    async def listen(
        self, root: resource.Resource, tls: ServerTLS | None = None
    ) -> IListeningPort:
        endpoint: IStreamServerEndpoint
        if tls is None:
            endpoint = TCP4ServerEndpoint(global_reactor, 0, interface="127.0.0.1")
        else:
            endpoint = SSL4ServerEndpoint(global_reactor, 0, tls, interface="127.0.0.1")
        site = server.Site(root)
        # IStreamServerEndpoint.listen is unannotated (Twisted 26.10).
        port: IListeningPort = await endpoint.listen(site)  # type: ignore[no-untyped-call]
        return port

    def verifier(self, **changes: Any) -> OIDCVerifier:
        config = IssuerConfig(name="local", issuer=self.url, audiences=(AUDIENCE,))
        return OIDCVerifier([attrs.evolve(config, **changes)], reactor=global_reactor)

    def token(self) -> str:
        return sign(claims(iss=self.url, iat=None, nbf=None, exp=2**31))

    async def refusal(self, result: Deferred[Identity]) -> TokenRejected:
        try:
            identity = await result
        except TokenRejected as error:
            return error
        raise AssertionError(f"accepted as {identity}")

    async def test_discovery_and_coalescing(self) -> None:
        """
        Ten concurrent verifications fetch discovery and JWKS once each over
        real HTTP, and all succeed.
        """
        issuer = await self.serve()
        verifier = self.verifier()

        results = [verifier.verify(self.token()) for _ in range(10)]
        identities = [await result for result in results]

        assert {identity.issuer for identity in identities} == {self.url}
        assert issuer.hits == {
            b"/.well-known/openid-configuration": 1,
            b"/jwks": 1,
        }

    async def test_http_error(self) -> None:
        """
        An HTTP error status counts as an unreachable issuer.
        """
        issuer = await self.serve()
        issuer.status[b"/jwks"] = 404

        error = await self.refusal(self.verifier().verify(self.token()))

        assert error.reason == "issuer_unreachable"
        assert error.detail.endswith("/jwks: HTTP status 404")

    async def test_large_body(self) -> None:
        """
        A JWKS over 1 MiB is abandoned once the limit is crossed.
        """
        issuer = await self.serve()
        issuer.documents[b"/jwks"] = lambda: b" " * (MAX_DOCUMENT_SIZE + 10)

        error = await self.refusal(self.verifier().verify(self.token()))

        assert error.reason == "issuer_unreachable"
        assert "response larger than 1048576 bytes" in error.detail

    async def test_https_with_ca_file(self) -> None:
        """
        HTTPS certificates are verified: a private CA given as ca_file is
        trusted, and without it the same issuer is unreachable.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        ca_path, tls = private_ca(directory)
        await self.serve(tls)

        identity = await self.verifier(ca_file=ca_path).verify(self.token())
        error = await self.refusal(self.verifier().verify(self.token()))

        assert identity.issuer == self.url
        assert error.reason == "issuer_unreachable"
        assert "certificate verify failed" in error.detail

    async def test_connection_refused(self) -> None:
        """
        A closed port makes the issuer unreachable, naming the cause.
        """
        port = await self.listen(IssuerResource())
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        self.url = f"http://127.0.0.1:{address.port}"
        stopped = port.stopListening()
        if stopped is not None:
            await stopped

        error = await self.refusal(self.verifier().verify(self.token()))

        assert error.reason == "issuer_unreachable"
        assert "ConnectionRefusedError" in error.detail
