"""
The SSH plugin's own configuration values, read and checked at load.

test-case-name: tests.unit.ssh.test_plugin
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import stat
from pathlib import Path

from attrs import field, frozen
from twisted.conch.ssh.keys import Key

from hoopgate.plugin import (
    ConfigReader,
    Credential,
    ListenerConfig,
    Secret,
    Session,
)
from hoopgate_plugins.ssh._certs import (
    CAKey,
    CertificateError,
    CertificatePolicy,
    load_ca_key,
    public_blob,
)
from hoopgate_plugins.ssh._keys import (
    KeyFileError,
    known_host_keys,
    parse_private_key,
    public_key_blob,
)

#: Environment variables a client may set on the target by default.
DEFAULT_ACCEPT_ENV = ("LANG", "LC_*")


#: The longest validity a listener may give its certificates.
MAX_CERTIFICATE_VALIDITY = 86400.0


@frozen
class CertificateSettings:
    """
    A listener's SSH certificate authority.

    Attributes:
        ca_key_file: The CA private key file, or C{""} when this listener
            only verifies certificates another gateway's CA signed.
        ca_key: That key, loaded (not compared: C{trusted} holds its
            public half).
        trusted: Blobs of the CA public keys accepted at login: the
            signing key's own, and older ones kept while rotating.
        policy: What issued certificates grant.
    """

    ca_key_file: str
    # Loaded keys do not compare equal; the key's public half, in
    # trusted, tells a changed key.
    ca_key: CAKey | None = field(eq=False)
    trusted: frozenset[bytes]
    policy: CertificatePolicy


@frozen
class ListenerSettings:
    """
    The SSH keys of a listener.

    Attributes:
        host_key: The gateway's host private key file; created on first
            start when absent.
        failure_delay: Seconds to wait before answering a failed login.
        login_timeout: Seconds a client has to log in.
        certificates: The certificate authority, when the listener takes
            certificate logins (C{publickey}).
    """

    host_key: str
    failure_delay: float
    login_timeout: float
    certificates: CertificateSettings | None = None


@frozen
class ForwardRule:
    """
    A destination a C{direct-tcpip} channel may reach from the target.

    Attributes:
        host: A host name or address pattern (C{fnmatch}, C{*} for any).
        port: The port, or C{None} for any port.
    """

    host: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        """
        Whether C{host:port} is this destination.
        """
        if self.port is not None and self.port != port:
            return False
        return fnmatch.fnmatchcase(host.lower(), self.host.lower())


@frozen
class TargetSettings:
    """
    The SSH keys of a target.

    Attributes:
        host_keys: The target's accepted host key blobs (pinned).
        accept_env: Patterns of environment variable names a client may
            pass (C{env} requests); others are dropped and recorded.
        forward_to: Destinations C{direct-tcpip} channels may reach;
            empty refuses every forward.
        connect_timeout: Seconds to wait for the target's TCP connect.
        login_timeout: Seconds the target has to accept the gateway's
            login.
    """

    host_keys: frozenset[bytes]
    accept_env: tuple[str, ...]
    forward_to: tuple[ForwardRule, ...]
    connect_timeout: float
    login_timeout: float

    def env_allowed(self, name: str) -> bool:
        """
        Whether a client may set environment variable C{name}.
        """
        return any(fnmatch.fnmatchcase(name, p) for p in self.accept_env)

    def forward_allowed(self, host: str, port: int) -> bool:
        """
        Whether a forward to C{host:port} (as the target resolves it) is
        allowed.
        """
        return any(rule.matches(host, port) for rule in self.forward_to)


def read_listener(reader: ConfigReader) -> ListenerSettings:
    """
    Read and check the SSH keys of a listener.
    """
    certificates = None
    if reader.has("certificates"):
        certificates = _read_certificates(reader.section("certificates"))
    return ListenerSettings(
        host_key=reader.string("host_key"),
        failure_delay=reader.duration("failure_delay", 1.0),
        login_timeout=reader.duration("login_timeout", 60.0),
        certificates=certificates,
    )


def _load_ca(reader: ConfigReader) -> tuple[str, CAKey]:
    path = reader.string("ca_key")
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise reader.error("ca_key", f"{path} is not a file")
        if status.st_mode & 0o077:
            raise reader.error(
                "ca_key", f"{path} must be readable by its owner only (chmod 600)"
            )
        data = Path(path).read_bytes()
    except OSError as e:
        raise reader.error("ca_key", f"cannot read {path}: {e.strerror}") from None
    try:
        return path, load_ca_key(data, path)
    except CertificateError as e:
        raise reader.error("ca_key", str(e)) from None


def _read_sources(reader: ConfigReader) -> tuple[str, ...]:
    blocks = reader.strings("source_address", ())
    for block in blocks:
        if block == "requester":
            continue
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            message = f"{block!r} is not a CIDR block or requester"
            raise reader.error("source_address", message) from None
    return blocks


def _read_certificates(reader: ConfigReader) -> CertificateSettings:
    path, ca = _load_ca(reader) if reader.has("ca_key") else ("", None)
    trusted = {public_blob(ca)} if ca is not None else set()
    for line in reader.strings("trusted_ca_keys", ()):
        try:
            trusted.add(public_key_blob(line))
        except ValueError as e:
            raise reader.error("trusted_ca_keys", str(e)) from None
    if not trusted:
        raise reader.error("ca_key", "certificates need ca_key or trusted_ca_keys")

    validity = reader.duration("validity", 600.0)
    if validity > MAX_CERTIFICATE_VALIDITY:
        raise reader.error("validity", "must be at most 24h")
    policy = CertificatePolicy(
        validity=validity,
        permit_pty=reader.boolean("permit_pty", True),
        permit_port_forwarding=reader.boolean("permit_port_forwarding", True),
        source_address=_read_sources(reader),
    )
    reader.done()
    return CertificateSettings(
        ca_key_file=path, ca_key=ca, trusted=frozenset(trusted), policy=policy
    )


def _read_forward(reader: ConfigReader, text: str) -> ForwardRule:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise reader.error("forward_to", f"{text!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    if port == "*":
        return ForwardRule(host, None)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise reader.error("forward_to", f"{text!r} has no valid port")
    return ForwardRule(host, int(port))


def _read_host_keys(reader: ConfigReader, host: str, port: int) -> frozenset[bytes]:
    blobs: set[bytes] = set()
    for line in reader.strings("host_keys", ()):
        try:
            blobs.add(public_key_blob(line))
        except ValueError as e:
            raise reader.error("host_keys", str(e)) from None

    if reader.has("known_hosts"):
        path = reader.string("known_hosts")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            message = f"cannot read {path}: {e.strerror}"
            raise reader.error("known_hosts", message) from None
        found = known_host_keys(text.splitlines(), host, port)
        if not found:
            name = host if port == 22 else f"[{host}]:{port}"
            raise reader.error("known_hosts", f"{path} has no key for {name}")
        blobs |= found

    if not blobs:
        raise reader.error(
            "known_hosts", "a target needs known_hosts or host_keys (fail closed)"
        )
    return frozenset(blobs)


def _check_credential_keys(reader: ConfigReader) -> None:
    # The core reads the credential sets; the gateway logs in to SSH
    # targets with keys only, so each set needs a private key that
    # parses, or the configuration is refused here, at load.
    for section in reader.sections("credentials"):
        if not section.has("private_key"):
            raise section.error(
                "private_key", "an SSH credential set needs the key it logs in with"
            )
        secret = section.secret("private_key")
        try:
            parse_private_key(secret.reveal().encode("utf-8"), _where(secret))
        except KeyFileError as e:
            raise section.error("private_key", str(e)) from None


def read_target(reader: ConfigReader) -> TargetSettings:
    """
    Read and check the SSH keys of a target.
    """
    host = reader.string("host")
    port = reader.integer("port", low=1, high=65535)
    forward_to = tuple(
        _read_forward(reader, t) for t in reader.strings("forward_to", ())
    )
    _check_credential_keys(reader)

    return TargetSettings(
        host_keys=_read_host_keys(reader, host, port),
        accept_env=reader.strings("accept_env", DEFAULT_ACCEPT_ENV),
        forward_to=forward_to,
        connect_timeout=reader.duration("connect_timeout", 10.0),
        login_timeout=reader.duration("login_timeout", 30.0),
    )


def listener_settings(listener: ListenerConfig) -> ListenerSettings:
    """
    The SSH keys of a listener the plugin read.
    """
    settings = listener.settings
    assert isinstance(settings, ListenerSettings)
    return settings


def login_key(credential: Credential) -> Key:
    """
    The private key a credential set logs in with (checked at load).
    """
    secret = credential.private_key
    if secret is None:
        raise KeyFileError(f"credential set {credential.name!r} has no private key")
    return parse_private_key(secret.reveal().encode("utf-8"), _where(secret))


def _where(secret: Secret) -> str:
    return f"the key from {secret.source}"


def target_settings(session: Session) -> TargetSettings:
    """
    The SSH keys of a session's target.
    """
    settings = session.target.settings
    assert isinstance(settings, TargetSettings)
    return settings
