"""
OpenSSH user certificates: the gateway's CA issues them for a proven
identity and the SSH listener verifies them at login.

Conch's key parser does not read certificates; the C{cryptography}
package does, and checks their signatures.  A certificate the gateway
issues carries the identity policy needs, signed by its CA:

  - principal: the identity's subject (the only one);
  - key id: the subject too, so sshd-style logs name the caller;
  - extension C{identity@hoopgate}: JSON with C{sub}, C{iss}, C{groups}
    and C{tid} (the token id hash of the token it was issued for);
  - valid before: the identity's expiry, never later than the token's;
  - extensions C{permit-pty} and C{permit-port-forwarding}, and the
    critical option C{source-address}, from the listener's settings.

Verification trusts only the listener's CA public keys (the signing
key's own and any older ones kept for rotation), refuses host
certificates, certificates outside their validity, any principal list
other than exactly the subject, and any critical option but
C{source-address}, which must list the client's address.

test-case-name: tests.unit.ssh.test_certs
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import struct
from typing import Any

from attrs import frozen
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import Key

from hoopgate.plugin import Identity
from hoopgate_plugins.ssh._keys import fingerprint

#: The extension holding the identity, as JSON.
IDENTITY_EXTENSION = b"identity@hoopgate"

#: Extensions the gateway grants and honours.
PERMIT_PTY = b"permit-pty"
PERMIT_PORT_FORWARDING = b"permit-port-forwarding"

#: The only critical option the gateway understands (and enforces).
SOURCE_ADDRESS = b"source-address"

#: Seconds a certificate is valid before it was issued, for clock skew
#: between the gateway processes that issue and verify it.
BACKDATE = 30

#: Userauth algorithm names of certificates the gateway accepts, with
#: the signature type each one's signature must have.
CERT_SIGNATURES: dict[bytes, bytes] = {
    b"ssh-ed25519-cert-v01@openssh.com": b"ssh-ed25519",
    b"ecdsa-sha2-nistp256-cert-v01@openssh.com": b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384-cert-v01@openssh.com": b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521-cert-v01@openssh.com": b"ecdsa-sha2-nistp521",
    b"rsa-sha2-256-cert-v01@openssh.com": b"rsa-sha2-256",
    b"rsa-sha2-512-cert-v01@openssh.com": b"rsa-sha2-512",
}

_RSA_CERT = b"ssh-rsa-cert-v01@openssh.com"

#: Smallest RSA key the gateway certifies.
MIN_RSA_BITS = 2048


class CertificateError(Exception):
    """
    A certificate or a key to certify is refused; the message says why
    (for the log and, when issuing, for the caller: it holds no secret).
    """


@frozen
class Permissions:
    """
    What a session may ask for beyond commands.

    Attributes:
        pty: Terminals (C{pty-req}).
        port_forwarding: C{direct-tcpip} channels.
    """

    pty: bool = True
    port_forwarding: bool = True


@frozen
class CertificatePolicy:
    """
    What the gateway puts into the certificates it issues.

    Attributes:
        validity: Seconds a certificate is valid (less when the token
            expires sooner).
        permit_pty: Grant C{permit-pty}.
        permit_port_forwarding: Grant C{permit-port-forwarding}.
        source_address: CIDR blocks for C{source-address}; C{requester}
            stands for the address that asked for the certificate.
            Empty: no such option.
    """

    validity: float = 600.0
    permit_pty: bool = True
    permit_port_forwarding: bool = True
    source_address: tuple[str, ...] = ()


@frozen
class Issued:
    """
    A certificate the CA signed.

    Attributes:
        text: The OpenSSH line, for C{NAME-cert.pub}.
        serial: Its serial number.
        valid_before: POSIX time it stops being valid.
        principals: Its principals.
    """

    text: str
    serial: int
    valid_before: int
    principals: tuple[str, ...]


@frozen
class Certified:
    """
    A certificate that passed verification.

    Attributes:
        identity: The identity it carries; C{expires_at} is its end.
        permissions: The extensions it grants.
        serial: Its serial number.
        ca: The fingerprint of the CA key that signed it.
        key: Its public key, which the client's signature must match.
    """

    identity: Identity
    permissions: Permissions
    serial: int
    ca: str
    key: Key


CAKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_ca_key(data: bytes, where: str) -> CAKey:
    """
    A CA private key in OpenSSH or PEM form, unencrypted.

    Raises:
        CertificateError: It is not such a key of a type that signs
            certificates.
    """
    key: Any
    try:
        key = ser.load_ssh_private_key(data, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = ser.load_pem_private_key(data, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CertificateError(
                f"{where} is not an unencrypted private key"
            ) from None
    if not isinstance(key, CAKey):
        raise CertificateError(f"{where} is not an Ed25519, ECDSA or RSA key")
    return key


def public_blob(key: CAKey) -> bytes:
    """
    The wire form of a CA key's public half (as trusted CA keys are kept).
    """
    line = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return Key.fromString(line).blob()  # type: ignore[no-any-return]


def _user_key(line: str) -> Any:
    try:
        found = ser.load_ssh_public_identity(line.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise CertificateError("public_key is not an OpenSSH public key line") from None
    if isinstance(found, ser.SSHCertificate):
        raise CertificateError("public_key is a certificate, not a public key")
    if isinstance(found, rsa.RSAPublicKey) and found.key_size < MIN_RSA_BITS:
        raise CertificateError(f"RSA keys need at least {MIN_RSA_BITS} bits")
    if not isinstance(
        found, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    ):
        raise CertificateError("public_key must be an Ed25519, ECDSA or RSA key")
    return found


def _source_address(policy: CertificatePolicy, requester: str) -> bytes:
    blocks = []
    for block in policy.source_address:
        if block == "requester":
            address = ipaddress.ip_address(requester)
            blocks.append(f"{address}/{address.max_prefixlen}")
        else:
            blocks.append(block)
    return ",".join(blocks).encode("ascii")


def identity_claims(identity: Identity) -> bytes:
    """
    The C{identity@hoopgate} extension's value for C{identity}.
    """
    claims = {
        "sub": identity.subject,
        "iss": identity.issuer,
        "groups": list(identity.groups),
        "tid": identity.token_id_hash,
    }
    return json.dumps(claims, sort_keys=True, separators=(",", ":")).encode("utf-8")


def issue(
    ca: CAKey,
    policy: CertificatePolicy,
    identity: Identity,
    public_key: str,
    *,
    requester: str,
    now: float,
) -> Issued:
    """
    Sign a user certificate for C{public_key} carrying C{identity}.

    Args:
        ca: The CA private key.
        policy: Validity, extensions and critical options.
        identity: The proven identity.
        public_key: The OpenSSH public key line to certify.
        requester: The address that asked (for C{source-address}).
        now: The current POSIX time.

    Raises:
        CertificateError: The key cannot be certified.
    """
    key = _user_key(public_key)
    before = int(now + policy.validity)
    if identity.expires_at is not None:
        before = min(before, int(identity.expires_at))
    if before <= now:
        raise CertificateError("the token expires before a certificate could be used")
    serial = secrets.randbits(63)
    subject = identity.subject.encode("utf-8")

    builder = (
        ser.SSHCertificateBuilder()
        .public_key(key)
        .serial(serial)
        .type(ser.SSHCertificateType.USER)
        .key_id(subject)
        .valid_principals([subject])
        .valid_after(max(0, int(now) - BACKDATE))
        .valid_before(before)
        .add_extension(IDENTITY_EXTENSION, identity_claims(identity))
    )
    if policy.permit_pty:
        builder = builder.add_extension(PERMIT_PTY, b"")
    if policy.permit_port_forwarding:
        builder = builder.add_extension(PERMIT_PORT_FORWARDING, b"")
    if policy.source_address:
        value = _source_address(policy, requester)
        builder = builder.add_critical_option(SOURCE_ADDRESS, value)

    certificate = builder.sign(ca)
    comment = f" {identity.subject}@hoopgate-{serial}"
    return Issued(
        text=certificate.public_bytes().decode("ascii") + comment,
        serial=serial,
        valid_before=before,
        principals=(identity.subject,),
    )


def _parse(blob: bytes) -> ser.SSHCertificate:
    try:
        kind = getNS(blob)[0]
        line = kind + b" " + base64.b64encode(blob)
        found = ser.load_ssh_public_identity(line)
    except (ValueError, UnsupportedAlgorithm, struct.error):
        raise CertificateError("not a readable OpenSSH certificate") from None
    if not isinstance(found, ser.SSHCertificate):
        raise CertificateError("a plain key, not a certificate")
    return found


def _check_signature(certificate: ser.SSHCertificate, trusted: frozenset[bytes]) -> str:
    signer = certificate.signature_key()
    line = signer.public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    blob: bytes = Key.fromString(line).blob()
    if blob not in trusted:
        raise CertificateError(f"signed by an untrusted CA {fingerprint(blob)}")
    try:
        certificate.verify_cert_signature()
    except InvalidSignature:
        raise CertificateError("its CA signature is not valid") from None
    return fingerprint(blob)


def _check_time(certificate: ser.SSHCertificate, now: float) -> None:
    if now < certificate.valid_after:
        raise CertificateError("not valid yet")
    if now >= certificate.valid_before:
        raise CertificateError("expired")


def _in_blocks(value: bytes, peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
        blocks = [
            ipaddress.ip_network(b.strip(), strict=False)
            for b in value.decode("ascii").split(",")
        ]
    except (ValueError, UnicodeDecodeError):
        return False
    return any(address in block for block in blocks)


def _check_options(certificate: ser.SSHCertificate, peer: str) -> None:
    options = certificate.critical_options
    unknown = sorted(set(options) - {SOURCE_ADDRESS})
    if unknown:
        names = ", ".join(n.decode("ascii", "replace") for n in unknown)
        raise CertificateError(
            f"critical options the gateway does not enforce: {names}"
        )
    if SOURCE_ADDRESS in options and not _in_blocks(options[SOURCE_ADDRESS], peer):
        raise CertificateError(f"source-address does not include {peer}")


def _identity(certificate: ser.SSHCertificate) -> Identity:
    raw = certificate.extensions.get(IDENTITY_EXTENSION)
    if raw is None:
        raise CertificateError("no identity@hoopgate extension")
    try:
        claims = json.loads(raw)
        subject, issuer = claims["sub"], claims["iss"]
        groups, token_id = claims["groups"], claims["tid"]
    except (ValueError, KeyError, TypeError):
        raise CertificateError("an unreadable identity@hoopgate extension") from None
    texts = [subject, issuer, token_id, *groups] if isinstance(groups, list) else []
    if not texts or not all(isinstance(t, str) for t in texts) or not subject:
        raise CertificateError("an unreadable identity@hoopgate extension")
    if certificate.valid_principals != [subject.encode("utf-8")]:
        raise CertificateError(f"its principals are not exactly {subject!r}")
    return Identity(
        subject=subject,
        issuer=issuer,
        groups=tuple(groups),
        token_id_hash=token_id,
        expires_at=float(certificate.valid_before),
        claims=(("ssh_certificate_serial", str(certificate.serial)),),
    )


def verify(
    blob: bytes, trusted: frozenset[bytes], *, now: float, peer: str
) -> Certified:
    """
    Check a user certificate a client presented.

    Args:
        blob: The certificate's wire form.
        trusted: Blobs of the CA public keys to trust.
        now: The current POSIX time.
        peer: The client's IP address.

    Raises:
        CertificateError: It is refused; the message says why.
    """
    certificate = _parse(blob)
    if certificate.type != ser.SSHCertificateType.USER:
        raise CertificateError("a host certificate, not a user certificate")
    ca = _check_signature(certificate, trusted)
    _check_time(certificate, now)
    _check_options(certificate, peer)
    identity = _identity(certificate)

    extensions = certificate.extensions
    line = certificate.public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH
    )
    return Certified(
        identity=identity,
        permissions=Permissions(
            pty=PERMIT_PTY in extensions,
            port_forwarding=PERMIT_PORT_FORWARDING in extensions,
        ),
        serial=certificate.serial,
        ca=ca,
        key=Key.fromString(line),
    )


def signature_matches(
    certified: Certified, algorithm: bytes, blob: bytes, signature: bytes, data: bytes
) -> bool:
    """
    Whether a userauth signature proves the certificate's private key.

    Args:
        certified: The verified certificate.
        algorithm: The userauth request's algorithm name.
        blob: The certificate's wire form from the request.
        signature: The request's signature (type and signature blob).
        data: The signed data.
    """
    wanted = CERT_SIGNATURES.get(algorithm)
    if wanted is None:
        return False
    try:
        kind = getNS(blob)[0]
        signed_as = getNS(signature)[0]
    except struct.error:
        return False
    if kind != algorithm and not (kind == _RSA_CERT and wanted.startswith(b"rsa-")):
        return False
    if signed_as != wanted:
        return False
    try:
        return bool(certified.key.verify(signature, data))
    except (ValueError, struct.error):
        return False


__all__ = [
    "CERT_SIGNATURES",
    "CAKey",
    "CertificateError",
    "CertificatePolicy",
    "Certified",
    "Issued",
    "Permissions",
    "identity_claims",
    "issue",
    "load_ca_key",
    "public_blob",
    "signature_matches",
    "verify",
]
