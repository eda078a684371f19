"""
Sans-IO codec for the PostgreSQL frontend/backend protocol, version 3.

Bytes go in through a reader and come out as frames: the type byte, the
payload and the exact original bytes, so that the adapter can relay what
it does not inspect unchanged. Typed parsers turn one frame's payload into
a frozen message object; builders turn arguments into wire bytes. Nothing
here touches a socket, a reactor, a clock or a logger.

Peer bytes that break the protocol raise `ProtocolViolation`, never an
`IndexError`, `struct.error` or `UnicodeDecodeError`. Builders given
arguments the protocol cannot carry (a NUL inside a string, a number out of
range) raise `ValueError`: that is a bug in the gateway, not in the peer.

Text fields travel in the connection's `client_encoding`; every parser and
builder that handles text takes an `encoding` keyword (a Python codec name,
see `python_encoding`) so a LATIN1 session is decoded as LATIN1.

test-case-name: tests.unit.postgres.test_codec
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import IntEnum, StrEnum
from typing import NamedTuple, TypeAlias, TypeVar

from attrs import frozen

# -- Errors --------------------------------------------------------------


class ProtocolViolation(Exception):  # noqa: N818 (the protocol's own name)
    """
    The peer sent bytes the PostgreSQL protocol does not allow.

    The gateway answers with SQLSTATE 08P01 and closes the connection.

    Attributes:
        message: A short description, safe to log; it never holds payload.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- Names and constants -------------------------------------------------


class FrontendType(IntEnum):
    """
    Type bytes of messages sent by the client.

    `PASSWORD` carries PasswordMessage, SASLInitialResponse, SASLResponse
    and GSSResponse alike: which one depends on the authentication state.
    """

    BIND = ord("B")
    CLOSE = ord("C")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_FAIL = ord("f")
    DESCRIBE = ord("D")
    EXECUTE = ord("E")
    FLUSH = ord("H")
    FUNCTION_CALL = ord("F")
    PARSE = ord("P")
    PASSWORD = ord("p")
    QUERY = ord("Q")
    SYNC = ord("S")
    TERMINATE = ord("X")


class BackendType(IntEnum):
    """
    Type bytes of messages sent by the server.
    """

    AUTHENTICATION = ord("R")
    BACKEND_KEY_DATA = ord("K")
    BIND_COMPLETE = ord("2")
    CLOSE_COMPLETE = ord("3")
    COMMAND_COMPLETE = ord("C")
    COPY_BOTH_RESPONSE = ord("W")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_IN_RESPONSE = ord("G")
    COPY_OUT_RESPONSE = ord("H")
    DATA_ROW = ord("D")
    EMPTY_QUERY_RESPONSE = ord("I")
    ERROR_RESPONSE = ord("E")
    FUNCTION_CALL_RESPONSE = ord("V")
    NEGOTIATE_PROTOCOL_VERSION = ord("v")
    NO_DATA = ord("n")
    NOTICE_RESPONSE = ord("N")
    NOTIFICATION_RESPONSE = ord("A")
    PARAMETER_DESCRIPTION = ord("t")
    PARAMETER_STATUS = ord("S")
    PARSE_COMPLETE = ord("1")
    PORTAL_SUSPENDED = ord("s")
    READY_FOR_QUERY = ord("Z")
    ROW_DESCRIPTION = ord("T")


class AuthCode(IntEnum):
    """
    Subtypes of the Authentication ('R') message.
    """

    OK = 0
    KERBEROS_V5 = 2
    CLEARTEXT_PASSWORD = 3
    MD5_PASSWORD = 5
    SCM_CREDENTIAL = 6
    GSS = 7
    GSS_CONTINUE = 8
    SSPI = 9
    SASL = 10
    SASL_CONTINUE = 11
    SASL_FINAL = 12


class TransactionStatus(StrEnum):
    """
    The status letter carried by ReadyForQuery.
    """

    IDLE = "I"
    IN_TRANSACTION = "T"
    FAILED = "E"


class SqlState(StrEnum):
    """
    The SQLSTATE codes the gateway sends on its own.
    """

    INVALID_AUTHORIZATION_SPECIFICATION = "28000"
    INVALID_PASSWORD = "28P01"  # noqa: S105 (a code, not a password)
    PROTOCOL_VIOLATION = "08P01"
    CONNECTION_FAILURE = "08006"
    SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION = "08001"
    FEATURE_NOT_SUPPORTED = "0A000"
    INSUFFICIENT_PRIVILEGE = "42501"
    QUERY_CANCELED = "57014"
    ADMIN_SHUTDOWN = "57P01"
    TOO_MANY_CONNECTIONS = "53300"
    INVALID_CATALOG_NAME = "3D000"


PROTOCOL_MAJOR = 3
"""The only protocol major version this codec speaks."""

SSL_REQUEST_CODE = 80877103
"""The version field of an SSLRequest (1234.5679)."""

GSSENC_REQUEST_CODE = 80877104
"""The version field of a GSSENCRequest (1234.5680)."""

CANCEL_REQUEST_CODE = 80877102
"""The version field of a CancelRequest (1234.5678)."""

NEGOTIATION_MAJOR = 1234
"""The major number reserved for the special startup requests above."""

TLS_HANDSHAKE_RECORD = 0x16
"""The first byte of a TLS ClientHello (PostgreSQL 17 direct TLS)."""

MAX_STARTUP_LENGTH = 10_000
"""The largest startup packet, as PostgreSQL's own limit."""

MAX_MESSAGE_LENGTH = 1 << 30
"""The default largest message length field (1 GiB)."""

SMALL_MESSAGE_LENGTH = 10_000
"""PostgreSQL's limit for frontend messages that carry no data."""

MAX_AUTH_MESSAGE_LENGTH = 65_535 + 4
"""PostgreSQL's limit for a password or SASL message (payload 65535)."""

MAX_COUNT = 65_535
"""The most elements a counted list holds: parameters, format codes,
columns (the count is an unsigned 16-bit number)."""

MIN_CANCEL_KEY = 4
"""The shortest cancel key (protocol 3.0 keys are exactly 4 bytes)."""

MAX_CANCEL_KEY = 256
"""The longest cancel key protocol 3.2 allows."""

FRONTEND_LIMITS: Mapping[int, int] = {
    FrontendType.CLOSE: SMALL_MESSAGE_LENGTH,
    FrontendType.COPY_DONE: SMALL_MESSAGE_LENGTH,
    FrontendType.COPY_FAIL: SMALL_MESSAGE_LENGTH,
    FrontendType.DESCRIBE: SMALL_MESSAGE_LENGTH,
    FrontendType.EXECUTE: SMALL_MESSAGE_LENGTH,
    FrontendType.FLUSH: SMALL_MESSAGE_LENGTH,
    FrontendType.PASSWORD: MAX_AUTH_MESSAGE_LENGTH,
    FrontendType.SYNC: SMALL_MESSAGE_LENGTH,
    FrontendType.TERMINATE: SMALL_MESSAGE_LENGTH,
}
"""Per-type length limits for client messages, the same as PostgreSQL's."""

_FRONTEND_TYPES = frozenset(int(t) for t in FrontendType)

OVERSIZED_STATEMENT = 0x100
"""The type of the frame a L{FrontendReader} with a statement limit
gives in place of a Query or Parse over it (no wire type byte is this
large): see L{parse_oversized}."""

_STATEMENT_TYPES = frozenset({FrontendType.QUERY, FrontendType.PARSE})

MAX_STATEMENT_NAME = 4096
"""The longest statement name read from a Parse over the statement
limit (the server's own names are at most 63 bytes)."""

_ERROR_SEVERITIES = frozenset({"ERROR", "FATAL", "PANIC"})
_NOTICE_SEVERITIES = frozenset(
    {"WARNING", "NOTICE", "DEBUG", "INFO", "LOG"},
)

_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">Bi")
_I32_PAIR = struct.Struct(">ii")

_unpack_i32 = _I32.unpack_from

# Taking this many bytes at once frees them at once, not at the next feed.
_COMPACT_AFTER = 1 << 20


def describe_type(type_byte: int) -> str:
    """
    Name a type byte for an error message: `'Q'`, or `0x00` if unprintable.

    Args:
        type_byte: The message type byte.

    Returns:
        A short printable form.
    """
    if 0x20 < type_byte < 0x7F:
        return repr(chr(type_byte))

    return f"0x{type_byte:02x}"


# -- Startup packets -----------------------------------------------------


@frozen
class SSLRequest:
    """
    The client asks for TLS; the answer is one byte, `S` or `N`.
    """


@frozen
class GSSENCRequest:
    """
    The client asks for GSSAPI encryption; the gateway answers `N`.
    """


@frozen
class CancelRequest:
    """
    The client asks, on a new connection, to cancel a running query.

    Attributes:
        pid: The process id from BackendKeyData.
        secret: The cancel key: 4 bytes, or up to 256 with protocol 3.2.
    """

    pid: int
    secret: bytes


@frozen
class StartupMessage:
    """
    The client opens a session.

    Attributes:
        minor: The protocol minor version asked for (major is always 3).
        parameters: Names to values in the order sent (`user`,
            `database`, `options`, `_pq_.*` protocol options, GUCs).
    """

    minor: int
    parameters: dict[str, str]


