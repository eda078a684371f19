"""
Client authentication: a certificate the gateway's CA issued, or the OIDC
token as password or keyboard-interactive answer.

The login name says where to go: C{TARGET}, or C{LOGIN@TARGET} for an
account on the target other than the credential set's own; the identity
always comes from the certificate or the token.  A certificate
(C{publickey} with an OpenSSH user certificate, offered only when the
listener has a CA) is checked here (L{hoopgate_plugins.ssh._certs}) and
its identity handed to the gateway as C{presented="ssh-certificate"}; a
token goes to the gateway's identity stage.  The transport
(L{ClientTransport}) opens the session with the gateway and logs in to
the target before the client hears "success".  A failure is answered
with SSH's own USERAUTH_FAILURE after the listener's C{failure_delay},
whatever the reason, so a client learns nothing it could use for
guessing; a plain public key (never accepted) is refused at once.

test-case-name: tests.unit.ssh.test_auth
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

from attrs import frozen
from twisted.conch import error
from twisted.conch.ssh import userauth
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate_plugins.ssh._certs import (
    CERT_SIGNATURES,
    CertificateError,
    Certified,
    signature_matches,
    verify,
)

if TYPE_CHECKING:
    from hoopgate_plugins.ssh._server import ClientTransport

#: The methods offered, in the order OpenSSH tries them; C{publickey}
#: only on a listener with a certificate authority.
METHODS = (b"keyboard-interactive", b"password")
CERTIFICATE_METHOD = b"publickey"

_PROMPT = b"hoopgate token: "

# Letters an account or target name may have (POSIX user names, target
# names from the configuration).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")

MSG_USERAUTH_INFO_REQUEST = 60
MSG_USERAUTH_PK_OK = 60


@frozen
class Login:
    """
    What a login name asks for.

    Attributes:
        target: The target's name.
        login: The account on it, or C{""} for the credential set's.
    """

    target: str
    login: str


def parse_login(name: bytes) -> Login | None:
    """
    Read C{TARGET} or C{LOGIN@TARGET}; C{None} if it is neither.
    """
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    login, sep, target = text.rpartition("@")
    if sep and not login:
        return None
    if not _NAME.match(target) or (login and not _NAME.match(login)):
        return None
    return Login(target=target, login=login)


class ClientAuth(userauth.SSHUserAuthServer):
    """
    C{ssh-userauth} for clients: a certificate of the gateway's CA
    (C{publickey}), or a token as password or as the answer to one
    keyboard-interactive prompt.
    """

    _log = Logger()
    transport: ClientTransport
    attemptsBeforeDisconnect = 6

    def serviceStarted(self) -> None:
        self.authenticatedWith: list[bytes] = []
        self.loginAttempts = 0
        self.user = None
        self.nextService = None
        self.supportedAuthentications = list(METHODS)
        if self.transport.trusted_cas is not None:
            self.supportedAuthentications.insert(0, CERTIFICATE_METHOD)
        self._cancelLoginTimeout = None  # type: ignore[assignment]
        self._prompted: defer.Deferred[bytes] | None = None

    def serviceStopped(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
        # A new request ends a keyboard-interactive exchange (RFC 4256);
        # the old attempt gets no answer of its own.
        prompted, self._prompted = self._prompted, None
        if prompted is not None:
            prompted.errback(Failure(error.IgnoreAuthentication()))

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        self._abandon()
        return super().ssh_USERAUTH_REQUEST(packet)

    def auth_password(self, packet: bytes) -> defer.Deferred[Any]:
        token = getNS(packet[1:])[0]
        return self._login(token)

    def auth_keyboard_interactive(self, packet: bytes) -> defer.Deferred[Any]:
        prompted: defer.Deferred[bytes] = defer.Deferred()
        self._prompted = prompted
        request = NS(b"") + NS(b"") + NS(b"") + struct.pack(">L", 1)
        request += NS(_PROMPT) + b"\x00"
        SSHServerTransport.sendPacket(
            self.transport, MSG_USERAUTH_INFO_REQUEST, request
        )
        return prompted.addCallback(self._login)

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        prompted, self._prompted = self._prompted, None
        if prompted is None:
            SSHServerTransport.sendUnimplemented(self.transport)
            return
        try:
            count = struct.unpack(">L", packet[:4])[0]
            answer = getNS(packet[4:])[0] if count == 1 else b""
        except (struct.error, ValueError):
            answer = b""
        prompted.callback(answer)

    def auth_publickey(self, packet: bytes) -> defer.Deferred[Any]:
        try:
            signed = packet[:1] != b"\x00"
            algorithm, blob, rest = getNS(packet[1:], 2)
            signature = getNS(rest)[0] if signed else b""
        except struct.error:
            return self._failed("a malformed publickey request", b"")
        trusted = self.transport.trusted_cas
        if trusted is None or algorithm not in CERT_SIGNATURES:
            # Plain keys are never accepted: refused at once, so clients
            # trying their keys in turn reach the certificate quickly.
            return defer.fail(UnauthorizedLogin("not a certificate"))
        try:
            certified = verify(
                blob,
                trusted,
                now=self.transport.reactor.seconds(),
                peer=self.transport.peer_host,
            )
        except CertificateError as e:
            return self._failed(f"certificate refused: {e}", b"")

        if not signed:
            SSHServerTransport.sendPacket(
                self.transport, MSG_USERAUTH_PK_OK, packet[1:]
            )
            return defer.fail(error.IgnoreAuthentication())
        data = self._signed_data(algorithm, blob)
        if not signature_matches(certified, algorithm, blob, signature, data):
            return self._failed("the certificate's key signature is wrong", b"")
        return self._certified(certified)

    def _signed_data(self, algorithm: bytes, blob: bytes) -> bytes:
        session_id = self.transport.sessionID
        assert session_id is not None and self.user is not None
        assert self.nextService is not None
        return (
            NS(session_id)
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.nextService)
            + NS(CERTIFICATE_METHOD)
            + b"\x01"
            + NS(algorithm)
            + NS(blob)
        )

    def _certified(self, certified: Certified) -> defer.Deferred[Any]:
        login = self._parsed_login(b"")
        if not isinstance(login, Login):
            return login
        self._log.info(
            "SSH login from {peer} with certificate {serial} of {subject} (CA {ca})",
            peer=self.transport.peer,
            serial=certified.serial,
            subject=certified.identity.subject,
            ca=certified.ca,
        )
        attempt = self.transport.authenticate_certified(login, certified)
        return attempt.addErrback(self._delayed, b"")

    def _parsed_login(self, token: bytes) -> Login | defer.Deferred[Any]:
        if self.nextService != b"ssh-connection" or self.user is None:
            return self._failed("the client asked for another service", token)
        login = parse_login(self.user)
        if login is None:
            return self._failed("the login name is not TARGET or LOGIN@TARGET", token)
        return login

    def _login(self, token: bytes) -> defer.Deferred[Any]:
        login = self._parsed_login(token)
        if not isinstance(login, Login):
            return login
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            return self._failed("the token is not UTF-8", token)

        attempt = self.transport.authenticate(login, text)
        return attempt.addErrback(self._delayed, token)

    def _failed(self, why: str, token: bytes) -> defer.Deferred[Any]:
        self._log.warn(
            "SSH login from {peer} refused: {why}", peer=self.transport.peer, why=why
        )
        return self._delayed(Failure(UnauthorizedLogin(why)), token)

    def _delayed(self, failure: Failure, token: bytes) -> defer.Deferred[Any]:
        if failure.check(error.IgnoreAuthentication):
            return defer.fail(failure)
        self.transport.note_failed_token(token)
        delayed: defer.Deferred[Any] = defer.Deferred()
        self.transport.reactor.callLater(
            self.transport.failure_delay, delayed.errback, failure
        )
        return delayed


__all__ = ["CERTIFICATE_METHOD", "METHODS", "ClientAuth", "Login", "parse_login"]
