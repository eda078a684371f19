"""
Transcript tests of the SSH relay: messages in on one leg, messages out
on both, with fake legs and a scripted session.
"""

from __future__ import annotations

import attrs
import pytest
from twisted.internet.defer import Deferred

from hoopgate.plugin import (
    ALLOW,
    CommandReceived,
    Deny,
    DenyReason,
    Event,
    Hold,
    Rewrite,
    Verdict,
)
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh._channels import MAX_PACKET, WINDOW
from hoopgate_plugins.ssh._relay import Relay
from hoopgate_plugins.ssh._settings import TargetSettings
from tests.unit.ssh.support import FakeLeg, FakeSession, direct_tcpip, settings

CLIENT_ID = 7  # the client's number for its channel
UPSTREAM_ID = 70  # the target's number for the gateway's channel


class Harness:
    """
    A relay between two fake legs.
    """

    def __init__(
        self,
        session: FakeSession | None = None,
        target: TargetSettings | None = None,
    ) -> None:
        self.client = FakeLeg("client")
        self.upstream = FakeLeg("upstream")
        self.session = session or FakeSession()
        self.idle = 0
        self.relay = Relay(
            self.session,
            target or settings(),
            self.client,
            self.upstream,
            self._on_idle,
        )

    def _on_idle(self) -> None:
        self.idle += 1

    def open(
        self,
        kind: str = "session",
        *,
        extra: bytes = b"",
        client_window: int = 1 << 20,
        client_packet: int = 1 << 15,
        upstream_window: int = 1 << 20,
        upstream_packet: int = 1 << 15,
    ) -> None:
        """
        Open a channel pair; both legs' transcripts are cleared after.
        """
        self.relay.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open(kind, CLIENT_ID, client_window, client_packet, extra),
        )
        sent = self.upstream.take()
        assert sent == [
            (
                c.MSG_CHANNEL_OPEN,
                c.channel_open(kind, 0, WINDOW, MAX_PACKET, extra),
            )
        ], sent
        self.relay.from_upstream(
            c.MSG_CHANNEL_OPEN_CONFIRMATION,
            c.open_confirmation(0, UPSTREAM_ID, upstream_window, upstream_packet),
        )
        assert self.client.take() == [
            (
                c.MSG_CHANNEL_OPEN_CONFIRMATION,
                c.open_confirmation(CLIENT_ID, 0, WINDOW, MAX_PACKET),
            )
        ]

    def client_request(self, name: str, rest: bytes = b"", want: bool = True) -> None:
        self.relay.from_client(
            c.MSG_CHANNEL_REQUEST, c.channel_request(0, name, want, rest)
        )

    def upstream_request(
        self, name: str, rest: bytes = b"", want: bool = False
    ) -> None:
        self.relay.from_upstream(
            c.MSG_CHANNEL_REQUEST, c.channel_request(0, name, want, rest)
        )


def request(
    recipient: int, name: str, want: bool, rest: bytes = b""
) -> tuple[int, bytes]:
    return (c.MSG_CHANNEL_REQUEST, c.channel_request(recipient, name, want, rest))


def only(message: int, recipient: int) -> tuple[int, bytes]:
    return (message, c.channel_only(recipient))


def deny(event: Event) -> Verdict:
    return Deny(DenyReason("guardrail.blocked", "command refused", "test", "no-rm"))


