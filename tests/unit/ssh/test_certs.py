"""
The gateway's SSH certificates: issued for an identity, verified at
login, refused for every way they can be wrong.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key

from hoopgate.plugin import Identity
from hoopgate_plugins.ssh._certs import (
    IDENTITY_EXTENSION,
    CertificateError,
    CertificatePolicy,
    Permissions,
    identity_claims,
    issue,
    load_ca_key,
    public_blob,
    signature_matches,
    verify,
)

NOW = 1_800_000_000.0
PEER = "127.0.0.1"
ED25519_CERT = b"ssh-ed25519-cert-v01@openssh.com"

IDENTITY = Identity(
    subject="ci-runner",
    issuer="https://id.example.test",
    groups=("deployers",),
    token_id_hash="0123456789abcdef",
    expires_at=NOW + 3600,
)


def public_line(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    data = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return data.decode("ascii") + " someone@laptop"


def blob_of(text: str) -> bytes:
    """
    The wire form of an OpenSSH key or certificate line.
    """
    return base64.b64decode(text.split()[1])


class Fixture:
    def __init__(self) -> None:
        self.ca = ed25519.Ed25519PrivateKey.generate()
        self.user = ed25519.Ed25519PrivateKey.generate()
        self.trusted = frozenset({public_blob(self.ca)})

    def issue(
        self,
        policy: CertificatePolicy | None = None,
        identity: Identity = IDENTITY,
        now: float = NOW,
    ) -> bytes:
        issued = issue(
            self.ca,
            policy or CertificatePolicy(),
            identity,
            public_line(self.user),
            requester=PEER,
            now=now,
        )
        return blob_of(issued.text)

    def built(
        self,
        *,
        principals: list[bytes] | None = None,
        before: float = NOW + 600,
        after: float = NOW - 30,
        kind: ser.SSHCertificateType = ser.SSHCertificateType.USER,
        options: dict[bytes, bytes] | None = None,
        extensions: dict[bytes, bytes] | None = None,
        ca: ed25519.Ed25519PrivateKey | None = None,
    ) -> bytes:
        """
        A certificate built by hand, as an attacker or a broken CA would.
        """
        builder = (
            ser.SSHCertificateBuilder()
            .public_key(self.user.public_key())
            .serial(7)
            .type(kind)
            .key_id(b"ci-runner")
            .valid_after(int(after))
            .valid_before(int(before))
        )
        if principals == []:
            # cryptography leaves this builder method unannotated.
            builder = builder.valid_for_all_principals()  # type: ignore[no-untyped-call]
        else:
            builder = builder.valid_principals(principals or [b"ci-runner"])
        if extensions is None:
            extensions = {IDENTITY_EXTENSION: identity_claims(IDENTITY)}
        for name, value in sorted(extensions.items()):
            builder = builder.add_extension(name, value)
        for name, value in sorted((options or {}).items()):
            builder = builder.add_critical_option(name, value)
        certificate = builder.sign(ca or self.ca)
        return blob_of(certificate.public_bytes().decode("ascii"))

    def verify(self, blob: bytes, now: float = NOW, peer: str = PEER) -> object:
        return verify(blob, self.trusted, now=now, peer=peer)


@pytest.fixture
def f() -> Fixture:
    return Fixture()


def refused(f: Fixture, blob: bytes, **kwargs: object) -> str:
    with pytest.raises(CertificateError) as caught:
        f.verify(blob, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


class TestIssueAndVerify:
    """
    What the CA issues verifies, and carries the identity.
    """

    def test_round_trip(self, f: Fixture) -> None:
        """
        The certificate carries subject, issuer, groups and token id
        hash; it expires at its valid_before, and grants what the policy
        says.
        """
        certified = verify(f.issue(), f.trusted, now=NOW, peer=PEER)

        assert certified.identity == Identity(
            subject="ci-runner",
            issuer="https://id.example.test",
            groups=("deployers",),
            token_id_hash="0123456789abcdef",
            expires_at=NOW + 600,
            claims=(("ssh_certificate_serial", str(certified.serial)),),
        )
        assert certified.permissions == Permissions(pty=True, port_forwarding=True)
        assert certified.key.blob() == blob_of(public_line(f.user))

    def test_openssh_form(self, f: Fixture) -> None:
        """
        The text is an OpenSSH certificate line: principal and key id
        are the subject, the validity starts a little before now.
        """
        issued = issue(
            f.ca,
            CertificatePolicy(validity=300),
            IDENTITY,
            public_line(f.user),
            requester=PEER,
            now=NOW,
        )
        certificate = ser.load_ssh_public_identity(issued.text.encode())

        assert isinstance(certificate, ser.SSHCertificate)
        assert issued.text.startswith("ssh-ed25519-cert-v01@openssh.com ")
        assert certificate.valid_principals == [b"ci-runner"]
        assert certificate.key_id == b"ci-runner"
        assert (certificate.valid_after, certificate.valid_before) == (
            NOW - 30,
            NOW + 300,
        )
        assert issued.valid_before == NOW + 300
        claims = json.loads(certificate.extensions[IDENTITY_EXTENSION])
        assert claims == {
            "sub": "ci-runner",
            "iss": "https://id.example.test",
            "groups": ["deployers"],
            "tid": "0123456789abcdef",
        }

    def test_never_outlives_the_token(self, f: Fixture) -> None:
        identity = Identity(subject="ci-runner", issuer="i", expires_at=NOW + 90)

        certified = f.verify(f.issue(identity=identity))

        assert certified.identity.expires_at == NOW + 90  # type: ignore[attr-defined]

    def test_token_already_expired(self, f: Fixture) -> None:
        identity = Identity(subject="ci-runner", issuer="i", expires_at=NOW)

        with pytest.raises(CertificateError, match="expires before"):
            f.issue(identity=identity)

    def test_policy_without_extensions(self, f: Fixture) -> None:
        policy = CertificatePolicy(permit_pty=False, permit_port_forwarding=False)

        certified = f.verify(f.issue(policy))

        assert certified.permissions == Permissions(False, False)  # type: ignore[attr-defined]

    def test_source_address_requester(self, f: Fixture) -> None:
        """
        C{requester} binds the certificate to the address that asked.
        """
        blob = f.issue(CertificatePolicy(source_address=("requester",)))

        assert f.verify(blob, peer=PEER)
        assert "does not include 10.1.2.3" in refused(f, blob, peer="10.1.2.3")

    def test_source_address_blocks(self, f: Fixture) -> None:
        blob = f.issue(CertificatePolicy(source_address=("10.0.0.0/8", "::1/128")))

        assert f.verify(blob, peer="10.9.8.7")
        assert f.verify(blob, peer="::1")
        assert "source-address" in refused(f, blob, peer="127.0.0.1")

    def test_ecdsa_user_key(self, f: Fixture) -> None:
        f.user = ec.generate_private_key(ec.SECP256R1())  # type: ignore[assignment]

        certified = f.verify(f.issue())

        assert certified.identity.subject == "ci-runner"  # type: ignore[attr-defined]


class TestIssueRefusals:
    """
    Keys the CA will not certify.
    """

    def test_not_a_key(self, f: Fixture) -> None:
        with pytest.raises(CertificateError, match="not an OpenSSH public key"):
            issue(
                f.ca,
                CertificatePolicy(),
                IDENTITY,
                "hello",
                requester=PEER,
                now=NOW,
            )

    def test_certificate_as_key(self, f: Fixture) -> None:
        """
        A certificate sent as the key to certify is refused, not
        re-signed.
        """
        text = issue(
            f.ca,
            CertificatePolicy(),
            IDENTITY,
            public_line(f.user),
            requester=PEER,
            now=NOW,
        ).text

        with pytest.raises(CertificateError, match="is a certificate"):
            issue(f.ca, CertificatePolicy(), IDENTITY, text, requester=PEER, now=NOW)

    def test_small_rsa(self, f: Fixture) -> None:
        # A weak key on purpose: the CA must refuse to certify it.
        small = rsa.generate_private_key(65537, 1024)  # noqa: S505
        line = (
            small.public_key()
            .public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
            .decode()
        )

        with pytest.raises(CertificateError, match="at least 2048 bits"):
            issue(f.ca, CertificatePolicy(), IDENTITY, line, requester=PEER, now=NOW)


class TestVerifyRefusals:
    """
    Every certificate the gateway must not accept, with the reason.
    """

    def test_expired(self, f: Fixture) -> None:
        blob = f.issue()

        assert refused(f, blob, now=NOW + 600) == "expired"

    def test_not_valid_yet(self, f: Fixture) -> None:
        blob = f.issue()

        assert refused(f, blob, now=NOW - 60) == "not valid yet"

    def test_other_ca(self, f: Fixture) -> None:
        """
        A well-formed certificate signed by a CA the listener does not
        trust is refused, naming that CA's fingerprint.
        """
        other = ed25519.Ed25519PrivateKey.generate()

        reason = refused(f, f.built(ca=other))

        assert reason.startswith("signed by an untrusted CA SHA256:")

    def test_rotation(self, f: Fixture) -> None:
        """
        Several trusted CA keys: certificates of an older one still pass.
        """
        old = ed25519.Ed25519PrivateKey.generate()
        f.trusted = f.trusted | {public_blob(old)}

        assert f.verify(f.built(ca=old))

    def test_forged_signature(self, f: Fixture) -> None:
        """
        A certificate whose signature was tampered with is refused even
        though it names a trusted CA.
        """
        blob = bytearray(f.built())
        blob[-1] ^= 1

        assert refused(f, bytes(blob)) == "its CA signature is not valid"

    def test_principal_mismatch(self, f: Fixture) -> None:
        reason = refused(f, f.built(principals=[b"root"]))

        assert reason == "its principals are not exactly 'ci-runner'"

    def test_extra_principal(self, f: Fixture) -> None:
        reason = refused(f, f.built(principals=[b"ci-runner", b"root"]))

        assert "principals" in reason

    def test_no_principals(self, f: Fixture) -> None:
        """
        OpenSSH reads an empty principal list as "anyone": refused.
        """
        assert "principals" in refused(f, f.built(principals=[]))

    def test_host_certificate(self, f: Fixture) -> None:
        blob = f.built(kind=ser.SSHCertificateType.HOST)

        assert refused(f, blob) == "a host certificate, not a user certificate"

    def test_unknown_critical_option(self, f: Fixture) -> None:
        blob = f.built(options={b"force-command": b"/bin/true"})

        reason = refused(f, blob)

        assert reason == "critical options the gateway does not enforce: force-command"

    def test_no_identity(self, f: Fixture) -> None:
        blob = f.built(extensions={b"permit-pty": b""})

        assert refused(f, blob) == "no identity@hoopgate extension"

    def test_bad_identity(self, f: Fixture) -> None:
        blob = f.built(extensions={IDENTITY_EXTENSION: b'{"sub": 1}'})

        assert refused(f, blob) == "an unreadable identity@hoopgate extension"

    def test_plain_key(self, f: Fixture) -> None:
        blob = blob_of(public_line(f.user))

        assert refused(f, blob) == "a plain key, not a certificate"

    def test_garbage(self, f: Fixture) -> None:
        assert (
            refused(f, b"\x00\x00\x00\x05hello") == "not a readable OpenSSH certificate"
        )


class TestSignature:
    """
    The client proves it holds the certified key.
    """

    def test_matches(self, f: Fixture) -> None:
        blob = f.issue()
        certified = verify(blob, f.trusted, now=NOW, peer=PEER)
        private = Key(f.user)
        data = b"session data"

        signature = private.sign(data)

        assert signature_matches(certified, ED25519_CERT, blob, signature, data)
        assert not signature_matches(certified, ED25519_CERT, blob, signature, b"x")

    def test_other_key(self, f: Fixture) -> None:
        """
        A signature by any key but the certified one fails.
        """
        blob = f.issue()
        certified = verify(blob, f.trusted, now=NOW, peer=PEER)
        other = Key(ed25519.Ed25519PrivateKey.generate())

        assert not signature_matches(
            certified, ED25519_CERT, blob, other.sign(b"d"), b"d"
        )

    def test_algorithm_mismatch(self, f: Fixture) -> None:
        blob = f.issue()
        certified = verify(blob, f.trusted, now=NOW, peer=PEER)
        signature = Key(f.user).sign(b"d")

        rsa_name = b"rsa-sha2-256-cert-v01@openssh.com"
        assert not signature_matches(certified, rsa_name, blob, signature, b"d")
        assert not signature_matches(certified, b"ssh-ed25519", blob, signature, b"d")
        assert not signature_matches(
            certified, ED25519_CERT, blob, NS(b"ssh-ed25519"), b"d"
        )


class TestCAKey:
    def test_openssh_and_pem(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        for encoding, form in (
            (ser.Encoding.PEM, ser.PrivateFormat.OpenSSH),
            (ser.Encoding.PEM, ser.PrivateFormat.PKCS8),
        ):
            data = key.private_bytes(encoding, form, ser.NoEncryption())

            loaded = load_ca_key(data, "ca")

            assert public_blob(loaded) == public_blob(key)

    def test_not_a_key(self) -> None:
        with pytest.raises(CertificateError, match="ca is not an unencrypted"):
            load_ca_key(b"nope", "ca")

    def test_encrypted(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(
            ser.Encoding.PEM,
            ser.PrivateFormat.OpenSSH,
            ser.BestAvailableEncryption(b"pw"),
        )

        with pytest.raises(CertificateError, match="not an unencrypted"):
            load_ca_key(data, "ca")
