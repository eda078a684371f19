"""
Typed events: what a protocol plugin saw, in protocol-neutral terms.

Every event is a frozen attrs class with a stable C{name} that recordings
and policy use; class names may change, event names may not.  Each event
carries the envelope fields (session, protocol, time); payloads that only
one protocol has live in that protocol's plugin as subclasses of L{Event}.

test-case-name: tests.unit.test_events
"""

from __future__ import annotations

import time
from typing import ClassVar

from attrs import field, frozen

from hoopgate._identity import Identity


def _now() -> float:
    return time.time()


@frozen(kw_only=True)
class Event:
    """
    The common envelope of every event.

    Attributes:
        session_id: The gateway's id of the session the event belongs to.
        protocol: The plugin name (C{postgres}, C{mysql}, C{ssh}, C{http}).
        at: POSIX time the gateway saw it.
    """

    name: ClassVar[str] = "event"

    session_id: str
    protocol: str
    at: float = field(factory=_now)


@frozen(kw_only=True)
class SessionRequested(Event):
    """
    A client asks for a session on a target, presenting a credential.

    Fires once per connection, after the protocol's start-up and before
    anything reaches the target.  The identity stage turns it into an
    authenticated request or refuses it.

    Attributes:
        peer: The client address, C{host:port}.
        target: The target name the client asked for.
        login: The account the client asked for on the target, if the
            protocol has one (SSH C{LOGIN@TARGET}); empty otherwise.
        token: The bearer credential.  Never recorded or logged.
        identity: Filled in by the identity stage; set beforehand only
            by a plugin that verified a credential of its own (see
            C{presented}).
        tls: Whether the client leg is encrypted.
        presented: What the client proved itself with: C{token} (the
            identity stage verifies C{token}; a preset C{identity} is
            refused), or C{ssh-certificate} (the SSH plugin verified a
            certificate the gateway's own CA signed and set C{identity}
            from it).  The identity stage refuses any other value.
    """

    name: ClassVar[str] = "session.requested"

    peer: str
    target: str
    login: str = ""
    token: str = field(default="", repr=False, metadata={"secret": True})
    identity: Identity | None = None
    tls: bool = False
    presented: str = "token"


@frozen(kw_only=True)
class SessionOpened(Event):
    """
    The gateway accepted a session and logged in to the target.

    Attributes:
        identity: Who is calling.
        peer: The client address.
        target: The target name.
        upstream_user: The account the gateway used on the target.
        details: Protocol facts worth recording (server version, TLS).
    """

    name: ClassVar[str] = "session.opened"

    identity: Identity
    peer: str
    target: str
    upstream_user: str
    details: tuple[tuple[str, str], ...] = ()


@frozen(kw_only=True)
class SessionRefused(Event):
    """
    A session was refused before it reached the target.

    Attributes:
        peer: The client address.
        target: The target asked for.
        reason: The reason code (C{identity.expired}, C{access.denied}).
        detail: The precise reason for operators (no secrets).
        subject: The subject, when the credential was good enough to
            name one.
    """

    name: ClassVar[str] = "session.refused"

    peer: str
    target: str
    reason: str
    detail: str
    subject: str | None = None


@frozen(kw_only=True)
class SessionClosed(Event):
    """
    A session ended, for any reason.

    Attributes:
        reason: Why (C{client}, C{upstream}, C{session_limit},
            C{token_expired}, C{terminated}, C{error}).
        bytes_from_client: Bytes the client sent through the gateway.
        bytes_to_client: Bytes the gateway sent to the client.
    """

    name: ClassVar[str] = "session.closed"

    reason: str
    bytes_from_client: int = 0
    bytes_to_client: int = 0


@frozen
class Parameter:
    """
    A value bound to a statement or command.

    Attributes:
        value: The text form, or a hex string for binary values, or
            C{None} for NULL.
        binary: Whether the client sent it in binary format.
    """

    value: str | None
    binary: bool = False


