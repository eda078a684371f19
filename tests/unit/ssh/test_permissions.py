"""
What a certificate does not grant, the relay refuses: terminals without
C{permit-pty}, forwards without C{permit-port-forwarding}.
"""

from __future__ import annotations

from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh._certs import Permissions
from hoopgate_plugins.ssh._relay import Relay
from tests.unit.ssh.support import FakeLeg, FakeSession, direct_tcpip, settings


def relay(permissions: Permissions) -> tuple[Relay, FakeLeg, FakeLeg, FakeSession]:
    client, upstream, session = FakeLeg("client"), FakeLeg("upstream"), FakeSession()
    made = Relay(
        session, settings(), client, upstream, lambda: None, permissions=permissions
    )
    return made, client, upstream, session


def open_session(r: Relay, client: FakeLeg, upstream: FakeLeg) -> None:
    r.from_client(c.MSG_CHANNEL_OPEN, c.channel_open("session", 7, 1 << 20, 1 << 15))
    r.from_upstream(
        c.MSG_CHANNEL_OPEN_CONFIRMATION, c.open_confirmation(0, 70, 1 << 20, 1 << 15)
    )
    client.take()
    upstream.take()


PTY = c.ns(b"xterm") + bytes(16) + c.ns(b"")


class TestPermissions:
    def test_pty_refused(self) -> None:
        """
        Without permit-pty the terminal request fails at the gateway;
        the target never sees it.
        """
        r, client, upstream, session = relay(Permissions(pty=False))
        open_session(r, client, upstream)

        r.from_client(c.MSG_CHANNEL_REQUEST, c.channel_request(0, "pty-req", True, PTY))

        assert upstream.take() == []
        assert client.take() == [(c.MSG_CHANNEL_FAILURE, c.channel_only(7))]
        [notice] = session.events("notice")
        assert (notice.kind, notice.detail) == ("pty.refused", "xterm")
        assert session.events("ssh.pty") == []

    def test_pty_granted(self) -> None:
        r, client, upstream, session = relay(Permissions(pty=True))
        open_session(r, client, upstream)

        r.from_client(c.MSG_CHANNEL_REQUEST, c.channel_request(0, "pty-req", True, PTY))

        assert upstream.take() == [
            (c.MSG_CHANNEL_REQUEST, c.channel_request(70, "pty-req", True, PTY))
        ]
        assert len(session.events("ssh.pty")) == 1

    def test_forward_refused(self) -> None:
        """
        Without permit-port-forwarding a forward to an allowed
        destination is refused "administratively prohibited", unasked.
        """
        r, client, upstream, session = relay(Permissions(port_forwarding=False))

        r.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open(
                "direct-tcpip", 3, 1000, 100, direct_tcpip("127.0.0.1", 5432)
            ),
        )

        assert upstream.take() == []
        [(message, payload)] = client.take()
        assert message == c.MSG_CHANNEL_OPEN_FAILURE
        assert c.parse_open_failure(payload).code == c.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert session.decided == []
        [notice] = session.events("notice")
        assert (notice.kind, notice.detail) == ("forward.refused", "127.0.0.1:5432")
