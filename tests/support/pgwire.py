"""
A minimal PostgreSQL frontend over a raw socket, for the steps that no
driver takes: GSSENCRequest, a StartupMessage asking for protocol 3.2,
an empty password, a forged CancelRequest, and reading the exact SQLSTATE
of a refused login (libpq-based drivers show only the message).

Standard library only; every read has a timeout, so a gateway that stops
answering fails the test instead of hanging it.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Mapping

from attrs import frozen

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "SSL_REQUEST_CODE",
    "Message",
    "WireClient",
    "error_fields",
    "extended",
    "frontend",
    "query",
]

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

#: Authentication request codes ('R' messages).
AUTH_OK = 0
AUTH_CLEARTEXT = 3

READ_TIMEOUT = 10.0


@frozen
class Message:
    """
    One backend message.

    Attributes:
        type: The type byte as a one-letter string (C{"R"}, C{"E"}, ...).
        payload: The bytes after the length field.
    """

    type: str
    payload: bytes

    @property
    def auth_code(self) -> int:
        """
        The request code of an Authentication message.
        """
        assert self.type == "R", f"not an Authentication message: {self}"
        code: int = struct.unpack("!i", self.payload[:4])[0]
        return code


def error_fields(message: Message) -> dict[str, str]:
    """
    The fields of an ErrorResponse or NoticeResponse, by field letter
    (C{S} severity, C{V} non-localised severity, C{C} SQLSTATE, C{M}
    message, C{D} detail, ...).
    """
    assert message.type in ("E", "N"), f"not an error or notice: {message}"
    fields: dict[str, str] = {}
    for part in message.payload.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def negotiate_fields(message: Message) -> tuple[int, list[str]]:
    """
    The version offered and the unrecognised options of a
    NegotiateProtocolVersion message.

    PostgreSQL and libpq put the whole version there (major << 16 | minor,
    196608 for 3.0), though the documentation speaks of the minor only.
    """
    assert message.type == "v", f"not NegotiateProtocolVersion: {message}"
    version, count = struct.unpack("!ii", message.payload[:8])
    names = message.payload[8:].split(b"\x00")[:count]
    return version, [n.decode() for n in names]


def startup_message(params: Mapping[str, str], major: int = 3, minor: int = 0) -> bytes:
    """
    A StartupMessage for protocol C{major.minor} with C{params}.
    """
    body = struct.pack("!i", (major << 16) | minor)
    for key, value in params.items():
        body += key.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def special_request(code: int, extra: bytes = b"") -> bytes:
    """
    An SSLRequest, GSSENCRequest or CancelRequest (with C{extra}).
    """
    return struct.pack("!ii", 8 + len(extra), code) + extra


def password_message(password: str) -> bytes:
    """
    A PasswordMessage carrying C{password} in clear.
    """
    body = password.encode() + b"\x00"
    return b"p" + struct.pack("!i", len(body) + 4) + body


def frontend(type_byte: bytes, body: bytes = b"") -> bytes:
    """
    A frontend message: type byte, length, body.
    """
    return type_byte + struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    """
    A simple Query.
    """
    return frontend(b"Q", sql.encode() + b"\x00")


def extended(sql: str) -> bytes:
    """
    What libpq sends for C{PQsendQueryParams} without parameters: Parse,
    Bind, Describe (portal), Execute and Sync, all unnamed.
    """
    return b"".join(
        [
            frontend(b"P", b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", 0)),
            frontend(b"B", b"\x00\x00" + struct.pack("!hhh", 0, 0, 0)),
            frontend(b"D", b"P\x00"),
            frontend(b"E", b"\x00" + struct.pack("!i", 0)),
            frontend(b"S"),
        ]
    )


class WireClient:
    """
    One raw connection to a PostgreSQL server or the gateway.

    Args:
        port: The port on 127.0.0.1.
        timeout: Seconds any single read may wait.
    """

    def __init__(self, port: int, timeout: float = READ_TIMEOUT) -> None:
        self.sock: socket.socket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        )

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the connection.
        """
        self.sock.close()

    def send(self, data: bytes) -> None:
        """
        Send C{data} as is.
        """
        self.sock.sendall(data)

    def recv_exact(self, count: int) -> bytes:
        """
        Exactly C{count} bytes; fewer only if the peer closed.
        """
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def read_message(self) -> Message | None:
        """
        The next backend message, or C{None} if the peer closed first.
        """
        head = self.recv_exact(5)
        if len(head) < 5:
            return None
        length = struct.unpack("!i", head[1:])[0]
        assert 4 <= length < 1 << 30, f"bad message length {length}"
        payload = self.recv_exact(length - 4)
        assert len(payload) == length - 4, "connection closed inside a message"
        return Message(chr(head[0]), payload)

    def read_until(self, *types: str) -> list[Message]:
        """
        Messages up to and including the first of one of C{types} (or up
        to the peer closing).
        """
        messages: list[Message] = []
        while True:
            message = self.read_message()
            if message is None:
                return messages
            messages.append(message)
            if message.type in types:
                return messages

    def closed_by_peer(self) -> bool:
        """
        Whether the peer closed the connection with nothing more to read.
        """
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def start_tls(self, cafile: str) -> None:
        """
        Send SSLRequest, expect C{S}, and wrap the socket in TLS,
        verifying the certificate against C{cafile} for C{127.0.0.1}.
        """
        self.send(special_request(SSL_REQUEST_CODE))
        answer = self.recv_exact(1)
        assert answer == b"S", f"SSLRequest answered {answer!r}"
        context = ssl.create_default_context(cafile=cafile)
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def login(
        self, password: str, database: str = "appdb", user: str = "ci-runner"
    ) -> list[Message]:
        """
        StartupMessage; on a cleartext password request, C{password}; the
        messages up to ReadyForQuery, an error, or the peer closing.
        """
        self.send(startup_message({"user": user, "database": database}))
        first = self.read_until("R", "E")
        if not first or first[-1].type != "R" or first[-1].auth_code != AUTH_CLEARTEXT:
            return first
        self.send(password_message(password))
        return first + self.read_until("Z", "E")