@frozen
class StatementPart:
    """
    One statement of what a client sent, as the protocol plugin's SQL
    classifier understood it.  Policy judges these, never raw text.

    Attributes:
        text: The statement's own text.
        command: Its leading command word in upper case (C{SELECT},
            C{DROP}); C{""} if it could not be read.
        effect: C{read}, C{write}, C{ddl}, C{privilege}, C{transaction},
            C{session} or C{unknown} (dynamic SQL, unknown functions,
            text the classifier could not be sure of).
        reads: Relations read, schema-qualified (C{public.customers}).
        writes: Relations written, schema-qualified.
        shapes: Risky shapes found (C{delete_without_where},
            C{truncate}, C{drop}, C{writing_cte}, ...).
        problem: Why the classifier could not be sure, if it could not.
        columns: The column names the statement refers to, rendered as
            relation names are (C{email}, C{"Email"}); C{*} stands for
            every column of a relation or a whole row (C{select *},
            C{row_to_json(c)}).  Masking judges these.
        derived_columns: Those of C{columns} used other than as a plain
            output column of the statement's own result: in conditions,
            joins, ordering, grouping, function arguments, casts,
            subqueries, set operations, assignments and whatever a
            statement other than a plain query reads.
        stream_format: For a part that streams rows to the client
            outside the protocol's result description (PostgreSQL C{COPY
            ... TO STDOUT}): C{text}, C{text+header}, C{csv},
            C{csv+header}, C{binary}, or C{other} for options the
            gateway does not read; empty otherwise.
        reason: Why the effect is C{unknown}, when it is.
        through_views: Those of C{reads} read only through a view or
            rule, whose columns the protocol's result description does
            not trace (the plugin's catalog found them); masking cannot
            follow its column rules there.
    """

    text: str
    command: str
    effect: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    problem: str = ""
    columns: tuple[str, ...] = ()
    derived_columns: tuple[str, ...] = ()
    stream_format: str = ""
    reason: str = ""
    through_views: tuple[str, ...] = ()


@frozen(kw_only=True)
class StatementReceived(Event):
    """
    A client sent a statement (SQL text) to run.

    Fires for every statement the client wants the target to see, before
    the target sees it: a simple query (once per query string), or an
    extended-protocol Parse.  Bound parameters arrive with
    L{StatementBound}.

    Attributes:
        statement_id: Gateway-unique id for linking outcome to statement.
        text: The statement text as sent.
        path: C{simple} or C{extended}.
        statement_name: The prepared-statement name (extended path).
        parts: The statements C{text} holds, classified; empty when the
            plugin has no classifier (policy then treats the text as
            one statement of effect C{unknown}) or when the text holds
            no statement (only comments).
        classified: Whether the plugin's classifier produced C{parts};
            with C{parts} empty, the text holds nothing that runs.
    """

    name: ClassVar[str] = "statement"

    statement_id: str
    text: str
    path: str = "simple"
    statement_name: str = ""
    parts: tuple[StatementPart, ...] = ()
    classified: bool = False


@frozen(kw_only=True)
class StatementBound(Event):
    """
    Parameters were bound to an approved statement (extended path).

    Attributes:
        statement_id: The L{StatementReceived} it belongs to.
        portal: The portal name.
        parameters: The bound values.
    """

    name: ClassVar[str] = "statement.bound"

    statement_id: str
    portal: str
    parameters: tuple[Parameter, ...] = ()