@frozen
class DirectTLS:
    """
    The first bytes are a TLS ClientHello (PostgreSQL 17 direct TLS).

    Nothing is consumed: hand `MessageReader.take_buffered` to TLS.
    """


StartupPacket: TypeAlias = (
    SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | DirectTLS
)

# -- Frontend messages ---------------------------------------------------


@frozen
class Query:
    """
    A simple-protocol query string (one or more statements).

    Attributes:
        text: The SQL text.
    """

    text: str


@frozen
class Parse:
    """
    Extended protocol: prepare a statement.

    Attributes:
        name: The statement name; empty for the unnamed statement.
        text: The SQL text.
        param_type_oids: Type OIDs the client fixes; 0 means unspecified.
    """

    name: str
    text: str
    param_type_oids: tuple[int, ...]


@frozen
class Bind:
    """
    Extended protocol: bind parameters to a statement, making a portal.

    Attributes:
        portal: The portal name; empty for the unnamed portal.
        statement: The statement name; empty for the unnamed statement.
        param_formats: No code (all text), one code for all, or one per
            parameter; 0 is text, 1 is binary.
        params: Parameter values, `None` for SQL NULL.
        result_formats: The same scheme for result columns.
    """

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def param_format(self, index: int) -> int:
        """
        The format code that applies to one parameter.

        Args:
            index: The parameter's position, from 0.

        Returns:
            0 for text, 1 for binary.
        """
        if not self.param_formats:
            return 0

        if len(self.param_formats) == 1:
            return self.param_formats[0]

        return self.param_formats[index]


@frozen
class Execute:
    """
    Extended protocol: run a portal.

    Attributes:
        portal: The portal name.
        max_rows: The most rows to return; 0 (or less) means all.
    """

    portal: str
    max_rows: int


@frozen
class Describe:
    """
    Extended protocol: describe a statement (`S`) or a portal (`P`).

    Attributes:
        kind: `"S"` or `"P"`.
        name: The statement or portal name.
    """

    kind: str
    name: str


@frozen
class Close:
    """
    Extended protocol: close a statement (`S`) or a portal (`P`).

    Attributes:
        kind: `"S"` or `"P"`.
        name: The statement or portal name.
    """

    kind: str
    name: str


@frozen
class Sync:
    """
    Extended protocol: end of a batch; the server answers ReadyForQuery.
    """


@frozen
class Flush:
    """
    Extended protocol: ask the server to send what it has.
    """


@frozen
class Terminate:
    """
    The client closes the session.
    """


@frozen
class CopyData:
    """
    A chunk of COPY data, in either direction.

    Attributes:
        data: The bytes, in the COPY format of the operation.
    """

    data: bytes


@frozen
class CopyDone:
    """
    The end of COPY data, in either direction.
    """


@frozen
class CopyFail:
    """
    The client aborts COPY FROM STDIN.

    Attributes:
        message: The reason the client gives.
    """

    message: str


@frozen
class FunctionCall:
    """
    The legacy fast-path function call, parsed only far enough to refuse.

    Attributes:
        function_oid: The OID of the function the client wants to run.
    """

    function_oid: int


FrontendMessage: TypeAlias = (
    Query
    | Parse
    | Bind
    | Execute
    | Describe
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
)

# -- Backend messages ----------------------------------------------------


@frozen
class Authentication:
    """
    The server asks for (or confirms) authentication.

    Attributes:
        code: Which request this is.
        data: The 4-byte salt for MD5, the SASL exchange data for SASL
            continue and final, GSS data for GSS continue; else empty.
        mechanisms: The SASL mechanisms offered (SASL only).
    """

    code: AuthCode
    data: bytes = b""
    mechanisms: tuple[str, ...] = ()


@frozen
class ParameterStatus:
    """
    The server reports a run-time parameter.

    Attributes:
        name: The parameter name (`client_encoding`, `server_version`).
        value: Its current value.
    """

    name: str
    value: str


@frozen
class BackendKeyData:
    """
    The key a client needs to cancel queries on this session.

    Attributes:
        pid: The backend process id.
        secret: The cancel key, 4 to 256 bytes.
    """

    pid: int
    secret: bytes


@frozen
class ReadyForQuery:
    """
    The server is ready for the next query.

    Attributes:
        status: The transaction status.
    """

    status: TransactionStatus


@frozen
class FieldDescription:
    """
    One column of a RowDescription.

    Attributes:
        name: The column name.
        table_oid: The table's OID, or 0 if not a table column.
        column_number: The attribute number in that table, or 0.
        type_oid: The data type's OID.
        type_size: The type's size; negative for variable width.
        type_modifier: The type modifier (`typmod`), -1 if none.
        format: 0 for text, 1 for binary.
    """

    name: str
    table_oid: int
    column_number: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@frozen
class RowDescription:
    """
    The columns of the rows that follow.

    Attributes:
        fields: One description per column, in order.
    """

    fields: tuple[FieldDescription, ...]


@frozen
class DataRow:
    """
    One result row (the slow path; see `parse_data_row`).

    Attributes:
        values: One value per column, `None` for SQL NULL.
    """

    values: tuple[bytes | None, ...]


@frozen
class CommandComplete:
    """
    A statement finished.

    Attributes:
        tag: The command tag, such as `SELECT 3` or `COPY 1000`.
    """

    tag: str


@frozen
class ErrorResponse:
    """
    The server reports an error.

    Attributes:
        fields: Field code letters to values, in the order received.
    """

    fields: dict[str, str]

    @property
    def sqlstate(self) -> str:
        """
        The SQLSTATE (`C` field), or an empty string if missing.
        """
        return self.fields.get("C", "")

    @property
    def severity(self) -> str:
        """
        The non-localised severity (`V`), else the localised one (`S`).
        """
        return self.fields.get("V", self.fields.get("S", ""))


@frozen
class NoticeResponse:
    """
    The server reports a notice or warning.

    Attributes:
        fields: Field code letters to values, in the order received.
    """

    fields: dict[str, str]


@frozen
class NegotiateProtocolVersion:
    """
    The server supports an older minor version or not all options.

    Attributes:
        newest_minor: The newest minor version the server supports.
        unsupported_options: The `_pq_.` options it did not recognise.
    """

    newest_minor: int
    unsupported_options: tuple[str, ...]


@frozen
class CopyInResponse:
    """
    The server is ready to receive COPY FROM STDIN data.

    Attributes:
        format: 0 for textual COPY, 1 for binary.
        column_formats: One format code per column.
    """

    format: int
    column_formats: tuple[int, ...]


@frozen
class CopyOutResponse:
    """
    The server will send COPY TO STDOUT data.

    Attributes:
        format: 0 for textual COPY, 1 for binary.
        column_formats: One format code per column.
    """

    format: int
    column_formats: tuple[int, ...]


@frozen
class CopyBothResponse:
    """
    The server starts COPY in both directions (replication).

    Attributes:
        format: 0 for textual COPY, 1 for binary.
        column_formats: One format code per column.
    """

    format: int
    column_formats: tuple[int, ...]


@frozen
class EmptyQueryResponse:
    """
    The query string was empty.
    """


@frozen
class ParseComplete:
    """
    A Parse succeeded.
    """


@frozen
class BindComplete:
    """
    A Bind succeeded.
    """


@frozen
class CloseComplete:
    """
    A Close succeeded.
    """


@frozen
class NoData:
    """
    The described statement or portal returns no rows.
    """


@frozen
class PortalSuspended:
    """
    An Execute stopped at its row limit.
    """


@frozen
class ParameterDescription:
    """
    The parameter types of a described statement.

    Attributes:
        type_oids: One type OID per parameter.
    """

    type_oids: tuple[int, ...]


@frozen
class NotificationResponse:
    """
    A NOTIFY arrived on a channel the session listens to.

    Attributes:
        pid: The notifying backend's process id.
        channel: The channel name.
        payload: The payload string.
    """

    pid: int
    channel: str
    payload: str


BackendMessage: TypeAlias = (
    Authentication
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | ErrorResponse
    | NoticeResponse
    | NegotiateProtocolVersion
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | CopyData
    | CopyDone
    | EmptyQueryResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | PortalSuspended
    | ParameterDescription
    | NotificationResponse
)

# -- Framing -------------------------------------------------------------


class Frame(NamedTuple):
    """
    One complete message as it came off the wire.

    Attributes:
        type: The type byte.
        payload: The bytes after the length field.
        raw: The whole message, type and length included, unchanged.
    """

    type: int
    payload: bytes
    raw: bytes


_new_frame = tuple.__new__


