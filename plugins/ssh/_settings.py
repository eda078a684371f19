"""
The SSH plugin's own configuration values, read and checked at load.

test-case-name: tests.unit.ssh.test_plugin
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen
from twisted.conch.ssh.keys import Key

from hoopgate.plugin import ConfigReader, ListenerConfig, Session
from hoopgate_plugins.ssh._keys import (
    KeyFileError,
    known_host_keys,
    load_private_key,
    public_key_blob,
)

#: Environment variables a client may set on the target by default.
DEFAULT_ACCEPT_ENV = ("LANG", "LC_*")


@frozen
class ListenerSettings:
    """
    The SSH keys of a listener.

    Attributes:
        host_key: The gateway's host private key file; created on first
            start when absent.
        failure_delay: Seconds to wait before answering a failed login.
        login_timeout: Seconds a client has to log in.
    """

    host_key: str
    failure_delay: float
    login_timeout: float


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
        private_keys: The key the gateway logs in with, per credential
            set name.
        accept_env: Patterns of environment variable names a client may
            pass (C{env} requests); others are dropped and recorded.
        forward_to: Destinations C{direct-tcpip} channels may reach;
            empty refuses every forward.
        connect_timeout: Seconds to wait for the target's TCP connect.
        login_timeout: Seconds the target has to accept the gateway's
            login.
    """

    host_keys: frozenset[bytes]
    private_keys: Mapping[str, Key]
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
    return ListenerSettings(
        host_key=reader.string("host_key"),
        failure_delay=reader.duration("failure_delay", 1.0),
        login_timeout=reader.duration("login_timeout", 60.0),
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


def _credential_names(reader: ConfigReader) -> set[str]:
    # The core reads the credential sets; their names are only checked
    # here, so a key for a set that does not exist is an error.
    raw = reader.raw("credentials", None) or []
    return {str(c.get("name")) for c in raw if isinstance(c, dict)}


def _read_private_keys(reader: ConfigReader) -> dict[str, Key]:
    known = _credential_names(reader)
    keys: dict[str, Key] = {}
    for section in reader.sections("private_keys"):
        name = section.string("credential")
        if name not in known:
            raise section.error("credential", f"no credential set named {name!r}")
        if name in keys:
            raise section.error("credential", f"{name!r} has a key already")
        path = section.string("file")
        try:
            keys[name] = load_private_key(path)
        except KeyFileError as e:
            raise section.error("file", str(e)) from None
        section.done()

    missing = sorted(known - set(keys))
    if missing:
        raise reader.error(
            "private_keys", f"credential set {missing[0]!r} has no private key"
        )
    return keys


def read_target(reader: ConfigReader) -> TargetSettings:
    """
    Read and check the SSH keys of a target.
    """
    host = reader.string("host")
    port = reader.integer("port", low=1, high=65535)
    forward_to = tuple(
        _read_forward(reader, t) for t in reader.strings("forward_to", ())
    )

    return TargetSettings(
        host_keys=_read_host_keys(reader, host, port),
        private_keys=_read_private_keys(reader),
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


def target_settings(session: Session) -> TargetSettings:
    """
    The SSH keys of a session's target.
    """
    settings = session.target.settings
    assert isinstance(settings, TargetSettings)
    return settings
