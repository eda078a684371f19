"""
The connection-protocol codec: messages to bytes and back, and payloads
that end early.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopgate_plugins.ssh import _codec as c

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-@.", min_size=1, max_size=30)


class TestRoundTrip:
    """
    What the codec builds, it reads back unchanged.
    """

    @given(names, u32, u32, u32, st.binary(max_size=64))
    def test_channel_open(
        self, kind: str, sender: int, window: int, packet: int, extra: bytes
    ) -> None:
        message = c.parse_channel_open(
            c.channel_open(kind, sender, window, packet, extra)
        )

        assert message == c.ChannelOpen(kind, sender, window, packet, extra)

    @given(u32, names, st.booleans(), st.binary(max_size=64))
    def test_channel_request(
        self, recipient: int, name: str, want: bool, rest: bytes
    ) -> None:
        message = c.parse_channel_request(
            c.channel_request(recipient, name, want, rest)
        )

        assert message == c.ChannelRequest(recipient, name, want, rest)

    @given(u32, st.binary(max_size=1024))
    def test_data(self, recipient: int, chunk: bytes) -> None:
        assert c.parse_data(c.data(recipient, chunk)) == (recipient, chunk)

    @given(u32, u32, st.binary(max_size=256))
    def test_extended_data(self, recipient: int, kind: int, chunk: bytes) -> None:
        payload = c.extended_data(recipient, kind, chunk)

        assert c.parse_extended_data(payload) == (recipient, kind, chunk)

    @given(u32, u32, st.text(max_size=40))
    def test_open_failure(self, recipient: int, code: int, text: str) -> None:
        failure = c.parse_open_failure(c.open_failure(recipient, code, text))

        assert failure == c.OpenFailure(recipient, code, text)

    @given(names, st.booleans(), st.binary(max_size=32))
    def test_global_request(self, name: str, want: bool, rest: bytes) -> None:
        request = c.parse_global_request(c.global_request(name, want, rest))

        assert request == c.GlobalRequest(name, want, rest)


class TestPayload:
    """
    Request-specific parts, as OpenSSH sends them.
    """

    def test_pty(self) -> None:
        rest = c.ns(b"xterm-256color") + (120).to_bytes(4, "big")
        rest += (40).to_bytes(4, "big") + bytes(8) + c.ns(b"\x00")

        assert c.parse_pty(rest) == c.Pty("xterm-256color", 120, 40)

    def test_exit_signal(self) -> None:
        rest = c.ns(b"KILL") + b"\x01" + c.ns(b"killed") + c.ns(b"")

        assert c.parse_exit_signal(rest) == c.ExitSignal("KILL", True, "killed")

    def test_direct_tcpip(self) -> None:
        extra = c.ns(b"db.internal") + (5432).to_bytes(4, "big")
        extra += c.ns(b"127.0.0.1") + (50000).to_bytes(4, "big")

        assert c.parse_direct_tcpip(extra) == c.DirectTcpip(
            "db.internal", 5432, "127.0.0.1", 50000
        )

    def test_direct_tcpip_bad_port(self) -> None:
        extra = c.ns(b"h") + (70000).to_bytes(4, "big") + c.ns(b"o") + bytes(4)

        with pytest.raises(c.ProtocolError):
            c.parse_direct_tcpip(extra)

    def test_exit_status(self) -> None:
        assert c.parse_exit_status(c.exit_status(255)) == 255


class TestTruncation:
    """
    A payload that ends early is a protocol error, never an IndexError.
    """

    def test_every_prefix(self) -> None:
        cases = [
            (c.parse_channel_open, c.channel_open("session", 1, 2, 3)),
            (c.parse_channel_request, c.channel_request(1, "exec", True, b"")),
            (c.parse_data, c.data(1, b"abc")),
            (c.parse_extended_data, c.extended_data(1, 1, b"abc")),
            (c.parse_open_confirmation, c.open_confirmation(1, 2, 3, 4)),
            (c.parse_open_failure, c.open_failure(1, 2, "no")),
            (c.parse_window_adjust, c.window_adjust(1, 2)),
            (c.parse_global_request, c.global_request("keepalive", True)),
        ]
        refused: set[tuple[str, int]] = set()
        for parse, whole in cases:
            for end in range(len(whole)):
                try:
                    parse(whole[:end])
                except c.ProtocolError:
                    refused.add((parse.__name__, end))

        # Every parser refuses a payload too short for its fixed fields;
        # longer prefixes may be whole messages with a shorter last field,
        # but none raises anything other than ProtocolError.
        for parse, _ in cases:
            assert {(parse.__name__, end) for end in range(4)} <= refused