class MessageReader:
    """
    Split a byte stream into typed messages.

    Feed it bytes, then take whole messages with `next_frame`, by
    iterating, or in runs with `take_passthrough`. It keeps at most the
    unconsumed bytes fed so far: consumed bytes are dropped on the next
    `feed`, and a length field over the limit is refused as soon as it
    arrives, before its payload is buffered.
    """

    def __init__(
        self,
        *,
        max_length: int = MAX_MESSAGE_LENGTH,
        limits: Mapping[int, int] | None = None,
    ) -> None:
        """
        Args:
            max_length: The largest length field accepted for any type.
            limits: Smaller (or larger) limits for some type bytes.
        """
        self._buffer = bytearray()
        self._offset = 0
        self._limits = [max_length] * 256

        for type_byte, limit in (limits or {}).items():
            self._limits[type_byte] = limit

    @property
    def buffered(self) -> int:
        """
        How many fed bytes have not been consumed yet.
        """
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        """
        Add bytes received from the peer.

        Args:
            data: Any number of bytes, split anywhere.
        """
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0

        self._buffer += data

    def take_buffered(self) -> bytes:
        """
        Remove and return every unconsumed byte (to hand over to TLS).

        Returns:
            The bytes fed but not consumed yet.
        """
        rest = bytes(self._buffer[self._offset :])
        self._buffer.clear()
        self._offset = 0

        return rest

    def peek_type(self) -> int | None:
        """
        The type byte of the next message, complete or not.

        Returns:
            The type byte, or `None` if nothing is buffered.
        """
        if self._offset < len(self._buffer):
            return self._buffer[self._offset]

        return None

    def next_frame(self) -> Frame | None:
        """
        Take the next complete message.

        Returns:
            The frame, or `None` until the whole message has arrived.

        Raises:
            ProtocolViolation: The length field is below 4 or over the
                limit for its type.
        """
        buffer = self._buffer
        offset = self._offset

        if len(buffer) - offset < 5:
            return None

        type_byte = buffer[offset]
        length = _unpack_i32(buffer, offset + 1)[0]
        if length < 4 or length > self._limits[type_byte]:
            raise self._bad_length(type_byte, length)

        end = offset + 1 + length
        if end > len(buffer):
            return None

        raw = _copy(buffer, offset, end)
        self._consumed(end)

        return _new_frame(Frame, (type_byte, raw[5:], raw))

    def __iter__(self) -> Iterator[Frame]:
        """
        Yield complete messages until the buffer holds none.

        Raises:
            ProtocolViolation: As `next_frame`.
        """
        frame = self.next_frame()
        while frame is not None:
            yield frame
            frame = self.next_frame()

    def take_passthrough(self, types: frozenset[int]) -> bytes:
        """
        Take the longest run of complete messages whose types are in
        `types`, as one contiguous chunk of their original bytes.

        This is the hot path for results: a batch of DataRows forwarded
        with one write and no per-row objects.

        Args:
            types: The type bytes that may be relayed uninspected.

        Returns:
            The run, or an empty string if the next message is not of
            those types or has not fully arrived.

        Raises:
            ProtocolViolation: A length field in the run is below 4 or
                over its limit.
        """
        buffer = self._buffer
        limits = self._limits
        start = offset = self._offset
        stop = len(buffer) - 5

        while offset <= stop:
            type_byte = buffer[offset]
            if type_byte not in types:
                break

            length = _unpack_i32(buffer, offset + 1)[0]
            if length < 4 or length > limits[type_byte]:
                raise self._bad_length(type_byte, length)

            end = offset + 1 + length
            if end > stop + 5:
                break

            offset = end

        if offset == start:
            return b""

        chunk = _copy(buffer, start, offset)
        self._consumed(offset)

        return chunk

    def _consumed(self, end: int) -> None:
        """
        Mark the buffer consumed up to `end`, giving back its memory at
        once when that was a large message (else on the next `feed`).
        """
        if end - self._offset < _COMPACT_AFTER:
            self._offset = end
            return

        del self._buffer[:end]
        self._offset = 0

    def _bad_length(self, type_byte: int, length: int) -> ProtocolViolation:
        """
        Describe a length field that is out of bounds.
        """
        name = describe_type(type_byte)
        if length < 4:
            return ProtocolViolation(
                f"message {name} has invalid length {length}",
            )

        limit = self._limits[type_byte]

        return ProtocolViolation(
            f"message {name} of {length} bytes exceeds the limit of {limit}",
        )


def _copy(buffer: bytearray, start: int, end: int) -> bytes:
    """
    Bytes of a buffer in one copy (slicing the bytearray would copy them
    twice, the first time into a bytearray of their own).
    """
    view = memoryview(buffer)
    try:
        return view[start:end].tobytes()
    finally:
        view.release()


class BackendReader(MessageReader):
    """
    A reader for the server side: 1 GiB for every message type.
    """


class FrontendReader(MessageReader):
    """
    A reader for the client side, with the startup phase.

    Call `read_startup` until it returns a `StartupMessage` (an
    `SSLRequest` or `GSSENCRequest` is followed by another startup
    packet), then `next_frame`. After an `SSLRequest`, check that
    `buffered` is 0 before starting TLS: bytes sent ahead of the TLS
    handshake were not protected by it (CVE-2021-23214).

    With a statement limit, a Query or Parse whose length field is over
    it (but within the limit for its type) is not buffered: `next_frame`
    gives a frame of type `OVERSIZED_STATEMENT` as soon as the header
    (and, for a Parse, the statement name) has arrived, and the rest of
    the message is dropped as it is fed. The session can go on: the
    next message is read as usual.
    """

    def __init__(
        self,
        *,
        max_length: int = MAX_MESSAGE_LENGTH,
        limits: Mapping[int, int] | None = None,
        statement_limit: int | None = None,
    ) -> None:
        """
        Args:
            max_length: The largest length field accepted for any type.
            limits: Per-type limits; PostgreSQL's own by default.
            statement_limit: The largest length field of a Query or
                Parse read whole; `None` for no limit of its own.
        """
        if limits is None:
            limits = FRONTEND_LIMITS

        super().__init__(max_length=max_length, limits=limits)
        self._statement_limit = statement_limit
        self._skip = 0

        # A type byte no client message has is refused at its header, not
        # after its claimed length was buffered.
        for type_byte in range(256):
            if type_byte not in _FRONTEND_TYPES and type_byte not in limits:
                self._limits[type_byte] = SMALL_MESSAGE_LENGTH

    @property
    def skipping(self) -> int:
        """
        How many bytes of a statement over the limit are still to drop.
        """
        return self._skip

    def feed(self, data: bytes) -> None:
        """
        Add bytes received from the peer, dropping what is left of a
        statement over the limit.

        Args:
            data: Any number of bytes, split anywhere.
        """
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return

            data = data[self._skip :]
            self._skip = 0

        super().feed(data)

    def next_frame(self) -> Frame | None:
        """
        Take the next complete message, or the start of a statement over
        the limit (see the class description).

        Returns:
            The frame, or `None` until it has arrived.

        Raises:
            ProtocolViolation: As `MessageReader.next_frame`, or a Parse
                over the limit names a statement of more than
                `MAX_STATEMENT_NAME` bytes.
        """
        if self._skip:
            return None

        length = self._over_statement_limit()
        if length is None:
            return super().next_frame()

        return self._skip_statement(length)

    def _over_statement_limit(self) -> int | None:
        """
        The length field of the next message if it is a statement over
        the limit (and within the limit of its type).
        """
        buffer = self._buffer
        offset = self._offset
        limit = self._statement_limit

        if limit is None or len(buffer) - offset < 5:
            return None

        type_byte = buffer[offset]
        if type_byte not in _STATEMENT_TYPES:
            return None

        length: int = _unpack_i32(buffer, offset + 1)[0]
        if length <= limit or length > self._limits[type_byte]:
            return None

        return length

    def _skip_statement(self, length: int) -> Frame | None:
        """
        Take the header of a statement over the limit (and a Parse's
        statement name) and drop the rest.
        """
        buffer = self._buffer
        offset = self._offset
        end = offset + 1 + length
        head_end = offset + 5

        if buffer[offset] == FrontendType.PARSE:
            search_end = min(end, head_end + MAX_STATEMENT_NAME)
            nul = buffer.find(b"\0", head_end, search_end)
            if nul < 0 and len(buffer) < search_end:
                return None
            if nul < 0:
                raise ProtocolViolation("Parse: the statement name is too long")
            head_end = nul + 1

        head = _copy(buffer, offset, head_end)
        taken = min(end, len(buffer))
        self._consumed(taken)
        self._skip = end - taken

        return _new_frame(Frame, (OVERSIZED_STATEMENT, head, b""))

    def read_startup(self) -> StartupPacket | None:
        """
        Take the next startup packet (these have no type byte).

        Returns:
            The packet, `DirectTLS` without consuming anything, or
            `None` until the whole packet has arrived.

        Raises:
            ProtocolViolation: The packet is malformed, too long, or asks
                for an unsupported protocol version.
        """
        buffer = self._buffer
        offset = self._offset
        available = len(buffer) - offset

        if available and buffer[offset] == TLS_HANDSHAKE_RECORD:
            return DirectTLS()

        if available < 4:
            return None

        length = _unpack_i32(buffer, offset)[0]
        if length < 8 or length > MAX_STARTUP_LENGTH:
            raise ProtocolViolation(
                f"invalid startup packet length {length}",
            )

        if available < length:
            return None

        packet = bytes(buffer[offset + 4 : offset + length])
        self._offset = offset + length

        return parse_startup(packet)


@frozen
class OversizedStatement:
    """
    A Query or Parse over a reader's statement limit, read only as far
    as its header (and a Parse's statement name).

    Attributes:
        kind: `FrontendType.QUERY` or `FrontendType.PARSE`.
        length: The message's length field.
        name: The statement name of a Parse; empty for a Query.
    """

    kind: FrontendType
    length: int
    name: str


