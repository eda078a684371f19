"""
The Twisted adapter of the PostgreSQL plugin: the client leg.

One L{ClientConnection} per client.  It answers the start-up packets
(TLS, GSS encryption, protocol negotiation), asks for the token as a
cleartext password, has the gateway authenticate and authorise the
session, logs in upstream through L{ServerConnection} with the
credentials policy names, and then relays: every message the chain must
judge becomes an event, everything else passes as its original bytes.

Reading from either leg pauses while the other leg's write buffer is
full, and reading from the client pauses while a verdict is pending, so
nothing here grows with the size of a result or a COPY.

test-case-name: tests.integration.test_postgres_relay
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate.plugin import (
    Column,
    Deny,
    DenyReason,
    DiagnosticReceived,
    Hold,
    IGateway,
    ISessionHandle,
    ListenerConfig,
    Notice,
    Parameter,
    ResultDescribed,
    ResultSample,
    Rewrite,
    RowTransformer,
    Session,
    SessionOpened,
    SessionRefusedError,
    SessionRequested,
    StatementBound,
    StatementCompleted,
    StatementPart,
    StatementReceived,
    Verdict,
)
from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres import _errors
from hoopgate_plugins.postgres._catalog import (
    FACTS_TTL,
    MAX_RELATIONS,
    Catalog,
    Facts,
    Table,
    catalog_for,
    search_path_of,
)
from hoopgate_plugins.postgres._copyrows import CopyFormatError, CopyMasker
from hoopgate_plugins.postgres._flow import PauseGate, hang_up, link, nodelay
from hoopgate_plugins.postgres._options import filter_options, option_settings
from hoopgate_plugins.postgres._reach import after_change, request, widened, with_paths
from hoopgate_plugins.postgres._results import Describe, DescribeQueue, ResultSampler
from hoopgate_plugins.postgres._settings import listener_settings, target_settings
from hoopgate_plugins.postgres._sql import (
    DEFAULT_ALLOWED_FUNCTIONS,
    Classification,
    SessionState,
    carry,
    classify,
    too_deep,
    unclassified,
)
from hoopgate_plugins.postgres._tracking import Kind, Outcome, ResponseTracker, rows_of
from hoopgate_plugins.postgres._upstream import Details, ServerConnection, send_cancel
from hoopgate_plugins.postgres._worker import LONG, long_classifier

_T = TypeVar("_T")

F = pg.FrontendType
B = pg.BackendType

# Server messages relayed in runs without being looked at (no masking
# plan active).  Everything else is parsed, one frame at a time.
_PASS = frozenset(
    {
        B.DATA_ROW,
        B.COPY_DATA,
        B.PARSE_COMPLETE,
        B.BIND_COMPLETE,
        B.CLOSE_COMPLETE,
        B.NO_DATA,
        B.PARAMETER_DESCRIPTION,
        B.NOTIFICATION_RESPONSE,
    }
)

# What passes, by (rows looked at, COPY data looked at, Describes
# tracked, notifications looked at): rows are looked at while a plan
# masks them or a sample takes them, NoData while the gateway's own
# Describes may be answered by it, notifications while masking runs.
_PASSING = {
    (rows, copy, describes, notices): _PASS
    - ({B.DATA_ROW} if rows else set())
    - ({B.COPY_DATA} if copy else set())
    - ({B.NO_DATA} if describes else set())
    - ({B.NOTIFICATION_RESPONSE} if notices else set())
    for rows in (False, True)
    for copy in (False, True)
    for describes in (False, True)
    for notices in (False, True)
}

#: The severity a notification is judged under, as a diagnostic.
_NOTIFY = "NOTIFY"

# A statement the server fails at once, sent in place of a refused one so
# that the server, too, sees the batch or transaction fail.
_REFUSED_SQL = "hoopgate refused this statement"

# The name a refused Execute's replacement Parse uses (it never exists).
_REFUSED_NAME = "hoopgate_refused"

_RELAYED_CLIENT = frozenset({F.FLUSH, F.COPY_DATA})

# Rows taken as a run when they are looked at.
_ROWS = frozenset({B.DATA_ROW})

#: Client bytes read while a verdict is pending; beyond, reading pauses.
_HELD_BUFFER = 256 * 1024

# Statements whose COPY parts the relay keeps, for COPY TO masking.
_COPY_STATEMENTS = 64


def _peer(transport: Any) -> str:
    address = transport.getPeer()
    return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"


def _text(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, "replace")


def _parameter(value: bytes | None, binary: bool, encoding: str) -> Parameter:
    if value is None:
        return Parameter(None, binary)
    if binary:
        return Parameter(value.hex(), True)
    return Parameter(_text(value, encoding), False)


_PASSWORD = re.compile(r"password", re.IGNORECASE)
_REDACTED = Parameter("[redacted]")


_READING_EFFECTS = frozenset({"session", "unknown"})
_SETTINGS_IN_FLIGHT = (
    "an earlier statement of the batch may change how the server reads text"
)
_READING_COMMANDS = frozenset({"SET", "RESET", "DISCARD"})


def _changes_reading(event: StatementReceived) -> bool:
    """
    Whether running a statement may change how the server reads the
    text that follows it (a SET, a DO block, a function of unknown
    effect, text the classifier could not read).
    """
    if not event.classified:
        return True
    return any(
        part.effect in _READING_EFFECTS
        or part.command in _READING_COMMANDS
        or part.problem
        for part in event.parts
    )


def _sets_password(text: str) -> bool:
    """
    Whether a statement may carry a password in its parameters
    (C{ALTER ROLE app PASSWORD $1}); those are never recorded.
    """
    return _PASSWORD.search(text) is not None


_TYPE_NAMES = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "name",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    114: "json",
    142: "xml",
    700: "float4",
    701: "float8",
    705: "unknown",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1083: "time",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}

# Types whose binary form is their text, so detectors can read them
# (jsonb's is a version byte, then the document's text).
_TEXT_TYPES = frozenset({19, 25, 114, 142, 705, 1042, 1043, 3802})

# Binary forms detectors can read through the core's readers: numbers
# (a card number kept as a number), and the raw bytes of any other type
# (arrays and records hold their text elements as they are).
_BINARY_READERS = {20: "postgres.int8", 1700: "postgres.numeric"}

_TEXT_OID = 25


def _table_oids(frame: pg.Frame) -> set[int]:
    description = pg.parse_row_description(frame.payload, "latin-1")
    return {f.table_oid for f in description.fields if f.table_oid}


def _columns(
    description: pg.RowDescription,
    tables: dict[int, Table | None],
    encoding: str,
) -> tuple[Column, ...]:
    columns = []
    for f in description.fields:
        table = tables.get(f.table_oid)
        columns.append(
            Column(
                name=_text(f.name.encode("latin-1"), encoding),
                type_name=_TYPE_NAMES.get(f.type_oid, str(f.type_oid)),
                table=table.relation if table else "",
                position=f.column_number,
                column=table.columns.get(f.column_number, "") if table else "",
                textual=f.format == 0 or f.type_oid in _TEXT_TYPES,
                sources=tuple(table.descendants) if table else (),
                binary=_BINARY_READERS.get(f.type_oid, "raw") if f.format else "",
            )
        )
    return tuple(columns)


def _redescribe(description: pg.RowDescription, event: ResultDescribed) -> bytes:
    """
    The RowDescription with masked columns described as text (their
    values are masks now, whatever the original type); the format codes
    stay, since a text value's binary form is its text.
    """
    fields = [
        attrs.evolve(f, type_oid=_TEXT_OID, type_size=-1, type_modifier=-1)
        if column.masked
        else f
        for f, column in zip(description.fields, event.columns, strict=True)
    ]
    return pg.row_description(fields, encoding="latin-1")


def _unquoted(name: str) -> str:
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        return name[1:-1].replace('""', '"')
    return name


def _last_part(relation: str) -> str:
    """
    The name of a C{schema.name} relation, without its schema.
    """
    position = 0
    start = 0
    while position < len(relation):
        if relation[position] == '"':
            end = relation.find('"', position + 1)
            while end >= 0 and relation.startswith('""', end):
                end = relation.find('"', end + 2)
            position = len(relation) if end < 0 else end + 1
        elif relation[position] == ".":
            position += 1
            start = position
        else:
            position += 1
    return relation[start:]


def _copy_columns(part: StatementPart, count: int) -> tuple[Column, ...]:
    """
    The fields of a COPY TO STDOUT as result columns: their lineage when
    the statement names a table and its columns, none otherwise.
    """
    names = [c for c in part.columns if c != "*"]
    if not part.reads or part.derived_columns or len(names) != count:
        return tuple(Column(name="", type_name="text") for _ in range(count))
    reads = part.reads
    # Several schemas of the search path may hold the table: name it
    # without one, so that a rule for any of them masks it.
    table = reads[0] if len(reads) == 1 else _last_part(reads[0])
    return tuple(
        Column(name=_unquoted(n), type_name="text", table=table, column=_unquoted(n))
        for n in names
    )


@attrs.frozen
class _Judgement:
    """
    What a prepared statement was judged with, to judge it again when
    the catalog may have changed before it runs.
    """

    classes: tuple[Classification, ...]
    event: StatementReceived
    facts: Facts
    generation: int
    change: int
    at: float


@implementer(ISessionHandle)
class ClientConnection(protocol.Protocol):
    """
    The client's leg of one PostgreSQL session.

    Args:
        gateway: Opens sessions and finds cancel keys.
        listener: The listener's configuration.
        tls: Server TLS options, when the listener has a certificate.
    """

    _log = Logger()
    transport: Any

    def __init__(
        self, gateway: IGateway, listener: ListenerConfig, tls: Any | None
    ) -> None:
        self._gateway = gateway
        self._listener = listener
        self._tls_options = tls
        self._reader = pg.FrontendReader(
            max_length=listener_settings(listener).max_message,
            statement_limit=listener_settings(listener).max_statement,
        )
        self._state = "startup"
        self._tls = False
        self._peer = "?"
        self._startup: dict[str, str] = {}
        self._minor = 0
        self.session: Session | None = None
        self.server: ServerConnection | None = None
        self._gate: PauseGate | None = None
        self._tracker = ResponseTracker()
        self._statements: dict[str, tuple[str, bool]] = {}
        self._refused: dict[str, bytes] = {}
        self._fencing: set[str] = set()
        self._fenced = False
        self._fence_at_sync = False
        self._fence_lifted = False
        self._portals: dict[str, str] = {}
        self._encoding = "utf-8"
        self._server_encoding_name = "UTF8"
        self._standard_strings = True
        self._sql_state = SessionState()
        self._pending_change = ""
        self._changes = 0
        self._judgements: dict[str, _Judgement] = {}
        self._bound_at: dict[str, int] = {}
        self._masks_notices = False
        self._status = pg.TransactionStatus.IDLE
        self._plan: RowTransformer | None = None
        self._describes: DescribeQueue | None = None
        self._sampler: ResultSampler | None = None
        self._record_rows = 0
        self._record_bytes = 0
        self._copy: CopyMasker | None = None
        self._copy_plan: RowTransformer | None = None
        self._copy_out = False
        self._copy_parts: dict[str, tuple[StatementPart, ...]] = {}
        self._copies_seen: dict[str, int] = {}
        self._waiting = False
        self._login_timer: IDelayedCall | None = None
        self._cancel_key = b""
        self._server_reader: pg.BackendReader | None = None
        self._held = False
        self._bytes_in = 0
        self._bytes_out = 0
        self._close_reason = "client"
        self._terminated = False

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        nodelay(self.transport)
        self._peer = _peer(self.transport)
        self._gate = PauseGate(self.transport)
        timeout = listener_settings(self._listener).login_timeout
        self._login_timer = self._gateway.reactor.callLater(
            timeout, self._login_timed_out
        )

    def _login_timed_out(self) -> None:
        self._login_timer = None
        if self._state not in ("relay", "closed"):
            limit = listener_settings(self._listener).login_timeout
            self._fail(
                _errors.PROTOCOL,
                "the log-in took too long",
                f"no session after {limit:g} s",
            )

    def dataReceived(self, data: bytes) -> None:
        self._bytes_in += len(data)
        self._reader.feed(data)
        try:
            self._pump()
        except pg.ProtocolViolation as e:
            self._violation(e.message)
        except Exception:
            self._log.failure("Relaying from client {peer} failed", peer=self._peer)
            self._fail(_errors.INTERNAL, "the gateway failed", "internal error")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._state = "closed"
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        if self.server is not None:
            self.server.close()
        if self.session is not None:
            self.session.close(self._close_reason, self._bytes_in, self._bytes_out)

    def _pump(self) -> None:
        if self._state == "startup":
            self._read_startup()
        if self._state == "password":
            self._read_password()
        if self._state == "relay" and not self._held:
            self._relay_client()
        elif self._held and self._reader.buffered > _HELD_BUFFER:
            assert self._gate is not None
            self._gate.pause("verdict")

    def send(self, data: bytes) -> None:
        """
        Write to the client, counting bytes.
        """
        self._bytes_out += len(data)
        self.transport.write(data)

    def _fail(self, sqlstate: str, text: str, why: str, reference: str = "") -> None:
        """
        End the connection with a FATAL error; C{why} goes to the log.
        The detail names the session (C{reference} before there is one)
        for the operator.
        """
        if self._state == "closed":
            return
        self._log.warn(
            "PostgreSQL client {peer} refused: {why}", peer=self._peer, why=why
        )
        reference = self.session.id if self.session else reference
        self.send(_errors.fatal(sqlstate, text, reference=reference))
        self._close("error")

    def _violation(self, what: str) -> None:
        self._fail(_errors.PROTOCOL, "protocol violation", what)

    def _close(self, reason: str) -> None:
        self._state = "closed"
        self._close_reason = reason
        hang_up(self.transport, self._gateway.reactor)
        if self.server is not None:
            self.server.close()

    # -- start-up --------------------------------------------------------

    def _read_startup(self) -> None:
        while self._state == "startup":
            packet = self._reader.read_startup()
            if packet is None:
                return
            self._on_startup_packet(packet)

    def _on_startup_packet(self, packet: pg.StartupPacket) -> None:
        if isinstance(packet, pg.SSLRequest):
            self._on_ssl_request()
        elif isinstance(packet, pg.GSSENCRequest):
            self.send(b"N")
        elif isinstance(packet, pg.CancelRequest):
            self._on_cancel_request(packet)
        elif isinstance(packet, pg.DirectTLS):
            self._log.warn(
                "Client {peer} opened with direct TLS, which the gateway "
                "does not offer; closing",
                peer=self._peer,
            )
            self._close("error")
        else:
            self._on_startup(packet)

    def _on_ssl_request(self) -> None:
        if self._tls:
            self._violation("SSLRequest inside TLS")
            return
        if self._tls_options is None:
            self.send(b"N")
            return
        if self._reader.buffered:
            self._violation("data sent ahead of the TLS handshake")
            return

        self.send(b"S")
        self.transport.startTLS(self._tls_options)
        self._tls = True

    def _on_cancel_request(self, packet: pg.CancelRequest) -> None:
        key = struct.pack(">i", packet.pid) + packet.secret
        self._state = "closed"
        self.transport.loseConnection()

        def done(found: object) -> None:
            self._log.info(
                "Cancel request from {peer}: {outcome}",
                peer=self._peer,
                outcome="forwarded" if found else "no such session",
            )

        self._gateway.cancel("postgres", key).addCallback(done)

    def _on_startup(self, packet: pg.StartupMessage) -> None:
        params = packet.parameters
        replication = params.get("replication", "false").lower()
        if replication not in ("false", "off", "no", "0"):
            self._fail(
                _errors.NOT_SUPPORTED,
                "replication connections are not supported by the gateway",
                "replication requested",
            )
            return
        if not params.get("user"):
            self._fail(
                _errors.AUTHORIZATION,
                "no user name specified in startup packet",
                "empty user",
            )
            return
        if not self._tls and not self._listener.cleartext_without_tls:
            self._fail(
                _errors.AUTHORIZATION,
                "hoopgate accepts tokens only over TLS (use sslmode=require)",
                "token over a connection without TLS",
            )
            return

        unsupported = [k for k in params if k.startswith("_pq_.")]
        if packet.minor > 0 or unsupported:
            self.send(pg.negotiate_protocol_version(0, unsupported))
        self._startup = {k: v for k, v in params.items() if k not in unsupported}
        self._state = "password"
        self.send(pg.authentication_cleartext_password())

    def _read_password(self) -> None:
        frame = self._reader.next_frame()
        if frame is None:
            return
        if frame.type != F.PASSWORD:
            self._violation(f"expected a password, got {pg.describe_type(frame.type)}")
            return

        token = pg.parse_password(frame.payload)
        self._state = "authorizing"
        request = SessionRequested(
            session_id="",
            protocol="postgres",
            peer=self._peer,
            target=self._startup.get("database") or self._startup["user"],
            token=token,
            tls=self._tls,
        )
        opened: Deferred[Session] = self._gateway.open_session(request, self)
        opened.addCallbacks(self._admitted, self._session_refused)

    def _session_refused(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, SessionRefusedError):
            reason = error.reason
            self._fail(
                _errors.AUTHORIZATION,
                reason.message,
                reason.code,
                reference=error.session_id,
            )
            return
        self._log.failure("Opening a session failed", failure)
        self._fail(_errors.AUTHORIZATION, "authentication failed", "internal error")

    def _admitted(self, session: Session) -> None:
        if self._state == "closed":
            session.close("client")
            return
        self.session = session
        self._state = "connecting"
        self._sql_state = self._state_for_sql()
        self._prepare_results(session)
        settings = target_settings(session)
        options, dropped = filter_options(
            self._startup.get("options", ""), settings.allowed_options
        )
        for name in dropped:
            session.observe(
                Notice(
                    session_id=session.id,
                    protocol="postgres",
                    kind="option.dropped",
                    detail=name,
                )
            )
        self.server = ServerConnection.connect(
            self._gateway.reactor,
            session.target,
            session.credential,
            parameters=self._upstream_parameters(session, options),
            client=self,
            label=f"session {session.id}",
        )

    def _upstream_parameters(self, session: Session, options: str) -> dict[str, str]:
        settings = target_settings(session)
        drop = {"user", "database", "options", "replication", "application_name"}
        params = {k: v for k, v in self._startup.items() if k not in drop}
        client_app = self._startup.get("application_name", "")
        name = f"hoopgate/{session.identity.subject}"
        if client_app:
            name = f"{name}/{client_app}"
        params["application_name"] = name[:63]
        params["user"] = session.credential.user
        params["database"] = settings.database
        if options:
            params["options"] = options
        self._note_startup_paths(params, options)
        return params

    def _note_startup_paths(self, params: dict[str, str], options: str) -> None:
        """
        A search path the client sets at start-up (as a parameter of its
        own or in C{options}) is one its statements may resolve with.
        """
        values = [v for k, v in params.items() if k.lower() == "search_path"]
        values += [v for k, v in option_settings(options) if k == "search_path"]
        paths = tuple(search_path_of(v) for v in values)
        if paths:
            state = self._sql_state
            more = (*state.more_paths, *(p for p in paths if p not in state.more_paths))
            self._sql_state = attrs.evolve(state, more_paths=more)

    # -- called by the upstream leg ---------------------------------------

    def upstream_failed(self, sqlstate: str, text: str, why: str) -> None:
        """
        The target could not be reached or refused the gateway's login.
        """
        self._fail(sqlstate, text, why)

    def upstream_authenticated(self) -> None:
        """
        The target accepted the gateway's login.
        """
        self.send(pg.authentication_ok())

    def upstream_ready(self, greeting: bytes, details: Details) -> None:
        """
        The target finished its start-up: record the session as open,
        relay the target's parameters and hand the client the gateway's
        own cancel key.
        """
        assert self.session is not None and self.server is not None
        session = self.session
        session.observe(
            SessionOpened(
                session_id=session.id,
                protocol="postgres",
                identity=session.identity,
                peer=session.peer,
                target=session.target.name,
                upstream_user=session.credential.user,
                details=details,
            )
        )
        pid = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        secret = os.urandom(4)
        self._cancel_key = struct.pack(">i", pid) + secret
        self._gateway.register_cancel_key(self.session, self._cancel_key)
        self.send(greeting)
        self.send(pg.backend_key_data(pid, secret))
        self.send(pg.ready_for_query(pg.TransactionStatus.IDLE))
        self._state = "relay"
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        assert self._gate is not None and self.server.gate is not None
        link(self.transport, self.server.gate)
        self.server.link(self._gate)
        self._relay_client()

    def upstream_closed(self) -> None:
        """
        The target closed its connection.
        """
        if self._state != "closed":
            self._close("client" if self._terminated else "upstream")

    def parameter_changed(self, name: str, value: str) -> None:
        """
        A ParameterStatus from the target.
        """
        if name == "client_encoding":
            self._encoding = pg.python_encoding(value) or "latin-1"
            self._server_encoding_name = value
        elif name == "standard_conforming_strings":
            self._standard_strings = value.lower() == "on"
        else:
            return
        self._sql_state = self._state_for_sql()

    def _state_for_sql(self) -> SessionState:
        """
        How the server reads this session's text, for the classifier.
        """
        user = self.session.credential.user if self.session else None
        return attrs.evolve(
            self._sql_state,
            user=user,
            standard_conforming_strings=self._standard_strings,
            client_encoding=self._server_encoding_name,
        )

    def _allowed(self) -> frozenset[str]:
        if self.session is None:
            return DEFAULT_ALLOWED_FUNCTIONS
        return target_settings(self.session).allowed_functions

    def _parts_of(
        self, classes: tuple[Classification, ...]
    ) -> tuple[StatementPart, ...]:
        parts = tuple(c.to_part() for c in classes)
        if self._fence_at_sync:
            # An earlier Execute of this batch may change how the server
            # reads this text, and the server reports the new settings
            # only at the batch's end: the gateway cannot be sure.
            parts = tuple(
                attrs.evolve(part, problem=_SETTINGS_IN_FLIGHT) for part in parts
            )
        return parts

    def _classify_then(
        self,
        text: str,
        out: list[bytes],
        then: Callable[
            [tuple[Classification, ...], tuple[StatementPart, ...], list[bytes]], None
        ],
    ) -> None:
        """
        Classify C{text}, then call C{then} with the classes, parts and
        what to send.  A long text goes to the worker process; relaying
        from the client waits meanwhile, as for a held verdict.
        """
        if len(text) <= LONG:
            classes = classify(text, self._sql_state, allowed_functions=self._allowed())
            if not too_deep(classes):
                then(classes, self._parts_of(classes), out)
                return

        def done(classes: tuple[Classification, ...], pending: list[bytes]) -> None:
            then(classes, self._parts_of(classes), pending)

        def failed(failure: Failure, pending: list[bytes]) -> None:
            done(unclassified(text, "the classifying worker failed"), pending)

        worker = long_classifier(self._gateway.reactor)
        waiting = worker.classify(text, self._sql_state, self._allowed())
        self._held_until(waiting, out, done, failed)

    def _received(
        self, text: str, frame: pg.Frame, path: str, name: str
    ) -> Callable[
        [tuple[Classification, ...], tuple[StatementPart, ...], list[bytes]], None
    ]:
        """
        What to do once a Query's or Parse's text is classified: make its
        event and submit it.
        """

        def then(
            classes: tuple[Classification, ...],
            parts: tuple[StatementPart, ...],
            out: list[bytes],
        ) -> None:
            assert self.session is not None
            event = StatementReceived(
                session_id=self.session.id,
                protocol="postgres",
                statement_id=self.session.next_id(),
                text=text,
                path=path,
                statement_name=name,
                parts=parts,
                classified=True,
            )
            self._submit(classes, event, frame, out)

        return then

    def _submit(
        self,
        classes: tuple[Classification, ...],
        event: StatementReceived,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        """
        Judge a statement once the catalog said what it reaches, and
        apply the verdict.  While the catalog is being read, relaying
        from the client waits, as for a held verdict.
        """
        assert self.session is not None
        wanted = request(classes) if self.session.wants(StatementReceived) else None
        if wanted is None:
            self._decided(classes, event, frame, out)
            return
        if wanted.relations > MAX_RELATIONS:
            problem = f"it names more than {MAX_RELATIONS} relations"
            parts = tuple(attrs.evolve(p, problem=problem) for p in event.parts)
            self._decided(classes, attrs.evolve(event, parts=parts), frame, out)
            return
        catalog = self._catalog()
        facts = catalog.known_facts(wanted)
        if facts is not None:
            self._reached(classes, event, facts, frame, out)
            return

        def found(facts: Facts, pending: list[bytes]) -> None:
            self._reached(classes, event, facts, frame, pending)

        def failed(failure: Failure, pending: list[bytes]) -> None:
            self._log.error(
                "Cannot read the catalog of {target} for session {session_id}: {error}",
                target=self.session.target.name if self.session else "?",
                session_id=self.session.id if self.session else "?",
                error=failure.getErrorMessage(),
            )
            problem = "the target's catalog could not be read"
            parts = tuple(attrs.evolve(p, problem=problem) for p in event.parts)
            self._decided(classes, attrs.evolve(event, parts=parts), frame, pending)

        self._held_until(catalog.facts(wanted), out, found, failed)

    def _held_until(
        self,
        waiting: Deferred[_T],
        out: list[bytes],
        found: Callable[[_T, list[bytes]], None],
        failed: Callable[[Failure, list[bytes]], None],
    ) -> None:
        """
        Relay nothing more from the client until C{waiting} fires, as for
        a held verdict (what C{out} holds is sent first); then call
        C{found} or C{failed} with what to send, unless the session ended.
        """
        self._held = True
        if out and self.server is not None:
            self.server.write(b"".join(out))
            out.clear()

        def resume() -> list[bytes] | None:
            self._held = False
            assert self._gate is not None
            self._gate.resume("verdict")
            return [] if self._state == "relay" else None

        def answered(result: _T) -> None:
            pending = resume()
            if pending is not None:
                found(result, pending)
                self._flush_then_relay(pending)

        def broke(failure: Failure) -> None:
            pending = resume()
            if pending is not None:
                failed(failure, pending)
                self._flush_then_relay(pending)

        waiting.addCallbacks(answered, broke)

    def _flush_then_relay(self, pending: list[bytes]) -> None:
        if pending and self.server is not None:
            self.server.write(b"".join(pending))
        self._relay_client()

    def _reached(
        self,
        classes: tuple[Classification, ...],
        event: StatementReceived,
        facts: Facts,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        state = with_paths(self._sql_state, facts)
        if state != self._sql_state:
            # The role's default search path is known only now: the
            # names resolve to more schemas than the text was read with.
            self._sql_state = state

            def again(
                classes: tuple[Classification, ...],
                parts: tuple[StatementPart, ...],
                out: list[bytes],
            ) -> None:
                self._submit(classes, attrs.evolve(event, parts=parts), frame, out)

            self._classify_then(event.text, out, again)
            return
        assert self.session is not None
        trusted = target_settings(self.session).trusted_functions
        parts = widened(event.parts, classes, facts, trusted)
        judgement = None
        if event.path == "extended":
            judgement = _Judgement(
                classes=classes,
                event=event,
                facts=facts,
                generation=self._catalog().generation,
                change=self._changes,
                at=self._now(),
            )
        self._decided(classes, attrs.evolve(event, parts=parts), frame, out, judgement)

    def _decided(
        self,
        classes: tuple[Classification, ...],
        event: StatementReceived,
        frame: pg.Frame,
        out: list[bytes],
        judgement: _Judgement | None = None,
    ) -> None:
        pending = self._pending_change
        parts, self._pending_change = after_change(event.parts, classes, pending)
        if self._pending_change and not pending:
            self._changes += 1
        if judgement is not None:
            # Judged as of now, its own change included.
            self._judgements[event.statement_name] = attrs.evolve(
                judgement, change=self._changes
            )
        event = attrs.evolve(event, parts=parts)
        self._sql_state = carry(self._sql_state, classes)
        verdict = self._judge(event, frame, out)
        if verdict is not None:
            self._apply(verdict, event, frame, out)

    # -- ISessionHandle ----------------------------------------------------

    def terminate(self, reason: str, message: str) -> None:
        self._fail(_errors.SHUTDOWN, message, reason)
        self._close_reason = reason

    def cancel(self) -> None:
        if not len(self._tracker):
            # Nothing of the session runs at the target: a cancel sent
            # there now would land on whatever the client sends next.
            self._log.info(
                "Cancel for idle session {session_id} dropped",
                session_id=self.session.id if self.session else "?",
            )
            return
        if self.server is not None and self.server.cancel_key is not None:
            session = self.session
            assert session is not None
            send_cancel(
                self._gateway.reactor,
                session.target.host,
                session.target.port,
                *self.server.cancel_key,
            )

    # -- relay: client to server ------------------------------------------

    def _relay_client(self) -> None:
        assert self.server is not None
        out: list[bytes] = []
        reader = self._reader
        while not self._held and not self._fenced and self._state == "relay":
            frame = reader.next_frame()
            if frame is None:
                break
            if frame.type in _RELAYED_CLIENT:
                out.append(frame.raw)
                continue
            handler = self._client_handlers.get(frame.type)
            if handler is None:
                self.server.write(b"".join(out))
                self._violation(f"unexpected message {pg.describe_type(frame.type)}")
                return
            handler(self, frame, out)
        if out:
            self.server.write(b"".join(out))

    def _now(self) -> float:
        return float(self._gateway.reactor.seconds())

    def _fence(self) -> None:
        """
        Relay nothing more from the client until the target has answered
        everything sent so far: a statement that may change how the
        server reads text (client_encoding, standard_conforming_strings)
        is on its way, and what follows must be classified with the
        settings the server will then report, not the ones it reported
        before.
        """
        self._fenced = True
        if self._gate is not None:
            self._gate.pause("fence")

    def _judge(
        self, event: StatementReceived, frame: pg.Frame, out: list[bytes]
    ) -> Verdict | None:
        """
        Ask the chain about a statement; a hold stops relaying from the
        client and replays C{frame} once decided.  Returns C{None} while
        held.  Reading goes on, up to L{_HELD_BUFFER} bytes, so that a
        client that leaves (and withdraws what it asked) is noticed.
        """
        assert self.session is not None
        verdict = self.session.decide(event)
        if not isinstance(verdict, Hold):
            return verdict

        self._held = True
        if out and self.server is not None:
            self.server.write(b"".join(out))
            out.clear()
        bound = self._bound_hold()

        def decided(final: Verdict) -> None:
            if bound is not None and bound.active():
                bound.cancel()
            self._held = False
            assert self._gate is not None
            self._gate.resume("verdict")
            if self._state != "relay":
                return
            pending: list[bytes] = []
            self._apply(final, event, frame, pending)
            if pending and self.server is not None:
                self.server.write(b"".join(pending))
            self._relay_client()

        def failed(failure: Failure) -> None:
            self._log.failure("A held verdict failed", failure)
            self._fail(_errors.INTERNAL, "the gateway failed", "held verdict failed")

        verdict.decision.addCallbacks(decided, failed)
        return None

    def _bound_hold(self) -> IDelayedCall | None:
        """
        Inside an open transaction, a held statement may wait only as long
        as the target keeps an idle transaction (the target's
        C{hold_in_transaction}): then its request is withdrawn, as a
        cancel would, and the client hears so while its transaction is
        still alive.
        """
        if self._status == pg.TransactionStatus.IDLE or self.session is None:
            return None
        limit = target_settings(self.session).hold_in_transaction
        key = self._cancel_key

        def withdraw() -> None:
            if self._held and key:
                self._log.info(
                    "Held statement of session {session_id} withdrawn: its "
                    "transaction would outlast {limit:g} s",
                    session_id=self.session.id if self.session else "?",
                    limit=limit,
                )
                self._gateway.cancel("postgres", key)

        return self._gateway.reactor.callLater(limit, withdraw)  # type: ignore[no-any-return]

    def _apply(
        self,
        verdict: Verdict,
        event: StatementReceived,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        if frame.type == F.QUERY:
            self._apply_query(verdict, event, frame, out)
        else:
            self._apply_parse(verdict, event, frame, out)

    def _on_query(self, frame: pg.Frame, out: list[bytes]) -> None:
        assert self.session is not None
        text = _text(frame.payload[:-1], self._encoding)
        self._classify_then(text, out, self._received(text, frame, "simple", ""))

    def _apply_query(
        self,
        verdict: Verdict,
        event: StatementReceived,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        now = self._now()
        self._note_copies(event)
        if self._describes is not None:
            self._describes.query()
        if isinstance(verdict, Deny):
            assert self.session is not None
            error = _errors.denied(verdict.reason, self.session.id, self._encoding)
            self._tracker.query(event.statement_id, now, replacement=error)
            out.append(pg.query(_REFUSED_SQL))
            return
        self._tracker.query(event.statement_id, now)
        out.append(frame.raw)
        if _changes_reading(event) or self._pending_change:
            self._fence()

    def _on_parse(self, frame: pg.Frame, out: list[bytes]) -> None:
        assert self.session is not None
        message = pg.parse_parse(frame.payload, "latin-1")
        name = _text(message.name.encode("latin-1"), self._encoding)
        text = _text(message.text.encode("latin-1"), self._encoding)
        self._classify_then(text, out, self._received(text, frame, "extended", name))

    def _apply_parse(
        self,
        verdict: Verdict,
        event: StatementReceived,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        name = event.statement_name
        if isinstance(verdict, Deny):
            assert self.session is not None
            error = _errors.denied(verdict.reason, self.session.id, self._encoding)
            self._statements.pop(name, None)
            self._judgements.pop(name, None)
            self._refused[name] = error
            self._tracker.denied(event.statement_id, self._now(), error)
            out.append(pg.parse(name, _REFUSED_SQL, (), encoding=self._encoding))
            return
        self._refused.pop(name, None)
        self._statements[name] = (event.statement_id, _sets_password(event.text))
        if _changes_reading(event) or self._pending_change:
            self._fencing.add(event.statement_id)
        else:
            self._fencing.discard(event.statement_id)
        self._note_copies(event)
        out.append(frame.raw)

    def _on_oversized(self, frame: pg.Frame, out: list[bytes]) -> None:
        """
        A Query or Parse longer than C{max_statement}, whose text the
        reader dropped unread: refused as a denied statement is.
        """
        assert self.session is not None
        statement = pg.parse_oversized(frame.payload, "latin-1")
        limit = listener_settings(self._listener).max_statement
        event = StatementReceived(
            session_id=self.session.id,
            protocol="postgres",
            statement_id=self.session.next_id(),
            text="",
            path="simple" if statement.kind == F.QUERY else "extended",
            statement_name=_text(statement.name.encode("latin-1"), self._encoding),
        )
        detail = f"{statement.length} bytes, over max_statement ({limit} bytes)"
        self._log.warn(
            "Statement {statement_id} refused: {detail}",
            statement_id=event.statement_id,
            detail=detail,
        )
        self.session.observe(
            Notice(
                session_id=self.session.id,
                protocol="postgres",
                kind="statement.too_long",
                detail=f"{event.statement_id}: {detail}",
            )
        )
        message = f"the statement is longer than the gateway accepts ({limit} bytes)"
        verdict = Deny(DenyReason("limit.statement", message, detail))
        if statement.kind == F.QUERY:
            self._apply_query(verdict, event, frame, out)
        else:
            self._apply_parse(verdict, event, frame, out)

    def _on_bind(self, frame: pg.Frame, out: list[bytes]) -> None:
        assert self.session is not None
        message = pg.parse_bind(frame.payload, "latin-1")
        statement = message.statement.encode("latin-1").decode(
            self._encoding, "replace"
        )
        portal = message.portal.encode("latin-1").decode(self._encoding, "replace")
        refused = self._refused.get(statement)
        if refused is not None:
            self._bind_refused(statement, portal, refused, out)
            return
        known = self._statements.get(statement)
        if known is None:
            self._violation(f"Bind of statement {statement!r} the gateway never saw")
            return
        judgement = self._judgements.get(statement)
        if judgement is not None and self._stale(judgement):
            self._judge_again(statement, judgement, frame, out)
            return
        self._bind(frame, out)

    def _bind(self, frame: pg.Frame, out: list[bytes]) -> None:
        assert self.session is not None
        message = pg.parse_bind(frame.payload, "latin-1")
        statement = message.statement.encode("latin-1").decode(
            self._encoding, "replace"
        )
        portal = message.portal.encode("latin-1").decode(self._encoding, "replace")
        statement_id, secret = self._statements[statement]
        self._portals[portal] = statement_id
        self._bound_at[portal] = self._changes
        parameters = tuple(
            _REDACTED
            if secret
            else _parameter(v, message.param_format(i) == 1, self._encoding)
            for i, v in enumerate(message.params)
        )
        self.session.observe(
            StatementBound(
                session_id=self.session.id,
                protocol="postgres",
                statement_id=statement_id,
                portal=portal,
                parameters=parameters,
            )
        )
        out.append(frame.raw)

    def _stale(self, judgement: _Judgement) -> bool:
        """
        Whether the catalog may have changed since a prepared statement
        was judged: a change of this transaction, one of this gateway's
        sessions committed, or the answer it was judged with expired.
        """
        if judgement.change != self._changes and self._pending_change:
            return True
        if judgement.generation != self._catalog().generation:
            return True
        return self._now() - judgement.at > FACTS_TTL

    def _judge_again(
        self, name: str, judgement: _Judgement, frame: pg.Frame, out: list[bytes]
    ) -> None:
        """
        Judge a prepared statement again before it runs: with a change of
        this transaction pending it is refused; otherwise the catalog is
        read, and if it says something new the chain decides again.
        """
        assert self.session is not None
        if judgement.change != self._changes and self._pending_change:
            problem = (
                f"an earlier {self._pending_change} of this transaction may change"
                " what it does, and the gateway reads the catalog only once that"
                " is committed"
            )
            self._refuse_prepared(name, judgement, problem, frame, out)
            return
        wanted = request(judgement.classes)
        assert wanted is not None
        catalog = self._catalog()
        facts = catalog.known_facts(wanted)
        if facts is not None:
            self._judged_again(name, judgement, facts, frame, out)
            return

        def found(facts: Facts, pending: list[bytes]) -> None:
            self._judged_again(name, judgement, facts, frame, pending)

        def failed(failure: Failure, pending: list[bytes]) -> None:
            problem = "the target's catalog could not be read"
            self._refuse_prepared(name, judgement, problem, frame, pending)

        self._held_until(catalog.facts(wanted), out, found, failed)

    def _judged_again(
        self,
        name: str,
        judgement: _Judgement,
        facts: Facts,
        frame: pg.Frame,
        out: list[bytes],
    ) -> None:
        assert self.session is not None
        fresh = attrs.evolve(
            judgement,
            facts=facts,
            generation=self._catalog().generation,
            change=self._changes,
            at=self._now(),
        )
        if facts == judgement.facts:
            self._judgements[name] = fresh
            self._bind(frame, out)
            return
        trusted = target_settings(self.session).trusted_functions
        parts = widened(judgement.event.parts, judgement.classes, facts, trusted)
        event = attrs.evolve(
            judgement.event, statement_id=self.session.next_id(), parts=parts
        )
        verdict = self.session.decide(event)
        if _is_allow(verdict):
            self._judgements[name] = fresh
            self._bind(frame, out)
            return
        reason = verdict.reason if isinstance(verdict, Deny) else None
        self._refuse_prepared(name, judgement, "", frame, out, reason=reason)

    def _refuse_prepared(
        self,
        name: str,
        judgement: _Judgement,
        problem: str,
        frame: pg.Frame,
        out: list[bytes],
        *,
        reason: DenyReason | None = None,
    ) -> None:
        """
        Refuse a prepared statement from now on: this Bind and every later
        one fail, in the server too, until the client prepares it again.
        """
        assert self.session is not None
        if reason is None:
            parts = tuple(
                attrs.evolve(p, problem=problem) for p in judgement.event.parts
            )
            event = attrs.evolve(
                judgement.event, statement_id=self.session.next_id(), parts=parts
            )
            verdict = self.session.decide(event)
            reason = verdict.reason if isinstance(verdict, Deny) else None
        if reason is None:
            reason = DenyReason(
                code="guardrail.blocked",
                message="statement could not be judged again",
                detail=problem,
            )
        error = _errors.denied(reason, self.session.id, self._encoding)
        self._judgements.pop(name, None)
        self._statements.pop(name, None)
        self._refused[name] = error
        message = pg.parse_bind(frame.payload, "latin-1")
        portal = message.portal.encode("latin-1").decode(self._encoding, "replace")
        self._bind_refused(name, portal, error, out)

    def _bind_refused(
        self, statement: str, portal: str, error: bytes, out: list[bytes]
    ) -> None:
        """
        A Bind of a refused statement: the server must fail it too, so it
        gets a Parse it rejects (skipped if the batch already failed).
        """
        assert self.session is not None
        self._portals[portal] = ""
        # Not a statement of its own: its outcome is the refused Parse's.
        self._tracker.denied("", self._now(), error)
        out.append(pg.parse(statement, _REFUSED_SQL, (), encoding=self._encoding))

    def _on_execute(self, frame: pg.Frame, out: list[bytes]) -> None:
        message = pg.parse_execute(frame.payload, "latin-1")
        portal = message.portal.encode("latin-1").decode(self._encoding, "replace")
        statement_id = self._portals.get(portal)
        if statement_id is None:
            self._violation(f"Execute of portal {portal!r} the gateway never saw")
            return
        if self._pending_change and self._bound_at.get(portal) != self._changes:
            self._execute_refused(portal, out)
            return
        self._tracker.execute(statement_id, self._now())
        if statement_id in self._fencing:
            self._fence_at_sync = True
        if self._describes is not None:
            # The answer carries the formats the Bind asked for; the rows
            # that follow are masked by the plan made from it.
            self._describes.describe(Describe("P", portal, statement_id, True))
            out.append(pg.describe("P", portal, encoding=self._encoding))
        out.append(frame.raw)

    def _execute_refused(self, portal: str, out: list[bytes]) -> None:
        """
        An Execute of a portal bound before a catalog change of this
        transaction: it may now do what was not judged, so the server
        gets a Parse it rejects instead, and the batch fails.
        """
        assert self.session is not None
        problem = (
            f"an earlier {self._pending_change} of this transaction may change"
            " what it does, and the gateway reads the catalog only once that is"
            " committed"
        )
        reason = DenyReason(
            code="guardrail.blocked",
            message=f"statement could not be classified: {problem}",
            detail=f"portal {portal!r} was bound before the change",
        )
        self._log.warn(
            "Execute of portal {portal} of session {session_id} refused: {problem}",
            portal=portal,
            session_id=self.session.id,
            problem=problem,
        )
        error = _errors.denied(reason, self.session.id, self._encoding)
        self._tracker.denied("", self._now(), error)
        out.append(pg.parse(_REFUSED_NAME, _REFUSED_SQL, (), encoding=self._encoding))

    def _on_describe(self, frame: pg.Frame, out: list[bytes]) -> None:
        if self._describes is not None:
            message = pg.parse_describe(frame.payload, "latin-1")
            name = message.name.encode("latin-1").decode(self._encoding, "replace")
            if message.kind == "S":
                statement_id = self._statements.get(name, ("", False))[0]
            else:
                statement_id = self._portals.get(name, "")
            self._describes.describe(Describe(message.kind, name, statement_id))
        out.append(frame.raw)

    def _on_close_message(self, frame: pg.Frame, out: list[bytes]) -> None:
        message = pg.parse_close(frame.payload, "latin-1")
        name = message.name.encode("latin-1").decode(self._encoding, "replace")
        if message.kind == "S":
            self._statements.pop(name, None)
            self._refused.pop(name, None)
            self._judgements.pop(name, None)
        else:
            self._portals.pop(name, None)
            self._bound_at.pop(name, None)
        out.append(frame.raw)

    def _on_sync(self, frame: pg.Frame, out: list[bytes]) -> None:
        self._tracker.sync()
        if self._describes is not None:
            self._describes.sync()
        out.append(frame.raw)
        if self._fence_at_sync:
            self._fence_at_sync = False
            self._fence()

    def _on_copy_end(self, frame: pg.Frame, out: list[bytes]) -> None:
        self._tracker.copy_end()
        if self._describes is not None:
            self._describes.copy_end()
        out.append(frame.raw)

    def _on_terminate(self, frame: pg.Frame, out: list[bytes]) -> None:
        out.append(frame.raw)
        self._terminated = True

    def _on_function_call(self, frame: pg.Frame, out: list[bytes]) -> None:
        assert self.session is not None
        error = _errors.error(
            _errors.NOT_SUPPORTED,
            "hoopgate does not relay fast-path function calls",
            reference=self.session.id,
        )
        self._tracker.query(self.session.next_id(), self._now(), replacement=error)
        if self._describes is not None:
            self._describes.query()
        out.append(pg.query(_REFUSED_SQL))

    _client_handlers: ClassVar[
        dict[int, Callable[[ClientConnection, pg.Frame, list[bytes]], None]]
    ] = {
        F.QUERY: _on_query,
        F.PARSE: _on_parse,
        F.BIND: _on_bind,
        F.EXECUTE: _on_execute,
        F.DESCRIBE: _on_describe,
        F.CLOSE: _on_close_message,
        F.SYNC: _on_sync,
        F.COPY_DONE: _on_copy_end,
        F.COPY_FAIL: _on_copy_end,
        F.TERMINATE: _on_terminate,
        F.FUNCTION_CALL: _on_function_call,
        pg.OVERSIZED_STATEMENT: _on_oversized,
    }

    # -- relay: server to client ------------------------------------------

    def from_server(self, reader: pg.BackendReader) -> None:
        """
        Relay what the target sent, judging result descriptions and
        diagnostics, masking and sampling rows, and noting completions.

        While the names of a result's columns are being looked up, the
        target's bytes wait in C{reader} and reading from it is paused.
        """
        self._server_reader = reader
        if self._waiting:
            return
        out: list[bytes] = []
        tracker = self._tracker
        while True:
            passing = self._passing()
            chunk = reader.take_passthrough(passing)
            if chunk:
                tracker.add_bytes(len(chunk))
                if self._sampler is not None:
                    self._sampler.passed(len(chunk))
                out.append(chunk)
            rows = b"" if B.DATA_ROW in passing else reader.take_passthrough(_ROWS)
            if rows:
                tracker.add_bytes(len(rows))
                out.append(self._data_rows(rows))
                if self._state == "closed":
                    return
                continue
            frame = reader.next_frame()
            if frame is None:
                break
            tracker.add_bytes(len(frame.raw))
            if frame.type == B.ROW_DESCRIPTION:
                entry = self._describes.on_description() if self._describes else None
                if self._needs_lineage(frame):
                    self._write(out)
                    self._await_lineage(frame, entry)
                    return
                out.append(self._describe(frame, {}, entry))
            else:
                out.append(self._server_frame(frame))
            if self._state == "closed":
                # Failed closed: nothing of this batch may follow the error.
                return
        self._write(out)
        if self._fence_lifted:
            self._fence_lifted = False
            self._relay_client()

    def _passing(self) -> frozenset[int]:
        sampling = self._record_rows > 0 and (
            self._sampler is None or not self._sampler.full
        )
        rows = self._plan is not None or sampling
        copy = self._copy_out and (self._copy is not None or sampling)
        return _PASSING[rows, copy, self._describes is not None, self._masks_notices]

    def _write(self, out: list[bytes]) -> None:
        if out:
            data = b"".join(out)
            self._bytes_out += len(data)
            self.transport.write(data)

    def _server_frame(self, frame: pg.Frame) -> bytes:
        kind = frame.type
        if kind == B.DATA_ROW:
            return self._data_rows(frame.raw)
        if kind == B.COPY_DATA:
            return self._copy_row(frame)
        if kind == B.NO_DATA:
            return self._no_data(frame)
        if kind == B.COMMAND_COMPLETE:
            tag = _text(frame.payload[:-1], self._encoding)
            self._end_result(rows_of(tag))
            self._finished(
                [o for o in [self._tracker.on_complete(tag, self._now())] if o]
            )
            return frame.raw
        if kind == B.EMPTY_QUERY_RESPONSE:
            self._end_result(0)
            self._finished(
                [o for o in [self._tracker.on_complete("", self._now())] if o]
            )
            return frame.raw
        if kind == B.ERROR_RESPONSE:
            return self._on_error(frame)
        if kind == B.NOTICE_RESPONSE:
            return self._diagnostic(frame)[0]
        if kind == B.NOTIFICATION_RESPONSE:
            return self._notification(frame)
        if kind == B.READY_FOR_QUERY:
            self._status = pg.parse_ready_for_query(frame.payload).status
            self._end_result(None)
            if self._describes is not None:
                self._describes.on_ready()
            self._finished(self._tracker.on_ready(self._now()))
            if self._status == pg.TransactionStatus.IDLE:
                # Portals, the unnamed one too, last to the transaction's end.
                self._portals.clear()
                self._bound_at.clear()
                if self._pending_change and not len(self._tracker):
                    # What may have changed the catalog is committed (or
                    # rolled back): read it afresh from now on.
                    self._pending_change = ""
                    self._catalog().changed()
            if self._fenced and not len(self._tracker):
                self._fenced = False
                self._fence_lifted = True
                if self._gate is not None:
                    self._gate.resume("fence")
            return frame.raw
        if kind == B.PORTAL_SUSPENDED:
            self._end_result(None)
            self._finished([o for o in [self._tracker.on_suspended(self._now())] if o])
            return frame.raw
        if kind == B.COPY_IN_RESPONSE:
            self._tracker.on_copy_in()
            if self._describes is not None:
                self._describes.on_copy_in()
            return frame.raw
        if kind == B.PARAMETER_STATUS:
            status = pg.parse_parameter_status(frame.payload, "latin-1")
            self.parameter_changed(status.name, status.value)
            return frame.raw
        if kind == B.COPY_OUT_RESPONSE:
            self._start_copy(frame)
            return frame.raw
        if kind == B.COPY_DONE:
            self._copy_out = False
            return frame.raw
        if kind in (B.AUTHENTICATION, B.BACKEND_KEY_DATA, B.COPY_BOTH_RESPONSE):
            raise pg.ProtocolViolation(
                f"target sent {pg.describe_type(kind)} during a session"
            )
        return frame.raw

    # -- results: lineage, masking and samples -------------------------------

    def _prepare_results(self, session: Session) -> None:
        """
        Track Describes (for the gateway's own) when someone judges
        results, and take the recording's sample caps from the policy.
        """
        if session.wants(ResultDescribed):
            self._describes = DescribeQueue()
        self._masks_notices = session.wants(DiagnosticReceived)
        masking = session.config.policy.masking
        applying = masking.for_session(session.identity, session.target.name)
        # Rows reach a recording only through masking: a session that no
        # enforce rule masks records totals, never rows.
        self._record_rows = masking.record_rows if applying.of_mode(True) else 0
        self._record_bytes = masking.record_bytes

    def _catalog(self) -> Catalog:
        assert self.session is not None
        session = self.session
        return catalog_for(self._gateway.reactor, session.target, session.credential)

    def _needs_lineage(self, frame: pg.Frame) -> bool:
        """
        Whether a result's column names must be looked up before it can
        be judged (someone judges results, and its tables are not cached).
        """
        if self.session is None or not self.session.wants(ResultDescribed):
            return False
        oids = _table_oids(frame)
        return bool(oids) and self._catalog().known(oids) is None

    def _await_lineage(self, frame: pg.Frame, entry: Describe | None) -> None:
        assert self.server is not None and self.server.gate is not None
        gate = self.server.gate
        self._waiting = True
        gate.pause("lineage")

        def found(tables: dict[int, Table | None]) -> None:
            self._waiting = False
            gate.resume("lineage")
            if self._state != "relay":
                return
            self._write([self._describe(frame, tables, entry)])
            if self._server_reader is not None and self._state == "relay":
                self.from_server(self._server_reader)

        def failed(failure: Failure) -> None:
            self._waiting = False
            self._log.error(
                "Cannot read the catalog of {target}: {error}",
                target=self.session.target.name if self.session else "?",
                error=failure.getErrorMessage(),
            )
            self._fail(
                _errors.INTERNAL,
                "the gateway could not check this result",
                "catalog lookup failed",
            )

        self._catalog().lookup(_table_oids(frame)).addCallbacks(found, failed)

    def _describe(
        self,
        frame: pg.Frame,
        tables: dict[int, Table | None],
        entry: Describe | None,
    ) -> bytes:
        """
        Judge a RowDescription: masking may re-describe columns and hand
        back a plan for the rows that follow.

        The answer to a simple Query or to the gateway's own Describe
        before an Execute sets the plan of the rows that follow (and the
        latter is not relayed); the answer to the client's own Describe
        is only re-described.
        """
        assert self.session is not None
        description = pg.parse_row_description(frame.payload, "latin-1")
        if not tables and self.session.wants(ResultDescribed):
            tables = self._catalog().known(_table_oids(frame)) or {}
        head = self._tracker.head
        statement_id = head.statement_id if head else ""
        event = ResultDescribed(
            session_id=self.session.id,
            protocol="postgres",
            statement_id=entry.statement_id if entry else statement_id,
            columns=_columns(description, tables, self._encoding),
            encoding=self._encoding,
        )
        verdict = self.session.decide(event)
        if not (_is_allow(verdict) or isinstance(verdict, Rewrite)):
            # Results are judged at once or not at all: a refusal or a
            # wait here has nowhere safe to go but the end of the session.
            self._fail(
                _errors.PRIVILEGE,
                "the gateway refused this result",
                f"result verdict {type(verdict).__name__}",
            )
            return b""

        plan = verdict.plan if isinstance(verdict, Rewrite) else None
        if entry is None or entry.injected:
            self._plan = plan
        if entry is not None and entry.injected:
            return b""
        if isinstance(verdict, Rewrite) and isinstance(verdict.event, ResultDescribed):
            return _redescribe(description, verdict.event)
        return frame.raw

    def _no_data(self, frame: pg.Frame) -> bytes:
        entry = self._describes.on_description() if self._describes else None
        if entry is not None and entry.injected:
            self._plan = None
            return b""
        return frame.raw

    def _sampler_for_result(self) -> ResultSampler:
        sampler = self._sampler
        if sampler is None:
            sampler = ResultSampler(
                self._record_rows, self._record_bytes, self._encoding
            )
            self._sampler = sampler
        return sampler

    def _data_rows(self, chunk: bytes) -> bytes:
        """
        A run of DataRows, masked by the result's plan and sampled, in one
        tight loop; unmasked values keep their bytes.
        """
        plan = self._plan
        sampler = self._sampler_for_result()
        recorded = getattr(plan, "recorded", None)
        parse, build, add = pg.parse_data_row, pg.data_row, sampler.add
        out: list[bytes] = []
        append = out.append
        try:
            for frame in pg.split_frames(chunk):
                raw = frame.raw
                values = None if plan is None else parse(frame.payload)
                if plan is not None and values is not None:
                    masked = plan(values)
                    if masked is not values:
                        raw = build(masked)
                    values = recorded(masked) if recorded is not None else masked
                if sampler.full:
                    add([], len(raw))
                else:
                    add(
                        values if values is not None else parse(frame.payload), len(raw)
                    )
                append(raw)
        except pg.ProtocolViolation:
            raise
        except Exception:
            self._log.failure("A row plan failed; closing the session")
            self._fail(_errors.INTERNAL, "the gateway failed", "row plan failed")
            return b""
        return b"".join(out)

    def _end_result(self, rows: int | None) -> None:
        """
        A result ended: record what left of it, with what masking masked.
        """
        sampler, self._sampler = self._sampler, None
        plan = self._copy_plan or self._plan
        self._plan = None
        self._copy = None
        self._copy_plan = None
        self._copy_out = False
        if sampler is None or self.session is None:
            return

        if rows is not None:
            sampler.completed(rows)
        report = getattr(plan, "report", None)
        head = self._tracker.head
        self.session.observe(
            ResultSample(
                session_id=self.session.id,
                protocol="postgres",
                statement_id=head.statement_id if head else "",
                rows=tuple(sampler.rows),
                total_rows=sampler.total_rows,
                total_bytes=sampler.total_bytes,
                truncated=sampler.truncated,
                masked=tuple(report()) if callable(report) else (),
            )
        )

    # -- COPY TO STDOUT ---------------------------------------------------------

    def _note_copies(self, event: StatementReceived) -> None:
        """
        Keep the COPY TO STDOUT parts of a statement, for its COPY data.
        """
        if self._describes is None:
            return
        copies = tuple(p for p in event.parts if p.stream_format)
        if not copies:
            return
        self._copy_parts[event.statement_id] = copies
        while len(self._copy_parts) > _COPY_STATEMENTS:
            del self._copy_parts[next(iter(self._copy_parts))]

    def _copy_part(self) -> StatementPart | None:
        head = self._tracker.head
        if head is None:
            return None
        parts = self._copy_parts.get(head.statement_id, ())
        if head.kind is not Kind.SIMPLE:
            return parts[0] if parts else None
        # A Query string may hold several COPY statements, in order.
        seen = self._copies_seen.get(head.statement_id, 0)
        self._copies_seen[head.statement_id] = seen + 1
        return parts[seen] if seen < len(parts) else None

    def _start_copy(self, frame: pg.Frame) -> None:
        """
        COPY TO STDOUT begins: masking judges its fields as a result.
        """
        self._copy_out = True
        if self._describes is None or self.session is None:
            return
        message = pg.parse_copy_out_response(frame.payload)
        part = self._copy_part()
        if part is None:
            self._fail(
                _errors.PRIVILEGE,
                "the gateway cannot mask this COPY",
                "COPY data from a statement the gateway did not classify as COPY",
            )
            return

        head = self._tracker.head
        event = ResultDescribed(
            session_id=self.session.id,
            protocol="postgres",
            statement_id=head.statement_id if head else "",
            columns=_copy_columns(part, len(message.column_formats)),
            encoding=self._encoding,
        )
        verdict = self.session.decide(event)
        plan = verdict.plan if isinstance(verdict, Rewrite) else None
        if plan is None and _is_allow(verdict):
            return
        try:
            if plan is None or message.format != 0:
                raise ValueError(f"COPY format {message.format} with {verdict!r}")
            self._copy = CopyMasker(plan, part.stream_format)
        except ValueError as e:
            self._fail(_errors.PRIVILEGE, "the gateway cannot mask this COPY", str(e))
            return
        self._copy_plan = plan

    def _copy_row(self, frame: pg.Frame) -> bytes:
        copy = self._copy
        raw = frame.raw
        row: list[bytes | None]
        if copy is not None:
            try:
                masked = copy(frame.payload)
            except CopyFormatError as e:
                self._fail(
                    _errors.PRIVILEGE, "the gateway cannot mask this COPY", str(e)
                )
                return b""
            if masked is not frame.payload:
                raw = pg.copy_data(masked)
            assert self._copy_plan is not None
            row = _recorded(self._copy_plan, copy.last) if copy.last else [masked]
        else:
            row = [frame.payload]

        sampler = self._sampler_for_result()
        sampler.add([] if sampler.full else row, len(raw))
        return raw

    # -- errors and notices ---------------------------------------------------

    def _diagnostic(self, frame: pg.Frame) -> tuple[bytes, dict[str, str]]:
        """
        Let masking see an error or notice text before the client does.

        Returns:
            The message to relay and its fields as relayed.
        """
        raw = pg.parse_fields(frame.payload, encoding="latin-1")
        fields = {
            k: v.encode("latin-1").decode(self._encoding, "replace")
            for k, v in raw.items()
        }
        session = self.session
        if session is None or not session.wants(DiagnosticReceived):
            return frame.raw, fields

        head = self._tracker.head
        event = DiagnosticReceived(
            session_id=session.id,
            protocol="postgres",
            statement_id=head.statement_id if head else "",
            severity=fields.get("S", ""),
            code=fields.get("C", ""),
            fields=tuple(fields.items()),
        )
        verdict = session.decide(event)
        if isinstance(verdict, Rewrite) and isinstance(
            verdict.event, DiagnosticReceived
        ):
            fields = dict(verdict.event.fields)
            rebuilt = pg.fields_message(frame.type, fields, encoding=self._encoding)
            return rebuilt, fields
        if isinstance(verdict, Deny | Hold):
            generic = {
                "S": fields.get("S", "ERROR"),
                "V": fields.get("V", fields.get("S", "ERROR")),
                "C": fields.get("C", "XX000"),
                "M": "hoopgate: the target's message was withheld by policy",
            }
            return pg.fields_message(frame.type, generic), generic
        return frame.raw, fields

    def _notification(self, frame: pg.Frame) -> bytes:
        """
        Let masking see a notification's payload (a trigger may send a
        row's values) before the client does.
        """
        session = self.session
        if session is None or not session.wants(DiagnosticReceived):
            return frame.raw
        note = pg.parse_notification_response(frame.payload, self._encoding)
        event = DiagnosticReceived(
            session_id=session.id,
            protocol="postgres",
            statement_id="",
            severity=_NOTIFY,
            code="",
            fields=(("M", note.payload),),
        )
        verdict = session.decide(event)
        payload = note.payload
        if isinstance(verdict, Rewrite) and isinstance(
            verdict.event, DiagnosticReceived
        ):
            payload = dict(verdict.event.fields).get("M", "")
        elif isinstance(verdict, Deny | Hold):
            payload = ""
        if payload == note.payload:
            return frame.raw
        return pg.notification_response(
            note.pid, note.channel, payload, encoding=self._encoding
        )

    def _on_error(self, frame: pg.Frame) -> bytes:
        relayed, fields = self._diagnostic(frame)
        code = fields.get("C", "")
        message = fields.get("M", "")
        self._end_result(None)
        outcomes, replacement = self._tracker.on_error(code, message, self._now())
        self._finished(outcomes)
        return relayed if replacement is None else replacement

    def _finished(self, outcomes: list[Outcome]) -> None:
        session = self.session
        if session is None:
            return
        for outcome in outcomes:
            if not outcome.statement_id:
                # Stand-ins for refused statements; their Parse's outcome
                # was recorded.
                continue
            session.observe(
                StatementCompleted(
                    session_id=session.id,
                    protocol="postgres",
                    statement_id=outcome.statement_id,
                    status=outcome.status,
                    command_tag=outcome.command_tag,
                    rows=outcome.rows,
                    bytes_out=outcome.bytes_out,
                    duration=outcome.duration,
                    error_code=outcome.error_code,
                    error_message=outcome.error_message,
                )
            )


def _is_allow(verdict: Verdict) -> bool:
    return not isinstance(verdict, Deny | Hold | Rewrite)


def _recorded(plan: RowTransformer, values: list[bytes | None]) -> list[bytes | None]:
    """
    A masked row as recordings keep it: a plan may mask more for the
    record than for the client (dry-run rules), through C{recorded}.
    """
    recorded = getattr(plan, "recorded", None)
    if callable(recorded):
        row: list[bytes | None] = recorded(values)
        return row
    return values


class ClientFactory(protocol.Factory):
    """
    Builds a L{ClientConnection} per accepted client.
    """

    def __init__(
        self, gateway: IGateway, listener: ListenerConfig, tls: Any | None
    ) -> None:
        self._gateway = gateway
        self._listener = listener
        self._tls = tls

    def buildProtocol(self, addr: Any) -> ClientConnection:
        return ClientConnection(self._gateway, self._listener, self._tls)
