"""
The SSH connection protocol (RFC 4254) as values: sans-IO.

Conch handles the transport (key exchange, ciphers, MACs) and user
authentication; the gateway relays channels itself, so it reads and
writes the connection protocol's messages here: payloads in (the bytes
after the message number), typed values out, and back.  Nothing here
touches a transport or a clock.

A payload that ends early or carries a bad field raises L{ProtocolError};
the adapters turn it into a disconnect.

test-case-name: tests.unit.ssh.test_codec
"""

from __future__ import annotations

import struct

from attrs import frozen

MSG_GLOBAL_REQUEST = 80
MSG_REQUEST_SUCCESS = 81
MSG_REQUEST_FAILURE = 82
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97
MSG_CHANNEL_REQUEST = 98
MSG_CHANNEL_SUCCESS = 99
MSG_CHANNEL_FAILURE = 100

OPEN_ADMINISTRATIVELY_PROHIBITED = 1
OPEN_CONNECT_FAILED = 2
OPEN_UNKNOWN_CHANNEL_TYPE = 3
OPEN_RESOURCE_SHORTAGE = 4

EXTENDED_DATA_STDERR = 1

_U32 = struct.Struct(">L")
_TWO = struct.Struct(">2L")
_THREE = struct.Struct(">3L")
_FOUR = struct.Struct(">4L")