def parse_oversized(payload: bytes, encoding: str = "utf-8") -> OversizedStatement:
    """
    Parse the payload of an `OVERSIZED_STATEMENT` frame: the statement's
    type byte, length field and, for a Parse, its statement name.

    Raises:
        ProtocolViolation: The payload is not such a head.
    """
    cursor = _Cursor(payload, "oversized statement")
    kind = cursor.byte()
    length = cursor.int32()

    if kind == FrontendType.QUERY:
        cursor.done()
        return OversizedStatement(FrontendType.QUERY, length, "")

    if kind != FrontendType.PARSE:
        raise cursor.fail(f"unexpected type {describe_type(kind)}")

    name = cursor.cstring(encoding)
    cursor.done()

    return OversizedStatement(FrontendType.PARSE, length, name)


def split_frames(chunk: bytes) -> Iterator[Frame]:
    """
    Split a run of complete messages, such as `take_passthrough` returns.

    Args:
        chunk: Whole messages, back to back.

    Yields:
        Each message as a frame.

    Raises:
        ProtocolViolation: The chunk does not hold whole messages.
    """
    offset = 0
    size = len(chunk)

    while offset < size:
        if size - offset < 5:
            raise ProtocolViolation("truncated message header")

        length = _unpack_i32(chunk, offset + 1)[0]
        end = offset + 1 + length
        if length < 4 or end > size:
            raise ProtocolViolation(f"invalid message length {length}")

        raw = chunk[offset:end]
        yield _new_frame(Frame, (raw[0], raw[5:], raw))
        offset = end


# -- Parsing helpers -----------------------------------------------------


class _Cursor:
    """
    Read the fields of one payload, raising `ProtocolViolation` on any
    shortfall.
    """

    __slots__ = ("_data", "_offset", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def fail(self, problem: str) -> ProtocolViolation:
        """
        Make the error for a problem in this message.
        """
        return ProtocolViolation(f"{self._what}: {problem}")

    def _advance(self, size: int) -> int:
        """
        Claim `size` bytes and return where they start.
        """
        start = self._offset
        end = start + size
        if end > len(self._data):
            raise self.fail("message is truncated")

        self._offset = end

        return start

    def byte(self) -> int:
        """
        Read one unsigned byte.
        """
        return self._data[self._advance(1)]

    def int16(self) -> int:
        """
        Read a signed 16-bit integer.
        """
        value: int = _I16.unpack_from(self._data, self._advance(2))[0]
        return value

    def count(self) -> int:
        """
        Read a 16-bit element count, which is unsigned.

        PostgreSQL reads the counts of parameters and format codes as
        unsigned 16-bit numbers (up to 65,535) and sends its column and
        parameter counts the same way; its clients read them so.
        """
        value: int = _U16.unpack_from(self._data, self._advance(2))[0]
        return value

    def int32(self) -> int:
        """
        Read a signed 32-bit integer.
        """
        value: int = _I32.unpack_from(self._data, self._advance(4))[0]
        return value

    def uint32(self) -> int:
        """
        Read an unsigned 32-bit integer (an OID).
        """
        value: int = _U32.unpack_from(self._data, self._advance(4))[0]
        return value

    def take(self, size: int) -> bytes:
        """
        Read `size` bytes.
        """
        start = self._advance(size)
        return self._data[start : start + size]

    def rest(self) -> bytes:
        """
        Read every byte left.
        """
        start = self._offset
        self._offset = len(self._data)

        return self._data[start:]

    def cstring_bytes(self) -> bytes:
        """
        Read a NUL-terminated string, without the NUL.
        """
        start = self._offset
        end = self._data.find(b"\0", start)
        if end < 0:
            raise self.fail("string is not terminated")

        self._offset = end + 1

        return self._data[start:end]

    def cstring(self, encoding: str) -> str:
        """
        Read and decode a NUL-terminated string.
        """
        return self.decode(self.cstring_bytes(), encoding)

    def decode(self, raw: bytes, encoding: str) -> str:
        """
        Decode text, turning bad bytes into a protocol violation.
        """
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            raise self.fail(f"text is not valid {encoding}") from None

    def done(self) -> None:
        """
        Insist that the whole payload was read.
        """
        if self._offset != len(self._data):
            extra = len(self._data) - self._offset
            raise self.fail(f"{extra} unexpected trailing bytes")

    def formats(self, count: int) -> tuple[int, ...]:
        """
        Read `count` format codes, each 0 (text) or 1 (binary).
        """
        codes = tuple(self.int16() for _ in range(count))
        for code in codes:
            if code not in (0, 1):
                raise self.fail(f"invalid format code {code}")

        return codes


def _empty(payload: bytes, what: str) -> None:
    """
    Insist that a message that carries nothing is empty.
    """
    if payload:
        raise ProtocolViolation(
            f"{what}: {len(payload)} unexpected trailing bytes",
        )


# -- Startup parsing -----------------------------------------------------


def parse_startup(packet: bytes) -> StartupPacket:
    """
    Parse a startup packet without its length field.

    Args:
        packet: The version code and the body.

    Returns:
        The request or startup message.

    Raises:
        ProtocolViolation: The packet is malformed or unsupported.
    """
    cursor = _Cursor(packet, "startup packet")
    code = cursor.int32()

    if code == SSL_REQUEST_CODE:
        cursor.done()
        return SSLRequest()

    if code == GSSENC_REQUEST_CODE:
        cursor.done()
        return GSSENCRequest()

    if code == CANCEL_REQUEST_CODE:
        return _parse_cancel(cursor)

    major, minor = code >> 16, code & 0xFFFF
    if major != PROTOCOL_MAJOR:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}",
        )

    return StartupMessage(minor=minor, parameters=_parse_params(cursor))


def _parse_cancel(cursor: _Cursor) -> CancelRequest:
    """
    Parse the rest of a CancelRequest: a pid and a 4-256 byte key.
    """
    pid = cursor.int32()
    secret = cursor.rest()

    if not MIN_CANCEL_KEY <= len(secret) <= MAX_CANCEL_KEY:
        raise cursor.fail(f"invalid cancel key length {len(secret)}")

    return CancelRequest(pid=pid, secret=secret)


def _parse_params(cursor: _Cursor) -> dict[str, str]:
    """
    Parse name/value pairs up to the final NUL, which must end the packet.
    """
    params: dict[str, str] = {}

    name = cursor.cstring("utf-8")
    while name:
        if name in params:
            raise cursor.fail(f"duplicate parameter {name!r}")

        params[name] = cursor.cstring("utf-8")
        name = cursor.cstring("utf-8")

    cursor.done()

    return params


# -- Frontend parsing ----------------------------------------------------


def parse_query(payload: bytes, encoding: str = "utf-8") -> Query:
    """
    Parse a Query ('Q') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "Query")
    text = cursor.cstring(encoding)
    cursor.done()

    return Query(text=text)


def parse_parse(payload: bytes, encoding: str = "utf-8") -> Parse:
    """
    Parse a Parse ('P') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "Parse")
    name = cursor.cstring(encoding)
    text = cursor.cstring(encoding)

    count = cursor.count()
    oids = tuple(cursor.uint32() for _ in range(count))
    cursor.done()

    return Parse(name=name, text=text, param_type_oids=oids)


def parse_bind(payload: bytes, encoding: str = "utf-8") -> Bind:
    """
    Parse a Bind ('B') payload.

    Raises:
        ProtocolViolation: The payload is malformed, or the number of
            parameter format codes is neither 0, 1 nor the number of
            parameters.
    """
    cursor = _Cursor(payload, "Bind")
    portal = cursor.cstring(encoding)
    statement = cursor.cstring(encoding)
    param_formats = cursor.formats(cursor.count())

    params = _read_values(cursor, cursor.count())
    if len(param_formats) > 1 and len(param_formats) != len(params):
        raise cursor.fail(
            f"{len(param_formats)} parameter formats for {len(params)} parameters",
        )

    result_formats = cursor.formats(cursor.count())
    cursor.done()

    return Bind(
        portal=portal,
        statement=statement,
        param_formats=param_formats,
        params=params,
        result_formats=result_formats,
    )


def _read_values(cursor: _Cursor, count: int) -> tuple[bytes | None, ...]:
    """
    Read `count` length-prefixed values; length -1 is NULL.
    """
    values: list[bytes | None] = []

    for _ in range(count):
        length = cursor.int32()
        if length == -1:
            values.append(None)
        elif length < 0:
            raise cursor.fail(f"invalid value length {length}")
        else:
            values.append(cursor.take(length))

    return tuple(values)


def parse_execute(payload: bytes, encoding: str = "utf-8") -> Execute:
    """
    Parse an Execute ('E') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "Execute")
    portal = cursor.cstring(encoding)
    max_rows = cursor.int32()
    cursor.done()

    return Execute(portal=portal, max_rows=max_rows)


def _parse_target(
    payload: bytes,
    what: str,
    encoding: str,
) -> tuple[str, str]:
    """
    Parse the kind letter and name of a Describe or Close.
    """
    cursor = _Cursor(payload, what)
    kind = chr(cursor.byte())
    if kind not in ("S", "P"):
        raise cursor.fail(f"invalid target kind {kind!r}")

    name = cursor.cstring(encoding)
    cursor.done()

    return kind, name


def parse_describe(payload: bytes, encoding: str = "utf-8") -> Describe:
    """
    Parse a Describe ('D') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    kind, name = _parse_target(payload, "Describe", encoding)
    return Describe(kind=kind, name=name)


