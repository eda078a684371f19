"""
The target's leg of a PostgreSQL session: the gateway's own login.

L{ServerConnection} connects to the target, asks for TLS as the target's
C{tls.mode} says (never falling back from C{require} or C{verify-full}),
logs in with the credential set policy chose (SCRAM-SHA-256, MD5,
cleartext or trust), keeps the target's cancel key to itself, and then
hands everything the target sends to the client leg.

test-case-name: tests.integration.test_postgres_relay
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate.plugin import Credential, TargetConfig, client_tls_options
from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres import _errors
from hoopgate_plugins.postgres._flow import PauseGate, hang_up, link, nodelay
from hoopgate_plugins.postgres._scram import ScramClient, ScramError, md5_password
from hoopgate_plugins.postgres._settings import TargetSettings

B = pg.BackendType
A = pg.AuthCode

_SCRAM = "SCRAM-SHA-256"
_LOGIN_FAILED = "the gateway could not log in to the target"


@functools.lru_cache(maxsize=64)
def _tls_options(mode: str, host: str, ca: str | None) -> Any:
    return client_tls_options(mode, host, ca)


class Leg(Protocol):
    """
    What a L{ServerConnection} reports to: the client leg of a session,
    or the gateway's own catalog reader.
    """

    def upstream_failed(self, sqlstate: str, text: str, why: str) -> None:
        """
        The target could not be reached, refused the login or broke the
        protocol.
        """

    def upstream_authenticated(self) -> None:
        """
        The target accepted the login (more start-up messages follow).
        """

    def upstream_ready(self, greeting: bytes, details: Details) -> None:
        """
        The target is ready; C{greeting} holds its ParameterStatus and
        notices, C{details} facts worth recording.
        """

    def parameter_changed(self, name: str, value: str) -> None:
        """
        A ParameterStatus from the target.
        """

    def from_server(self, reader: pg.BackendReader) -> None:
        """
        Take what the target sent since the start-up.
        """

    def upstream_closed(self) -> None:
        """
        The target closed the connection after the start-up.
        """


Details = tuple[tuple[str, str], ...]


class ServerConnection(protocol.Protocol):
    """
    The gateway's connection to a PostgreSQL target.

    Args:
        target: The target.
        credential: The credential set to log in with.
        parameters: The start-up parameters to send.
        client: Where to report.
        reactor: Schedules the hang-up.
        label: Names the connection in the log (the session id).
    """

    _log = Logger()
    transport: Any

    def __init__(
        self,
        target: TargetConfig,
        credential: Credential,
        *,
        parameters: dict[str, str],
        client: Leg,
        reactor: Any,
        label: str,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._credential = credential
        self._label = label
        self._parameters = parameters
        self._client = client
        self._reader = pg.BackendReader()
        self._state = "connecting"
        self._scram: ScramClient | None = None
        self._greeting: list[bytes] = []
        self._server_version = ""
        self._tls = False
        self.cancel_key: tuple[int, bytes] | None = None
        self.gate: PauseGate | None = None

    @classmethod
    def connect(
        cls,
        reactor: Any,
        target: TargetConfig,
        credential: Credential,
        *,
        parameters: dict[str, str],
        client: Leg,
        label: str,
    ) -> ServerConnection:
        """
        Start connecting; failures are reported to C{client}.
        """
        leg = cls(
            target,
            credential,
            parameters=parameters,
            client=client,
            reactor=reactor,
            label=label,
        )
        settings = target.settings
        assert isinstance(settings, TargetSettings)
        endpoint = HostnameEndpoint(
            reactor, target.host, target.port, timeout=settings.connect_timeout
        )

        def unreachable(failure: Failure) -> None:
            cls._log.error(
                "Cannot reach PostgreSQL target {target} at {host}:{port}: {error}",
                target=target.name,
                host=target.host,
                port=target.port,
                error=failure.getErrorMessage(),
            )
            client.upstream_failed(
                _errors.UNREACHABLE,
                "the gateway could not reach the target",
                "unreachable",
            )

        connectProtocol(endpoint, leg).addErrback(unreachable)
        return leg

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        nodelay(self.transport)
        self.gate = PauseGate(self.transport)
        if self._target.tls_mode == "disable":
            self._send_startup()
            return
        self._state = "tls"
        self.transport.write(pg.ssl_request())

    def dataReceived(self, data: bytes) -> None:
        if self._state == "relay":
            self._reader.feed(data)
            self._relay()
            return
        if self._state == "tls":
            self._on_tls_answer(data)
            return
        self._reader.feed(data)
        try:
            self._login()
        except (pg.ProtocolViolation, ScramError, ValueError) as e:
            self._login_failed(f"login exchange failed: {e}")

    def _relay(self) -> None:
        try:
            self._client.from_server(self._reader)
        except pg.ProtocolViolation as e:
            self._log.error(
                "Target of {label} broke the protocol: {error}",
                label=self._label,
                error=e.message,
            )
            self._client.upstream_failed(
                _errors.CONNECTION_FAILURE, "the target connection failed", e.message
            )
        except Exception:
            self._log.failure("Relaying to {label} failed", label=self._label)
            self._client.upstream_failed(
                _errors.INTERNAL, "the gateway failed", "internal error"
            )

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        state, self._state = self._state, "closed"
        if state == "relay":
            self._client.upstream_closed()
        elif state != "closed":
            self._client.upstream_failed(
                _errors.CONNECTION_FAILURE, _LOGIN_FAILED, "target closed during login"
            )

    def write(self, data: bytes) -> None:
        """
        Send bytes to the target.
        """
        if self._state != "closed":
            self.transport.write(data)

    def close(self) -> None:
        """
        Close the target connection (the client is gone).
        """
        state, self._state = self._state, "closed"
        if state == "closed" or self.transport is None:
            return
        if state == "relay":
            self.transport.write(pg.terminate())
        hang_up(self.transport, self._reactor)

    def link(self, client_gate: PauseGate) -> None:
        """
        Stop reading from the client while our write buffer is full.
        """
        link(self.transport, client_gate)

    # -- TLS -------------------------------------------------------------

    def _on_tls_answer(self, data: bytes) -> None:
        target = self._target
        answer, rest = data[:1], data[1:]
        if rest:
            self._login_failed("target sent data ahead of the TLS handshake")
            return
        if answer == b"S":
            self.transport.startTLS(
                _tls_options(target.tls_mode, target.host, target.tls_ca)
            )
            self._tls = True
        elif answer != b"N" or target.tls_mode in ("require", "verify-full"):
            self._login_failed(f"target refused TLS (answered {answer!r})")
            return
        self._send_startup()

    def _send_startup(self) -> None:
        self._state = "login"
        self.transport.write(pg.startup_message(self._parameters))

    # -- login -------------------------------------------------------------

    def _login(self) -> None:
        for frame in self._reader:
            if frame.type == B.AUTHENTICATION:
                self._on_authentication(pg.parse_authentication(frame.payload))
            elif frame.type == B.ERROR_RESPONSE:
                fields = pg.parse_fields(frame.payload, encoding="utf-8")
                self._login_failed(
                    f"target said {fields.get('C', '?')}: {fields.get('M', '')}"
                )
                return
            elif frame.type == B.BACKEND_KEY_DATA:
                key = pg.parse_backend_key_data(frame.payload)
                self.cancel_key = (key.pid, key.secret)
            elif frame.type == B.PARAMETER_STATUS:
                self._on_parameter(frame)
            elif frame.type == B.NOTICE_RESPONSE:
                self._greeting.append(frame.raw)
            elif frame.type == B.NEGOTIATE_PROTOCOL_VERSION:
                continue
            elif frame.type == B.READY_FOR_QUERY:
                self._ready()
                return
            else:
                self._login_failed(
                    f"unexpected {pg.describe_type(frame.type)} during login"
                )
                return
            if self._state != "login":
                return

    def _on_parameter(self, frame: pg.Frame) -> None:
        status = pg.parse_parameter_status(frame.payload, "latin-1")
        if status.name == "server_version":
            self._server_version = status.value
        self._client.parameter_changed(status.name, status.value)
        self._greeting.append(frame.raw)

    def _on_authentication(self, auth: pg.Authentication) -> None:
        credential = self._credential
        password = credential.password.reveal() if credential.password else None
        code = auth.code
        if code == A.OK:
            self._client.upstream_authenticated()
            return
        if password is None:
            self._login_failed(f"target asked for a password ({code.name}); none held")
            return
        if code == A.CLEARTEXT_PASSWORD:
            if not self._tls:
                self._log.warn(
                    "Target {target} asked for a cleartext password without TLS",
                    target=self._target.name,
                )
            self.transport.write(pg.password_message(password))
        elif code == A.MD5_PASSWORD:
            digest = md5_password(credential.user, password, auth.data)
            self.transport.write(pg.password_message(digest))
        elif code == A.SASL and _SCRAM in auth.mechanisms:
            self._scram = ScramClient("", password)
            first = self._scram.first_message()
            self.transport.write(pg.sasl_initial_response(_SCRAM, first))
        elif code == A.SASL_CONTINUE and self._scram is not None:
            final = self._scram.handle_server_first(auth.data)
            self.transport.write(pg.sasl_response(final))
        elif code == A.SASL_FINAL and self._scram is not None:
            self._scram.verify_server_final(auth.data)
        else:
            self._login_failed(f"unsupported authentication request {code.name}")

    def _ready(self) -> None:
        self._state = "relay"
        details = (
            ("server_version", self._server_version),
            ("upstream_tls", str(self._tls).lower()),
            ("database", self._parameters.get("database", "")),
        )
        greeting, self._greeting = b"".join(self._greeting), []
        self._client.upstream_ready(greeting, details)
        if self._reader.buffered:
            self._relay()

    def _login_failed(self, why: str) -> None:
        if self._state == "closed":
            return
        self._log.error(
            "Login to PostgreSQL target {target} as {user} failed: {why}",
            target=self._target.name,
            user=self._credential.user,
            why=why,
        )
        self._state = "closed"
        hang_up(self.transport, self._reactor)
        self._client.upstream_failed(_errors.REJECTED, _LOGIN_FAILED, why)


class _Cancel(protocol.Protocol):
    transport: Any

    def __init__(self, packet: bytes) -> None:
        self._packet = packet

    def connectionMade(self) -> None:
        self.transport.write(self._packet)
        self.transport.loseConnection()


def send_cancel(reactor: Any, host: str, port: int, pid: int, secret: bytes) -> None:
    """
    Ask the target to cancel what backend C{pid} is running.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=10)
    connectProtocol(endpoint, _Cancel(pg.cancel_request(pid, secret))).addErrback(
        lambda failure: ServerConnection._log.warn(
            "Cannot send a cancel to {host}:{port}: {error}",
            host=host,
            port=port,
            error=failure.getErrorMessage(),
        )
    )


__all__ = ["ServerConnection", "send_cancel"]