@frozen
class Column:
    """
    One column of a result, as far as the protocol describes it.

    Attributes:
        name: The column label (an alias, if the statement gave one).
        type_name: The protocol's type name (C{text}, C{int4}), or its
            type id as text when the plugin does not know the name.
        table: The source relation, schema-qualified as statement parts
            name relations (C{public.customers}), when the column is a
            plain column of a table; C{""} for expressions.
        position: The column's number in that table, if known.
        column: The source column's own name in C{table}, if known.
        textual: Whether the values arrive as text that detectors can
            read (text format, or a text type in binary format).
        masked: Set by masking in the event it rewrites: the plugin
            re-describes the column as text, since masked values are
            no longer of the original type.
        sources: Other relations whose rows the column may carry, under
            the same column name: a parent table's scan returns the rows
            of its inheritance children and partitions.
        binary: For values that are not C{textual}, the name of a reader
            of their binary form that detectors can use
            (C{postgres.int8}, C{postgres.numeric}); C{""} for none.
    """

    name: str
    type_name: str = ""
    table: str = ""
    position: int = 0
    column: str = ""
    textual: bool = True
    masked: bool = False
    sources: tuple[str, ...] = ()
    binary: str = ""


@frozen(kw_only=True)
class ResultDescribed(Event):
    """
    The target described the columns of a result about to stream.

    Fires once per result, before any row.  Masking answers it with a
    row plan; nothing is decided per row.

    Attributes:
        statement_id: The statement the result belongs to.
        columns: The columns, in order.
        encoding: The Python codec name of the client encoding the
            values arrive in (C{utf-8}, C{latin-1}), for row plans.
    """

    name: ClassVar[str] = "result.described"

    statement_id: str
    columns: tuple[Column, ...]
    encoding: str = "utf-8"


@frozen
class MaskCount:
    """
    How many values (or detector hits) one rule masked in one column of a
    result: a count, never a value.

    Attributes:
        column: The column's label in the result.
        rule: The masking rule.
        detector: The detector's name, or C{column} for a whole-column
            (lineage) rule.
        count: Values masked (whole-column rules) or hits (detectors).
        dry_run: Whether the rule is in dry-run: it would have masked
            them, and the client saw them unmasked.
    """

    column: str
    rule: str
    detector: str
    count: int
    dry_run: bool = False


@frozen(kw_only=True)
class ResultSample(Event):
    """
    What left for the client of one result: its first rows as sent,
    after masking, and its totals.

    Fires once per result that sent rows (or COPY data), when it ends
    (completion, suspension or error), before the statement's
    L{StatementCompleted}.  The sample is capped per result
    (C{policy.masking.record_rows} and C{record_bytes}); the totals
    always count everything.  Observed, never decided.  A row plan may
    offer C{recorded(values)} (the row as a recording keeps it, with what
    dry-run rules would have masked) and C{report()} (its masking counts,
    for C{masked}); plugins use them when present.

    Attributes:
        statement_id: The statement the result belongs to.
        rows: The sampled rows; each value as text in the client
            encoding, C{\\x} and hex digits when it is not text, or
            C{None} for NULL.  COPY data: one value per field.
        total_rows: Rows the result sent.
        total_bytes: Bytes the result sent the client.
        truncated: Whether rows were left out of the sample.
        masked: What masking masked in this result, per column, rule
            and detector.
    """

    name: ClassVar[str] = "result.sample"

    statement_id: str
    rows: tuple[tuple[str | None, ...], ...] = ()
    total_rows: int = 0
    total_bytes: int = 0
    truncated: bool = False
    masked: tuple[MaskCount, ...] = ()


@frozen(kw_only=True)
class DiagnosticReceived(Event):
    """
    The target sent an error, warning or notice text for the client.

    Fires for each one, before the client sees it, so that masking can
    hide values the text echoes (a failed cast quoting a masked value).
    Only decided when an interceptor asks for it.  A PostgreSQL
    notification (NOTIFY) arrives as one too, with severity C{NOTIFY} and
    its payload as the C{M} field.

    Attributes:
        statement_id: The statement it belongs to, if known.
        severity: The protocol's severity (C{ERROR}, C{NOTICE}).
        code: The protocol's code (SQLSTATE, MySQL error number).
        fields: The text fields by the protocol's field name, in order
            (PostgreSQL: C{M} message, C{D} detail, C{H} hint, ...).
    """

    name: ClassVar[str] = "diagnostic"

    statement_id: str
    severity: str
    code: str
    fields: tuple[tuple[str, str], ...]