def parse_close(payload: bytes, encoding: str = "utf-8") -> Close:
    """
    Parse a Close ('C') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    kind, name = _parse_target(payload, "Close", encoding)
    return Close(kind=kind, name=name)


def parse_sync(payload: bytes) -> Sync:
    """
    Parse a Sync ('S') payload, which must be empty.
    """
    _empty(payload, "Sync")
    return Sync()


def parse_flush(payload: bytes) -> Flush:
    """
    Parse a Flush ('H') payload, which must be empty.
    """
    _empty(payload, "Flush")
    return Flush()


def parse_terminate(payload: bytes) -> Terminate:
    """
    Parse a Terminate ('X') payload, which must be empty.
    """
    _empty(payload, "Terminate")
    return Terminate()


def parse_copy_data(payload: bytes) -> CopyData:
    """
    Parse a CopyData ('d') payload (either direction).
    """
    return CopyData(data=payload)


def parse_copy_done(payload: bytes) -> CopyDone:
    """
    Parse a CopyDone ('c') payload, which must be empty.
    """
    _empty(payload, "CopyDone")
    return CopyDone()


def parse_copy_fail(payload: bytes, encoding: str = "utf-8") -> CopyFail:
    """
    Parse a CopyFail ('f') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "CopyFail")
    message = cursor.cstring(encoding)
    cursor.done()

    return CopyFail(message=message)


def parse_function_call(payload: bytes) -> FunctionCall:
    """
    Parse the function OID of a FunctionCall ('F'); the rest is ignored.

    Raises:
        ProtocolViolation: The payload is too short.
    """
    cursor = _Cursor(payload, "FunctionCall")
    return FunctionCall(function_oid=cursor.uint32())


def parse_password(payload: bytes, encoding: str = "utf-8") -> str:
    """
    Parse a PasswordMessage ('p' after a cleartext or MD5 request).

    Returns:
        The password (or `md5...` hash) text.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "PasswordMessage")
    password = cursor.cstring(encoding)
    cursor.done()

    return password


def parse_sasl_initial(payload: bytes) -> tuple[str, bytes | None]:
    """
    Parse a SASLInitialResponse ('p' after a SASL request).

    Returns:
        The chosen mechanism and the client-first data, `None` if the
        client sent none (length -1).

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "SASLInitialResponse")
    mechanism = cursor.cstring("ascii")

    length = cursor.int32()
    if length < -1:
        raise cursor.fail(f"invalid data length {length}")

    data = None if length == -1 else cursor.take(length)
    cursor.done()

    return mechanism, data


def parse_sasl_response(payload: bytes) -> bytes:
    """
    Parse a SASLResponse ('p' during a SASL exchange).

    Returns:
        The mechanism's data, as is.
    """
    return payload


_Message = TypeVar("_Message")


def _binary(
    parser: Callable[[bytes], _Message],
) -> Callable[[bytes, str], _Message]:
    """
    Let a parser for a message without text sit in a dispatch table.
    """

    def parse_ignoring_encoding(payload: bytes, encoding: str) -> _Message:
        return parser(payload)

    return parse_ignoring_encoding


FRONTEND_PARSERS: Mapping[int, Callable[[bytes, str], FrontendMessage]] = {
    FrontendType.QUERY: parse_query,
    FrontendType.PARSE: parse_parse,
    FrontendType.BIND: parse_bind,
    FrontendType.EXECUTE: parse_execute,
    FrontendType.DESCRIBE: parse_describe,
    FrontendType.CLOSE: parse_close,
    FrontendType.SYNC: _binary(parse_sync),
    FrontendType.FLUSH: _binary(parse_flush),
    FrontendType.TERMINATE: _binary(parse_terminate),
    FrontendType.COPY_DATA: _binary(parse_copy_data),
    FrontendType.COPY_DONE: _binary(parse_copy_done),
    FrontendType.COPY_FAIL: parse_copy_fail,
    FrontendType.FUNCTION_CALL: _binary(parse_function_call),
}
"""
Parsers for client messages after startup, by type byte. 'p' is absent:
its meaning depends on the authentication state (`parse_password`,
`parse_sasl_initial`, `parse_sasl_response`).
"""


def parse_frontend(
    type_byte: int,
    payload: bytes,
    *,
    encoding: str = "utf-8",
) -> FrontendMessage:
    """
    Parse a client message after startup.

    Args:
        type_byte: The frame's type byte.
        payload: The frame's payload.
        encoding: The session's client encoding, as a Python codec name.

    Returns:
        The message.

    Raises:
        ProtocolViolation: The type is unknown (or 'p') or the payload
            is malformed.
    """
    parser = FRONTEND_PARSERS.get(type_byte)
    if parser is None:
        raise ProtocolViolation(
            f"unexpected frontend message type {describe_type(type_byte)}",
        )

    return parser(payload, encoding)


# -- Backend parsing -----------------------------------------------------

_AUTH_EMPTY = frozenset(
    {
        AuthCode.OK,
        AuthCode.KERBEROS_V5,
        AuthCode.CLEARTEXT_PASSWORD,
        AuthCode.SCM_CREDENTIAL,
        AuthCode.GSS,
        AuthCode.SSPI,
    },
)
_AUTH_DATA = frozenset(
    {AuthCode.GSS_CONTINUE, AuthCode.SASL_CONTINUE, AuthCode.SASL_FINAL},
)


def parse_authentication(payload: bytes) -> Authentication:
    """
    Parse an Authentication ('R') payload.

    Raises:
        ProtocolViolation: The subtype is unknown or the payload is
            malformed.
    """
    cursor = _Cursor(payload, "Authentication")
    raw_code = cursor.int32()

    try:
        code = AuthCode(raw_code)
    except ValueError:
        raise cursor.fail(f"unknown request {raw_code}") from None

    if code in _AUTH_EMPTY:
        cursor.done()
        return Authentication(code=code)

    if code in _AUTH_DATA:
        return Authentication(code=code, data=cursor.rest())

    if code == AuthCode.MD5_PASSWORD:
        salt = cursor.take(4)
        cursor.done()
        return Authentication(code=code, data=salt)

    return Authentication(code=code, mechanisms=_read_names(cursor))


def _read_names(cursor: _Cursor) -> tuple[str, ...]:
    """
    Read NUL-terminated names up to an empty one, which ends the payload.
    """
    names: list[str] = []

    name = cursor.cstring("utf-8")
    while name:
        names.append(name)
        name = cursor.cstring("utf-8")

    cursor.done()

    return tuple(names)


def parse_parameter_status(
    payload: bytes,
    encoding: str = "utf-8",
) -> ParameterStatus:
    """
    Parse a ParameterStatus ('S') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "ParameterStatus")
    name = cursor.cstring(encoding)
    value = cursor.cstring(encoding)
    cursor.done()

    return ParameterStatus(name=name, value=value)


def parse_backend_key_data(payload: bytes) -> BackendKeyData:
    """
    Parse a BackendKeyData ('K') payload: a pid and a 4-256 byte key.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "BackendKeyData")
    pid = cursor.int32()
    secret = cursor.rest()

    if not MIN_CANCEL_KEY <= len(secret) <= MAX_CANCEL_KEY:
        raise cursor.fail(f"invalid cancel key length {len(secret)}")

    return BackendKeyData(pid=pid, secret=secret)


def parse_ready_for_query(payload: bytes) -> ReadyForQuery:
    """
    Parse a ReadyForQuery ('Z') payload.

    Raises:
        ProtocolViolation: The status letter is unknown.
    """
    cursor = _Cursor(payload, "ReadyForQuery")
    letter = chr(cursor.byte())
    cursor.done()

    try:
        return ReadyForQuery(status=TransactionStatus(letter))
    except ValueError:
        raise cursor.fail(f"unknown status {letter!r}") from None


def parse_row_description(
    payload: bytes,
    encoding: str = "utf-8",
) -> RowDescription:
    """
    Parse a RowDescription ('T') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "RowDescription")
    count = cursor.count()
    fields = tuple(_read_field(cursor, encoding) for _ in range(count))
    cursor.done()

    return RowDescription(fields=fields)


def _read_field(cursor: _Cursor, encoding: str) -> FieldDescription:
    """
    Read one column description.
    """
    return FieldDescription(
        name=cursor.cstring(encoding),
        table_oid=cursor.uint32(),
        column_number=cursor.int16(),
        type_oid=cursor.uint32(),
        type_size=cursor.int16(),
        type_modifier=cursor.int32(),
        format=cursor.int16(),
    )


def parse_data_row(payload: bytes) -> list[bytes | None]:
    """
    Parse a DataRow ('D') payload quickly, into a plain list.

    Args:
        payload: The frame's payload.

    Returns:
        One value per column, `None` for SQL NULL.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    size = len(payload)
    if size < 2:
        raise ProtocolViolation("DataRow: message is truncated")

    count = (payload[0] << 8) | payload[1]
    values: list[bytes | None] = []
    append = values.append
    offset = 2

    for _ in range(count):
        if offset + 4 > size:
            raise ProtocolViolation("DataRow: message is truncated")

        length = _unpack_i32(payload, offset)[0]
        offset += 4
        if length < 0:
            if length != -1:
                raise ProtocolViolation(
                    f"DataRow: invalid value length {length}",
                )

            append(None)
            continue

        end = offset + length
        if end > size:
            raise ProtocolViolation("DataRow: message is truncated")

        append(payload[offset:end])
        offset = end

    if offset != size:
        raise ProtocolViolation(
            f"DataRow: {size - offset} unexpected trailing bytes",
        )

    return values