class TestSessionChannel:
    """
    Session channels: commands pass the chain; answers come in order.
    """

    def test_exec_allowed(self) -> None:
        """
        An allowed exec reaches the target; its answer reaches the client.
        """
        h = Harness()
        h.open()

        h.client_request("exec", c.command("ls -l"))
        h.relay.from_upstream(c.MSG_CHANNEL_SUCCESS, c.channel_only(0))

        [command] = h.session.events("command")
        assert (command.command, command.channel) == ("ls -l", "0")
        assert h.upstream.take() == [
            request(UPSTREAM_ID, "exec", True, c.command("ls -l"))
        ]
        assert h.client.take() == [only(c.MSG_CHANNEL_SUCCESS, CLIENT_ID)]

    def test_exec_denied(self) -> None:
        """
        A refused exec never reaches the target: the client hears the
        reason on stderr, exit status 1, EOF and close, in that order.
        """
        h = Harness(FakeSession(deny))
        h.open()

        h.client_request("exec", c.command("rm -rf /"))

        assert h.upstream.take() == [only(c.MSG_CHANNEL_CLOSE, UPSTREAM_ID)]
        sent = h.client.take()
        assert [m for m, _ in sent] == [
            c.MSG_CHANNEL_SUCCESS,
            c.MSG_CHANNEL_EXTENDED_DATA,
            c.MSG_CHANNEL_REQUEST,
            c.MSG_CHANNEL_EOF,
            c.MSG_CHANNEL_CLOSE,
        ]
        _, kind, text = c.parse_extended_data(sent[1][1])
        assert kind == c.EXTENDED_DATA_STDERR
        assert text == b"hoopgate: command refused (rule no-rm); reference S1\r\n"
        assert sent[2] == request(CLIENT_ID, "exit-status", False, c.exit_status(1))

    def test_exec_held(self) -> None:
        """
        While a verdict is pending nothing reaches the target, stdin
        included; once allowed, the exec goes first, then the data.
        """
        decision: Deferred[Verdict] = Deferred()
        h = Harness(FakeSession(lambda event: Hold(decision)))
        h.open()

        h.client_request("exec", c.command("deploy"), want=False)
        h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"input"))
        held = h.upstream.take()
        decision.callback(ALLOW)

        assert held == []
        assert h.upstream.take() == [
            request(UPSTREAM_ID, "exec", False, c.command("deploy")),
            (c.MSG_CHANNEL_DATA, c.data(UPSTREAM_ID, b"input")),
        ]

    def test_exec_rewritten(self) -> None:
        """
        A rewritten command is what the target runs.
        """

        def rewrite(event: Event) -> Verdict:
            assert isinstance(event, CommandReceived)
            return Rewrite(event=attrs.evolve(event, command="ls -l --color=never"))

        h = Harness(FakeSession(rewrite))
        h.open()

        h.client_request("exec", c.command("ls -l"), want=False)

        assert h.upstream.take() == [
            request(UPSTREAM_ID, "exec", False, c.command("ls -l --color=never"))
        ]

    def test_second_command_refused(self) -> None:
        """
        A channel runs one command: a second exec fails.
        """
        h = Harness()
        h.open()

        h.client_request("exec", c.command("true"), want=False)
        h.client_request("shell")

        assert h.client.take() == [only(c.MSG_CHANNEL_FAILURE, CLIENT_ID)]

    def test_replies_in_order(self) -> None:
        """
        A relayed request's answer comes before the answer to a later one
        the gateway refused itself.
        """
        h = Harness()
        h.open()
        pty = c.ns(b"xterm") + bytes(16) + c.ns(b"")

        h.client_request("pty-req", pty)
        h.client_request("env", c.ns(b"SECRET") + c.ns(b"x"))
        before = h.client.take()
        h.relay.from_upstream(c.MSG_CHANNEL_SUCCESS, c.channel_only(0))

        assert before == []
        assert h.client.take() == [
            only(c.MSG_CHANNEL_SUCCESS, CLIENT_ID),
            only(c.MSG_CHANNEL_FAILURE, CLIENT_ID),
        ]
        [notice] = h.session.events("notice")
        assert (notice.kind, notice.detail) == ("env.dropped", "SECRET")

    def test_env_allowed(self) -> None:
        """
        An allowed name passes to the target.
        """
        h = Harness()
        h.open()
        rest = c.ns(b"LC_ALL") + c.ns(b"C")

        h.client_request("env", rest, want=False)

        assert h.upstream.take() == [request(UPSTREAM_ID, "env", False, rest)]

    def test_refused_requests(self) -> None:
        """
        X11 and agent forwarding fail and are recorded; unknown requests
        fail.
        """
        h = Harness()
        h.open()

        for name in ("x11-req", "auth-agent-req@openssh.com", "made-up@example"):
            h.client_request(name)

        assert h.upstream.take() == []
        assert h.client.take() == [only(c.MSG_CHANNEL_FAILURE, CLIENT_ID)] * 3
        kinds = [n.kind for n in h.session.events("notice")]
        assert kinds == ["x11.refused", "agent.refused"]

    def test_subsystems(self) -> None:
        """
        sftp passes as a subsystem event; other subsystems fail.
        """
        h = Harness()
        h.open()

        h.client_request("subsystem", c.command("netconf"))
        h.client_request("subsystem", c.command("sftp"))

        [event] = h.session.events("ssh.subsystem")
        assert event.subsystem == "sftp"
        assert h.upstream.take() == [
            request(UPSTREAM_ID, "subsystem", True, c.command("sftp"))
        ]
        assert h.client.take() == [only(c.MSG_CHANNEL_FAILURE, CLIENT_ID)]

    def test_target_keepalive_answered(self) -> None:
        """
        sshd's channel keepalive is answered by the gateway, not relayed.
        """
        h = Harness()
        h.open()

        h.upstream_request("keepalive@openssh.com", want=True)

        assert h.upstream.take() == [only(c.MSG_CHANNEL_FAILURE, UPSTREAM_ID)]
        assert h.client.take() == []