@frozen(kw_only=True)
class StatementCompleted(Event):
    """
    The target finished a statement.

    Attributes:
        statement_id: The statement.
        status: C{ok}, C{error}, C{denied} or C{cancelled}.
        command_tag: The protocol's completion tag (C{SELECT 5}).
        rows: Rows returned or affected.
        bytes_out: Result bytes sent to the client.
        duration: Seconds from statement to completion.
        error_code: SQLSTATE or protocol error code, if any.
        error_message: The error text the client saw, if any.
    """

    name: ClassVar[str] = "statement.completed"

    statement_id: str
    status: str
    command_tag: str = ""
    rows: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    error_code: str = ""
    error_message: str = ""


@frozen(kw_only=True)
class CommandReceived(Event):
    """
    A client asked to run a command line (SSH exec, a shell request).

    Attributes:
        command_id: Gateway-unique id.
        command: The command line, or C{""} for an interactive shell.
        channel: The protocol's channel reference.
    """

    name: ClassVar[str] = "command"

    command_id: str
    command: str
    channel: str = ""


@frozen(kw_only=True)
class FileOperationRequested(Event):
    """
    A client asks to act on a file or directory of the target (an SFTP
    request: open, remove, rename, mkdir, list, ...).

    Fires once per request, before the target sees it; a refusal answers
    that request alone (SFTP: permission denied) and the session goes on.
    Data moved through a granted open file is not decided again; other
    requests on it are (SFTP fsetstat, a write on a file opened for
    reading).

    Attributes:
        operation_id: Gateway-unique id.
        operations: What the request does, in policy's words: C{read},
            C{write}, C{remove}, C{rename}, C{mkdir}, C{rmdir},
            C{setstat}, C{symlink}, C{link}, C{list}, C{stat}.  An open
            for reading and writing does both.
        path: The path the request names, as the target resolves it
            where the plugin can ask (SSH resolves SFTP paths with
            REALPATH, symbolic links followed); for a request on an
            open handle, the path its open was judged on.
        target_path: The second path (rename, symlink, link), if any.
        command_id: The command or subsystem it runs under.
        channel: The protocol's channel reference.
    """

    name: ClassVar[str] = "file.requested"

    operation_id: str
    operations: tuple[str, ...]
    path: str
    target_path: str = ""
    command_id: str = ""
    channel: str = ""


@frozen(kw_only=True)
class ForwardRequested(Event):
    """
    A client asks for a connection to a network destination through the
    target (SSH C{direct-tcpip}: C{ssh -L}, C{ssh -W}).

    Fires before anything is opened; a refusal means the target never
    sees the request (SSH: "administratively prohibited").

    Attributes:
        forward_id: Gateway-unique id, shared with what records its end.
        host: The destination host (a name or an address) as the client
            named it.
        port: Its port.
        channel: The protocol's channel reference, once known.
        originator: The address the client says the connection came
            from.
        originator_port: Its port.
    """

    name: ClassVar[str] = "forward.requested"

    forward_id: str
    host: str
    port: int
    channel: str = ""
    originator: str = ""
    originator_port: int = 0


@frozen(kw_only=True)
class HttpRequestReceived(Event):
    """
    A client sent an HTTP request.

    Attributes:
        request_id: Gateway-unique id.
        method: The HTTP method.
        path: The request path, without the query string.
        query: The query string.
        headers: Header names and values, credentials removed.
    """

    name: ClassVar[str] = "http.request"

    request_id: str
    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@frozen(kw_only=True)
class Notice(Event):
    """
    Something worth a line in the recording that decides nothing.

    Attributes:
        kind: A short stable code (C{cancel.requested}, C{option.dropped}).
        detail: Free text for operators (no secrets, no unmasked data).
    """

    name: ClassVar[str] = "notice"

    kind: str
    detail: str = ""
