"""
The certificate endpoint: a token and a public key in, a certificate of
the listener's CA out, refusals in HTTP terms.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyRequest

from hoopgate.plugin import DenyReason, Identity, SessionRefusedError
from hoopgate_plugins.ssh._certs import CertificatePolicy, public_blob, verify
from hoopgate_plugins.ssh._issuer import MAX_BODY, certificate_resource
from hoopgate_plugins.ssh._settings import CertificateSettings

NOW = 1_800_000_000.0
GOOD = "good-token"


class Gateway:
    """
    Proves one token; refuses others as the identity stage or the
    access policy would.
    """

    def __init__(self) -> None:
        self.reactor = Clock()
        self.reactor.advance(NOW)
        self.asked: list[tuple[str, str, str]] = []

    def identify(self, token: str, protocol: str, peer: str = "") -> Deferred[Any]:
        self.asked.append((token, protocol, peer))
        if token == GOOD:
            identity = Identity(
                subject="ci-runner", issuer="https://id.test", expires_at=NOW + 3600
            )
            return succeed(identity)
        if token == "mallory":
            reason = DenyReason("access.denied", "access denied", "no rule")
        else:
            reason = DenyReason("identity.signature", "authentication failed", "bad")
        return fail(SessionRefusedError(reason))


class Request(DummyRequest):
    """
    A POST with a body, from an address, over HTTPS or not.
    """

    def __init__(
        self, body: bytes, host: str = "127.0.0.1", secure: bool = False
    ) -> None:
        super().__init__([])
        self.method = b"POST"
        self.content = io.BytesIO(body)
        self.client = IPv4Address("TCP", host, 40000)
        self.secure = secure

    def isSecure(self) -> bool:
        return self.secure


def authority(ca: ed25519.Ed25519PrivateKey) -> CertificateSettings:
    return CertificateSettings(
        ca_key_file="ca",
        ca_key=ca,
        trusted=frozenset({public_blob(ca)}),
        policy=CertificatePolicy(validity=300),
    )


def user_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH
    )
    return public.decode() + " me@laptop"


class Fixture:
    def __init__(self) -> None:
        self.ca = ed25519.Ed25519PrivateKey.generate()
        self.gateway = Gateway()
        root = certificate_resource(self.gateway, {"ssh": authority(self.ca)})  # type: ignore[arg-type]
        assert root is not None
        self.resource = root.getChildWithDefault(b"certificates", DummyRequest([]))

    def post(self, body: object, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = Request(data, **kwargs)
        result = self.resource.render(request)
        if result == server.NOT_DONE_YET:
            assert request.finished == 1
            written = b"".join(request.written)
        else:
            assert (request.finished, request.written) == (0, [])
            written = result
        answer = json.loads(written)
        assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]
        return request.responseCode or 200, answer


@pytest.fixture
def f() -> Fixture:
    return Fixture()


class TestCertificates:
    def test_issues(self, f: Fixture) -> None:
        """
        A good token and a public key get a certificate of the CA, for
        the identity, that verifies at login from the requester.
        """
        code, answer = f.post({"token": GOOD, "public_key": user_line()})

        assert code == 200
        assert answer["principals"] == ["ci-runner"]
        assert answer["valid_before"] == NOW + 300
        blob = base64.b64decode(answer["certificate"].split()[1])
        certified = verify(
            blob, frozenset({public_blob(f.ca)}), now=NOW, peer="127.0.0.1"
        )
        assert certified.identity.subject == "ci-runner"
        assert certified.serial == answer["serial"]
        assert f.gateway.asked == [(GOOD, "ssh", "127.0.0.1")]

    def test_bad_token(self, f: Fixture) -> None:
        code, answer = f.post({"token": "forged", "public_key": user_line()})

        assert (code, answer) == (401, {"error": "authentication failed"})

    def test_no_access(self, f: Fixture) -> None:
        code, answer = f.post({"token": "mallory", "public_key": user_line()})

        assert (code, answer) == (403, {"error": "access denied"})

    def test_bad_key(self, f: Fixture) -> None:
        code, answer = f.post({"token": GOOD, "public_key": "ssh-ed25519 AAAA"})

        assert code == 400
        assert "not an OpenSSH public key" in answer["error"]

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (b"{", "the body is not JSON"),
            (b"[]", "the body must be a JSON object"),
            ({"public_key": "x"}, "token is required (text)"),
            ({"token": GOOD}, "public_key is required (text)"),
            ({"token": GOOD, "public_key": "x", "listener": "nope"}, None),
        ],
    )
    def test_bad_requests(self, f: Fixture, body: object, error: str | None) -> None:
        """
        Malformed requests are answered at once and never reach the
        identity stage.
        """
        code, answer = f.post(body)

        assert code in (400, 404)
        assert answer["error"] == (error or "no such SSH listener with a CA")
        assert f.gateway.asked == []

    def test_too_large(self, f: Fixture) -> None:
        code, _ = f.post(b" " * (MAX_BODY + 1))

        assert code == 413

    def test_cleartext_from_network(self, f: Fixture) -> None:
        """
        Over plain HTTP, a token from another host is refused unread.
        """
        body = {"token": GOOD, "public_key": user_line()}

        code, answer = f.post(body, host="192.0.2.7")

        assert code == 403
        assert answer["error"].startswith("use HTTPS")
        assert f.gateway.asked == []

    def test_https_from_network(self, f: Fixture) -> None:
        body = {"token": GOOD, "public_key": user_line()}

        code, _ = f.post(body, host="192.0.2.7", secure=True)

        assert code == 200

    def test_no_signing_listener(self) -> None:
        """
        Listeners that only verify serve nothing here.
        """
        ca = ed25519.Ed25519PrivateKey.generate()
        verifying = CertificateSettings(
            ca_key_file="",
            ca_key=None,
            trusted=frozenset({public_blob(ca)}),
            policy=CertificatePolicy(),
        )

        assert certificate_resource(Gateway(), {"ssh": verifying}) is None  # type: ignore[arg-type]