def iter_data_rows(chunk: bytes) -> Iterator[list[bytes | None]]:
    """
    Parse every DataRow in a run such as `take_passthrough` returns.

    Args:
        chunk: Whole DataRow messages, back to back.

    Yields:
        Each row's values.

    Raises:
        ProtocolViolation: The chunk holds something else or is
            malformed.
    """
    for frame in split_frames(chunk):
        if frame.type != BackendType.DATA_ROW:
            raise ProtocolViolation(
                f"expected DataRow, got {describe_type(frame.type)}",
            )

        yield parse_data_row(frame.payload)


def parse_command_complete(
    payload: bytes,
    encoding: str = "utf-8",
) -> CommandComplete:
    """
    Parse a CommandComplete ('C') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "CommandComplete")
    tag = cursor.cstring(encoding)
    cursor.done()

    return CommandComplete(tag=tag)


def parse_fields(
    payload: bytes,
    *,
    encoding: str = "utf-8",
    what: str = "ErrorResponse",
) -> dict[str, str]:
    """
    Parse the fields of an ErrorResponse or NoticeResponse.

    Args:
        payload: The frame's payload.
        encoding: The session's client encoding.
        what: The message name, for errors.

    Returns:
        Field code letters to values, in the order sent.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, what)
    fields: dict[str, str] = {}

    code = cursor.byte()
    while code:
        fields[chr(code)] = cursor.cstring(encoding)
        code = cursor.byte()

    cursor.done()

    return fields


def parse_error_response(
    payload: bytes,
    encoding: str = "utf-8",
) -> ErrorResponse:
    """
    Parse an ErrorResponse ('E') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    fields = parse_fields(payload, encoding=encoding, what="ErrorResponse")
    return ErrorResponse(fields=fields)


def parse_notice_response(
    payload: bytes,
    encoding: str = "utf-8",
) -> NoticeResponse:
    """
    Parse a NoticeResponse ('N') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    fields = parse_fields(payload, encoding=encoding, what="NoticeResponse")
    return NoticeResponse(fields=fields)


def parse_negotiate_protocol_version(
    payload: bytes,
) -> NegotiateProtocolVersion:
    """
    Parse a NegotiateProtocolVersion ('v') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "NegotiateProtocolVersion")
    newest_minor = cursor.int32() & 0xFFFF

    count = cursor.int32()
    if count < 0:
        raise cursor.fail(f"negative count {count}")

    options = tuple(cursor.cstring("utf-8") for _ in range(count))
    cursor.done()

    return NegotiateProtocolVersion(
        newest_minor=newest_minor,
        unsupported_options=options,
    )


def _parse_copy(payload: bytes, what: str) -> tuple[int, tuple[int, ...]]:
    """
    Parse the overall and per-column formats of a Copy*Response.
    """
    cursor = _Cursor(payload, what)

    copy_format = cursor.byte()
    if copy_format not in (0, 1):
        raise cursor.fail(f"invalid format {copy_format}")

    columns = cursor.formats(cursor.count())
    cursor.done()

    return copy_format, columns


def parse_copy_in_response(payload: bytes) -> CopyInResponse:
    """
    Parse a CopyInResponse ('G') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    copy_format, columns = _parse_copy(payload, "CopyInResponse")
    return CopyInResponse(format=copy_format, column_formats=columns)


def parse_copy_out_response(payload: bytes) -> CopyOutResponse:
    """
    Parse a CopyOutResponse ('H') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    copy_format, columns = _parse_copy(payload, "CopyOutResponse")
    return CopyOutResponse(format=copy_format, column_formats=columns)


def parse_copy_both_response(payload: bytes) -> CopyBothResponse:
    """
    Parse a CopyBothResponse ('W') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    copy_format, columns = _parse_copy(payload, "CopyBothResponse")
    return CopyBothResponse(format=copy_format, column_formats=columns)


def parse_parameter_description(payload: bytes) -> ParameterDescription:
    """
    Parse a ParameterDescription ('t') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "ParameterDescription")
    count = cursor.count()
    oids = tuple(cursor.uint32() for _ in range(count))
    cursor.done()

    return ParameterDescription(type_oids=oids)


def parse_notification_response(
    payload: bytes,
    encoding: str = "utf-8",
) -> NotificationResponse:
    """
    Parse a NotificationResponse ('A') payload.

    Raises:
        ProtocolViolation: The payload is malformed.
    """
    cursor = _Cursor(payload, "NotificationResponse")
    pid = cursor.int32()
    channel = cursor.cstring(encoding)
    text = cursor.cstring(encoding)
    cursor.done()

    return NotificationResponse(pid=pid, channel=channel, payload=text)


def _empty_parser(
    kind: Callable[[], _Message],
    what: str,
) -> Callable[[bytes], _Message]:
    """
    Make a parser for a message that carries nothing.
    """

    def parse_empty(payload: bytes) -> _Message:
        _empty(payload, what)
        return kind()

    return parse_empty


def _parse_data_row(payload: bytes) -> DataRow:
    """
    Parse a DataRow into a message object (the slow path).
    """
    return DataRow(values=tuple(parse_data_row(payload)))


BACKEND_PARSERS: Mapping[int, Callable[[bytes, str], BackendMessage]] = {
    BackendType.AUTHENTICATION: _binary(parse_authentication),
    BackendType.PARAMETER_STATUS: parse_parameter_status,
    BackendType.BACKEND_KEY_DATA: _binary(parse_backend_key_data),
    BackendType.READY_FOR_QUERY: _binary(parse_ready_for_query),
    BackendType.ROW_DESCRIPTION: parse_row_description,
    BackendType.DATA_ROW: _binary(_parse_data_row),
    BackendType.COMMAND_COMPLETE: parse_command_complete,
    BackendType.ERROR_RESPONSE: parse_error_response,
    BackendType.NOTICE_RESPONSE: parse_notice_response,
    BackendType.NEGOTIATE_PROTOCOL_VERSION: _binary(
        parse_negotiate_protocol_version,
    ),
    BackendType.COPY_IN_RESPONSE: _binary(parse_copy_in_response),
    BackendType.COPY_OUT_RESPONSE: _binary(parse_copy_out_response),
    BackendType.COPY_BOTH_RESPONSE: _binary(parse_copy_both_response),
    BackendType.COPY_DATA: _binary(parse_copy_data),
    BackendType.COPY_DONE: _binary(parse_copy_done),
    BackendType.EMPTY_QUERY_RESPONSE: _binary(
        _empty_parser(EmptyQueryResponse, "EmptyQueryResponse"),
    ),
    BackendType.PARSE_COMPLETE: _binary(
        _empty_parser(ParseComplete, "ParseComplete"),
    ),
    BackendType.BIND_COMPLETE: _binary(
        _empty_parser(BindComplete, "BindComplete"),
    ),
    BackendType.CLOSE_COMPLETE: _binary(
        _empty_parser(CloseComplete, "CloseComplete"),
    ),
    BackendType.NO_DATA: _binary(_empty_parser(NoData, "NoData")),
    BackendType.PORTAL_SUSPENDED: _binary(
        _empty_parser(PortalSuspended, "PortalSuspended"),
    ),
    BackendType.PARAMETER_DESCRIPTION: _binary(parse_parameter_description),
    BackendType.NOTIFICATION_RESPONSE: parse_notification_response,
}
"""Parsers for server messages by type byte (not FunctionCallResponse)."""


def parse_backend(
    type_byte: int,
    payload: bytes,
    *,
    encoding: str = "utf-8",
) -> BackendMessage:
    """
    Parse a server message.

    Args:
        type_byte: The frame's type byte.
        payload: The frame's payload.
        encoding: The session's client encoding, as a Python codec name.

    Returns:
        The message.

    Raises:
        ProtocolViolation: The type is unknown or the payload is
            malformed.
    """
    parser = BACKEND_PARSERS.get(type_byte)
    if parser is None:
        raise ProtocolViolation(
            f"unexpected backend message type {describe_type(type_byte)}",
        )

    return parser(payload, encoding)


# -- Building helpers ----------------------------------------------------


def message(type_byte: int, payload: bytes = b"") -> bytes:
    """
    Frame a payload: type byte, length, payload.

    Args:
        type_byte: The message type.
        payload: The body.

    Returns:
        The whole message.
    """
    return _HEADER.pack(type_byte, len(payload) + 4) + payload


def _cstring(text: str, encoding: str, errors: str = "strict") -> bytes:
    """
    Encode a string and add its NUL terminator.
    """
    raw = text.encode(encoding, errors)
    if b"\0" in raw:
        raise ValueError("a protocol string cannot contain NUL")

    return raw + b"\0"


def _int16(value: int) -> bytes:
    """
    Pack a signed 16-bit integer, refusing values out of range.
    """
    try:
        return _I16.pack(value)
    except struct.error:
        raise ValueError(f"{value} does not fit in 16 bits") from None


def _int32(value: int) -> bytes:
    """
    Pack a signed 32-bit integer, refusing values out of range.
    """
    try:
        return _I32.pack(value)
    except struct.error:
        raise ValueError(f"{value} does not fit in 32 bits") from None


def _uint32(value: int) -> bytes:
    """
    Pack an unsigned 32-bit integer (an OID), refusing values out of range.
    """
    try:
        return _U32.pack(value)
    except struct.error:
        raise ValueError(f"{value} is not a valid OID") from None


def _count(values: Sequence[object]) -> bytes:
    """
    Pack the unsigned 16-bit element count of a list.
    """
    if len(values) > MAX_COUNT:
        raise ValueError(f"{len(values)} elements do not fit in a message")

    return _U16.pack(len(values))


def _formats(codes: Sequence[int]) -> bytes:
    """
    Pack a counted list of format codes.
    """
    for code in codes:
        if code not in (0, 1):
            raise ValueError(f"invalid format code {code}")

    return _count(codes) + b"".join(_I16.pack(code) for code in codes)


def _secret(secret: bytes) -> bytes:
    """
    Check a cancel key's length.
    """
    if not MIN_CANCEL_KEY <= len(secret) <= MAX_CANCEL_KEY:
        raise ValueError(f"invalid cancel key length {len(secret)}")

    return secret


# -- Frontend builders ---------------------------------------------------


def startup_message(params: Mapping[str, str], minor: int = 0) -> bytes:
    """
    Build a StartupMessage for protocol 3.minor.

    Args:
        params: Names to values; `user` is required by servers.
        minor: The protocol minor version.

    Returns:
        The packet, with its length field.
    """
    body = [_int32((PROTOCOL_MAJOR << 16) | minor)]

    for name, value in params.items():
        if not name:
            raise ValueError("a startup parameter name cannot be empty")

        body.append(_cstring(name, "utf-8"))
        body.append(_cstring(value, "utf-8"))

    body.append(b"\0")

    return _packet(b"".join(body))


def _packet(body: bytes) -> bytes:
    """
    Frame a startup packet: length, body.
    """
    return _I32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    """
    Build an SSLRequest.
    """
    return _packet(_I32.pack(SSL_REQUEST_CODE))


def gssenc_request() -> bytes:
    """
    Build a GSSENCRequest.
    """
    return _packet(_I32.pack(GSSENC_REQUEST_CODE))


def cancel_request(pid: int, secret: bytes) -> bytes:
    """
    Build a CancelRequest.

    Args:
        pid: The process id from BackendKeyData.
        secret: The cancel key from BackendKeyData, 4 to 256 bytes.
    """
    body = _I32.pack(CANCEL_REQUEST_CODE) + _int32(pid) + _secret(secret)
    return _packet(body)


def password_message(password: str, *, encoding: str = "utf-8") -> bytes:
    """
    Build a PasswordMessage ('p') for cleartext or MD5 authentication.
    """
    return message(FrontendType.PASSWORD, _cstring(password, encoding))


def sasl_initial_response(mechanism: str, data: bytes | None) -> bytes:
    """
    Build a SASLInitialResponse ('p').

    Args:
        mechanism: The chosen mechanism, such as `SCRAM-SHA-256`.
        data: The client-first message, or `None` for none.
    """
    body = _cstring(mechanism, "ascii")
    if data is None:
        body += _I32.pack(-1)
    else:
        body += _int32(len(data)) + data

    return message(FrontendType.PASSWORD, body)


def sasl_response(data: bytes) -> bytes:
    """
    Build a SASLResponse ('p').
    """
    return message(FrontendType.PASSWORD, data)


def query(text: str, *, encoding: str = "utf-8") -> bytes:
    """
    Build a Query ('Q').
    """
    return message(FrontendType.QUERY, _cstring(text, encoding))


def parse(
    name: str,
    text: str,
    param_type_oids: Sequence[int] = (),
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a Parse ('P').

    Args:
        name: The statement name; empty for the unnamed statement.
        text: The SQL text.
        param_type_oids: Parameter type OIDs, 0 for unspecified.
        encoding: The session's client encoding.
    """
    body = [
        _cstring(name, encoding),
        _cstring(text, encoding),
        _count(param_type_oids),
        *(_uint32(oid) for oid in param_type_oids),
    ]

    return message(FrontendType.PARSE, b"".join(body))


