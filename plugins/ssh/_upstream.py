"""
The target's leg of an SSH session: the gateway's own login.

L{connect_upstream} reaches the target over TCP, runs Conch's client
transport, accepts the target's host key only if it is one the target's
settings pin (never trust on first use), logs in with the private key
the gateway holds for the session's credential set, and then starts a
L{ConnectionLeg} whose messages go to the session's relay.

test-case-name: tests.integration.test_ssh_relay
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.conch.error import ConchError
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate_plugins.ssh._keys import fingerprint
from hoopgate_plugins.ssh._legs import (
    ConnectionLeg,
    LegOwner,
    WriteGate,
    attach_gate,
    detach_gate,
)

VERSION = b"SSH-2.0-hoopgate_0.1"


class UpstreamOwner(LegOwner, Protocol):
    """
    What the target's leg reports to (the client's connection).
    """

    def upstream_failed(self, why: str, text: str) -> None:
        """
        The target could not be reached or would not take the login;
        C{why} is for the log, C{text} for the client.
        """

    def upstream_lost(self) -> None:
        """
        The target's connection ended after the login.
        """

    def upstream_resumed(self) -> None:
        """
        The target's socket takes bytes again.
        """


class _KeyLogin(SSHUserAuthClient):
    """
    Logs in with one private key and nothing else.
    """

    preferredOrder = [b"publickey"]  # noqa: RUF012 (Conch's class attribute)

    def __init__(self, user: bytes, key: Key, instance: ConnectionLeg) -> None:
        super().__init__(user, instance)
        self._private = key
        self._offered = False

    def getPublicKey(self) -> Key | None:
        if self._offered:
            return None
        self._offered = True
        public: Key = self._private.public()
        return public

    def getPrivateKey(self) -> defer.Deferred[Key]:
        return defer.succeed(self._private)

    def getPassword(self, prompt: bytes | None = None) -> None:
        return None

    def auth_keyboard_interactive(self) -> bool:
        return False


class UpstreamTransport(SSHClientTransport):
    """
    Conch's client transport with pinned host keys and the gateway's key.

    Args:
        owner: The client's connection, told about progress.
        host_keys: The host key blobs the target may present.
        user: The account on the target.
        key: The private key to log in with.
        target: The target's name, for the log.
    """

    _log = Logger()
    ourVersionString = VERSION

    def __init__(
        self,
        owner: UpstreamOwner,
        host_keys: frozenset[bytes],
        user: str,
        key: Key,
        target: str,
    ) -> None:
        self._owner = owner
        self._host_keys = host_keys
        self._user = user
        self._key = key
        self._target = target
        self.gate: WriteGate | None = None
        self.ready = False
        self.host_key_fingerprint = ""
        self.server_version = ""
        self._failed = False
        self._abandoned = False

    def connectionMade(self) -> None:
        if self._abandoned:
            # The client left while the TCP connection was being made.
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self.gate = attach_gate(self.transport, self._owner.upstream_resumed)
        SSHClientTransport.connectionMade(self)

    def verifyHostKey(self, hostKey: bytes, fingerprint_: bytes) -> Any:
        found = fingerprint(hostKey)
        self.host_key_fingerprint = found
        if hostKey in self._host_keys:
            return defer.succeed(True)
        self._fail(
            f"host key {found} is not one pinned for the target",
            "hoopgate: the target's host key is not the expected one",
        )
        return defer.fail(ConchError("host key not pinned"))

    def connectionSecure(self) -> None:
        self.server_version = self.otherVersionString.decode("ascii", "replace")
        leg = ConnectionLeg("upstream", self._owner, self.gate)
        self.requestService(_KeyLogin(self._user.encode("utf-8"), self._key, leg))

    def mark_ready(self) -> None:
        self.ready = True

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self._log.warn(
            "Target {target} disconnected the gateway: code {code}, {text}",
            target=self._target,
            code=reasonCode,
            text=description.decode("utf-8", "replace"),
        )

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if not self.ready and not self._failed:
            self._fail(
                f"login refused ({desc.decode('utf-8', 'replace')})",
                "hoopgate: the gateway could not log in to the target",
            )
        detach_gate(self.transport)
        SSHClientTransport.sendDisconnect(self, reason, desc)

    def _fail(self, why: str, text: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._owner.upstream_failed(why, text)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if self._abandoned:
            return
        if self.ready:
            self._owner.upstream_lost()
        else:
            self._fail(
                "target closed the connection during the login",
                "hoopgate: the gateway could not log in to the target",
            )

    def close(self) -> None:
        """
        End the connection (the client is gone).
        """
        self._failed = True
        self._abandoned = True
        if self.transport is not None and getattr(self.transport, "connected", False):
            detach_gate(self.transport)
            self.ready = False
            SSHClientTransport.sendDisconnect(
                self, 11, b"the client closed the connection"
            )


def connect_upstream(
    reactor: Any,
    *,
    host: str,
    port: int,
    timeout: float,
    transport: UpstreamTransport,
    on_unreachable: Any,
) -> defer.Deferred[Any]:
    """
    Connect C{transport} to C{host:port}; C{on_unreachable(failure)} if
    the TCP connection cannot be made.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    connecting: defer.Deferred[Any] = connectProtocol(endpoint, transport)
    return connecting.addErrback(on_unreachable)


__all__ = ["UpstreamOwner", "UpstreamTransport", "connect_upstream"]