class ProtocolError(Exception):
    """
    A message the connection protocol does not allow.

    Attributes:
        message: What was wrong, for the log.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Reader:
    """
    Reads the fields of one payload in order.
    """

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def _take(self, size: int) -> bytes:
        end = self._at + size
        if end > len(self._data):
            raise ProtocolError(f"{self._what} ends early")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def boolean(self) -> bool:
        return self._take(1) != b"\x00"

    def string(self) -> bytes:
        return self._take(self.u32())

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")

    def rest(self) -> bytes:
        chunk = self._data[self._at :]
        self._at = len(self._data)
        return chunk


def ns(value: bytes) -> bytes:
    """
    An SSH C{string}: a 32-bit length, then the bytes.
    """
    return _U32.pack(len(value)) + value


def _flag(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


# -- global requests --------------------------------------------------------


@frozen
class GlobalRequest:
    """
    SSH_MSG_GLOBAL_REQUEST.

    Attributes:
        name: The request name (C{keepalive@openssh.com}).
        want_reply: Whether the sender waits for an answer.
        data: The request-specific rest.
    """

    name: str
    want_reply: bool
    data: bytes


def parse_global_request(payload: bytes) -> GlobalRequest:
    reader = _Reader(payload, "global request")
    name = reader.string().decode("ascii", "replace")
    return GlobalRequest(name, reader.boolean(), reader.rest())


def global_request(name: str, want_reply: bool, data: bytes = b"") -> bytes:
    return ns(name.encode("ascii")) + _flag(want_reply) + data


# -- channel open -------------------------------------------------------------


@frozen
class ChannelOpen:
    """
    SSH_MSG_CHANNEL_OPEN.

    Attributes:
        kind: The channel type (C{session}, C{direct-tcpip}).
        sender: The sender's channel number.
        window: The sender's initial window.
        max_packet: The largest data packet the sender accepts.
        extra: The type-specific rest.
    """

    kind: str
    sender: int
    window: int
    max_packet: int
    extra: bytes


def parse_channel_open(payload: bytes) -> ChannelOpen:
    reader = _Reader(payload, "channel open")
    kind = reader.string().decode("ascii", "replace")
    sender, window, max_packet = reader.u32(), reader.u32(), reader.u32()
    return ChannelOpen(kind, sender, window, max_packet, reader.rest())


def channel_open(
    kind: str, sender: int, window: int, max_packet: int, extra: bytes = b""
) -> bytes:
    return ns(kind.encode("ascii")) + _THREE.pack(sender, window, max_packet) + extra


@frozen
class OpenConfirmation:
    """
    SSH_MSG_CHANNEL_OPEN_CONFIRMATION.

    Attributes:
        recipient: Our channel number.
        sender: The peer's channel number.
        window: The peer's initial window.
        max_packet: The largest data packet the peer accepts.
    """

    recipient: int
    sender: int
    window: int
    max_packet: int


def parse_open_confirmation(payload: bytes) -> OpenConfirmation:
    if len(payload) < 16:
        raise ProtocolError("channel open confirmation ends early")
    return OpenConfirmation(*_FOUR.unpack(payload[:16]))


def open_confirmation(
    recipient: int, sender: int, window: int, max_packet: int
) -> bytes:
    return _FOUR.pack(recipient, sender, window, max_packet)


@frozen
class OpenFailure:
    """
    SSH_MSG_CHANNEL_OPEN_FAILURE.

    Attributes:
        recipient: Our channel number.
        code: The reason code (C{OPEN_*}).
        text: The peer's description.
    """

    recipient: int
    code: int
    text: str


def parse_open_failure(payload: bytes) -> OpenFailure:
    reader = _Reader(payload, "channel open failure")
    recipient, code = reader.u32(), reader.u32()
    return OpenFailure(recipient, code, reader.text())


def open_failure(recipient: int, code: int, text: str) -> bytes:
    return _TWO.pack(recipient, code) + ns(text.encode("utf-8")) + ns(b"")


@frozen
class DirectTcpip:
    """
    The type-specific part of a C{direct-tcpip} channel open.

    Attributes:
        host: The destination the client wants reached.
        port: Its port.
        originator: The address the client's connection came from.
        originator_port: Its port.
    """

    host: str
    port: int
    originator: str
    originator_port: int


def parse_direct_tcpip(extra: bytes) -> DirectTcpip:
    reader = _Reader(extra, "direct-tcpip open")
    host, port = reader.text(), reader.u32()
    originator, originator_port = reader.text(), reader.u32()
    if port > 65535 or originator_port > 65535:
        raise ProtocolError("direct-tcpip port out of range")
    return DirectTcpip(host, port, originator, originator_port)


# -- per-channel messages -----------------------------------------------------


def parse_channel_number(payload: bytes) -> int:
    """
    The recipient channel, the first field of every channel message.
    """
    if len(payload) < 4:
        raise ProtocolError("channel message ends early")
    value: int = _U32.unpack(payload[:4])[0]
    return value


def parse_window_adjust(payload: bytes) -> tuple[int, int]:
    """
    SSH_MSG_CHANNEL_WINDOW_ADJUST: the channel and the bytes added.
    """
    if len(payload) < 8:
        raise ProtocolError("window adjust ends early")
    channel, added = _TWO.unpack(payload[:8])
    return channel, added


def window_adjust(recipient: int, added: int) -> bytes:
    return _TWO.pack(recipient, added)


def parse_data(payload: bytes) -> tuple[int, bytes]:
    """
    SSH_MSG_CHANNEL_DATA: the channel and its data.
    """
    if len(payload) < 8:
        raise ProtocolError("channel data ends early")
    channel, size = _TWO.unpack(payload[:8])
    if len(payload) - 8 < size:
        raise ProtocolError("channel data ends early")
    return channel, payload[8 : 8 + size]


def data(recipient: int, chunk: bytes) -> bytes:
    return _TWO.pack(recipient, len(chunk)) + chunk


def parse_extended_data(payload: bytes) -> tuple[int, int, bytes]:
    """
    SSH_MSG_CHANNEL_EXTENDED_DATA: the channel, the data type and the data.
    """
    if len(payload) < 12:
        raise ProtocolError("extended data ends early")
    channel, kind, size = _THREE.unpack(payload[:12])
    if len(payload) - 12 < size:
        raise ProtocolError("extended data ends early")
    return channel, kind, payload[12 : 12 + size]


def extended_data(recipient: int, kind: int, chunk: bytes) -> bytes:
    return _THREE.pack(recipient, kind, len(chunk)) + chunk


def channel_only(recipient: int) -> bytes:
    """
    The payload of EOF, CLOSE, SUCCESS and FAILURE: the channel alone.
    """
    return _U32.pack(recipient)


@frozen
class ChannelRequest:
    """
    SSH_MSG_CHANNEL_REQUEST.

    Attributes:
        recipient: Our channel number.
        name: The request type (C{exec}, C{exit-status}).
        want_reply: Whether the sender waits for an answer.
        data: The type-specific rest.
    """

    recipient: int
    name: str
    want_reply: bool
    data: bytes


def parse_channel_request(payload: bytes) -> ChannelRequest:
    reader = _Reader(payload, "channel request")
    recipient = reader.u32()
    name = reader.string().decode("ascii", "replace")
    return ChannelRequest(recipient, name, reader.boolean(), reader.rest())


def channel_request(recipient: int, name: str, want_reply: bool, rest: bytes) -> bytes:
    return _U32.pack(recipient) + ns(name.encode("ascii")) + _flag(want_reply) + rest


# -- request-specific parts ---------------------------------------------------


def parse_command(rest: bytes) -> str:
    """
    The command line of an C{exec} request (or a C{subsystem}'s name).
    """
    return _Reader(rest, "exec request").text()


def command(line: str) -> bytes:
    return ns(line.encode("utf-8"))


def parse_env(rest: bytes) -> tuple[str, str]:
    """
    An C{env} request: the variable's name and value.
    """
    reader = _Reader(rest, "env request")
    return reader.text(), reader.text()


@frozen
class Pty:
    """
    A C{pty-req}: the terminal the client wants.

    Attributes:
        term: The TERM value.
        columns: Width in characters.
        rows: Height in characters.
    """

    term: str
    columns: int
    rows: int


def parse_pty(rest: bytes) -> Pty:
    reader = _Reader(rest, "pty request")
    term = reader.text()
    columns, rows = reader.u32(), reader.u32()
    reader.u32()
    reader.u32()
    reader.string()
    return Pty(term, columns, rows)


def parse_window_change(rest: bytes) -> tuple[int, int]:
    """
    A C{window-change}: columns and rows.
    """
    reader = _Reader(rest, "window change")
    return reader.u32(), reader.u32()


def parse_exit_status(rest: bytes) -> int:
    return _Reader(rest, "exit status").u32()


def exit_status(code: int) -> bytes:
    return _U32.pack(code)


@frozen
class ExitSignal:
    """
    An C{exit-signal}: the command died of a signal.

    Attributes:
        signal: Its name without C{SIG} (C{TERM}).
        core_dumped: Whether a core was written.
        message: The target's text about it.
    """

    signal: str
    core_dumped: bool
    message: str


def parse_exit_signal(rest: bytes) -> ExitSignal:
    reader = _Reader(rest, "exit signal")
    signal = reader.text()
    core = reader.boolean()
    return ExitSignal(signal, core, reader.text())


def parse_signal(rest: bytes) -> str:
    return _Reader(rest, "signal request").text()


__all__ = [
    "ChannelOpen",
    "ChannelRequest",
    "DirectTcpip",
    "ExitSignal",
    "GlobalRequest",
    "OpenConfirmation",
    "OpenFailure",
    "ProtocolError",
    "Pty",
]