def bind(
    portal: str,
    statement: str,
    params: Sequence[bytes | None],
    param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a Bind ('B').

    Args:
        portal: The portal name.
        statement: The statement name.
        params: Parameter values, `None` for NULL.
        param_formats: None, one, or one per parameter.
        result_formats: None, one, or one per result column.
        encoding: The session's client encoding.
    """
    if len(param_formats) > 1 and len(param_formats) != len(params):
        raise ValueError("one parameter format, or one per parameter")

    body = [
        _cstring(portal, encoding),
        _cstring(statement, encoding),
        _formats(param_formats),
        _values(params),
        _formats(result_formats),
    ]

    return message(FrontendType.BIND, b"".join(body))


def _values(values: Sequence[bytes | None]) -> bytes:
    """
    Pack a counted list of length-prefixed values, NULL as length -1.
    """
    parts = [_count(values)]

    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_int32(len(value)))
            parts.append(value)

    return b"".join(parts)


def execute(
    portal: str = "",
    max_rows: int = 0,
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build an Execute ('E').

    Args:
        portal: The portal name.
        max_rows: The most rows to return; 0 for all.
        encoding: The session's client encoding.
    """
    body = _cstring(portal, encoding) + _int32(max_rows)
    return message(FrontendType.EXECUTE, body)


def _target(kind: str, name: str, encoding: str) -> bytes:
    """
    Pack the kind letter and name of a Describe or Close.
    """
    if kind not in ("S", "P"):
        raise ValueError(f"kind must be 'S' or 'P', not {kind!r}")

    return kind.encode("ascii") + _cstring(name, encoding)


def describe(kind: str, name: str = "", *, encoding: str = "utf-8") -> bytes:
    """
    Build a Describe ('D') of a statement (`S`) or portal (`P`).
    """
    return message(FrontendType.DESCRIBE, _target(kind, name, encoding))


def close(kind: str, name: str = "", *, encoding: str = "utf-8") -> bytes:
    """
    Build a Close ('C') of a statement (`S`) or portal (`P`).
    """
    return message(FrontendType.CLOSE, _target(kind, name, encoding))


_SYNC = message(FrontendType.SYNC)
_FLUSH = message(FrontendType.FLUSH)
_TERMINATE = message(FrontendType.TERMINATE)
_COPY_DONE = message(FrontendType.COPY_DONE)


def sync() -> bytes:
    """
    Build a Sync ('S').
    """
    return _SYNC


def flush() -> bytes:
    """
    Build a Flush ('H').
    """
    return _FLUSH


def terminate() -> bytes:
    """
    Build a Terminate ('X').
    """
    return _TERMINATE


def copy_data(data: bytes) -> bytes:
    """
    Build a CopyData ('d'), for either direction.
    """
    return message(FrontendType.COPY_DATA, data)


def copy_done() -> bytes:
    """
    Build a CopyDone ('c'), for either direction.
    """
    return _COPY_DONE


def copy_fail(reason: str, *, encoding: str = "utf-8") -> bytes:
    """
    Build a CopyFail ('f').
    """
    return message(FrontendType.COPY_FAIL, _cstring(reason, encoding))


# -- Backend builders ----------------------------------------------------


def _authentication(code: AuthCode, data: bytes = b"") -> bytes:
    """
    Build an Authentication ('R') of one subtype.
    """
    return message(BackendType.AUTHENTICATION, _I32.pack(code) + data)


def authentication_ok() -> bytes:
    """
    Build AuthenticationOk.
    """
    return _authentication(AuthCode.OK)


def authentication_cleartext_password() -> bytes:
    """
    Build AuthenticationCleartextPassword.
    """
    return _authentication(AuthCode.CLEARTEXT_PASSWORD)


def authentication_md5_password(salt: bytes) -> bytes:
    """
    Build AuthenticationMD5Password.

    Args:
        salt: Exactly 4 random bytes.
    """
    if len(salt) != 4:
        raise ValueError("an MD5 salt is 4 bytes")

    return _authentication(AuthCode.MD5_PASSWORD, salt)


def authentication_sasl(mechanisms: Sequence[str]) -> bytes:
    """
    Build AuthenticationSASL offering mechanisms, most preferred first.
    """
    if not mechanisms:
        raise ValueError("offer at least one SASL mechanism")

    names = b"".join(_cstring(name, "ascii") for name in mechanisms)

    return _authentication(AuthCode.SASL, names + b"\0")


def authentication_sasl_continue(data: bytes) -> bytes:
    """
    Build AuthenticationSASLContinue (the server-first message for SCRAM).
    """
    return _authentication(AuthCode.SASL_CONTINUE, data)


def authentication_sasl_final(data: bytes) -> bytes:
    """
    Build AuthenticationSASLFinal (the server-final message for SCRAM).
    """
    return _authentication(AuthCode.SASL_FINAL, data)


def parameter_status(
    name: str,
    value: str,
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a ParameterStatus ('S').
    """
    body = _cstring(name, encoding) + _cstring(value, encoding)
    return message(BackendType.PARAMETER_STATUS, body)


def backend_key_data(pid: int, secret: bytes) -> bytes:
    """
    Build a BackendKeyData ('K').

    Args:
        pid: The process id the client will quote.
        secret: The cancel key, exactly 4 bytes for protocol 3.0 clients.
    """
    body = _int32(pid) + _secret(secret)
    return message(BackendType.BACKEND_KEY_DATA, body)


def ready_for_query(status: str = TransactionStatus.IDLE) -> bytes:
    """
    Build a ReadyForQuery ('Z').

    Args:
        status: A `TransactionStatus` letter.
    """
    letter = TransactionStatus(status)
    return message(BackendType.READY_FOR_QUERY, letter.encode("ascii"))


def row_description(
    fields: Sequence[FieldDescription],
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a RowDescription ('T').
    """
    parts = [_count(fields)]

    for field in fields:
        parts.append(_cstring(field.name, encoding))
        parts.append(_uint32(field.table_oid))
        parts.append(_int16(field.column_number))
        parts.append(_uint32(field.type_oid))
        parts.append(_int16(field.type_size))
        parts.append(_int32(field.type_modifier))
        parts.append(_int16(field.format))

    return message(BackendType.ROW_DESCRIPTION, b"".join(parts))


def data_row(values: Sequence[bytes | None]) -> bytes:
    """
    Build a DataRow ('D').

    Args:
        values: One value per column, `None` for SQL NULL.
    """
    return message(BackendType.DATA_ROW, _values(values))


def command_complete(tag: str, *, encoding: str = "utf-8") -> bytes:
    """
    Build a CommandComplete ('C').
    """
    body = _cstring(tag, encoding)
    return message(BackendType.COMMAND_COMPLETE, body)


def _fields(
    severity: str,
    sqlstate: str,
    text: str,
    *,
    detail: str | None,
    hint: str | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    """
    Order the fields of an error or notice: S, V, C, M, D, H, then extra.
    """
    if len(sqlstate) != 5 or not sqlstate.isalnum():
        raise ValueError(f"invalid SQLSTATE {sqlstate!r}")

    fields = {"S": severity, "V": severity, "C": sqlstate, "M": text}
    if detail is not None:
        fields["D"] = detail

    if hint is not None:
        fields["H"] = hint

    for code, value in (extra or {}).items():
        fields.setdefault(code, value)

    return fields


def fields_message(
    type_byte: int,
    fields: Mapping[str, str],
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build an ErrorResponse or NoticeResponse from its fields, such as a
    parsed one with some values masked.

    Characters the client encoding cannot carry become `?`.

    Args:
        type_byte: `BackendType.ERROR_RESPONSE` or `NOTICE_RESPONSE`.
        fields: Field code letters to values, in order.
        encoding: The session's client encoding.
    """
    parts = []

    for code, value in fields.items():
        if len(code) != 1 or code == "\0":
            raise ValueError(f"invalid field code {code!r}")

        parts.append(code.encode("ascii"))
        parts.append(_cstring(value, encoding, "replace"))

    parts.append(b"\0")

    return message(type_byte, b"".join(parts))


def error_response(
    severity: str,
    sqlstate: str,
    text: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    extra: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build an ErrorResponse ('E') with the S, V, C and M fields.

    Args:
        severity: `ERROR`, `FATAL` or `PANIC`.
        sqlstate: The five-character code, such as `SqlState.*`.
        text: The primary message (`M`).
        detail: An optional detail (`D`).
        hint: An optional hint (`H`).
        extra: More fields by code letter; S, V, C and M are kept.
        encoding: The session's client encoding.
    """
    if severity not in _ERROR_SEVERITIES:
        raise ValueError(f"invalid error severity {severity!r}")

    fields = _fields(
        severity,
        sqlstate,
        text,
        detail=detail,
        hint=hint,
        extra=extra,
    )

    return fields_message(
        BackendType.ERROR_RESPONSE,
        fields,
        encoding=encoding,
    )


def notice_response(
    severity: str,
    sqlstate: str,
    text: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    extra: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a NoticeResponse ('N') with the S, V, C and M fields.

    Args:
        severity: `WARNING`, `NOTICE`, `DEBUG`, `INFO` or `LOG`.
        sqlstate: The five-character code (`01000` for a warning).
        text: The primary message (`M`).
        detail: An optional detail (`D`).
        hint: An optional hint (`H`).
        extra: More fields by code letter; S, V, C and M are kept.
        encoding: The session's client encoding.
    """
    if severity not in _NOTICE_SEVERITIES:
        raise ValueError(f"invalid notice severity {severity!r}")

    fields = _fields(
        severity,
        sqlstate,
        text,
        detail=detail,
        hint=hint,
        extra=extra,
    )

    return fields_message(
        BackendType.NOTICE_RESPONSE,
        fields,
        encoding=encoding,
    )


def negotiate_protocol_version(
    newest_minor: int,
    unsupported_options: Sequence[str] = (),
) -> bytes:
    """
    Build a NegotiateProtocolVersion ('v').

    The protocol documents the first field as the newest minor version,
    but servers send, and libpq 18 insists on, the whole version number
    (major << 16 | minor), which for 3.0 is not 0.

    Args:
        newest_minor: The newest minor version the gateway supports.
        unsupported_options: The `_pq_.` options it does not support.
    """
    body = [
        _int32((PROTOCOL_MAJOR << 16) | newest_minor),
        _int32(len(unsupported_options)),
        *(_cstring(name, "utf-8") for name in unsupported_options),
    ]

    return message(BackendType.NEGOTIATE_PROTOCOL_VERSION, b"".join(body))


def _copy_response(
    type_byte: int,
    copy_format: int,
    column_formats: Sequence[int],
) -> bytes:
    """
    Build a Copy*Response.
    """
    if copy_format not in (0, 1):
        raise ValueError(f"invalid COPY format {copy_format}")

    body = bytes((copy_format,)) + _formats(column_formats)

    return message(type_byte, body)


def copy_in_response(copy_format: int, column_formats: Sequence[int]) -> bytes:
    """
    Build a CopyInResponse ('G').
    """
    return _copy_response(
        BackendType.COPY_IN_RESPONSE,
        copy_format,
        column_formats,
    )


def copy_out_response(copy_format: int, column_formats: Sequence[int]) -> bytes:
    """
    Build a CopyOutResponse ('H').
    """
    return _copy_response(
        BackendType.COPY_OUT_RESPONSE,
        copy_format,
        column_formats,
    )


def copy_both_response(
    copy_format: int,
    column_formats: Sequence[int],
) -> bytes:
    """
    Build a CopyBothResponse ('W').
    """
    return _copy_response(
        BackendType.COPY_BOTH_RESPONSE,
        copy_format,
        column_formats,
    )


def empty_query_response() -> bytes:
    """
    Build an EmptyQueryResponse ('I').
    """
    return message(BackendType.EMPTY_QUERY_RESPONSE)


def parse_complete() -> bytes:
    """
    Build a ParseComplete ('1').
    """
    return message(BackendType.PARSE_COMPLETE)


def bind_complete() -> bytes:
    """
    Build a BindComplete ('2').
    """
    return message(BackendType.BIND_COMPLETE)


def close_complete() -> bytes:
    """
    Build a CloseComplete ('3').
    """
    return message(BackendType.CLOSE_COMPLETE)


def no_data() -> bytes:
    """
    Build a NoData ('n').
    """
    return message(BackendType.NO_DATA)


def portal_suspended() -> bytes:
    """
    Build a PortalSuspended ('s').
    """
    return message(BackendType.PORTAL_SUSPENDED)


def parameter_description(type_oids: Sequence[int]) -> bytes:
    """
    Build a ParameterDescription ('t').
    """
    body = _count(type_oids) + b"".join(_uint32(oid) for oid in type_oids)
    return message(BackendType.PARAMETER_DESCRIPTION, body)


def notification_response(
    pid: int,
    channel: str,
    payload: str,
    *,
    encoding: str = "utf-8",
) -> bytes:
    """
    Build a NotificationResponse ('A').
    """
    body = _int32(pid) + _cstring(channel, encoding) + _cstring(payload, encoding)
    return message(BackendType.NOTIFICATION_RESPONSE, body)


# -- Encodings -----------------------------------------------------------

_ENCODINGS = {
    "UTF8": "utf-8",
    "UNICODE": "utf-8",
    "LATIN1": "iso8859-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO88595": "iso8859-5",
    "ISO88596": "iso8859-6",
    "ISO88597": "iso8859-7",
    "ISO88598": "iso8859-8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUCJP": "euc-jp",
    "EUCKR": "euc-kr",
    "EUCCN": "gb2312",
    "EUCJIS2004": "euc-jis-2004",
    "SJIS": "shift-jis",
    "SHIFTJIS2004": "shift-jis-2004",
    "BIG5": "big5",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "UHC": "cp949",
    "JOHAB": "johab",
}


def python_encoding(client_encoding: str) -> str | None:
    """
    Map a PostgreSQL encoding name to a Python codec name.

    Args:
        client_encoding: The `client_encoding` the server reports
            (`UTF8`, `LATIN1`, `WIN1252`; case, `-` and `_` ignored).

    Returns:
        The codec name, or `None` for encodings text cannot be decoded
        from reliably (`SQL_ASCII`, `MULE_INTERNAL`, `EUC_TW`): a
        session that inspects text should refuse those.
    """
    key = client_encoding.upper().replace("-", "").replace("_", "")
    return _ENCODINGS.get(key)