class TestExitOrder:
    """
    BC18: exit status after all output, before the close.
    """

    def test_exit_after_output(self) -> None:
        """
        With the client's window full, exit-status, EOF and close wait
        behind the output.
        """
        h = Harness()
        h.open(client_window=1000, client_packet=400)
        h.client_request("exec", c.command("cat"), want=False)
        h.upstream.take()

        h.relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, b"x" * 1500))
        h.upstream_request("exit-status", c.exit_status(3))
        h.relay.from_upstream(c.MSG_CHANNEL_EOF, c.channel_only(0))
        h.relay.from_upstream(c.MSG_CHANNEL_CLOSE, c.channel_only(0))
        first = h.client.take()
        h.relay.from_client(c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(0, 1000))

        assert first == [
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"x" * 400)),
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"x" * 400)),
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"x" * 200)),
        ]
        assert h.client.take() == [
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"x" * 400)),
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"x" * 100)),
            request(CLIENT_ID, "exit-status", False, c.exit_status(3)),
            only(c.MSG_CHANNEL_EOF, CLIENT_ID),
            only(c.MSG_CHANNEL_CLOSE, CLIENT_ID),
        ]
        assert h.upstream.take() == [only(c.MSG_CHANNEL_CLOSE, UPSTREAM_ID)]
        [exit_event] = h.session.events("ssh.exit")
        assert (exit_event.status, exit_event.command_id) == (3, "S1.1")

    def test_exit_signal(self) -> None:
        """
        exit-signal is recorded with the signal and relayed.
        """
        h = Harness()
        h.open()
        rest = c.ns(b"TERM") + b"\x00" + c.ns(b"") + c.ns(b"")

        h.upstream_request("exit-signal", rest)

        assert h.client.take() == [request(CLIENT_ID, "exit-signal", False, rest)]
        [event] = h.session.events("ssh.exit")
        assert (event.status, event.signal) == (None, "TERM")

    def test_pair_finished(self) -> None:
        """
        Once both sides closed, the channel is gone.
        """
        h = Harness()
        h.open()

        h.relay.from_upstream(c.MSG_CHANNEL_CLOSE, c.channel_only(0))
        h.relay.from_client(c.MSG_CHANNEL_CLOSE, c.channel_only(0))

        assert h.relay.channels == 0
        with pytest.raises(c.ProtocolError):
            h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"late"))


