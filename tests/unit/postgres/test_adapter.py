"""
Transcript tests of the PostgreSQL client leg's start-up, over an
in-memory transport and a fake gateway: what the gateway answers on its
own before any target is involved.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hoopgate.plugin import (
    DenyReason,
    ListenerConfig,
    SessionRefusedError,
    SessionRequested,
)
from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres._adapter import ClientConnection
from hoopgate_plugins.postgres._settings import ListenerSettings


class FakeGateway:
    """
    Records session requests and cancels; answers them by hand.
    """

    def __init__(self) -> None:
        self.reactor = Clock()
        self.requests: list[SessionRequested] = []
        self.opened: list[Deferred[Any]] = []
        self.cancels: list[bytes] = []

    def open_session(self, request: SessionRequested, handle: object) -> Deferred[Any]:
        self.requests.append(request)
        result: Deferred[Any] = Deferred()
        self.opened.append(result)
        return result

    def register_cancel_key(self, session: object, key: bytes) -> None:
        raise AssertionError("no session is admitted in these tests")

    def cancel(self, protocol: str, key: bytes) -> Deferred[bool]:
        self.cancels.append(key)
        result: Deferred[bool] = Deferred()
        result.callback(False)
        return result


def listener(cleartext: bool = True) -> ListenerConfig:
    return ListenerConfig(
        name="pg",
        protocol="postgres",
        listen="tcp:0:interface=127.0.0.1",
        tls=None,
        cleartext_without_tls=cleartext,
        settings=ListenerSettings(max_message=1 << 20),
    )


def startup(**params: str) -> bytes:
    return pg.startup_message(params)


def messages(data: bytes) -> list[tuple[str, bytes]]:
    return [(chr(f.type), f.payload) for f in pg.split_frames(data)]


class StartupTests(SynchronousTestCase):
    """
    The start-up exchange, up to the token.
    """

    def setUp(self) -> None:
        self.gateway = FakeGateway()
        self.transport = StringTransport()
        self.client = ClientConnection(self.gateway, listener(), None)  # type: ignore[arg-type]
        # Twisted's makeConnection is unannotated.
        self.client.makeConnection(self.transport)  # type: ignore[no-untyped-call]

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def test_ssl_refused_without_certificate(self) -> None:
        """
        An SSLRequest on a listener without TLS gets one byte, C{N}, and
        the same connection goes on to the StartupMessage.
        """
        self.client.dataReceived(pg.ssl_request())
        assert self.take() == b"N"

        self.client.dataReceived(startup(user="ci", database="appdb"))
        assert messages(self.take()) == [("R", struct.pack(">i", 3))]

    def test_gssenc_refused(self) -> None:
        """
        A GSSENCRequest gets C{N} and the connection goes on.
        """
        self.client.dataReceived(pg.gssenc_request())
        assert self.take() == b"N"

        self.client.dataReceived(startup(user="ci"))
        assert messages(self.take()) == [("R", struct.pack(">i", 3))]

    def test_token_becomes_session_request(self) -> None:
        """
        The password is the token; the database names the target.
        """
        self.client.dataReceived(startup(user="ci", database="appdb"))
        self.take()
        self.client.dataReceived(pg.password_message("a.b.c"))

        [request] = self.gateway.requests
        assert (request.target, request.token, request.protocol, request.tls) == (
            "appdb",
            "a.b.c",
            "postgres",
            False,
        )

    def test_database_defaults_to_user(self) -> None:
        """
        Without a database the user name is the target, as PostgreSQL
        would default it; policy still decides.
        """
        self.client.dataReceived(startup(user="appdb"))
        self.client.dataReceived(pg.password_message("t"))

        assert self.gateway.requests[0].target == "appdb"

    def test_refusal_is_fatal_28000(self) -> None:
        """
        A refused session gets FATAL 28000 with the generic message only.
        """
        self.client.dataReceived(startup(user="ci", database="appdb"))
        self.client.dataReceived(pg.password_message("t"))
        self.take()

        reason = DenyReason("identity.expired", "authentication failed", "exp passed")
        self.gateway.opened[0].errback(SessionRefusedError(reason))

        [(kind, payload)] = messages(self.take())
        fields = pg.parse_fields(payload)
        assert kind == "E"
        assert (fields["S"], fields["C"], fields["M"]) == (
            "FATAL",
            "28000",
            "authentication failed",
        )
        assert "exp passed" not in payload.decode()
        assert self.transport.disconnecting

    def test_replication_refused(self) -> None:
        """
        Replication connections are refused before any token is asked.
        """
        self.client.dataReceived(startup(user="ci", replication="database"))

        [(kind, payload)] = messages(self.take())
        assert kind == "E"
        assert pg.parse_fields(payload)["C"] == "0A000"
        assert self.gateway.requests == []

    def test_empty_user_refused(self) -> None:
        """
        An empty user name is refused, so policy cannot be skipped.
        """
        self.client.dataReceived(startup(user="", database="appdb"))

        [(kind, payload)] = messages(self.take())
        assert (kind, pg.parse_fields(payload)["C"]) == ("E", "28000")

    def test_newer_minor_negotiated(self) -> None:
        """
        A 3.2 client with a protocol option gets NegotiateProtocolVersion
        (3.0, the option named) before the password request.
        """
        self.client.dataReceived(
            pg.startup_message({"user": "ci", "_pq_.x": "1"}, minor=2)
        )

        first, second = messages(self.take())
        assert first[0] == "v"
        assert pg.parse_negotiate_protocol_version(first[1]) == (
            pg.NegotiateProtocolVersion(0, ("_pq_.x",))
        )
        assert second == ("R", struct.pack(">i", 3))

    def test_password_before_startup_is_violation(self) -> None:
        """
        A message where a start-up packet belongs ends the connection
        with 08P01.
        """
        self.client.dataReceived(startup(user="ci"))
        self.take()
        self.client.dataReceived(pg.query("select 1"))

        [(kind, payload)] = messages(self.take())
        assert (kind, pg.parse_fields(payload)["C"]) == ("E", "08P01")
        assert self.transport.disconnecting

    def test_login_timeout(self) -> None:
        """
        A client that never finishes logging in is sent 08P01 and cut off
        once the listener's login timeout passes, and not before.
        """
        self.client.dataReceived(startup(user="ci", database="appdb"))
        self.take()

        self.gateway.reactor.advance(59)
        assert self.take() == b""

        self.gateway.reactor.advance(1)
        [(kind, payload)] = messages(self.take())
        assert (kind, pg.parse_fields(payload)["C"]) == ("E", "08P01")
        assert self.transport.disconnecting

    def test_cancel_request_forwarded(self) -> None:
        """
        A CancelRequest is handed to the gateway by its key and the
        connection closes without an answer.
        """
        self.client.dataReceived(pg.cancel_request(1234, b"\x01\x02\x03\x04"))

        assert self.gateway.cancels == [struct.pack(">i", 1234) + b"\x01\x02\x03\x04"]
        assert self.take() == b""
        assert self.transport.disconnecting


class CleartextTests(SynchronousTestCase):
    """
    A token is never taken over an unencrypted connection unless the
    listener allows it.
    """

    def test_refused_without_tls(self) -> None:
        """
        On a listener without C{cleartext_without_tls}, a plain start-up
        is refused with 28000 before the password is asked.
        """
        gateway = FakeGateway()
        transport = StringTransport()
        client = ClientConnection(gateway, listener(cleartext=False), None)  # type: ignore[arg-type]
        client.makeConnection(transport)  # type: ignore[no-untyped-call]

        client.dataReceived(startup(user="ci", database="appdb"))

        [(kind, payload)] = messages(transport.value())
        fields = pg.parse_fields(payload)
        assert (kind, fields["C"]) == ("E", "28000")
        assert "TLS" in fields["M"]
        assert gateway.requests == []


class ReaderLimitTests(SynchronousTestCase):
    """
    The client reader refuses what no client sends before buffering it.
    """

    def test_unknown_type_refused_at_header(self) -> None:
        """
        A message with a type byte no client message has is refused as
        soon as its header arrives, whatever length it claims.
        """
        reader = pg.FrontendReader()
        reader.feed(b"z" + (300 << 20).to_bytes(4, "big"))

        try:
            reader.next_frame()
        except pg.ProtocolViolation as e:
            message = e.message
        else:
            raise AssertionError("the reader buffered an unknown message")

        assert "exceeds the limit of 10000" in message
