"""
The client's leg of an SSH session: the gateway as an SSH server.

One L{ClientTransport} per client connection: Conch's server transport
with the gateway's host key, L{ClientAuth} for the login, and, once the
gateway has opened the session and logged in to the target, a
L{ConnectionLeg} whose messages go to the session's L{Relay}.

The order of a login: the client sends its token, or a certificate
of the gateway's CA with its signature (checked by L{ClientAuth}); the
gateway's chain authenticates and authorises it (C{SessionRequested}
with the target and the login the name asks for); the gateway logs in
to the target with its own key; only then does the client get
USERAUTH_SUCCESS.  A target that
cannot be reached or logged in to ends the client's connection with a
disconnect message saying so.

test-case-name: tests.integration.test_ssh_relay
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import _kex
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate.plugin import (
    IGateway,
    ISessionHandle,
    ListenerConfig,
    Session,
    SessionOpened,
    SessionRefusedError,
    SessionRequested,
)
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh import _errors
from hoopgate_plugins.ssh._auth import ClientAuth, Login
from hoopgate_plugins.ssh._cast import TerminalCast
from hoopgate_plugins.ssh._certs import Certified, Permissions
from hoopgate_plugins.ssh._legs import (
    ConnectionLeg,
    WriteGate,
    attach_gate,
    detach_gate,
)
from hoopgate_plugins.ssh._relay import Relay
from hoopgate_plugins.ssh._settings import (
    listener_settings,
    login_key,
    target_settings,
)
from hoopgate_plugins.ssh._upstream import VERSION, UpstreamTransport, connect_upstream

#: The OpenSSH client cuts passwords (and askpass answers) at this length.
OPENSSH_PASSWORD_LIMIT = 1023


def _peer(transport: Any) -> str:
    address = transport.getPeer()
    return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"


@implementer(ISessionHandle)
class ClientTransport(SSHServerTransport):
    """
    One client's SSH connection to the gateway.

    Args:
        gateway: Opens sessions.
        listener: The listener's configuration.
    """

    _log = Logger()
    ourVersionString = VERSION

    def __init__(self, gateway: IGateway, listener: ListenerConfig) -> None:
        settings = listener_settings(listener)
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.failure_delay = settings.failure_delay
        self._login_timeout = settings.login_timeout
        certificates = settings.certificates
        self.trusted_cas = certificates.trusted if certificates else None
        self.permissions = Permissions()
        self.peer = "?"
        self.peer_host = ""
        self.session: Session | None = None
        self.relay: Relay | None = None
        self.gate: WriteGate | None = None
        self._state = "auth"
        self._attempt: defer.Deferred[Any] | None = None
        self._login: Login | None = None
        self._upstream: UpstreamTransport | None = None
        self._upstream_leg: ConnectionLeg | None = None
        self._timer: IDelayedCall | None = None
        self._upstream_timer: IDelayedCall | None = None
        self._close_reason = "client"

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = _peer(self.transport)
        self.peer_host = self.peer.rpartition(":")[0]
        self.gate = attach_gate(self.transport, self._client_resumed)
        self._timer = self.reactor.callLater(self._login_timeout, self._timed_out)
        SSHServerTransport.connectionMade(self)

    def _timed_out(self) -> None:
        self._timer = None
        if self._state in ("auth", "connecting"):
            self._log.warn("SSH client {peer} did not log in in time", peer=self.peer)
            self._close_reason = "error"
            self.sendDisconnect(
                _errors.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"login timed out"
            )

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # A client's disconnect is how it says goodbye, not an error.
        self._log.debug(
            "SSH client {peer} disconnected: code {code}, {text}",
            peer=self.peer,
            code=reasonCode,
            text=description.decode("utf-8", "replace"),
        )

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        detach_gate(self.transport)
        SSHServerTransport.sendDisconnect(self, reason, desc)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self._state = "closed"
        for timer in (self._timer, self._upstream_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self.relay is not None:
            self.relay.client_lost()
        if self._upstream is not None:
            self._upstream.close()
        if self.session is not None:
            relay = self.relay
            self.session.close(
                self._close_reason,
                relay.bytes_from_client if relay else 0,
                relay.bytes_to_client if relay else 0,
            )

    def _client_resumed(self) -> None:
        if self.relay is not None:
            self.relay.resume("client")

    # -- services ------------------------------------------------------------------

    def service_for(self, name: bytes) -> Any:
        """
        The service class (a zero-argument callable) for C{name}, or
        C{None}: C{ssh-userauth} first, C{ssh-connection} only once the
        session and the target's login are ready.
        """
        if name == b"ssh-userauth" and self._state == "auth":
            return ClientAuth
        if name == b"ssh-connection" and self._state == "ready":
            return lambda: ConnectionLeg("client", self, self.gate)
        return None

    # -- login ---------------------------------------------------------------------

    def authenticate(self, login: Login, token: str) -> defer.Deferred[Any]:
        """
        Open a session for C{login} with C{token}, log in to the target,
        and fire with Conch's avatar triple; fail with
        C{UnauthorizedLogin} when refused.
        """
        return self._open(login, token=token)

    def authenticate_certified(
        self, login: Login, certified: Certified
    ) -> defer.Deferred[Any]:
        """
        As L{authenticate}, with the identity of a certificate the
        gateway's CA signed, which the client proved it holds the key of;
        the session gets only the permissions the certificate grants.
        """
        self.permissions = certified.permissions
        return self._open(
            login, identity=certified.identity, presented="ssh-certificate"
        )

    def _open(self, login: Login, **credential: Any) -> defer.Deferred[Any]:
        if self._state != "auth" or self._attempt is not None:
            return defer.fail(UnauthorizedLogin("a login is already in progress"))
        self._login = login
        request = SessionRequested(
            session_id="",
            protocol="ssh",
            peer=self.peer,
            target=login.target,
            login=login.login,
            tls=True,
            **credential,
        )
        attempt: defer.Deferred[Any] = defer.Deferred()
        self._attempt = attempt
        opened = self.gateway.open_session(request, self)
        opened.addCallbacks(self._admitted, self._refused)
        return attempt

    def note_failed_token(self, token: bytes) -> None:
        """
        A login failed: a token of exactly the OpenSSH client's limit was
        most likely cut short by the client.
        """
        if len(token) == OPENSSH_PASSWORD_LIMIT:
            self._log.warn(
                "SSH login from {peer} failed with a password of exactly {size} "
                "bytes: the OpenSSH client cuts passwords there, so the token was "
                "probably truncated; use a certificate from `hoopgate ssh-cert`",
                peer=self.peer,
                size=OPENSSH_PASSWORD_LIMIT,
            )

    def _take_attempt(self) -> defer.Deferred[Any] | None:
        attempt, self._attempt = self._attempt, None
        return attempt

    def _refused(self, failure: Failure) -> None:
        attempt = self._take_attempt()
        if not failure.check(SessionRefusedError):
            self._log.failure("Opening an SSH session failed", failure)
        if attempt is not None:
            reason = failure.value
            code = reason.reason.code if isinstance(reason, SessionRefusedError) else ""
            attempt.errback(Failure(UnauthorizedLogin(code or "refused")))

    def _admitted(self, session: Session) -> None:
        if self._state == "closed":
            session.close("client")
            return
        self.session = session
        self._state = "connecting"
        settings = target_settings(session)
        credential = session.credential
        assert self._login is not None
        user = self._login.login or credential.user
        upstream = UpstreamTransport(
            self,
            settings.host_keys,
            user,
            login_key(credential),
            session.target.name,
        )
        self._upstream = upstream
        target = session.target

        def unreachable(failure: Failure) -> None:
            self.upstream_failed(
                f"cannot reach {target.host}:{target.port}: "
                f"{failure.getErrorMessage()}",
                _errors.TARGET_UNREACHABLE,
            )

        self._upstream_timer = self.reactor.callLater(
            settings.login_timeout, self._upstream_timed_out
        )
        connect_upstream(
            self.reactor,
            host=target.host,
            port=target.port,
            timeout=settings.connect_timeout,
            transport=upstream,
            on_unreachable=unreachable,
        )

    def _upstream_timed_out(self) -> None:
        self._upstream_timer = None
        upstream = self._upstream
        if upstream is None or upstream.ready or self._state != "connecting":
            return
        upstream.close()
        self.upstream_failed(
            "the target did not accept the login in time", _errors.TARGET_LOGIN_FAILED
        )

    # -- the target's leg (UpstreamOwner) ----------------------------------------

    def upstream_failed(self, why: str, text: str) -> None:
        session = self.session
        self._log.error(
            "SSH session {session_id}: target {target} failed: {why}",
            session_id=session.id if session else "",
            target=session.target.name if session else "",
            why=why,
        )
        self._take_attempt()
        if self._state == "closed":
            return
        self._close_reason = "error"
        self.sendDisconnect(
            _errors.DISCONNECT_BY_APPLICATION,
            _errors.with_reference(text, session.id if session else ""),
        )

    def upstream_lost(self) -> None:
        if self.relay is not None:
            self.relay.upstream_lost()
            return
        if self._state != "closed":
            self._close_reason = "upstream"
            self.sendDisconnect(
                _errors.DISCONNECT_BY_APPLICATION, _errors.TARGET_CLOSED.encode()
            )

    def upstream_resumed(self) -> None:
        if self.relay is not None:
            self.relay.resume("upstream")

    # -- legs (LegOwner) --------------------------------------------------------

    def leg_started(self, leg: ConnectionLeg) -> None:
        if leg.side == "upstream":
            self._upstream_ready(leg)
            return
        session, upstream_leg = self.session, self._upstream_leg
        assert session is not None and upstream_leg is not None
        self._state = "relay"
        self.relay = Relay(
            session,
            target_settings(session),
            leg,
            upstream_leg,
            self._idle,
            permissions=self.permissions,
            casts=self._cast_for,
        )

    def _cast_for(self, channel: str, pty: c.Pty) -> TerminalCast | None:
        """
        Start the asciicast of a terminal beside the session's recording.
        """
        session = self.session
        assert session is not None
        folder = Path(session.config.gateway.recordings)
        path = folder / f"{session.id}.{channel}.cast"
        rule = session.config.policy.keyboard_input(
            session.identity, session.target.name
        )
        try:
            cast = TerminalCast.create(
                path,
                session.mask_text,
                term=pty.term,
                columns=pty.columns,
                rows=pty.rows,
                started=self.reactor.seconds(),
                keyboard=rule is not None,
            )
        except OSError as e:
            self._log.error(
                "SSH session {session_id}: cannot record the terminal in "
                "{path}: {error}",
                session_id=session.id,
                path=str(path),
                error=e.strerror,
            )
            return None
        if rule is not None:
            self._log.info(
                "SSH session {session_id}: typed input of channel {channel} is "
                "recorded (masked), per recording rule {rule}",
                session_id=session.id,
                channel=channel,
                rule=rule,
            )
        return cast

    def _upstream_ready(self, leg: ConnectionLeg) -> None:
        session, upstream = self.session, self._upstream
        assert session is not None and upstream is not None and self._login
        upstream.mark_ready()
        self._upstream_leg = leg
        for timer in (self._timer, self._upstream_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._state = "ready"
        session.observe(
            SessionOpened(
                session_id=session.id,
                protocol="ssh",
                identity=session.identity,
                peer=session.peer,
                target=session.target.name,
                upstream_user=self._login.login or session.credential.user,
                details=(
                    ("server_version", upstream.server_version),
                    ("host_key", upstream.host_key_fingerprint),
                ),
            )
        )
        attempt = self._take_attempt()
        if attempt is not None:
            attempt.callback((IConchUser, self, lambda: None))

    def leg_message(self, leg: ConnectionLeg, message: int, payload: bytes) -> None:
        relay = self.relay
        if relay is None:
            self._early(leg, message, payload)
            return
        try:
            if leg.side == "client":
                relay.from_client(message, payload)
            else:
                relay.from_upstream(message, payload)
        except c.ProtocolError as e:
            self._violation(leg.side, e.message)
        except Exception:
            self._log.failure(
                "Relaying SSH session {session_id} failed",
                session_id=relay.session.id,
            )
            self._close_reason = "error"
            self.sendDisconnect(
                _errors.DISCONNECT_BY_APPLICATION, _errors.INTERNAL.encode()
            )

    def _early(self, leg: ConnectionLeg, message: int, payload: bytes) -> None:
        # The target may speak before the client's channels exist (host
        # key announcements, keepalives): answered here.
        if message == c.MSG_GLOBAL_REQUEST:
            try:
                request = c.parse_global_request(payload)
            except c.ProtocolError:
                return
            if request.want_reply:
                leg.send(c.MSG_REQUEST_FAILURE, b"")

    def _violation(self, side: str, what: str) -> None:
        session = self.session
        self._log.warn(
            "SSH session {session_id}: the {side} broke the protocol: {what}",
            session_id=session.id if session else "",
            side="client" if side == "client" else "target",
            what=what,
        )
        self._close_reason = "error"
        self.sendDisconnect(
            _errors.DISCONNECT_PROTOCOL_ERROR,
            _errors.with_reference(
                _errors.PROTOCOL_VIOLATION, session.id if session else ""
            ),
        )

    def _idle(self) -> None:
        if self._state == "closed":
            return
        self._close_reason = "upstream"
        self.sendDisconnect(
            _errors.DISCONNECT_BY_APPLICATION, _errors.TARGET_CLOSED.encode()
        )

    # -- ISessionHandle --------------------------------------------------------

    def terminate(self, reason: str, message: str) -> None:
        if self._state == "closed":
            return
        self._close_reason = reason
        reference = self.session.id if self.session else ""
        self.sendDisconnect(
            _errors.DISCONNECT_BY_APPLICATION,
            _errors.with_reference(f"hoopgate: {message}", reference),
        )

    def cancel(self) -> None:
        # SSH has no cancel of its own; a client sends a signal request.
        return


class GatewaySSHFactory(SSHFactory):
    """
    Builds a L{ClientTransport} per client, with the gateway's host key.

    Args:
        gateway: Opens sessions.
        listener: The listener's configuration.
        host_key: The gateway's host private key.
    """

    def __init__(
        self, gateway: IGateway, listener: ListenerConfig, host_key: Key
    ) -> None:
        self._gateway = gateway
        self._listener = listener
        kind = host_key.sshType()
        self.publicKeys = {kind: host_key.public()}
        self.privateKeys = {kind: host_key}
        self.primes = None

    def getService(self, transport: Any, service: bytes) -> Any:
        return transport.service_for(service)

    def buildProtocol(self, addr: Any) -> ClientTransport:
        transport = ClientTransport(self._gateway, self._listener)
        transport.factory = self
        transport.supportedPublicKeys = [
            algorithm
            for key in self.privateKeys.values()
            for algorithm in key.supportedSignatureAlgorithms()
        ]
        transport.supportedKeyExchanges = [
            kex
            for kex in transport.supportedKeyExchanges
            if not _kex.isDynamicPrimesGroup(kex)
        ]
        return transport


__all__ = ["ClientTransport", "GatewaySSHFactory"]