class TestFlow:
    """
    Windows: a sender's window reopens only for bytes passed on.
    """

    def fill(self, h: Harness, packets: int) -> None:
        for _ in range(packets):
            h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"d" * MAX_PACKET))

    def test_no_credit_while_target_full(self) -> None:
        """
        The target's window is shut: the client's window is not reopened,
        so the client stops after one window; it reopens as the target
        takes the bytes.
        """
        h = Harness()
        h.open(upstream_window=0)
        packets = WINDOW // MAX_PACKET

        self.fill(h, packets)
        stalled = (h.client.kinds(), h.upstream.kinds())
        with pytest.raises(c.ProtocolError):
            h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"!"))
        h.relay.from_upstream(c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(0, WINDOW))

        assert stalled == ([], [])
        assert h.upstream.kinds() == [c.MSG_CHANNEL_DATA] * packets
        assert h.client.take() == [
            (c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(CLIENT_ID, WINDOW))
        ]

    def test_credit_after_half(self) -> None:
        """
        Bytes passed on are credited once half the window is used.
        """
        h = Harness()
        h.open(upstream_window=4 * WINDOW)
        half = WINDOW // MAX_PACKET // 2

        self.fill(h, half)
        before = h.client.take()
        self.fill(h, 1)

        assert before == []
        assert h.client.take() == [
            (
                c.MSG_CHANNEL_WINDOW_ADJUST,
                c.window_adjust(CLIENT_ID, (half + 1) * MAX_PACKET),
            )
        ]

    def test_socket_full(self) -> None:
        """
        While the client's socket is full nothing more is written to it.
        """
        h = Harness()
        h.open()
        h.client.writable = False

        h.relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, b"abc"))
        waiting = h.client.take()
        h.client.writable = True
        h.relay.resume("client")

        assert waiting == []
        assert h.client.take() == [(c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"abc"))]


class TestForward:
    """
    direct-tcpip: opened on the target, only where allowed.
    """

    def test_allowed(self) -> None:
        """
        An allowed destination is opened as a channel on the target's
        connection, recorded when asked and when closed.
        """
        h = Harness()
        extra = direct_tcpip("127.0.0.1", 5432)
        h.open("direct-tcpip", extra=extra)

        h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"ping"))
        h.relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, b"pong!"))
        h.relay.from_client(c.MSG_CHANNEL_CLOSE, c.channel_only(0))
        h.relay.from_upstream(c.MSG_CHANNEL_CLOSE, c.channel_only(0))

        [asked] = h.session.events("forward.requested")
        [closed] = h.session.events("ssh.forward.closed")
        assert (asked.host, asked.port) == ("127.0.0.1", 5432)
        assert (
            closed.forward_id,
            closed.bytes_to_target,
            closed.bytes_from_target,
        ) == (asked.forward_id, 4, 5)

    def test_not_listed(self) -> None:
        """
        A destination outside forward_to is refused "administratively
        prohibited"; the target never hears of it.
        """
        h = Harness()

        h.relay.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open("direct-tcpip", 3, 1000, 100, direct_tcpip("10.0.0.1", 22)),
        )

        assert h.upstream.take() == []
        [(message, payload)] = h.client.take()
        failure = c.parse_open_failure(payload)
        assert (message, failure.recipient, failure.code) == (
            c.MSG_CHANNEL_OPEN_FAILURE,
            3,
            c.OPEN_ADMINISTRATIVELY_PROHIBITED,
        )
        assert h.session.decided == []
        [notice] = h.session.events("notice")
        assert (notice.kind, notice.detail) == ("forward.refused", "10.0.0.1:22")

    def test_denied_by_chain(self) -> None:
        """
        A listed destination the chain refuses is refused the same way.
        """
        h = Harness(FakeSession(deny))

        h.relay.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open(
                "direct-tcpip", 3, 1000, 100, direct_tcpip("127.0.0.1", 5432)
            ),
        )

        assert h.upstream.take() == []
        [(message, payload)] = h.client.take()
        assert message == c.MSG_CHANNEL_OPEN_FAILURE
        assert c.parse_open_failure(payload).code == c.OPEN_ADMINISTRATIVELY_PROHIBITED

    def test_target_refuses(self) -> None:
        """
        The target's own refusal reaches the client and the record.
        """
        h = Harness()
        h.relay.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open(
                "direct-tcpip", 3, 1000, 100, direct_tcpip("127.0.0.1", 5432)
            ),
        )

        h.relay.from_upstream(
            c.MSG_CHANNEL_OPEN_FAILURE,
            c.open_failure(0, c.OPEN_CONNECT_FAILED, "Connection refused"),
        )

        [(_, payload)] = h.client.take()
        assert c.parse_open_failure(payload) == c.OpenFailure(
            3, c.OPEN_CONNECT_FAILED, "Connection refused"
        )
        [closed] = h.session.events("ssh.forward.closed")
        assert (closed.status, closed.error) == ("failed", "Connection refused")
        assert h.relay.channels == 0


class TestRefusal:
    """
    What the gateway never relays.
    """

    def test_client_global_requests(self) -> None:
        """
        keepalive is answered; remote forwarding fails and is recorded.
        """
        h = Harness()

        h.relay.from_client(
            c.MSG_GLOBAL_REQUEST, c.global_request("keepalive@openssh.com", True)
        )
        h.relay.from_client(
            c.MSG_GLOBAL_REQUEST,
            c.global_request("tcpip-forward", True, c.ns(b"") + bytes(4)),
        )

        assert h.client.take() == [(c.MSG_REQUEST_FAILURE, b"")] * 2
        assert h.upstream.take() == []
        [notice] = h.session.events("notice")
        assert notice.kind == "remote_forward.refused"

    def test_target_global_requests(self) -> None:
        """
        The target's keepalive is answered; its host keys never reach
        the client.
        """
        h = Harness()

        h.relay.from_upstream(
            c.MSG_GLOBAL_REQUEST, c.global_request("keepalive@openssh.com", True)
        )
        h.relay.from_upstream(
            c.MSG_GLOBAL_REQUEST,
            c.global_request("hostkeys-00@openssh.com", False, c.ns(b"key")),
        )

        assert h.upstream.take() == [(c.MSG_REQUEST_FAILURE, b"")]
        assert h.client.take() == []

    def test_channels_from_target(self) -> None:
        """
        A channel the target opens (agent, X11, remote forward) is refused.
        """
        h = Harness()

        h.relay.from_upstream(
            c.MSG_CHANNEL_OPEN, c.channel_open("auth-agent@openssh.com", 5, 100, 100)
        )

        [(message, payload)] = h.upstream.take()
        assert message == c.MSG_CHANNEL_OPEN_FAILURE
        assert c.parse_open_failure(payload).recipient == 5
        assert h.client.take() == []

    def test_other_client_channels(self) -> None:
        """
        Channel types other than session and direct-tcpip are refused.
        """
        h = Harness()

        h.relay.from_client(
            c.MSG_CHANNEL_OPEN,
            c.channel_open("direct-streamlocal@openssh.com", 2, 100, 100),
        )

        [(message, _)] = h.client.take()
        assert message == c.MSG_CHANNEL_OPEN_FAILURE
        assert h.upstream.take() == []

    def test_data_beyond_window(self) -> None:
        """
        A client sending more than its window breaks the protocol.
        """
        h = Harness()
        h.open()
        h.relay.from_upstream(c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(0, 0))

        with pytest.raises(c.ProtocolError):
            h.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, b"d" * (MAX_PACKET + 1)))


class TestUpstreamLost:
    """
    The target's connection ends: what it sent still arrives.
    """

    def test_output_then_close(self) -> None:
        """
        Queued output reaches the client, then EOF and close; once the
        client closes too, the relay is idle.
        """
        h = Harness()
        h.open(client_window=2)
        h.relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, b"abcd"))
        h.client.take()

        h.relay.upstream_lost()
        waiting = h.client.take()
        h.relay.from_client(c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(0, 10))
        flushed = h.client.take()
        h.relay.from_client(c.MSG_CHANNEL_CLOSE, c.channel_only(0))

        assert (waiting, h.idle) == ([], 1)
        assert flushed == [
            (c.MSG_CHANNEL_DATA, c.data(CLIENT_ID, b"cd")),
            only(c.MSG_CHANNEL_EOF, CLIENT_ID),
            only(c.MSG_CHANNEL_CLOSE, CLIENT_ID),
        ]

    def test_opening_channel_fails(self) -> None:
        """
        A channel still opening fails to open.
        """
        h = Harness()
        h.relay.from_client(c.MSG_CHANNEL_OPEN, c.channel_open("session", 4, 100, 100))

        h.relay.upstream_lost()

        [(message, payload)] = h.client.take()
        assert message == c.MSG_CHANNEL_OPEN_FAILURE
        assert c.parse_open_failure(payload).recipient == 4
        assert h.idle == 1
